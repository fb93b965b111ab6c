//! Counters the datapath keeps and userspace reads (summed over CPUs).

map_types! {
    /// Per backend (`BACKEND_STATS`, by backend id) and per service (`SERVICE_STATS`, by
    /// service id). Forward direction (client → backend) only.
    pub struct TrafficCounters [32] {
        pub packets: u64,
        pub bytes: u64,
        /// Flows that picked this backend/service afresh (conntrack miss).
        pub new_flows: u64,
        /// Packets for this service that were dropped (service counters only).
        pub drops: u64,
    }
}

impl TrafficCounters {
    pub fn add(&mut self, other: &Self) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.new_flows = self.new_flows.wrapping_add(other.new_flows);
        self.drops = self.drops.wrapping_add(other.drops);
    }
}

/// Why the datapath dropped a packet it owned; the index into `DROP_STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The service has no ready backend (also: terminating-only).
    NoBackend = 0,
    /// The source is outside the service's `loadBalancerSourceRanges`.
    SourceRange = 1,
    /// The service points at a Maglev table that is missing (agent bug or mid-removal).
    NoMaglevTable = 2,
    /// The selected backend is of the other address family or unused.
    BadBackend = 3,
    /// Rewriting the packet failed (helper error).
    RewriteFailed = 4,
}

impl DropReason {
    pub const ALL: [Self; 5] = [
        Self::NoBackend,
        Self::SourceRange,
        Self::NoMaglevTable,
        Self::BadBackend,
        Self::RewriteFailed,
    ];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Stable label for metrics and `lbctl`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoBackend => "no_backend",
            Self::SourceRange => "source_range_denied",
            Self::NoMaglevTable => "no_maglev_table",
            Self::BadBackend => "bad_backend",
            Self::RewriteFailed => "rewrite_failed",
        }
    }
}
