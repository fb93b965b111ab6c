//! The lab, end to end, for people: `cargo xtask run` builds and starts this.
//!
//! Brings up client, node, pod and backend namespaces, starts the real `lb-agent` in the
//! node on the example manifests of `tests/fixtures/lab/` (plus Pods for the backends),
//! sends real HTTP through every Service type, prints where requests went, then shows live
//! per-backend counters (read like `lbctl stats`) until Ctrl-C. Everything it made is
//! removed on exit.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lb_tests::{
    agent::AgentLab,
    http::get_many,
    lab::{CLUSTER_IP_V4, CLUSTER_IP_V6, LB_IP_V4, NODE_V4},
};
use lb_userspace::{catalog::Catalog, ctl, datapath::Maps};

const NODE_PORT: u16 = 30080;
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/lab");

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
    // A panic inside still unwinds through the lab's guards, which remove everything.
    let ok = std::panic::catch_unwind(|| run(&opts, &stop)).unwrap_or(false);
    std::process::exit(if ok { 0 } else { 1 });
}

fn run(opts: &Opts, stop: &AtomicBool) -> bool {
    eprintln!(
        "==> lab up: client, node, pod and {} backend namespaces (198.18.0.0/15, fd00:18::/48)",
        opts.backends
    );
    let mut lab = AgentLab::new(opts.backends);
    eprintln!("    namespaces: {}", lab.net.netns_names().join(" "));
    for entry in std::fs::read_dir(EXAMPLES).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        lab.write(&name, &text);
    }
    lab.write("pods.yaml", &lab.pod_manifests());
    eprintln!("==> starting lb-agent on {EXAMPLES} (+ pods.yaml for the backends)");
    lab.start_agent().wait_synced(1);
    eprintln!(
        "==> agent ready: XDP on node/ext0, TC on pod interfaces, logs in {}",
        lab.dir.0.display()
    );

    let (code, out, err) = lab.lbctl(&["get", "services"]);
    if code == 0 {
        println!("\n$ lbctl get services\n{out}");
    } else {
        eprintln!("lbctl: {err}");
    }

    let sticky = "198.19.0.20";
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
        ("Affinity     http://198.19.0.20/ from pod", &lab.net.pod, format!("http://{sticky}/")),
    ];
    let mut all_ok = true;
    println!("{:<50} {:>6} {:>6}  per backend", "traffic", "ok", "failed");
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
    let counters = || -> Option<BTreeMap<String, (u64, u64, u64)>> {
        let maps = Maps::open_pinned(&lab.pins.0).ok()?;
        let catalog = Catalog::load(&Catalog::path_for(&lab.state_file())).ok()?;
        Some(
            ctl::stats(&maps, &catalog)
                .backends
                .into_iter()
                .map(|b| (b.backend.to_string(), (b.packets, b.bytes, b.new_flows)))
                .collect(),
        )
    };
    let print = |now: &BTreeMap<String, (u64, u64, u64)>,
                 last: Option<&BTreeMap<String, (u64, u64, u64)>>,
                 dt: Duration| {
        println!(
            "\n{:<26} {:>10} {:>12} {:>10} {:>10}",
            "backend", "packets", "bytes", "new flows", "flows/s"
        );
        for (b, (p, by, f)) in now {
            let rate = last
                .and_then(|l| l.get(b))
                .map_or(0.0, |(_, _, pf)| (f - pf) as f64 / dt.as_secs_f64().max(1e-9));
            println!("{b:<26} {p:>10} {by:>12} {f:>10} {rate:>10.1}");
        }
    };
    let Some(mut last) = counters() else {
        eprintln!("lb-lab: cannot read the pinned maps");
        return false;
    };
    print(&last, None, Duration::ZERO);
    if opts.once {
        eprintln!("==> removing the lab");
        return all_ok;
    }
    println!(
        "\nlive counters every 2 s (Ctrl-C to stop and clean up); try `lbctl --pin-dir {} --state-file {} stats`",
        lab.pins.0.display(),
        lab.state_file().display()
    );
    let mut t = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if t.elapsed() >= Duration::from_secs(2) {
            if let Some(now) = counters() {
                print(&now, Some(&last), t.elapsed());
                last = now;
            }
            t = Instant::now();
        }
    }
    eprintln!("==> removing the lab");
    all_ok
}
