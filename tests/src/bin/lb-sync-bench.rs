//! Control-plane figures (`cargo xtask bench`): a full sync of N Services × 10 endpoints from
//! manifests to maps, one endpoint changed among them, and the agent's memory.
//!
//! Runs the agent's own code in-process (no interfaces attached: only maps are written) so
//! that the figures are the agent's work, not process start-up.

use std::{fmt::Write as _, time::Instant};

use lb_common::maps;
use lb_tests::{agent::TempDir, fixture::PinDir};
use lb_userspace::{
    agent::{Agent, AgentConfig},
    datapath::{LoadOptions, MapMemory, map_memory},
    model::NodeConfig,
};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn manifests(services: usize, endpoints: usize, changed: Option<usize>) -> String {
    let mut out = String::with_capacity(services * 700);
    for i in 0..services {
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i}-1\n  namespace: bench\n  labels: {{kubernetes.io/service-name: svc-{i}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
        );
        for e in 0..endpoints {
            let host = if changed == Some(i) && e == 0 { 250 } else { e + 2 };
            let _ = writeln!(out, "- addresses: [198.18.{}.{}]", 1 + i % 200, host);
        }
        out.push_str("---\n");
    }
    out
}

fn main() {
    if !lb_tests::root::is_root() {
        eprintln!("lb-sync-bench: needs root (BPF maps)");
        std::process::exit(1);
    }
    println!(
        "control plane: manifests → maps (in-process agent sync; add the poll interval, 100 ms by default, for file-change latency)"
    );
    println!(
        "{:>9} {:>6} {:>10} {:>14} {:>16} {:>14}",
        "services", "M", "full sync", "1 endpoint", "process RSS", "BPF maps"
    );
    let mut last_memory = Vec::new();
    for (services, m) in [(1usize, 16381u32), (1000, 16381), (10_000, 1021), (10_000, 16381)] {
        let pins = PinDir::unique();
        let dir = TempDir::new(&format!("{}-sync", lb_tests::unique_prefix()));
        let file = dir.0.join("bench.yaml");
        std::fs::write(&file, manifests(services, 10, None)).expect("write manifests");
        let mut node = NodeConfig::new("bench");
        node.service_cidrs = vec!["198.19.0.0/16".parse().expect("cidr")];
        node.maglev_m = m;
        let mut load = LoadOptions::new(&pins.0);
        load.size_for(services as u32 + 16, m);
        node.max_service_ids = load.max_service_ids;
        let cfg = AgentConfig {
            manifests: file.clone(),
            node,
            xdp_interfaces: vec![],
            tc_interfaces: vec![],
            load,
            state_file: dir.0.join("allocations.json"),
            poll_interval: std::time::Duration::from_millis(100),
            metrics_addr: None,
        };
        let mut agent = Agent::start(cfg).unwrap_or_else(|e| panic!("agent: {e:#}"));
        let t = Instant::now();
        agent.sync().unwrap_or_else(|e| panic!("sync: {e:#}"));
        let full = t.elapsed();
        let rss = rss_kib();

        std::fs::write(&file, manifests(services, 10, Some(services / 2)))
            .expect("write manifests");
        let t = Instant::now();
        agent.sync().unwrap_or_else(|e| panic!("sync: {e:#}"));
        let one = t.elapsed();
        let memory = map_memory(&pins.0).unwrap_or_else(|e| panic!("map memory: {e}"));
        println!(
            "{services:>9} {m:>6} {:>8.0}ms {:>12.0}ms {:>12} MiB {:>10.0} MiB",
            full.as_secs_f64() * 1e3,
            one.as_secs_f64() * 1e3,
            rss / 1024,
            mib(memory.iter().map(|m| m.bytes).sum()),
        );
        drop(agent);
        last_memory = memory;
    }
    print_map_memory(&last_memory, 10_000);
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Where the BPF memory of the last run goes, and what a Service, a backend and a flow cost.
fn print_map_memory(memory: &[MapMemory], services: u64) {
    println!(
        "\nBPF map memory at {services} Services (kernel's memlock account; sized by the agent's size_for)"
    );
    println!("{:<14} {:>12} {:>10}", "map", "max entries", "MiB");
    for m in memory {
        println!("{:<14} {:>12} {:>10.1}", m.name, m.max_entries, mib(m.bytes));
    }
    let of = |names: &[&str]| -> (u64, u64) {
        let maps = memory.iter().filter(|m| names.contains(&m.name));
        maps.fold((0, 0), |(b, e), m| (b + m.bytes, e.max(u64::from(m.max_entries))))
    };
    let (svc_bytes, _) = of(&[maps::SERVICES, maps::MAGLEV, maps::SERVICE_STATS]);
    let (backend_bytes, backend_slots) = of(&[maps::BACKENDS, maps::BACKEND_STATS]);
    let (flow_bytes, flows) = of(&[maps::CONNTRACK, maps::REVNAT]);
    println!(
        "per Service (frontends + Maglev table + counters, capacity included): {} bytes; per backend slot: {} bytes; per conntrack flow (both directions): {} bytes",
        svc_bytes / services,
        backend_bytes / backend_slots.max(1),
        flow_bytes / flows.max(1),
    );
}
