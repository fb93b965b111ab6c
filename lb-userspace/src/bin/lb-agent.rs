//! lb-agent: turns Kubernetes Service/EndpointSlice manifests into the XDP/TC datapath and
//! keeps it in step as the manifests change.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lb_common::maps::{DEFAULT_CONNTRACK_SIZE, DEFAULT_MAGLEV_M, DatapathConfig};
use lb_userspace::{
    agent::{Agent, AgentConfig},
    datapath::{LoadOptions, detach_pinned_links, remove_pins},
    model::NodeConfig,
    net::Cidr,
};

#[derive(Parser)]
#[command(
    version,
    about,
    long_about = "Turns Kubernetes Service, EndpointSlice, Endpoints and Pod \
manifests into the eBPF/XDP load balancer's maps, and keeps them in step as the files change.\n\n\
Programs, links and maps are pinned under --pin-dir: stopping the agent (SIGTERM, Ctrl-C, even \
SIGKILL) leaves the datapath serving, and a new agent takes it over without dropping flows. \
`lb-agent cleanup` removes everything."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Detach the datapath and remove every pin and the saved allocations.
    Cleanup {
        #[arg(long, default_value = "/sys/fs/bpf/lb")]
        pin_dir: PathBuf,
        #[arg(long, default_value = "/var/lib/lb-agent/allocations.json")]
        state_file: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A manifest file, or a directory of *.yaml/*.yml/*.json files (watched for changes).
    #[arg(long, short = 'f')]
    manifests: Option<PathBuf>,
    /// This node's name: endpoints with this nodeName are local (traffic policy Local).
    #[arg(long, default_value_t = default_node_name())]
    node_name: String,
    /// A node address NodePorts listen on (repeatable).
    #[arg(long = "node-address")]
    node_addresses: Vec<IpAddr>,
    /// External interface: XDP for client traffic, TC egress for replies (repeatable).
    #[arg(long = "xdp-iface")]
    xdp_interfaces: Vec<String>,
    /// Pod-facing interface: TC ingress for pod-to-service traffic and TC egress for
    /// replies (repeatable).
    #[arg(long = "tc-iface")]
    tc_interfaces: Vec<String>,
    /// Service CIDRs ClusterIPs are allocated from, one per family.
    #[arg(long = "service-cidr", default_values = ["10.96.0.0/12", "fd00:10:96::/108"])]
    service_cidrs: Vec<Cidr>,
    /// LoadBalancer address pool, for LoadBalancer Services without an address (repeatable).
    #[arg(long = "lb-pool")]
    lb_pools: Vec<Cidr>,
    /// Maglev table size: a prime; larger means more even shares and less disruption.
    #[arg(long, default_value_t = DEFAULT_MAGLEV_M)]
    maglev_m: u32,
    /// Service programs (one per Service port, address family and frontend group) the maps
    /// are sized for.
    #[arg(long, default_value_t = 16384)]
    max_services: u32,
    /// Conntrack capacity (flows); the LRU evicts the oldest beyond it.
    #[arg(long, default_value_t = DEFAULT_CONNTRACK_SIZE)]
    conntrack_size: u32,
    /// Idle timeout of established TCP flows, seconds.
    #[arg(long, default_value_t = DatapathConfig::DEFAULT.ct_timeout_tcp_s)]
    ct_tcp_timeout: u32,
    /// Idle timeout of UDP flows, seconds.
    #[arg(long, default_value_t = DatapathConfig::DEFAULT.ct_timeout_udp_s)]
    ct_udp_timeout: u32,
    /// bpffs directory for pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/lb")]
    pin_dir: PathBuf,
    /// Where allocated ClusterIPs, NodePorts and LoadBalancer addresses are saved.
    #[arg(long, default_value = "/var/lib/lb-agent/allocations.json")]
    state_file: PathBuf,
    /// Poll interval, milliseconds: changes are seen at once through inotify, and checked
    /// every 20 polls as a safety net (every poll where inotify is unavailable).
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// Where to serve Prometheus metrics (`/metrics`); `off` to serve none.
    #[arg(long, default_value = "127.0.0.1:9108")]
    metrics_addr: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let args = cli.run;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    if let Some(Cmd::Cleanup { pin_dir, state_file }) = cli.command {
        let links = detach_pinned_links(&pin_dir)
            .with_context(|| format!("detaching links pinned under {}", pin_dir.display()))?;
        remove_pins(&pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
        match std::fs::remove_file(&state_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context(format!("removing {}", state_file.display()));
            }
            _ => {}
        }
        tracing::info!(
            "detached {links} links; removed {} (maps freed) and {}",
            pin_dir.display(),
            state_file.display()
        );
        return Ok(());
    }
    let manifests = args.manifests.context("--manifests is required (a file or a directory)")?;
    let mut node = NodeConfig::new(&args.node_name);
    node.node_addrs = args.node_addresses;
    node.service_cidrs = args.service_cidrs;
    node.lb_pools = args.lb_pools;
    node.maglev_m = args.maglev_m;
    let mut load = LoadOptions::new(&args.pin_dir);
    load.conntrack_size = args.conntrack_size;
    load.size_for(args.max_services, args.maglev_m);
    node.max_service_ids = load.max_service_ids;
    load.config.ct_timeout_tcp_s = args.ct_tcp_timeout;
    load.config.ct_timeout_udp_s = args.ct_udp_timeout;
    let metrics_addr = match args.metrics_addr.as_str() {
        "off" | "" => None,
        a => Some(a.parse().with_context(|| format!("--metrics-addr {a:?} is not ADDR:PORT"))?),
    };
    let cfg = AgentConfig {
        metrics_addr,
        manifests,
        node,
        xdp_interfaces: args.xdp_interfaces,
        tc_interfaces: args.tc_interfaces,
        load,
        state_file: args.state_file,
        poll_interval: Duration::from_millis(args.poll_ms.max(10)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let agent = Agent::start(cfg)?;
        agent.run(shutdown()).await
    })
}

/// SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
