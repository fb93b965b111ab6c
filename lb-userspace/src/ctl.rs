//! `lbctl`'s queries: the pinned maps and the agent's catalog, joined by id. Everything
//! returns plain data (serialisable for `-o json`); printing lives in the binary.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use lb_common::{
    addr::{from_map, to_map},
    counters::DropReason,
    flow::{flow_hash, maglev_slot},
    maps::*,
};
use serde::Serialize;

use crate::{catalog::Catalog, datapath::Maps, services::Protocol, stats};

/// Live backends in the datapath: `addr:port` → (id, state).
pub fn backend_table(maps: &Maps) -> BTreeMap<SocketAddr, (u32, u8)> {
    let mut out = BTreeMap::new();
    for (id, b) in maps.backends.iter().enumerate() {
        if let Ok(b) = b
            && b.state != BACKEND_STATE_UNUSED
        {
            out.insert(
                SocketAddr::new(from_map(&b.addr), u16::from_be(b.port_be)),
                (id as u32, b.state),
            );
        }
    }
    out
}

/// Live backends by id.
fn backends_by_id(maps: &Maps) -> BTreeMap<u32, SocketAddr> {
    backend_table(maps).into_iter().map(|(a, (id, _))| (id, a)).collect()
}

pub fn state_name(state: u8) -> &'static str {
    match state {
        BACKEND_STATE_ACTIVE => "ready",
        BACKEND_STATE_TERMINATING => "terminating",
        _ => "unused",
    }
}

/// Slots per backend id in a service's current Maglev table.
pub fn maglev_slots(maps: &Maps, svc: &ServiceValue) -> BTreeMap<u32, u32> {
    let mut counts = BTreeMap::new();
    if svc.table_id == 0 {
        return counts;
    }
    for chunk in 0..svc.maglev_m.div_ceil(MAGLEV_CHUNK) {
        if let Ok(c) = maps.maglev.get(&MaglevKey { table_id: svc.table_id, chunk }, 0) {
            let slots = (svc.maglev_m - chunk * MAGLEV_CHUNK).min(MAGLEV_CHUNK) as usize;
            for &id in &c.backend_ids[..slots] {
                *counts.entry(u32::from(id)).or_default() += 1;
            }
        }
    }
    counts
}

/// The `ServiceValue` of a program (through any of its frontends).
fn service_value(
    maps: &Maps,
    catalog_program: &crate::catalog::CatalogProgram,
) -> Option<ServiceValue> {
    let fe = catalog_program.program.frontends.first()?;
    let key = ServiceKey {
        addr: to_map(fe.addr),
        port_be: fe.port.to_be(),
        proto: fe.protocol.number(),
        _pad: 0,
    };
    maps.services.get(&key, 0).ok()
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointRow {
    pub service: String,
    pub port: String,
    pub family: String,
    pub scope: String,
    pub backend: SocketAddr,
    pub state: String,
    pub weight: u32,
    /// Share of the Maglev table, in percent.
    pub maglev_share: f64,
    pub new_flows: u64,
    pub packets: u64,
}

pub fn endpoints(maps: &Maps, catalog: &Catalog) -> Vec<EndpointRow> {
    let live = backend_table(maps);
    let mut rows = Vec::new();
    for p in &catalog.programs {
        let slots = service_value(maps, p).map(|v| (maglev_slots(maps, &v), v.maglev_m));
        for b in &p.program.backends {
            let addr = SocketAddr::new(b.addr, b.port);
            let (id, state) = live.get(&addr).copied().unwrap_or((0, BACKEND_STATE_UNUSED));
            let share = slots.as_ref().map_or(0.0, |(s, m)| {
                f64::from(s.get(&id).copied().unwrap_or(0)) * 100.0 / f64::from(*m)
            });
            let c = stats::backend(maps, id).unwrap_or(lb_common::counters::TrafficCounters {
                packets: 0,
                bytes: 0,
                new_flows: 0,
                drops: 0,
            });
            rows.push(EndpointRow {
                service: p.service().to_owned(),
                port: p.port().to_owned(),
                family: p.family().to_owned(),
                scope: p.scope().to_owned(),
                backend: addr,
                state: state_name(state).to_owned(),
                weight: b.weight,
                maglev_share: share,
                new_flows: c.new_flows,
                packets: c.packets,
            });
        }
    }
    rows
}

#[derive(Debug, Serialize)]
pub struct BackendStats {
    pub backend: SocketAddr,
    pub id: u32,
    pub state: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

#[derive(Debug, Serialize)]
pub struct ProgramStats {
    pub service: String,
    pub port: String,
    pub family: String,
    pub scope: String,
    pub id: u32,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub drops: u64,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub backends: Vec<BackendStats>,
    pub services: Vec<ProgramStats>,
    pub drops: BTreeMap<String, u64>,
}

pub fn stats(maps: &Maps, catalog: &Catalog) -> Stats {
    let backends = backend_table(maps)
        .into_iter()
        .filter_map(|(addr, (id, state))| {
            let c = stats::backend(maps, id).ok()?;
            Some(BackendStats {
                backend: addr,
                id,
                state: state_name(state).to_owned(),
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
            })
        })
        .collect();
    let services = catalog
        .programs
        .iter()
        .filter_map(|p| {
            let c = stats::service(maps, p.program.id).ok()?;
            Some(ProgramStats {
                service: p.service().to_owned(),
                port: p.port().to_owned(),
                family: p.family().to_owned(),
                scope: p.scope().to_owned(),
                id: p.program.id,
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
                drops: c.drops,
            })
        })
        .collect();
    let drops = DropReason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), stats::drops(maps, *r).unwrap_or(0)))
        .collect();
    Stats { backends, services, drops }
}

#[derive(Debug, Serialize)]
pub struct ConntrackRow {
    pub client: SocketAddr,
    pub frontend: SocketAddr,
    pub protocol: String,
    pub backend: Option<SocketAddr>,
    pub service: Option<String>,
    pub idle_s: f64,
}

fn ct_row(
    k: &CtKey,
    v: &CtValue,
    by_id: &BTreeMap<u32, SocketAddr>,
    catalog: &Catalog,
    now: u64,
) -> ConntrackRow {
    ConntrackRow {
        client: SocketAddr::new(from_map(&k.src), u16::from_be(k.sport_be)),
        frontend: SocketAddr::new(from_map(&k.dst), u16::from_be(k.dport_be)),
        protocol: proto_name(k.proto),
        backend: by_id.get(&v.backend_id).copied(),
        service: catalog.program_by_id(v.svc_id).map(|p| p.service().to_owned()),
        idle_s: now.saturating_sub(v.last_seen_ns) as f64 / 1e9,
    }
}

/// The conntrack / reverse-NAT key of packets from `src` to `dst`.
fn ct_key(src: SocketAddr, dst: SocketAddr, proto: u8) -> CtKey {
    CtKey {
        src: to_map(src.ip()),
        dst: to_map(dst.ip()),
        sport_be: src.port().to_be(),
        dport_be: dst.port().to_be(),
        proto,
        _pad: [0; 3],
    }
}

fn proto_name(p: u8) -> String {
    match p {
        IPPROTO_TCP => "TCP".into(),
        IPPROTO_UDP => "UDP".into(),
        other => other.to_string(),
    }
}

/// Monotonic clock the datapath stamps entries with (`bpf_ktime_get_ns`).
fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into `ts` only.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Which conntrack entries a command applies to.
#[derive(Clone, Copy, Debug, Default)]
pub struct CtFilter<'a> {
    /// `ns/name`
    pub service: Option<&'a str>,
    pub backend: Option<SocketAddr>,
}

impl CtFilter<'_> {
    fn matches(&self, row: &ConntrackRow) -> bool {
        self.service.is_none_or(|s| row.service.as_deref() == Some(s))
            && self.backend.is_none_or(|b| row.backend == Some(b))
    }
}

/// Deletes the conntrack entries `filter` selects (and the reverse-NAT entries of their
/// flows); their next packet is balanced afresh. Returns how many flows were flushed.
pub fn conntrack_flush(
    maps: &mut Maps,
    catalog: &Catalog,
    filter: CtFilter<'_>,
) -> Result<usize, String> {
    let by_id = backends_by_id(maps);
    let doomed: Vec<(CtKey, Option<SocketAddr>)> = maps
        .conntrack
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| filter.matches(&ct_row(k, v, &by_id, catalog, 0)))
        .map(|(k, v)| (k, by_id.get(&v.backend_id).copied()))
        .collect();
    for (k, backend) in &doomed {
        match maps.conntrack.remove(k) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e.to_string()),
        }
        if let Some(b) = backend {
            let client = SocketAddr::new(from_map(&k.src), u16::from_be(k.sport_be));
            let _ = maps.revnat.remove(&ct_key(*b, client, k.proto));
        }
    }
    Ok(doomed.len())
}

pub fn conntrack(maps: &Maps, catalog: &Catalog, filter: CtFilter<'_>) -> Vec<ConntrackRow> {
    let by_id = backends_by_id(maps);
    let now = now_ns();
    let mut rows: Vec<ConntrackRow> = maps
        .conntrack
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| ct_row(&k, &v, &by_id, catalog, now))
        .filter(|r| filter.matches(r))
        .collect();
    rows.sort_by_key(|r| (r.frontend, r.client));
    rows
}

#[derive(Debug, Serialize)]
pub struct MaglevRow {
    pub program: String,
    pub backend: SocketAddr,
    pub slots: u32,
    pub share: f64,
    pub m: u32,
}

pub fn maglev(maps: &Maps, catalog: &Catalog, service: &str) -> Vec<MaglevRow> {
    let by_id = backends_by_id(maps);
    let mut rows = Vec::new();
    for p in catalog.programs.iter().filter(|p| p.service() == service) {
        let Some(v) = service_value(maps, p) else { continue };
        for (id, slots) in maglev_slots(maps, &v) {
            if let Some(backend) = by_id.get(&id) {
                rows.push(MaglevRow {
                    program: p.key.clone(),
                    backend: *backend,
                    slots,
                    share: f64::from(slots) * 100.0 / f64::from(v.maglev_m),
                    m: v.maglev_m,
                });
            }
        }
    }
    rows
}

/// Why a flow goes where it goes.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub client: SocketAddr,
    pub frontend: SocketAddr,
    pub protocol: String,
    /// `ns/name:port/...` of the matching program, if the frontend is a service's.
    pub service: Option<String>,
    pub backend: Option<SocketAddr>,
    /// How the backend is chosen: `conntrack`, `affinity`, `maglev slot N of M`, or why none.
    pub reason: String,
}

pub fn explain(
    maps: &Maps,
    catalog: &Catalog,
    client: SocketAddr,
    frontend: SocketAddr,
    proto: Protocol,
) -> Explanation {
    let by_id = backends_by_id(maps);
    let mut e = Explanation {
        client,
        frontend,
        protocol: proto.to_string(),
        service: None,
        backend: None,
        reason: String::new(),
    };
    let (src, dst) = (to_map(client.ip()), to_map(frontend.ip()));
    let key =
        ServiceKey { addr: dst, port_be: frontend.port().to_be(), proto: proto.number(), _pad: 0 };
    let Ok(svc) = maps.services.get(&key, 0) else {
        e.reason = "not a service frontend: the datapath passes it untouched".into();
        return e;
    };
    e.service = catalog
        .program_by_id(svc.svc_id)
        .map(|p| p.key.clone())
        .or(Some(format!("service id {}", svc.svc_id)));
    let ct = ct_key(client, frontend, proto.number());
    if let Ok(v) = maps.conntrack.get(&ct, 0)
        && v.svc_id == svc.svc_id
        && let Some(b) = by_id.get(&v.backend_id)
    {
        e.backend = Some(*b);
        e.reason = format!(
            "conntrack entry (idle {:.1} s)",
            now_ns().saturating_sub(v.last_seen_ns) as f64 / 1e9
        );
        return e;
    }
    if svc.flags & SVC_F_SOURCE_RANGES != 0 {
        // A full-length match of the 16-byte (IPv4-mapped) source, as the datapath does.
        let k = aya::maps::lpm_trie::Key::new(
            SRC_RANGE_SVC_BITS + 128,
            SourceRangeKey { svc_id: svc.svc_id, addr: src },
        );
        if maps.src_ranges.get(&k, 0).is_err() {
            e.reason = "dropped: source outside loadBalancerSourceRanges".into();
            return e;
        }
    }
    if svc.backend_count == 0 {
        e.reason = "dropped: no ready backend".into();
        return e;
    }
    if svc.flags & SVC_F_AFFINITY != 0
        && let Ok(a) = maps.affinity.get(&AffinityKey { client: src, svc_id: svc.svc_id }, 0)
        && now_ns().saturating_sub(a.last_seen_ns)
            <= u64::from(svc.affinity_timeout_s) * 1_000_000_000
        && let Some(b) = by_id.get(&a.backend_id)
    {
        e.backend = Some(*b);
        e.reason = "ClientIP affinity entry".into();
        return e;
    }
    let hash =
        flow_hash(&src, &dst, client.port().to_be(), frontend.port().to_be(), proto.number());
    let slot = maglev_slot(hash, svc.maglev_m);
    let chunk = MaglevKey { table_id: svc.table_id, chunk: slot / MAGLEV_CHUNK };
    match maps.maglev.get(&chunk, 0) {
        Ok(c) => {
            let id = u32::from(c.backend_ids[(slot % MAGLEV_CHUNK) as usize]);
            e.backend = by_id.get(&id).copied();
            e.reason = format!(
                "new flow: Maglev slot {slot} of {} (flow hash {hash:#010x})",
                svc.maglev_m
            );
        }
        Err(_) => e.reason = "dropped: Maglev table missing".into(),
    }
    e
}

/// Parses `ADDR[:PORT]` (IPv6 as `[ADDR]:PORT`); a missing port is 0.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    s.trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| format!("{s:?} is not ADDR[:PORT]"))
}

#[derive(Debug, Serialize)]
pub struct ProgramDescription {
    pub key: String,
    pub id: u32,
    pub frontends: Vec<String>,
    pub affinity_timeout_s: Option<u32>,
    pub local_only: bool,
    pub source_ranges: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub drops: u64,
    pub backends: Vec<EndpointRow>,
}

#[derive(Debug, Serialize)]
pub struct ServiceDescription {
    pub summary: crate::model::ServiceSummary,
    pub programs: Vec<ProgramDescription>,
}

/// Everything about `ns/name`, or `None` when the catalog has no such Service.
pub fn describe(maps: &Maps, catalog: &Catalog, service: &str) -> Option<ServiceDescription> {
    let summary =
        catalog.services.iter().find(|s| format!("{}/{}", s.namespace, s.name) == service)?.clone();
    let rows = endpoints(maps, catalog);
    let programs = catalog
        .programs
        .iter()
        .filter(|p| p.service() == service)
        .map(|p| {
            let c = stats::service(maps, p.program.id).unwrap_or(bytemuck::Zeroable::zeroed());
            ProgramDescription {
                key: p.key.clone(),
                id: p.program.id,
                frontends: p
                    .program
                    .frontends
                    .iter()
                    .map(|f| {
                        format!("{}/{} ({:?})", SocketAddr::new(f.addr, f.port), f.protocol, f.kind)
                    })
                    .collect(),
                affinity_timeout_s: p.program.affinity_timeout_s,
                local_only: p.program.local_only,
                source_ranges: p.program.source_ranges.iter().map(ToString::to_string).collect(),
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
                drops: c.drops,
                backends: rows
                    .iter()
                    .filter(|r| {
                        r.service == p.service()
                            && r.port == p.port()
                            && r.family == p.family()
                            && r.scope == p.scope()
                    })
                    .cloned()
                    .collect(),
            }
        })
        .collect();
    Some(ServiceDescription { summary, programs })
}

/// What the loaded datapath program does with a synthetic first packet of a flow.
#[derive(Debug, Serialize)]
pub struct LiveRun {
    pub verdict: String,
    /// Destination after the program ran (the backend when DNATed).
    pub destination_after: Option<SocketAddr>,
    pub source_after: Option<SocketAddr>,
    /// Whether the IPv4 and TCP/UDP checksums of the output verify.
    pub checksums_ok: bool,
    pub duration_ns: u64,
}

/// Runs a synthetic packet (a TCP SYN or a UDP datagram) for the flow through `xdp_ingress`
/// with BPF_PROG_TEST_RUN — on private copies of the entries the decision reads (the
/// frontend, its Maglev table, every backend, the flow's conntrack and affinity entries,
/// source ranges, config), so the live maps and counters are not touched.
pub fn explain_live(
    live: &Maps,
    client: SocketAddr,
    frontend: SocketAddr,
    proto: Protocol,
) -> Result<LiveRun, String> {
    use aya::programs::{TestRun, TestRunOptions, Xdp};

    let scratch = std::path::PathBuf::from(crate::datapath::BPFFS_ROOT)
        .join(format!("lbctl-live-{}", std::process::id()));
    let result = (|| {
        // Small private maps: they hold one flow's worth of state.
        let mut opts = crate::datapath::LoadOptions::new(&scratch);
        opts.conntrack_size = 1024;
        opts.affinity_size = 1024;
        opts.max_frontends = 1024;
        opts.max_maglev_chunks = 1024;
        let (mut dp, mut private) =
            crate::datapath::Datapath::load(&opts).map_err(|e| e.to_string())?;
        let e = |e: aya::maps::MapError| e.to_string();
        let (src, dst) = (to_map(client.ip()), to_map(frontend.ip()));
        let key = ServiceKey {
            addr: dst,
            port_be: frontend.port().to_be(),
            proto: proto.number(),
            _pad: 0,
        };
        if let Ok(svc) = live.services.get(&key, 0) {
            private.services.insert(key, svc, 0).map_err(e)?;
            for chunk in 0..svc.maglev_m.div_ceil(MAGLEV_CHUNK) {
                let k = MaglevKey { table_id: svc.table_id, chunk };
                if let Ok(c) = live.maglev.get(&k, 0) {
                    private.maglev.insert(k, c, 0).map_err(e)?;
                }
            }
            for (id, b) in live.backends.iter().enumerate() {
                if let Ok(b) = b
                    && b.state != BACKEND_STATE_UNUSED
                {
                    private.backends.set(id as u32, b, 0).map_err(e)?;
                }
            }
            let ct = ct_key(client, frontend, proto.number());
            if let Ok(v) = live.conntrack.get(&ct, 0) {
                private.conntrack.insert(ct, v, 0).map_err(e)?;
            }
            let ak = AffinityKey { client: src, svc_id: svc.svc_id };
            if let Ok(v) = live.affinity.get(&ak, 0) {
                private.affinity.insert(ak, v, 0).map_err(e)?;
            }
            for k in live
                .src_ranges
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.data().svc_id == svc.svc_id)
            {
                private.src_ranges.insert(&k, 1, 0).map_err(e)?;
            }
            if let Ok(cfg) = live.config.get(&0, 0) {
                private.config.set(0, cfg, 0).map_err(e)?;
            }
        }
        let packet = synthetic_packet(client, frontend, proto)?;
        let prog: &mut Xdp = dp.xdp_program().map_err(|e| e.to_string())?;
        let mut out = vec![0u8; packet.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&packet),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
        out.truncate(r.data_size_out as usize);
        let verdict = match r.return_value {
            0 => "XDP_ABORTED",
            1 => "XDP_DROP",
            2 => "XDP_PASS",
            3 => "XDP_TX",
            4 => "XDP_REDIRECT",
            _ => "unknown",
        };
        let (source_after, destination_after, checksums_ok) = read_back(&out);
        Ok(LiveRun {
            verdict: verdict.to_owned(),
            destination_after,
            source_after,
            checksums_ok,
            duration_ns: r.duration.as_nanos() as u64,
        })
    })();
    let _ = crate::datapath::remove_pins(&scratch);
    result
}

fn synthetic_packet(
    client: SocketAddr,
    frontend: SocketAddr,
    proto: Protocol,
) -> Result<Vec<u8>, String> {
    use etherparse::PacketBuilder;
    let mac_a = [0x02, 0, 0, 0, 0, 1];
    let mac_b = [0x02, 0, 0, 0, 0, 2];
    let payload: &[u8] = b"lbctl explain --live";
    let eth = PacketBuilder::ethernet2(mac_a, mac_b);
    let ip = match (client.ip(), frontend.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => return Err("client and frontend must be of one address family".into()),
    };
    let mut out = Vec::new();
    match proto {
        Protocol::Tcp => {
            let b = ip.tcp(client.port(), frontend.port(), 1, 64240).syn();
            b.write(&mut out, payload).map_err(|e| e.to_string())?;
        }
        Protocol::Udp => {
            let b = ip.udp(client.port(), frontend.port());
            b.write(&mut out, payload).map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// Source, destination and whether every checksum verifies, read back with etherparse.
fn read_back(bytes: &[u8]) -> (Option<SocketAddr>, Option<SocketAddr>, bool) {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    let Ok(h) = PacketHeaders::from_ethernet_slice(bytes) else { return (None, None, false) };
    let payload = h.payload.slice();
    let (s, d, mut ok) = match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => (
            IpAddr::from(ip.source),
            IpAddr::from(ip.destination),
            ip.header_checksum == ip.calc_header_checksum(),
        ),
        Some(NetHeaders::Ipv6(ip, _)) => {
            (IpAddr::from(ip.source), IpAddr::from(ip.destination), true)
        }
        _ => return (None, None, false),
    };
    let (sp, dp) = match (&h.transport, &h.net) {
        (Some(TransportHeader::Tcp(t)), Some(NetHeaders::Ipv4(ip, _))) => {
            ok &= t.calc_checksum_ipv4(ip, payload).is_ok_and(|c| c == t.checksum);
            (t.source_port, t.destination_port)
        }
        (Some(TransportHeader::Tcp(t)), Some(NetHeaders::Ipv6(ip, _))) => {
            ok &= t.calc_checksum_ipv6(ip, payload).is_ok_and(|c| c == t.checksum);
            (t.source_port, t.destination_port)
        }
        (Some(TransportHeader::Udp(u)), Some(NetHeaders::Ipv4(ip, _))) => {
            ok &=
                u.checksum == 0 || u.calc_checksum_ipv4(ip, payload).is_ok_and(|c| c == u.checksum);
            (u.source_port, u.destination_port)
        }
        (Some(TransportHeader::Udp(u)), Some(NetHeaders::Ipv6(ip, _))) => {
            ok &= u.calc_checksum_ipv6(ip, payload).is_ok_and(|c| c == u.checksum);
            (u.source_port, u.destination_port)
        }
        _ => return (None, None, false),
    };
    (Some(SocketAddr::new(s, sp)), Some(SocketAddr::new(d, dp)), ok)
}
