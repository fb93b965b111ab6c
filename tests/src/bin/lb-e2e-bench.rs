//! End to end in the lab (`cargo xtask bench`): HTTP and UDP through the node with this
//! project's datapath against kube-proxy's own mechanisms (nftables mode, iptables mode)
//! programmed with the same Services, and a direct run to one backend with no NAT as the
//! ceiling.
//!
//! Every mode has its own lab (client, node, 4 backend namespaces, the same small HTTP
//! server), all alive at once and measured in turns, round after round, so a noisy moment
//! on the shared machine hits every mode alike; medians of the rounds are reported. From
//! the client: wrk keep-alive and `Connection: close` (a new connection per request) rates
//! with p50/p99, TCP connect time, and small UDP packets/s forwarded by the node. The Service
//! under test sits in the middle of the others (kube-proxy's iptables mode walks its list).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lb_tests::{
    kube_proxy::{BaselineService, Proto, iptables_restore, nftables_ruleset},
    lab::{ExternalHook, Lab, Topology},
    load::{self, BenchServers, WrkResult},
    netns::NetNs,
};
use lb_userspace::services::{Backend, Frontend, FrontendKind, Protocol, ServiceProgram};

const BACKENDS: usize = 4;
const HTTP_PORT: u16 = 8090;
const UDP_PORT: u16 = 5353;
const WRK_CONNECTIONS: u32 = 32;
const CONNECTS: usize = 2000;
const UDP_FLOWS: usize = 16;
/// Stands in for the endpoints of every Service but the one under test.
const OTHER_ENDPOINT: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    /// Direct, with an XDP program that only returns XDP_PASS on the node's external veth:
    /// what XDP itself costs on a veth.
    DirectXdpPass,
    Xdp,
    Tc,
    Nftables,
    Iptables,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct (no NAT)",
            Mode::DirectXdpPass => "direct + XDP_PASS",
            Mode::Xdp => "lb, XDP on ext0",
            Mode::Tc => "lb, TC on ext0",
            Mode::Nftables => "kube-proxy nftables",
            Mode::Iptables => "kube-proxy iptables",
        }
    }
}

/// One round's figures for one mode.
#[derive(Clone, Copy, Default)]
struct Sample {
    keep_alive: WrkResult,
    close: WrkResult,
    udp_pps: f64,
}

/// The lab of one mode: with or without the datapath loaded.
enum ModeLab {
    Datapath(Box<Lab>),
    /// Field order is drop order: the floor program before the namespaces.
    Bare {
        _floor: Option<Box<aya::Ebpf>>,
        net: Topology,
    },
}

impl ModeLab {
    fn net(&self) -> &Topology {
        match self {
            ModeLab::Datapath(lab) => &lab.net,
            ModeLab::Bare { net, .. } => net,
        }
    }
}

/// Attaches the XDP_PASS-only floor program to the node's `ext0`.
fn attach_xdp_pass(net: &Topology) -> aya::Ebpf {
    let mut floors =
        aya::Ebpf::load(lb_userspace::EBPF_FLOORS_OBJECT).unwrap_or_else(|e| panic!("floors: {e}"));
    let prog: &mut aya::programs::Xdp = floors
        .program_mut("floor_pass")
        .and_then(|p| p.try_into().ok())
        .unwrap_or_else(|| panic!("floor_pass is not an XDP program"));
    prog.load().unwrap_or_else(|e| panic!("loading floor_pass: {e}"));
    let _inside = net.node.enter();
    prog.attach("ext0", aya::programs::XdpMode::Default)
        .unwrap_or_else(|e| panic!("attaching floor_pass to ext0: {e}"));
    floors
}

/// A mode's live lab, measured in turns with the others.
struct Subject {
    mode: Mode,
    services: usize,
    setup: Duration,
    _servers: BenchServers,
    lab: ModeLab,
    tcp: SocketAddr,
    udp: SocketAddr,
    samples: Vec<Sample>,
    connect_us: (f64, f64),
}

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8)
}

fn baseline(services: usize, backends: &[Ipv4Addr]) -> Vec<BaselineService> {
    let target = services / 2;
    let mut all: Vec<BaselineService> = (0..services)
        .map(|i| BaselineService {
            name: format!("bench/svc-{i}:http"),
            frontend: SocketAddrV4::new(vip(i), 80),
            proto: Proto::Tcp,
            endpoints: if i == target {
                backends.iter().map(|b| SocketAddrV4::new(*b, HTTP_PORT)).collect()
            } else {
                vec![SocketAddrV4::new(OTHER_ENDPOINT, HTTP_PORT)]
            },
        })
        .collect();
    all.push(BaselineService {
        name: format!("bench/svc-{target}:dns"),
        frontend: SocketAddrV4::new(vip(target), 53),
        proto: Proto::Udp,
        endpoints: backends.iter().map(|b| SocketAddrV4::new(*b, UDP_PORT)).collect(),
    });
    all
}

/// Loads a ruleset into the node's namespace with `program` reading it on stdin.
fn load_rules(node: &NetNs, program: &str, rules: &str) {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.name(), program])
        .args(if program == "nft" { &["-f", "-"][..] } else { &[][..] })
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes()).unwrap_or_else(|e| panic!("{program} stdin: {e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr).lines().take(5).collect::<Vec<_>>().join("\n")
    );
}

fn program_datapath(lab: &mut Lab, services: usize, backends: &[Ipv4Addr]) {
    let target = services / 2;
    let frontend = |addr: Ipv4Addr, port, protocol| Frontend {
        addr: IpAddr::V4(addr),
        port,
        protocol,
        kind: FrontendKind::ClusterIp,
    };
    for i in 0..services {
        let mut svc = if i == target {
            ServiceProgram::new(
                i as u32,
                vec![frontend(vip(i), 80, Protocol::Tcp)],
                backends.iter().map(|b| Backend::active(IpAddr::V4(*b), HTTP_PORT)).collect(),
            )
        } else {
            let mut svc = ServiceProgram::new(
                i as u32,
                vec![frontend(vip(i), 80, Protocol::Tcp)],
                vec![Backend::active(IpAddr::V4(OTHER_ENDPOINT), HTTP_PORT)],
            );
            svc.maglev_m = 1021; // the others only need to exist
            svc
        };
        svc.id = i as u32;
        lab.services.apply(&svc).unwrap_or_else(|e| panic!("service {i}: {e}"));
    }
    let dns = ServiceProgram::new(
        services as u32,
        vec![frontend(vip(target), 53, Protocol::Udp)],
        backends.iter().map(|b| Backend::active(IpAddr::V4(*b), UDP_PORT)).collect(),
    );
    lab.services.apply(&dns).unwrap_or_else(|e| panic!("udp service: {e}"));
}

impl Subject {
    fn new(mode: Mode, services: usize) -> Self {
        let start = Instant::now();
        let mut lab = match mode {
            Mode::Xdp => Lab::with_external_hook(BACKENDS, ExternalHook::Xdp),
            Mode::Tc => Lab::with_external_hook(BACKENDS, ExternalHook::Tc),
            Mode::Direct | Mode::DirectXdpPass | Mode::Nftables | Mode::Iptables => {
                let t = Topology::new(BACKENDS);
                let backends: Vec<Ipv4Addr> = t.backends.iter().map(|b| b.v4).collect();
                let rules = baseline(services, &backends);
                match mode {
                    Mode::Nftables => load_rules(&t.node, "nft", &nftables_ruleset(&rules)),
                    Mode::Iptables => {
                        load_rules(&t.node, "iptables-restore", &iptables_restore(&rules))
                    }
                    _ => {}
                }
                let floor = (mode == Mode::DirectXdpPass).then(|| Box::new(attach_xdp_pass(&t)));
                return Self::ready(mode, services, start, ModeLab::Bare { _floor: floor, net: t });
            }
        };
        let backends: Vec<Ipv4Addr> = lab.net.backends.iter().map(|b| b.v4).collect();
        program_datapath(&mut lab, services, &backends);
        Self::ready(mode, services, start, ModeLab::Datapath(Box::new(lab)))
    }

    fn ready(mode: Mode, services: usize, start: Instant, lab: ModeLab) -> Self {
        let setup = start.elapsed();
        let net = lab.net();
        net.client.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
        net.client.sysctl("net.ipv4.tcp_tw_reuse", "1");
        let namespaces: Vec<&NetNs> = net.backends.iter().map(|b| &b.ns).collect();
        let servers = BenchServers::start(&namespaces, HTTP_PORT, UDP_PORT);
        let first_backend = IpAddr::V4(net.backends[0].v4);
        let (tcp, udp) = match mode {
            Mode::Direct | Mode::DirectXdpPass => (
                SocketAddr::new(first_backend, HTTP_PORT),
                SocketAddr::new(first_backend, UDP_PORT),
            ),
            _ => (
                SocketAddr::new(IpAddr::V4(vip(services / 2)), 80),
                SocketAddr::new(IpAddr::V4(vip(services / 2)), 53),
            ),
        };
        // Warm-up: neighbour entries, server tasks; also proves the path works.
        let warm = load::wrk(&net.client, &format!("http://{tcp}/"), 1, WRK_CONNECTIONS, false);
        assert_eq!(warm.errors, 0, "{}: errors in the warm-up", mode.name());
        Self {
            mode,
            services,
            setup,
            _servers: servers,
            lab,
            tcp,
            udp,
            samples: Vec::new(),
            connect_us: (0.0, 0.0),
        }
    }

    fn measure_round(&mut self, seconds: u32) {
        let net = self.lab.net();
        let url = format!("http://{}/", self.tcp);
        let keep_alive = load::wrk(&net.client, &url, seconds, WRK_CONNECTIONS, false);
        let close = load::wrk(&net.client, &url, seconds, WRK_CONNECTIONS, true);
        let pod_ifs: Vec<String> = (0..BACKENDS).map(|i| format!("pod{i}")).collect();
        let before = load::tx_packets(&net.node, &pod_ifs);
        let udp_time = Duration::from_secs(u64::from(seconds));
        let sent = load::udp_blast(&net.client, self.udp, UDP_FLOWS, udp_time);
        std::thread::sleep(Duration::from_millis(100)); // let the queues drain
        let forwarded = load::tx_packets(&net.node, &pod_ifs).saturating_sub(before);
        if forwarded < sent / 2 {
            eprintln!(
                "note: {}: {forwarded} of {sent} UDP packets forwarded (the rest were dropped on the way)",
                self.mode.name()
            );
        }
        self.samples.push(Sample {
            keep_alive,
            close,
            udp_pps: forwarded as f64 / udp_time.as_secs_f64(),
        });
    }

    /// The median round of each figure.
    fn median(&self) -> Sample {
        let med = |f: &dyn Fn(&Sample) -> f64| {
            let mut v: Vec<f64> = self.samples.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let wrk = |f: &dyn Fn(&Sample) -> &WrkResult| WrkResult {
            requests_per_s: med(&|s| f(s).requests_per_s),
            p50_us: med(&|s| f(s).p50_us),
            p99_us: med(&|s| f(s).p99_us),
            errors: self.samples.iter().map(|s| f(s).errors).sum(),
        };
        Sample {
            keep_alive: wrk(&|s| &s.keep_alive),
            close: wrk(&|s| &s.close),
            udp_pps: med(&|s| s.udp_pps),
        }
    }
}

fn print_row(subject: &Subject, direct: &Sample) {
    let r = subject.median();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!(
        "{:<20} {:>8} {:>7.1}s {:>9.0} {:>5.2}x {:>7.0} {:>7.0} {:>9.0} {:>5.2}x {:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>8.0}k {:>5.2}x {:>6}",
        subject.mode.name(),
        if matches!(subject.mode, Mode::Direct | Mode::DirectXdpPass) {
            "-".to_owned()
        } else {
            subject.services.to_string()
        },
        subject.setup.as_secs_f64(),
        r.keep_alive.requests_per_s,
        ratio(r.keep_alive.requests_per_s, direct.keep_alive.requests_per_s),
        r.keep_alive.p50_us,
        r.keep_alive.p99_us,
        r.close.requests_per_s,
        ratio(r.close.requests_per_s, direct.close.requests_per_s),
        r.close.p50_us,
        r.close.p99_us,
        subject.connect_us.0,
        subject.connect_us.1,
        r.udp_pps / 1e3,
        ratio(r.udp_pps, direct.udp_pps),
        r.keep_alive.errors + r.close.errors,
    );
}

fn main() {
    if !lb_tests::root::is_root() {
        eprintln!("lb-e2e-bench: needs root (namespaces, XDP, netfilter)");
        std::process::exit(1);
    }
    for tool in ["wrk", "nft", "iptables-restore"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
        if !found.is_ok_and(|o| o.status.success()) {
            eprintln!("lb-e2e-bench: {tool} is missing (cargo xtask setup installs it)");
            std::process::exit(1);
        }
    }
    let env = |name: &str, default: u32| -> u32 {
        std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let seconds = env("LB_E2E_SECONDS", 2);
    let rounds = env("LB_E2E_ROUNDS", 3);
    let counts: Vec<usize> = std::env::var("LB_E2E_SERVICES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 1000, 10_000]);
    let iptables = Command::new("iptables-restore").arg("--version").output();
    println!(
        "end to end: HTTP and UDP through the node, {BACKENDS} backends, wrk -t1 -c{WRK_CONNECTIONS}, {seconds}s per figure per round; {}",
        iptables.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
    );
    println!(
        "{:<20} {:>8} {:>8} {:>16} {:>7} {:>7} {:>16} {:>7} {:>7} {:>15} {:>16} {:>6}",
        "", "", "", "keep-alive", "", "", "Connection: close", "", "", "connect", "UDP 18 B", ""
    );
    println!(
        "{:<20} {:>8} {:>8} {:>9} {:>6} {:>7} {:>7} {:>9} {:>6} {:>7} {:>7} {:>7} {:>7} {:>9} {:>6} {:>6}",
        "mode",
        "services",
        "setup",
        "req/s",
        "x dir",
        "p50 us",
        "p99 us",
        "req/s",
        "x dir",
        "p50 us",
        "p99 us",
        "p50 us",
        "p99 us",
        "pps",
        "x dir",
        "errors"
    );
    let mut direct = Subject::new(Mode::Direct, 0);
    let mut direct_xdp = Subject::new(Mode::DirectXdpPass, 0);
    let mut summary = Vec::new();
    for &n in &counts {
        let mut subjects: Vec<Subject> = [Mode::Xdp, Mode::Tc, Mode::Nftables, Mode::Iptables]
            .into_iter()
            .map(|mode| Subject::new(mode, n))
            .collect();
        direct.samples.clear();
        direct_xdp.samples.clear();
        for _ in 0..rounds {
            direct.measure_round(seconds);
            direct_xdp.measure_round(seconds);
            for s in &mut subjects {
                s.measure_round(seconds);
            }
        }
        for s in [&mut direct, &mut direct_xdp].into_iter().chain(subjects.iter_mut()) {
            s.connect_us = load::connect_times(&s.lab.net().client, s.tcp, CONNECTS);
        }
        let base = direct.median();
        print_row(&direct, &base);
        print_row(&direct_xdp, &base);
        for s in &subjects {
            print_row(s, &base);
        }
        let get = |m: Mode| subjects.iter().find(|s| s.mode == m).map(Subject::median);
        if let (Some(xdp), Some(tc), Some(nft), Some(ipt)) =
            (get(Mode::Xdp), get(Mode::Tc), get(Mode::Nftables), get(Mode::Iptables))
        {
            summary.push((n, xdp, tc, nft, ipt));
        }
    }

    println!(
        "\nlb against kube-proxy's mechanisms at the same Service count; new-connection / keep-alive / UDP rates, XDP on ext0 | TC on ext0:"
    );
    let x = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    for (n, xdp, tc, nft, ipt) in summary {
        let vs = |base: &Sample| {
            format!(
                "{:.2}x / {:.2}x / {:.2}x | {:.2}x / {:.2}x / {:.2}x",
                x(xdp.close.requests_per_s, base.close.requests_per_s),
                x(xdp.keep_alive.requests_per_s, base.keep_alive.requests_per_s),
                x(xdp.udp_pps, base.udp_pps),
                x(tc.close.requests_per_s, base.close.requests_per_s),
                x(tc.keep_alive.requests_per_s, base.keep_alive.requests_per_s),
                x(tc.udp_pps, base.udp_pps),
            )
        };
        println!("{n:>6} Services: vs nftables {}; vs iptables {}", vs(&nft), vs(&ipt));
    }
    println!(
        "figures: median of {rounds} rounds taken in turn across the modes ('x dir': against the direct run of the same rounds); setup: building the lab and programming the Services (kube-proxy modes: nft -f / iptables-restore of the ruleset); connect: {CONNECTS} connect() calls; UDP: {UDP_FLOWS} flows, sendmmsg, packets the node forwarded to the backends per second; balanced packets go up the node's IP stack to be forwarded in every mode"
    );
}
