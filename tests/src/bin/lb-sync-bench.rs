//! Control-plane figures (`cargo xtask bench`): a full sync of N Services × 10 endpoints from
//! manifests to maps, one endpoint changed among them, and the agent's memory.
//!
//! Runs the agent's own code in-process (no interfaces attached: only maps are written) so
//! that the figures are the agent's work, not process start-up.

use std::{fmt::Write as _, path::Path, time::Instant};

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

/// Service `i` and its EndpointSlice; `changed` moves its first endpoint elsewhere.
fn service_docs(i: usize, endpoints: usize, changed: bool) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i}-1\n  namespace: bench\n  labels: {{kubernetes.io/service-name: svc-{i}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
    );
    for e in 0..endpoints {
        let host = if changed && e == 0 { 250 } else { e + 2 };
        let _ = writeln!(out, "- addresses: [198.18.{}.{}]", 1 + i % 200, host);
    }
    out.push_str("---\n");
    out
}

/// How the manifests are laid out on disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    OneFile,
    FilePerService,
}

/// Writes every Service (`changed`: with one endpoint of that Service moved); with one file
/// per Service, only the changed Service's file is rewritten after the first write.
fn write_manifests(dir: &Path, layout: Layout, services: usize, changed: Option<usize>) {
    let write = |name: String, text: String| {
        std::fs::write(dir.join(name), text).expect("write manifests");
    };
    match (layout, changed) {
        (Layout::OneFile, _) => write(
            "bench.yaml".into(),
            (0..services).map(|i| service_docs(i, 10, changed == Some(i))).collect(),
        ),
        (Layout::FilePerService, None) => {
            for i in 0..services {
                write(format!("svc-{i}.yaml"), service_docs(i, 10, false));
            }
        }
        (Layout::FilePerService, Some(i)) => {
            write(format!("svc-{i}.yaml"), service_docs(i, 10, true));
        }
    }
}

fn main() {
    if !lb_tests::root::is_root() {
        eprintln!("lb-sync-bench: needs root (BPF maps)");
        std::process::exit(1);
    }
    println!(
        "control plane: manifests → maps (the agent's own sync, in-process; a running agent starts a sync 10 ms after the last inotify event of a write)"
    );
    println!(
        "{:>9} {:>6} {:>17} {:>10} {:>10} {:>14} {:>14} {:>26} {:>12} {:>10}",
        "services",
        "M",
        "layout",
        "full sync",
        "no change",
        "1 endpoint:",
        "whole sync",
        "read/model/apply/save ms",
        "process RSS",
        "BPF maps"
    );
    println!("{:>9} {:>6} {:>17} {:>10} {:>10} {:>14}", "", "", "", "", "", "maps updated");
    let mut last_memory = Vec::new();
    let runs = [
        (1usize, 16381u32, Layout::OneFile),
        (1000, 16381, Layout::OneFile),
        (10_000, 1021, Layout::OneFile),
        (10_000, 16381, Layout::OneFile),
        (10_000, 16381, Layout::FilePerService),
    ];
    for (services, m, layout) in runs {
        let pins = PinDir::unique();
        let dir = TempDir::new(&format!("{}-sync", lb_tests::unique_prefix()));
        let inputs = dir.0.join("manifests");
        std::fs::create_dir_all(&inputs).expect("manifests dir");
        write_manifests(&inputs, layout, services, None);
        let mut node = NodeConfig::new("bench");
        node.service_cidrs = vec!["198.19.0.0/16".parse().expect("cidr")];
        node.maglev_m = m;
        let mut load = LoadOptions::new(&pins.0);
        load.size_for(services as u32 + 16, m);
        node.max_service_ids = load.max_service_ids;
        let cfg = AgentConfig {
            manifests: inputs.clone(),
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
        // A running agent's files are older than the cache's racy window (files modified
        // in the last 2 s are always re-read): let them settle and be cached, then time a
        // sync with nothing changed.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        agent.sync().unwrap_or_else(|e| panic!("sync: {e:#}"));
        let t = Instant::now();
        agent.sync().unwrap_or_else(|e| panic!("sync: {e:#}"));
        let unchanged = t.elapsed();

        write_manifests(&inputs, layout, services, Some(services / 2));
        let t = Instant::now();
        agent.sync().unwrap_or_else(|e| panic!("sync: {e:#}"));
        let one = t.elapsed();
        let p = agent.last_sync();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let memory = map_memory(&pins.0).unwrap_or_else(|e| panic!("map memory: {e}"));
        println!(
            "{services:>9} {m:>6} {:>17} {:>8.0}ms {:>8.0}ms {:>12.1}ms {:>12.1}ms {:>26} {:>8} MiB {:>6.0} MiB",
            match layout {
                Layout::OneFile => "one file",
                Layout::FilePerService => "file per Service",
            },
            ms(full),
            ms(unchanged),
            ms(p.read + p.model + p.apply),
            ms(one),
            format!("{:.1}/{:.1}/{:.1}/{:.1}", ms(p.read), ms(p.model), ms(p.apply), ms(p.save)),
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
