//! The lab, end to end, for people: `cargo xtask run` builds and starts this.
//!
//! Brings up client, node and backend namespaces, attaches the datapath, programs example
//! services (ClusterIP + NodePort + LoadBalancer, an IPv6 ClusterIP, a ClientIP-affinity
//! service), sends real HTTP through each, prints where requests went, then shows live
//! per-backend counters until Ctrl-C. Everything it made is removed on exit.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lb_common::counters::{DropReason, TrafficCounters};
use lb_tests::{
    http::get_many,
    lab::{BACKEND_PORT, CLUSTER_IP_V4, CLUSTER_IP_V6, LB_IP_V4, Lab, NODE_V4},
};
use lb_userspace::{
    services::{Backend, Frontend, FrontendKind, Protocol, ServiceProgram},
    stats,
};

const NODE_PORT: u16 = 30080;

struct Opts {
    once: bool,
    requests: usize,
    backends: usize,
}

fn parse_args() -> Result<Opts, String> {
    let mut opts = Opts { once: false, requests: 300, backends: 3 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--once" => opts.once = true,
            "--requests" => {
                opts.requests =
                    args.next().and_then(|v| v.parse().ok()).ok_or("--requests needs a number")?;
            }
            "--backends" => {
                opts.backends = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..100).contains(n))
                    .ok_or("--backends needs a number from 1 to 99")?;
            }
            "-h" | "--help" => {
                println!(
                    "lb-lab [--once] [--requests N] [--backends N]\n  --once  stop after the \
                     traffic check (non-interactive)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(opts)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lb-lab: {e}");
            std::process::exit(2);
        }
    };
    if !lb_tests::root::is_root() {
        eprintln!("lb-lab: needs root (network namespaces, XDP/TC, bpffs)");
        std::process::exit(1);
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        if let Err(e) = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)) {
            eprintln!("lb-lab: cannot handle Ctrl-C ({e}); use --once");
        }
    }
    // A panic inside still unwinds through Lab's guards, which remove everything.
    let ok = std::panic::catch_unwind(|| run(&opts, &stop)).unwrap_or(false);
    std::process::exit(if ok { 0 } else { 1 });
}

fn run(opts: &Opts, stop: &AtomicBool) -> bool {
    eprintln!("==> lab up: client, node, pod and {} backend namespaces", opts.backends);
    let mut lab = Lab::new(opts.backends);
    let v4: Vec<Backend> =
        lab.net.backends.iter().map(|b| Backend::active(IpAddr::V4(b.v4), BACKEND_PORT)).collect();
    let v6: Vec<Backend> =
        lab.net.backends.iter().map(|b| Backend::active(IpAddr::V6(b.v6), BACKEND_PORT)).collect();
    let tcp = |addr: IpAddr, port, kind| Frontend { addr, port, protocol: Protocol::Tcp, kind };
    let sticky_ip: IpAddr = "198.19.0.20".parse().expect("literal");
    let mut sticky =
        ServiceProgram::new(3, vec![tcp(sticky_ip, 80, FrontendKind::ClusterIp)], v4.clone());
    sticky.affinity_timeout_s = Some(10800);
    let services = [
        (
            "default/web",
            ServiceProgram::new(
                1,
                vec![
                    tcp(CLUSTER_IP_V4.into(), 80, FrontendKind::ClusterIp),
                    tcp(NODE_V4.into(), NODE_PORT, FrontendKind::NodePort),
                    tcp(LB_IP_V4.into(), 80, FrontendKind::LoadBalancer),
                ],
                v4,
            ),
        ),
        (
            "default/web (IPv6)",
            ServiceProgram::new(
                2,
                vec![tcp(CLUSTER_IP_V6.into(), 80, FrontendKind::ClusterIp)],
                v6,
            ),
        ),
        ("default/sticky (ClientIP affinity)", sticky),
    ];
    for (name, svc) in &services {
        if let Err(e) = lab.services.apply(svc) {
            eprintln!("lb-lab: programming {name}: {e}");
            return false;
        }
    }
    eprintln!("==> datapath ready: XDP on node/ext0, TC on pod interfaces; services programmed");

    let checks = [
        (
            "ClusterIP    http://198.19.0.10/ from pod",
            &lab.net.pod,
            format!("http://{CLUSTER_IP_V4}/"),
        ),
        (
            "NodePort     http://198.18.0.1:30080/ from client",
            &lab.net.client,
            format!("http://{NODE_V4}:{NODE_PORT}/"),
        ),
        (
            "LoadBalancer http://198.19.255.10/ from client",
            &lab.net.client,
            format!("http://{LB_IP_V4}/"),
        ),
        (
            "ClusterIPv6  http://[fd00:19::10]/ from pod",
            &lab.net.pod,
            format!("http://[{CLUSTER_IP_V6}]/"),
        ),
        ("Affinity     http://198.19.0.20/ from pod", &lab.net.pod, format!("http://{sticky_ip}/")),
    ];
    let mut all_ok = true;
    println!("\n{:<50} {:>6} {:>6}  per backend", "traffic", "ok", "failed");
    for (what, ns, url) in checks {
        let batch = get_many(ns, &url, opts.requests);
        let spread: Vec<String> =
            batch.by_backend.iter().map(|(b, n)| format!("{b}={n}")).collect();
        println!("{what:<50} {:>6} {:>6}  {}", batch.ok(), batch.errors.len(), spread.join(" "));
        if let Some(e) = batch.errors.first() {
            println!("    first error: {e}");
            all_ok = false;
        }
    }
    if opts.once {
        print_counters(&lab, None, Duration::ZERO);
        return all_ok;
    }
    println!("\nlive counters (Ctrl-C to stop and clean up)");
    let mut last = snapshot(&lab);
    let mut t = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if t.elapsed() >= Duration::from_secs(2) {
            print_counters(&lab, Some(&last), t.elapsed());
            last = snapshot(&lab);
            t = Instant::now();
        }
    }
    eprintln!("==> removing the lab");
    all_ok
}

fn snapshot(lab: &Lab) -> BTreeMap<String, TrafficCounters> {
    let mut out = BTreeMap::new();
    for b in &lab.net.backends {
        for addr in [IpAddr::V4(b.v4), IpAddr::V6(b.v6)] {
            if let Some(id) = lab.services.backend_id(addr, BACKEND_PORT)
                && let Ok(c) = stats::backend(lab.services.maps(), id)
            {
                out.insert(format!("{}:{BACKEND_PORT}", fmt_addr(addr)), c);
            }
        }
    }
    out
}

fn fmt_addr(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn print_counters(lab: &Lab, last: Option<&BTreeMap<String, TrafficCounters>>, dt: Duration) {
    println!(
        "\n{:<26} {:>10} {:>12} {:>10} {:>10}",
        "backend", "packets", "bytes", "new flows", "flows/s"
    );
    for (backend, c) in snapshot(lab) {
        let rate = last
            .and_then(|l| l.get(&backend))
            .map(|p| (c.new_flows - p.new_flows) as f64 / dt.as_secs_f64().max(1e-9))
            .unwrap_or(0.0);
        println!(
            "{backend:<26} {:>10} {:>12} {:>10} {rate:>10.1}",
            c.packets, c.bytes, c.new_flows
        );
    }
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .map(|r| format!("{}={}", r.as_str(), stats::drops(lab.services.maps(), *r).unwrap_or(0)))
        .collect();
    println!("drops: {}", drops.join(" "));
}
