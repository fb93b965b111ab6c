//! Every BPF map the datapath and userspace share: its name (the `static` in `lb-ebpf`, also
//! the pin file name), its key and value types, and its default capacity.
//!
//! | map | type | key → value | written by | read by |
//! |---|---|---|---|---|
//! | `SERVICES` | hash | [`ServiceKey`] → [`ServiceValue`] | agent | datapath |
//! | `BACKENDS` | array | backend id → [`BackendValue`] | agent | datapath |
//! | `MAGLEV` | hash, no prealloc | [`MaglevKey`] → [`MaglevChunk`] | agent | datapath |
//! | `CONNTRACK` | LRU hash | [`CtKey`] (client → frontend) → [`CtValue`] | datapath | datapath, lbctl |
//! | `REVNAT` | LRU hash | [`CtKey`] (backend → client) → [`RevNatValue`] | datapath | datapath |
//! | `AFFINITY` | LRU hash | [`AffinityKey`] → [`AffinityValue`] | datapath | datapath |
//! | `SRC_RANGES` | LPM trie | [`SourceRangeKey`] → `u8` | agent | datapath |
//! | `BACKEND_STATS` | per-CPU array | backend id → [`crate::counters::TrafficCounters`] | datapath | agent, lbctl |
//! | `SERVICE_STATS` | per-CPU array | service id → [`crate::counters::TrafficCounters`] | datapath | agent, lbctl |
//! | `DROP_STATS` | per-CPU array | [`crate::counters::DropReason`] → `u64` | datapath | agent, lbctl |
//! | `LB_CONFIG` | array[1] | 0 → [`DatapathConfig`] | agent | datapath |

pub const SERVICES: &str = "SERVICES";
pub const BACKENDS: &str = "BACKENDS";
pub const MAGLEV: &str = "MAGLEV";
pub const CONNTRACK: &str = "CONNTRACK";
pub const REVNAT: &str = "REVNAT";
pub const AFFINITY: &str = "AFFINITY";
pub const SRC_RANGES: &str = "SRC_RANGES";
pub const BACKEND_STATS: &str = "BACKEND_STATS";
pub const SERVICE_STATS: &str = "SERVICE_STATS";
pub const DROP_STATS: &str = "DROP_STATS";
pub const LB_CONFIG: &str = "LB_CONFIG";
/// Every map name, in the order of the table above.
pub const ALL_MAPS: [&str; 11] = [
    SERVICES,
    BACKENDS,
    MAGLEV,
    CONNTRACK,
    REVNAT,
    AFFINITY,
    SRC_RANGES,
    BACKEND_STATS,
    SERVICE_STATS,
    DROP_STATS,
    LB_CONFIG,
];

/// Program names (the functions in `lb-ebpf`).
pub const PROG_XDP_INGRESS: &str = "xdp_ingress";
pub const PROG_TC_INGRESS: &str = "tc_ingress";
pub const PROG_TC_EGRESS: &str = "tc_egress";

/// Compile-time sizes of maps whose size is baked into the object. Everything else is sized
/// at load time (`EbpfLoader::set_max_entries`), starting from the `DEFAULT_*` values.
/// Backend ids are `1..MAX_BACKENDS` (0 is "none"): they must fit a Maglev slot's `u16`.
pub const MAX_BACKENDS: u32 = 65536;
const _: () = assert!(MAX_BACKENDS <= u16::MAX as u32 + 1);
/// Service ids index `SERVICE_STATS`, a per-CPU array: sized at load time, since its memory
/// grows with the number of CPUs.
pub const DEFAULT_MAX_SERVICE_IDS: u32 = 65536;
pub const DEFAULT_MAX_FRONTENDS: u32 = 65536;
pub const DEFAULT_MAX_MAGLEV_CHUNKS: u32 = 131072;
pub const DEFAULT_CONNTRACK_SIZE: u32 = 262144;
pub const DEFAULT_AFFINITY_SIZE: u32 = 65536;
pub const DEFAULT_SRC_RANGES_SIZE: u32 = 16384;

/// Slots per [`MaglevChunk`]. A table of M slots is stored as `ceil(M / MAGLEV_CHUNK)` chunks
/// under one table id, so tables of any prime size fit a fixed-size map value.
pub const MAGLEV_CHUNK: u32 = 2048;
/// Default Maglev table size (prime), as in Cilium and the Maglev paper.
pub const DEFAULT_MAGLEV_M: u32 = 16381;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Backend id 0 is never allocated: it marks an empty slot.
pub const BACKEND_ID_NONE: u32 = 0;

/// [`BackendValue::state`] values.
pub const BACKEND_STATE_UNUSED: u8 = 0;
/// Gets new flows (it is in Maglev tables) and keeps existing ones.
pub const BACKEND_STATE_ACTIVE: u8 = 1;
/// Terminating but serving: keeps existing flows, gets no new ones.
pub const BACKEND_STATE_TERMINATING: u8 = 2;

/// [`ServiceValue::flags`] bits.
pub const SVC_F_AFFINITY: u32 = 1 << 0;
/// Only sources in `SRC_RANGES` for this service id may reach it.
pub const SVC_F_SOURCE_RANGES: u32 = 1 << 1;
/// The frontend's backends are this node's only (externalTrafficPolicy/internalTrafficPolicy Local).
pub const SVC_F_LOCAL_ONLY: u32 = 1 << 2;
/// Frontend kinds, informational (lbctl, metrics).
pub const SVC_F_CLUSTER_IP: u32 = 1 << 8;
pub const SVC_F_NODE_PORT: u32 = 1 << 9;
pub const SVC_F_LOAD_BALANCER: u32 = 1 << 10;
pub const SVC_F_EXTERNAL_IP: u32 = 1 << 11;

map_types! {
    /// A frontend: the address, port and protocol a client connects to.
    pub struct ServiceKey [20] {
        pub addr: [u8; 16],
        pub port_be: u16,
        pub proto: u8,
        pub _pad: u8,
    }

    /// What a frontend balances to.
    pub struct ServiceValue [24] {
        /// Index into `SERVICE_STATS`; also scopes affinity and source ranges.
        pub svc_id: u32,
        /// The Maglev table (chunks under this id in `MAGLEV`). Replacing a table writes a new
        /// id's chunks first and then this value, so a packet never sees a half-written table.
        pub table_id: u32,
        /// Slots in the table (prime).
        pub maglev_m: u32,
        /// Backends that get new flows; 0 means drop with `DropReason::NoBackend`.
        pub backend_count: u32,
        pub flags: u32,
        /// ClientIP affinity timeout in seconds, when `SVC_F_AFFINITY`.
        pub affinity_timeout_s: u32,
    }

    /// A backend, at its id's index in `BACKENDS`.
    pub struct BackendValue [20] {
        pub addr: [u8; 16],
        pub port_be: u16,
        /// `BACKEND_STATE_*`.
        pub state: u8,
        /// `FAMILY_V4` or `FAMILY_V6`.
        pub family: u8,
    }

    pub struct MaglevKey [8] {
        pub table_id: u32,
        pub chunk: u32,
    }

    /// `MAGLEV_CHUNK` consecutive slots of a Maglev table, each a backend id. Ids are below
    /// `MAX_BACKENDS` (65,536), so 16 bits hold one: half the memory of a table of `u32`s.
    pub struct MaglevChunk [4096] {
        pub backend_ids: [u16; 2048],
    }

    /// A flow as its packets arrive: client → frontend for `CONNTRACK`, backend → client for
    /// `REVNAT`.
    pub struct CtKey [40] {
        pub src: [u8; 16],
        pub dst: [u8; 16],
        pub sport_be: u16,
        pub dport_be: u16,
        pub proto: u8,
        pub _pad: [u8; 3],
    }

    pub struct CtValue [16] {
        /// `bpf_ktime_get_ns` when last refreshed (at most once a second, to spare the cache line).
        pub last_seen_ns: u64,
        pub backend_id: u32,
        pub svc_id: u32,
    }

    /// The frontend a reply must appear to come from.
    pub struct RevNatValue [24] {
        pub addr: [u8; 16],
        pub port_be: u16,
        pub _pad: [u8; 2],
        pub svc_id: u32,
    }

    pub struct AffinityKey [20] {
        pub client: [u8; 16],
        pub svc_id: u32,
    }

    pub struct AffinityValue [16] {
        pub last_seen_ns: u64,
        pub backend_id: u32,
        pub _pad: u32,
    }

    /// LPM data: prefix length = 32 (the service id) + the source CIDR's length in the
    /// IPv4-mapped space (96 + len for IPv4).
    pub struct SourceRangeKey [20] {
        pub svc_id: u32,
        pub addr: [u8; 16],
    }

    /// Runtime settings the agent can change without reloading the programs.
    pub struct DatapathConfig [32] {
        /// Conntrack idle timeouts; an entry idle longer is a miss.
        pub ct_timeout_tcp_s: u32,
        pub ct_timeout_udp_s: u32,
        pub _reserved: [u32; 6],
    }
}

impl DatapathConfig {
    /// kube-proxy's defaults: established TCP 24 h (`conntrack.tcpEstablishedTimeout`), UDP 120 s.
    pub const DEFAULT: Self =
        Self { ct_timeout_tcp_s: 86400, ct_timeout_udp_s: 120, _reserved: [0; 6] };
}

/// Bits of the source-range LPM key before the address: the service id.
pub const SRC_RANGE_SVC_BITS: u32 = 32;
