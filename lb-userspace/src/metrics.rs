//! Prometheus metrics, rendered at each scrape from the per-CPU maps (summed over CPUs) and
//! the catalog. Counters live in pinned maps, so they never go backwards across an agent
//! restart.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::sync::Mutex;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tracing::{info, warn};

use crate::{catalog::Catalog, ctl, datapath::Maps, stats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    namespace: String,
    service: String,
    port: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    namespace: String,
    service: String,
    port: String,
    family: String,
    frontends: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

/// What the agent's sync loop reports.
#[derive(Clone, Debug, Default)]
pub struct SyncStatus {
    pub syncs: u64,
    pub last_duration_s: f64,
    /// Input errors in the last sync.
    pub config_errors: u64,
}

/// Everything a scrape needs.
pub struct MetricsSource {
    pub maps: Maps,
    pub catalog: Catalog,
    pub status: SyncStatus,
    pub conntrack_capacity: u32,
    pub max_frontends: u32,
    pub max_maglev_chunks: u32,
}

fn counter_family<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

/// The Prometheus text exposition of the current state.
pub fn render(src: &MetricsSource) -> String {
    let mut r = Registry::default();
    let b_packets = counter_family::<BackendLabels>(
        &mut r,
        "lb_backend_packets",
        "Packets sent to a backend (client to backend direction)",
    );
    let b_bytes =
        counter_family::<BackendLabels>(&mut r, "lb_backend_bytes", "Bytes sent to a backend");
    let b_flows = counter_family::<BackendLabels>(
        &mut r,
        "lb_backend_new_flows",
        "Flows that picked a backend (conntrack miss)",
    );
    let s_packets = counter_family::<ServiceLabels>(
        &mut r,
        "lb_service_packets",
        "Packets balanced for a Service port",
    );
    let s_bytes = counter_family::<ServiceLabels>(
        &mut r,
        "lb_service_bytes",
        "Bytes balanced for a Service port",
    );
    let s_flows = counter_family::<ServiceLabels>(
        &mut r,
        "lb_service_new_flows",
        "New flows of a Service port",
    );
    let s_drops = counter_family::<ServiceLabels>(
        &mut r,
        "lb_service_drops",
        "Packets for a Service port that were dropped",
    );
    let drops = counter_family::<ReasonLabels>(
        &mut r,
        "lb_drops",
        "Packets dropped by the datapath, by reason",
    );
    let syncs = Counter::<u64>::default();
    r.register("lb_syncs", "Syncs of manifests to maps", syncs.clone());
    let sync_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    r.register("lb_sync_duration_seconds", "Duration of the last sync", sync_seconds.clone());
    let config_errors = Gauge::<i64>::default();
    r.register("lb_config_errors", "Input errors found by the last sync", config_errors.clone());
    let ct_entries = Gauge::<i64>::default();
    r.register("lb_conntrack_entries", "Conntrack entries", ct_entries.clone());
    let ct_capacity = Gauge::<i64>::default();
    r.register("lb_conntrack_capacity", "Conntrack capacity", ct_capacity.clone());
    let fill = Family::<MapLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    r.register("lb_map_fill_ratio", "Entries over capacity, per map", fill.clone());

    // Per backend: the Service port(s) it serves, as the catalog names them.
    let mut users: BTreeMap<SocketAddr, (String, String, String)> = BTreeMap::new();
    for p in &src.catalog.programs {
        for b in &p.program.backends {
            let e = users.entry(SocketAddr::new(b.addr, b.port)).or_insert_with(|| {
                (p.namespace().to_owned(), p.name().to_owned(), p.port().to_owned())
            });
            if (e.0.as_str(), e.1.as_str(), e.2.as_str()) != (p.namespace(), p.name(), p.port()) {
                *e = ("*".into(), "*".into(), "*".into()); // shared by several Service ports
            }
        }
    }
    for (addr, (id, _)) in ctl::backend_table(&src.maps) {
        let Ok(c) = stats::backend(&src.maps, id) else { continue };
        let (namespace, service, port) = users.get(&addr).cloned().unwrap_or_default();
        let l = BackendLabels { namespace, service, port, backend: addr.to_string() };
        b_packets.get_or_create(&l).inc_by(c.packets);
        b_bytes.get_or_create(&l).inc_by(c.bytes);
        b_flows.get_or_create(&l).inc_by(c.new_flows);
    }
    for p in &src.catalog.programs {
        let Ok(c) = stats::service(&src.maps, p.program.id) else { continue };
        let l = ServiceLabels {
            namespace: p.namespace().to_owned(),
            service: p.name().to_owned(),
            port: p.port().to_owned(),
            family: p.family().to_owned(),
            frontends: p.scope().to_owned(),
        };
        s_packets.get_or_create(&l).inc_by(c.packets);
        s_bytes.get_or_create(&l).inc_by(c.bytes);
        s_flows.get_or_create(&l).inc_by(c.new_flows);
        s_drops.get_or_create(&l).inc_by(c.drops);
    }
    for reason in lb_common::counters::DropReason::ALL {
        let n = stats::drops(&src.maps, reason).unwrap_or(0);
        drops.get_or_create(&ReasonLabels { reason: reason.as_str().to_owned() }).inc_by(n);
    }
    syncs.inc_by(src.status.syncs);
    sync_seconds.set(src.status.last_duration_s);
    config_errors.set(src.status.config_errors as i64);
    let ct = src.maps.conntrack.keys().count();
    ct_entries.set(ct as i64);
    ct_capacity.set(i64::from(src.conntrack_capacity));
    let ratio = |n: usize, cap: u32| if cap == 0 { 0.0 } else { n as f64 / f64::from(cap) };
    fill.get_or_create(&MapLabels { map: "CONNTRACK".into() })
        .set(ratio(ct, src.conntrack_capacity));
    fill.get_or_create(&MapLabels { map: "SERVICES".into() })
        .set(ratio(src.maps.services.keys().count(), src.max_frontends));
    fill.get_or_create(&MapLabels { map: "MAGLEV".into() })
        .set(ratio(src.maps.maglev.keys().count(), src.max_maglev_chunks));

    let mut out = String::new();
    if let Err(e) = encode(&mut out, &r) {
        warn!("encoding metrics: {e}");
    }
    out
}

/// Serves `GET /metrics` (any path, in fact) on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, src: Arc<Mutex<MetricsSource>>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving Prometheus metrics at /metrics");
    }
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        let src = Arc::clone(&src);
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            // One request per connection; the request itself does not matter.
            let _ = sock.read(&mut buf).await;
            // Rendering is quick and never awaits while holding the lock.
            let body = match src.lock() {
                Ok(src) => render(&src),
                Err(_) => String::new(),
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
