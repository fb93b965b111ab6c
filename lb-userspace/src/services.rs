//! Programming services into the datapath maps.
//!
//! One [`ServiceProgram`] is one balancing unit: a set of frontends (ClusterIP:port,
//! NodePort on each node address, LoadBalancer/external IPs) that share one backend set and
//! one Maglev table. [`ServiceMaps::apply`] makes the maps match it with an order that never
//! exposes a half-done state to packets:
//!
//! 1. backends are written (new ids first, so the new table only names existing backends);
//! 2. the new Maglev table is written under a fresh table id;
//! 3. frontends are switched to the new table id (one map update each);
//! 4. the old table and removed frontends are deleted;
//! 5. backends no longer used are marked unused, which ends their conntrack entries.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::IpAddr,
};

use aya::maps::lpm_trie::Key as LpmKey;
use lb_common::{
    addr::{FAMILY_V4, FAMILY_V6, from_map, to_map},
    maglev::{self, MaglevBackend, MaglevError},
    maps::*,
};

use crate::{datapath::Maps, net::Cidr};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalIp,
}

impl FrontendKind {
    const fn flag(self) -> u32 {
        match self {
            Self::ClusterIp => SVC_F_CLUSTER_IP,
            Self::NodePort => SVC_F_NODE_PORT,
            Self::LoadBalancer => SVC_F_LOAD_BALANCER,
            Self::ExternalIp => SVC_F_EXTERNAL_IP,
        }
    }
}

/// An address, port and protocol clients connect to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Frontend {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub kind: FrontendKind,
}

impl Frontend {
    fn key(&self) -> ServiceKey {
        ServiceKey {
            addr: to_map(self.addr),
            port_be: self.port.to_be(),
            proto: self.protocol.number(),
            _pad: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BackendState {
    /// Ready: gets new flows.
    Active,
    /// Terminating but serving: keeps its flows, gets no new ones.
    Terminating,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub state: BackendState,
}

impl Backend {
    pub fn active(addr: IpAddr, port: u16) -> Self {
        Self { addr, port, weight: 1, state: BackendState::Active }
    }

    fn endpoint(&self) -> (IpAddr, u16) {
        (self.addr, self.port)
    }
}

/// Everything the datapath needs to balance one service port.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceProgram {
    /// Caller-chosen id, below `LoadOptions::max_service_ids`: indexes `SERVICE_STATS`, scopes affinity and
    /// source ranges.
    pub id: u32,
    pub frontends: Vec<Frontend>,
    pub backends: Vec<Backend>,
    /// `sessionAffinity: ClientIP` timeout.
    pub affinity_timeout_s: Option<u32>,
    /// `loadBalancerSourceRanges`; empty means everyone.
    pub source_ranges: Vec<Cidr>,
    /// Backends were narrowed to this node's (a Local traffic policy); informational.
    pub local_only: bool,
    /// Maglev table size (prime).
    pub maglev_m: u32,
}

impl ServiceProgram {
    pub fn new(id: u32, frontends: Vec<Frontend>, backends: Vec<Backend>) -> Self {
        Self {
            id,
            frontends,
            backends,
            affinity_timeout_s: None,
            source_ranges: Vec::new(),
            local_only: false,
            maglev_m: DEFAULT_MAGLEV_M,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("service id {id}: must be below {max}")]
    IdOutOfRange { id: u32, max: u32 },
    #[error("service id {id}: frontend {frontend} is {fam}, backend {backend} is not")]
    FamilyMismatch { id: u32, frontend: IpAddr, backend: IpAddr, fam: &'static str },
    #[error(
        "service id {id}: frontend {addr}:{port}/{proto} already belongs to service id {owner}"
    )]
    FrontendClash { id: u32, addr: IpAddr, port: u16, proto: Protocol, owner: u32 },
    #[error("service id {id}: source range {cidr} is of the other address family than the service")]
    SourceRangeFamily { id: u32, cidr: Cidr },
    #[error("service id {id}: {source}")]
    Maglev { id: u32, source: MaglevError },
    #[error("no free backend id: all {MAX_BACKENDS} are in use")]
    BackendIdsExhausted,
    #[error("writing map {map}: {reason}")]
    Map { map: &'static str, reason: String },
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProgramError {
    move |e| ProgramError::Map { map, reason: e.to_string() }
}

/// What is programmed for one service id.
#[derive(Clone, Debug, Default)]
struct Programmed {
    frontends: BTreeSet<Frontend>,
    table_id: u32,
    table_chunks: u32,
    backends: BTreeSet<(IpAddr, u16)>,
    source_ranges: BTreeSet<Cidr>,
}

/// Stable backend ids: one per backend address:port, shared by every service that uses it.
#[derive(Default)]
struct BackendIds {
    by_endpoint: HashMap<(IpAddr, u16), (u32, u32)>, // endpoint → (id, users)
    in_use: BTreeSet<u32>,
    /// Ids are handed out round-robin so a just-freed id (whose conntrack entries may still
    /// exist) is not immediately given to another backend.
    cursor: u32,
}

impl BackendIds {
    fn acquire(&mut self, endpoint: (IpAddr, u16)) -> Result<(u32, bool), ProgramError> {
        if let Some((id, users)) = self.by_endpoint.get_mut(&endpoint) {
            *users += 1;
            return Ok((*id, false));
        }
        for _ in 0..MAX_BACKENDS {
            self.cursor = self.cursor % (MAX_BACKENDS - 1) + 1; // 1..MAX_BACKENDS-1
            if !self.in_use.contains(&self.cursor) {
                self.in_use.insert(self.cursor);
                self.by_endpoint.insert(endpoint, (self.cursor, 1));
                return Ok((self.cursor, true));
            }
        }
        Err(ProgramError::BackendIdsExhausted)
    }

    /// Returns the id when its last user left.
    fn release(&mut self, endpoint: (IpAddr, u16)) -> Option<u32> {
        let (id, users) = self.by_endpoint.get_mut(&endpoint)?;
        *users -= 1;
        if *users > 0 {
            return None;
        }
        let id = *id;
        self.by_endpoint.remove(&endpoint);
        self.in_use.remove(&id);
        Some(id)
    }

    fn get(&self, endpoint: (IpAddr, u16)) -> Option<u32> {
        self.by_endpoint.get(&endpoint).map(|(id, _)| *id)
    }
}

/// Programs services into the datapath maps and remembers what it programmed.
pub struct ServiceMaps {
    maps: Maps,
    services: BTreeMap<u32, Programmed>,
    frontend_owner: HashMap<Frontend, u32>,
    backend_ids: BackendIds,
    /// Backend states as last written, shared by all services using the backend.
    backend_state: HashMap<u32, u8>,
    next_table_id: u32,
    table_ids_wrapped: bool,
    /// Replaced tables waiting out their grace period: (table id, chunks, since).
    retired: Vec<(u32, u32, std::time::Instant)>,
}

/// How long a replaced Maglev table outlives its replacement. A lookup of the old table
/// happens within one program run (microseconds) after reading the old table id.
pub const TABLE_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

impl ServiceMaps {
    pub fn new(maps: Maps) -> Self {
        Self {
            maps,
            services: BTreeMap::new(),
            frontend_owner: HashMap::new(),
            backend_ids: BackendIds::default(),
            backend_state: HashMap::new(),
            next_table_id: 1,
            table_ids_wrapped: false,
            retired: Vec::new(),
        }
    }

    /// Takes over maps a previous process programmed (pinned maps survive restarts): learns
    /// their frontends, tables, backend ids and source ranges, so that re-applying the same
    /// programs changes nothing a packet could see and keeps every backend's id, which
    /// conntrack entries refer to. Follow the first full sync with [`Self::retain`].
    pub fn adopt(maps: Maps) -> Result<Self, ProgramError> {
        let mut me = Self::new(maps);
        let read = |map: &'static str| {
            move |e: aya::maps::MapError| ProgramError::Map { map, reason: e.to_string() }
        };
        for entry in me.maps.services.iter() {
            let (key, value) = entry.map_err(read(SERVICES))?;
            let Some(fe) = frontend_from_map(&key, value.flags) else { continue };
            let p = me.services.entry(value.svc_id).or_default();
            p.frontends.insert(fe);
            p.table_id = value.table_id;
            p.table_chunks =
                if value.table_id == 0 { 0 } else { value.maglev_m.div_ceil(MAGLEV_CHUNK) };
            me.frontend_owner.insert(fe, value.svc_id);
            me.next_table_id = me.next_table_id.max(value.table_id.wrapping_add(1)).max(1);
        }
        for id in 1..MAX_BACKENDS {
            let b = me.maps.backends.get(&id, 0).map_err(read(BACKENDS))?;
            if b.state == BACKEND_STATE_UNUSED {
                continue;
            }
            let endpoint = (from_map(&b.addr), u16::from_be(b.port_be));
            // Users are counted again as services are re-applied; `retain` frees the rest.
            me.backend_ids.by_endpoint.insert(endpoint, (id, 0));
            me.backend_ids.in_use.insert(id);
            me.backend_ids.cursor = me.backend_ids.cursor.max(id);
            me.backend_state.insert(id, b.state);
        }
        for key in me.maps.src_ranges.keys() {
            let key = key.map_err(read(SRC_RANGES))?;
            let data = key.data();
            let len = key.prefix_len().saturating_sub(SRC_RANGE_SVC_BITS);
            let addr = from_map(&data.addr);
            let len = if addr.is_ipv4() { len.saturating_sub(96) } else { len };
            if let Ok(cidr) = Cidr::new(addr, len as u8) {
                me.services.entry(data.svc_id).or_default().source_ranges.insert(cidr);
            }
        }
        Ok(me)
    }

    /// Removes every service id not in `keep`, every backend no service uses, and every
    /// Maglev table no frontend points at: the clean-up after adopting and re-syncing.
    pub fn retain(&mut self, keep: &BTreeSet<u32>) -> Result<(), ProgramError> {
        let gone: Vec<u32> =
            self.services.keys().filter(|id| !keep.contains(id)).copied().collect();
        for id in gone {
            self.remove(id)?;
        }
        let unused: Vec<(IpAddr, u16)> = self
            .backend_ids
            .by_endpoint
            .iter()
            .filter(|(_, (_, users))| *users == 0)
            .map(|(e, _)| *e)
            .collect();
        for endpoint in unused {
            if let Some((id, _)) = self.backend_ids.by_endpoint.remove(&endpoint) {
                self.backend_ids.in_use.remove(&id);
                let unused = BackendValue {
                    addr: [0; 16],
                    port_be: 0,
                    state: BACKEND_STATE_UNUSED,
                    family: 0,
                };
                self.maps.backends.set(id, unused, 0).map_err(map_err(BACKENDS))?;
                self.backend_state.remove(&id);
            }
        }
        let live: BTreeSet<u32> = self
            .services
            .values()
            .map(|p| p.table_id)
            .chain(self.retired.iter().map(|(id, _, _)| *id))
            .collect();
        let stale: Vec<MaglevKey> = self
            .maps
            .maglev
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !live.contains(&k.table_id))
            .collect();
        for key in stale {
            remove_ok(self.maps.maglev.remove(&key)).map_err(map_err(MAGLEV))?;
        }
        Ok(())
    }

    /// Service ids currently programmed.
    pub fn service_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.services.keys().copied()
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// The datapath id of a backend, if some service uses it.
    pub fn backend_id(&self, addr: IpAddr, port: u16) -> Option<u32> {
        self.backend_ids.get((addr, port))
    }

    /// Makes the maps balance `svc` exactly as described, replacing what `svc.id` had.
    pub fn apply(&mut self, svc: &ServiceProgram) -> Result<(), ProgramError> {
        self.validate(svc)?;
        let old = self.services.get(&svc.id).cloned().unwrap_or_default();

        // 1. Backends.
        let mut wanted: BTreeMap<(IpAddr, u16), &Backend> = BTreeMap::new();
        for b in &svc.backends {
            // A backend listed twice (e.g. two EndpointSlices) counts once; ready wins.
            let e = wanted.entry(b.endpoint()).or_insert(b);
            if b.state == BackendState::Active {
                *e = b;
            }
        }
        let mut ids: BTreeMap<(IpAddr, u16), u32> = BTreeMap::new();
        for (&endpoint, b) in &wanted {
            let id = if old.backends.contains(&endpoint) {
                self.backend_ids.get(endpoint).ok_or(ProgramError::BackendIdsExhausted)?
            } else {
                self.backend_ids.acquire(endpoint)?.0
            };
            ids.insert(endpoint, id);
            let state = match b.state {
                BackendState::Active => BACKEND_STATE_ACTIVE,
                BackendState::Terminating => BACKEND_STATE_TERMINATING,
            };
            if self.backend_state.get(&id) != Some(&state) {
                let value = BackendValue {
                    addr: to_map(b.addr),
                    port_be: b.port.to_be(),
                    state,
                    family: if b.addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 },
                };
                self.maps.backends.set(id, value, 0).map_err(map_err(BACKENDS))?;
                self.backend_state.insert(id, state);
            }
        }

        // 2. The new Maglev table, under a fresh id.
        let maglev_backends: Vec<MaglevBackend> = wanted
            .iter()
            .filter(|(_, b)| b.state == BackendState::Active)
            .map(|(endpoint, b)| MaglevBackend {
                id: ids[endpoint],
                identity: maglev_identity(endpoint.0, endpoint.1),
                weight: b.weight,
            })
            .collect();
        let table = maglev::build(&maglev_backends, svc.maglev_m)
            .map_err(|source| ProgramError::Maglev { id: svc.id, source })?;
        let (table_id, table_chunks) = if table.is_empty() {
            (0, 0)
        } else {
            let table_id = self.fresh_table_id();
            let chunks = self.write_table(table_id, &table)?;
            (table_id, chunks)
        };
        let backend_count = maglev_backends.iter().filter(|b| b.weight > 0).count() as u32;

        // Source ranges before the frontends that start checking them.
        let new_ranges: BTreeSet<Cidr> = svc.source_ranges.iter().copied().collect();
        for cidr in new_ranges.difference(&old.source_ranges) {
            self.maps
                .src_ranges
                .insert(&source_range_key(svc.id, cidr), 1, 0)
                .map_err(map_err(SRC_RANGES))?;
        }

        // 3. Frontends, each switched in one update.
        let mut flags = 0;
        if svc.affinity_timeout_s.is_some() {
            flags |= SVC_F_AFFINITY;
        }
        if !new_ranges.is_empty() {
            flags |= SVC_F_SOURCE_RANGES;
        }
        if svc.local_only {
            flags |= SVC_F_LOCAL_ONLY;
        }
        for fe in &svc.frontends {
            let value = ServiceValue {
                svc_id: svc.id,
                table_id,
                maglev_m: svc.maglev_m,
                backend_count,
                flags: flags | fe.kind.flag(),
                affinity_timeout_s: svc.affinity_timeout_s.unwrap_or(0),
            };
            self.maps.services.insert(fe.key(), value, 0).map_err(map_err(SERVICES))?;
            self.frontend_owner.insert(*fe, svc.id);
        }

        // 4. What the service no longer has.
        let new_frontends: BTreeSet<Frontend> = svc.frontends.iter().copied().collect();
        for fe in old.frontends.difference(&new_frontends) {
            self.remove_frontend(fe)?;
        }
        for cidr in old.source_ranges.difference(&new_ranges) {
            remove_ok(self.maps.src_ranges.remove(&source_range_key(svc.id, cidr)))
                .map_err(map_err(SRC_RANGES))?;
        }
        self.retire_table(old.table_id, old.table_chunks)?;

        // 5. Backends this service dropped.
        let new_backends: BTreeSet<(IpAddr, u16)> = wanted.keys().copied().collect();
        for endpoint in old.backends.difference(&new_backends) {
            self.release_backend(*endpoint)?;
        }

        self.services.insert(
            svc.id,
            Programmed {
                frontends: new_frontends,
                table_id,
                table_chunks,
                backends: new_backends,
                source_ranges: new_ranges,
            },
        );
        Ok(())
    }

    /// Removes everything programmed for service `id`.
    pub fn remove(&mut self, id: u32) -> Result<(), ProgramError> {
        let Some(old) = self.services.remove(&id) else {
            return Ok(());
        };
        for fe in &old.frontends {
            self.remove_frontend(fe)?;
        }
        for cidr in &old.source_ranges {
            remove_ok(self.maps.src_ranges.remove(&source_range_key(id, cidr)))
                .map_err(map_err(SRC_RANGES))?;
        }
        self.retire_table(old.table_id, old.table_chunks)?;
        for endpoint in &old.backends {
            self.release_backend(*endpoint)?;
        }
        Ok(())
    }

    fn validate(&self, svc: &ServiceProgram) -> Result<(), ProgramError> {
        let max = self.maps.service_stats.len();
        if svc.id >= max {
            return Err(ProgramError::IdOutOfRange { id: svc.id, max });
        }
        for fe in &svc.frontends {
            if let Some(b) = svc.backends.iter().find(|b| b.addr.is_ipv4() != fe.addr.is_ipv4()) {
                let fam = if fe.addr.is_ipv4() { "IPv4" } else { "IPv6" };
                return Err(ProgramError::FamilyMismatch {
                    id: svc.id,
                    frontend: fe.addr,
                    backend: b.addr,
                    fam,
                });
            }
            if let Some(&owner) = self.frontend_owner.get(fe).filter(|&&o| o != svc.id) {
                return Err(ProgramError::FrontendClash {
                    id: svc.id,
                    addr: fe.addr,
                    port: fe.port,
                    proto: fe.protocol,
                    owner,
                });
            }
        }
        if let Some(fe) = svc.frontends.first()
            && let Some(cidr) =
                svc.source_ranges.iter().find(|c| c.addr.is_ipv4() != fe.addr.is_ipv4())
        {
            return Err(ProgramError::SourceRangeFamily { id: svc.id, cidr: *cidr });
        }
        Ok(())
    }

    fn fresh_table_id(&mut self) -> u32 {
        loop {
            let id = self.next_table_id;
            let (next, wrapped) = id.overflowing_add(1);
            self.next_table_id = next.max(1);
            self.table_ids_wrapped |= wrapped;
            // Ids only repeat after 2^32 swaps; from then on, skip ids still in use.
            if !self.table_ids_wrapped || !self.services.values().any(|p| p.table_id == id) {
                return id;
            }
        }
    }

    fn write_table(&mut self, table_id: u32, table: &[u32]) -> Result<u32, ProgramError> {
        let mut chunk_index = 0;
        for slots in table.chunks(MAGLEV_CHUNK as usize) {
            let mut chunk = MaglevChunk { backend_ids: [0; MAGLEV_CHUNK as usize] };
            for (slot, &id) in chunk.backend_ids.iter_mut().zip(slots) {
                // Ids come from `BackendIds`, which hands out only 1..MAX_BACKENDS.
                *slot = u16::try_from(id).map_err(|_| ProgramError::BackendIdsExhausted)?;
            }
            let key = MaglevKey { table_id, chunk: chunk_index };
            self.maps.maglev.insert(key, chunk, 0).map_err(map_err(MAGLEV))?;
            chunk_index += 1;
        }
        Ok(chunk_index)
    }

    /// A replaced table is deleted only after [`TABLE_GRACE`]: a packet that read its
    /// service value just before the switch may still look the old table up.
    fn retire_table(&mut self, table_id: u32, chunks: u32) -> Result<(), ProgramError> {
        if table_id != 0 {
            self.retired.push((table_id, chunks, std::time::Instant::now()));
        }
        self.reap()
    }

    /// Deletes retired tables whose grace period is over; cheap when there are none.
    pub fn reap(&mut self) -> Result<(), ProgramError> {
        let now = std::time::Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) =
            self.retired.drain(..).partition(|(_, _, at)| now.duration_since(*at) >= TABLE_GRACE);
        self.retired = keep;
        for (table_id, chunks, _) in due {
            self.delete_table(table_id, chunks)?;
        }
        Ok(())
    }

    fn delete_table(&mut self, table_id: u32, chunks: u32) -> Result<(), ProgramError> {
        if table_id == 0 {
            return Ok(());
        }
        for chunk in 0..chunks {
            remove_ok(self.maps.maglev.remove(&MaglevKey { table_id, chunk }))
                .map_err(map_err(MAGLEV))?;
        }
        Ok(())
    }

    fn remove_frontend(&mut self, fe: &Frontend) -> Result<(), ProgramError> {
        remove_ok(self.maps.services.remove(&fe.key())).map_err(map_err(SERVICES))?;
        self.frontend_owner.remove(fe);
        Ok(())
    }

    fn release_backend(&mut self, endpoint: (IpAddr, u16)) -> Result<(), ProgramError> {
        if let Some(id) = self.backend_ids.release(endpoint) {
            let unused =
                BackendValue { addr: [0; 16], port_be: 0, state: BACKEND_STATE_UNUSED, family: 0 };
            self.maps.backends.set(id, unused, 0).map_err(map_err(BACKENDS))?;
            self.backend_state.remove(&id);
        }
        Ok(())
    }
}

/// The stable identity a backend's Maglev permutation is derived from (`198.18.1.2:8080`,
/// `[fd00::2]:8080`).
pub fn maglev_identity(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

fn frontend_from_map(key: &ServiceKey, flags: u32) -> Option<Frontend> {
    let protocol = match key.proto {
        IPPROTO_TCP => Protocol::Tcp,
        IPPROTO_UDP => Protocol::Udp,
        _ => return None,
    };
    let kind = [
        FrontendKind::ClusterIp,
        FrontendKind::NodePort,
        FrontendKind::LoadBalancer,
        FrontendKind::ExternalIp,
    ]
    .into_iter()
    .find(|k| flags & k.flag() != 0)?;
    Some(Frontend { addr: from_map(&key.addr), port: u16::from_be(key.port_be), protocol, kind })
}

fn source_range_key(svc_id: u32, cidr: &Cidr) -> LpmKey<SourceRangeKey> {
    let bits = match cidr.addr {
        IpAddr::V4(_) => 96 + u32::from(cidr.prefix_len),
        IpAddr::V6(_) => u32::from(cidr.prefix_len),
    };
    LpmKey::new(SRC_RANGE_SVC_BITS + bits, SourceRangeKey { svc_id, addr: to_map(cidr.addr) })
}

/// Deleting what is already gone is success.
fn remove_ok(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}
