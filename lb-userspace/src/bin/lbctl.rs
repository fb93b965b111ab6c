//! lbctl: inspect the load balancer's live state — from the pinned maps and the agent's
//! catalog, so it works whether or not the agent is running.
//!
//! Exit codes: 0 done, 1 cannot read the state, 2 bad usage, 3 what was asked for is not
//! there (no such Service, the flow matches no Service).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use lb_userspace::{
    catalog::Catalog,
    ctl::{self, parse_endpoint},
    datapath::Maps,
    services::Protocol,
};

#[derive(Parser)]
#[command(
    version,
    about = "Inspect the eBPF service load balancer (reads pinned maps; no agent needed)"
)]
struct Cli {
    /// bpffs directory the agent pinned its maps in.
    #[arg(long, global = true, default_value = "/sys/fs/bpf/lb")]
    pin_dir: PathBuf,
    /// The agent's --state-file; its catalog.json beside it names what the maps hold.
    #[arg(long, global = true, default_value = "/var/lib/lb-agent/allocations.json")]
    state_file: PathBuf,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Cmd {
    /// List Services or endpoints, like `kubectl get`.
    Get {
        #[command(subcommand)]
        what: GetWhat,
    },
    /// Per-backend and per-service counters, and drops by reason.
    Stats {
        /// Also measure rates over this many seconds.
        #[arg(long)]
        rates: Option<f64>,
    },
    /// Conntrack entries.
    Conntrack {
        #[command(subcommand)]
        what: CtWhat,
    },
    /// How a Service's Maglev table is shared among its backends.
    Maglev {
        /// NAMESPACE/NAME
        service: String,
    },
    /// Everything about one Service: ports, addresses, frontends, backends with state,
    /// weight, Maglev share and counters, affinity and traffic policy.
    Describe {
        #[command(subcommand)]
        what: DescribeWhat,
    },
    /// A live, refreshing view of per-backend traffic with rates (Ctrl-C to quit).
    Top {
        /// Column to sort by (descending).
        #[arg(long, value_enum, default_value_t = TopSort::FlowRate)]
        sort: TopSort,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes (default: until Ctrl-C).
        #[arg(long)]
        iterations: Option<u64>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Which Service and backend a flow gets, and why.
    Explain {
        /// Client ADDR[:PORT]
        src: String,
        /// Frontend ADDR:PORT
        dst: String,
        #[arg(value_enum, default_value_t = Proto::Tcp)]
        protocol: Proto,
        /// Also run a synthetic packet of the flow through the loaded program
        /// (BPF_PROG_TEST_RUN, on private copies of the maps: nothing live changes).
        #[arg(long)]
        live: bool,
    },
}

#[derive(Subcommand)]
enum GetWhat {
    Services,
    Endpoints,
}

#[derive(Clone, Copy, ValueEnum)]
enum TopSort {
    FlowRate,
    PacketRate,
    NewFlows,
    Packets,
    Bytes,
    Backend,
}

#[derive(Subcommand)]
enum DescribeWhat {
    Service {
        /// NAMESPACE/NAME
        name: String,
    },
}

#[derive(clap::Args, Clone)]
struct CtArgs {
    /// Only flows of NAMESPACE/NAME.
    #[arg(long)]
    service: Option<String>,
    /// Only flows to this backend ADDR:PORT.
    #[arg(long)]
    backend: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum CtWhat {
    List {
        #[command(flatten)]
        filter: CtArgs,
    },
    Count {
        #[command(flatten)]
        filter: CtArgs,
    },
    /// Delete entries (their next packet is balanced afresh, which may move the flow).
    Flush {
        #[command(flatten)]
        filter: CtArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.join("   ").trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r);
    }
}

/// Prints `v` as JSON or YAML (the structured outputs).
fn json(v: &impl serde::Serialize) -> ExitCode {
    let text = if STRUCTURED_YAML.load(std::sync::atomic::Ordering::Relaxed) {
        serde_yaml_ng::to_string(v).map_err(|e| e.to_string())
    } else {
        serde_json::to_string_pretty(v).map_err(|e| e.to_string())
    };
    match text {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lbctl: {e}");
            ExitCode::from(1)
        }
    }
}

static STRUCTURED_YAML: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut <Cli as clap::CommandFactory>::command(),
            "lbctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    STRUCTURED_YAML.store(matches!(cli.output, Output::Yaml), std::sync::atomic::Ordering::Relaxed);
    let catalog = match Catalog::load(&Catalog::path_for(&cli.state_file)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lbctl: {e}");
            return ExitCode::from(1);
        }
    };
    let maps = match Maps::open_pinned(&cli.pin_dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("lbctl: {e}");
            return ExitCode::from(1);
        }
    };
    let as_json = !matches!(cli.output, Output::Table);
    match cli.command {
        Cmd::Get { what: GetWhat::Services } => {
            if as_json {
                return json(&catalog.services);
            }
            let rows = catalog
                .services
                .iter()
                .map(|s| {
                    let ready: usize = catalog
                        .programs
                        .iter()
                        .filter(|p| {
                            p.service() == format!("{}/{}", s.namespace, s.name)
                                && p.scope() == "cluster"
                        })
                        .map(|p| {
                            p.program
                                .backends
                                .iter()
                                .filter(|b| b.state == lb_userspace::services::BackendState::Active)
                                .count()
                        })
                        .sum();
                    let ips = |v: &[std::net::IpAddr]| {
                        if v.is_empty() {
                            "<none>".to_owned()
                        } else {
                            v.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
                        }
                    };
                    vec![
                        s.namespace.clone(),
                        s.name.clone(),
                        s.type_.clone(),
                        ips(&s.cluster_ips),
                        ips(&s.external_ips),
                        if s.ports.is_empty() { "<none>".into() } else { s.ports.join(",") },
                        ready.to_string(),
                        s.not_programmed
                            .clone()
                            .map_or("programmed".into(), |r| format!("not programmed: {r}")),
                    ]
                })
                .collect();
            table(
                &[
                    "NAMESPACE",
                    "NAME",
                    "TYPE",
                    "CLUSTER-IP",
                    "EXTERNAL-IP",
                    "PORT(S)",
                    "READY",
                    "DATAPATH",
                ],
                rows,
            );
        }
        Cmd::Get { what: GetWhat::Endpoints } => {
            let rows = ctl::endpoints(&maps, &catalog);
            if as_json {
                return json(&rows);
            }
            table(
                &[
                    "SERVICE",
                    "PORT",
                    "FAMILY",
                    "FRONTENDS",
                    "BACKEND",
                    "STATE",
                    "WEIGHT",
                    "MAGLEV",
                    "NEW FLOWS",
                    "PACKETS",
                ],
                rows.into_iter()
                    .map(|r| {
                        vec![
                            r.service,
                            r.port,
                            r.family,
                            r.scope,
                            r.backend.to_string(),
                            r.state,
                            r.weight.to_string(),
                            format!("{:.1}%", r.maglev_share),
                            r.new_flows.to_string(),
                            r.packets.to_string(),
                        ]
                    })
                    .collect(),
            );
        }
        Cmd::Stats { rates } => {
            let first = ctl::stats(&maps, &catalog);
            let (s, rate) = match rates {
                Some(secs) => {
                    let secs = secs.clamp(0.1, 3600.0);
                    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
                    let second = ctl::stats(&maps, &catalog);
                    let before: std::collections::BTreeMap<_, _> = first
                        .backends
                        .iter()
                        .map(|b| (b.backend, (b.packets, b.new_flows)))
                        .collect();
                    let rate: std::collections::BTreeMap<_, _> = second
                        .backends
                        .iter()
                        .map(|b| {
                            let (p, f) =
                                before.get(&b.backend).copied().unwrap_or((b.packets, b.new_flows));
                            (
                                b.backend,
                                ((b.packets - p) as f64 / secs, (b.new_flows - f) as f64 / secs),
                            )
                        })
                        .collect();
                    (second, Some(rate))
                }
                None => (first, None),
            };
            if as_json {
                let rates: Option<Vec<_>> = rate.as_ref().map(|r| {
                    r.iter().map(|(b, (p, f))| serde_json::json!({"backend": b, "packets_per_s": p, "new_flows_per_s": f})).collect()
                });
                return json(
                    &serde_json::json!({ "backends": s.backends, "services": s.services, "drops": s.drops, "rates": rates }),
                );
            }
            let r = |b: &std::net::SocketAddr, which: usize| {
                rate.as_ref()
                    .and_then(|r| r.get(b))
                    .map_or("-".into(), |(p, f)| format!("{:.1}", if which == 0 { *p } else { *f }))
            };
            table(
                &["BACKEND", "ID", "STATE", "PACKETS", "BYTES", "NEW FLOWS", "PKTS/S", "FLOWS/S"],
                s.backends
                    .iter()
                    .map(|b| {
                        vec![
                            b.backend.to_string(),
                            b.id.to_string(),
                            b.state.clone(),
                            b.packets.to_string(),
                            b.bytes.to_string(),
                            b.new_flows.to_string(),
                            r(&b.backend, 0),
                            r(&b.backend, 1),
                        ]
                    })
                    .collect(),
            );
            println!();
            table(
                &[
                    "SERVICE",
                    "PORT",
                    "FAMILY",
                    "FRONTENDS",
                    "PACKETS",
                    "BYTES",
                    "NEW FLOWS",
                    "DROPS",
                ],
                s.services
                    .iter()
                    .map(|p| {
                        vec![
                            p.service.clone(),
                            p.port.clone(),
                            p.family.clone(),
                            p.scope.clone(),
                            p.packets.to_string(),
                            p.bytes.to_string(),
                            p.new_flows.to_string(),
                            p.drops.to_string(),
                        ]
                    })
                    .collect(),
            );
            println!();
            table(
                &["DROP REASON", "PACKETS"],
                s.drops.iter().map(|(k, v)| vec![k.clone(), v.to_string()]).collect(),
            );
        }
        Cmd::Conntrack { what } => {
            let (CtWhat::List { filter } | CtWhat::Count { filter } | CtWhat::Flush { filter }) =
                &what;
            let f = ctl::CtFilter { service: filter.service.as_deref(), backend: filter.backend };
            match what {
                CtWhat::Flush { .. } => {
                    let mut maps = maps;
                    match ctl::conntrack_flush(&mut maps, &catalog, f) {
                        Ok(n) if as_json => return json(&serde_json::json!({ "flushed": n })),
                        Ok(n) => println!("flushed {n} flows"),
                        Err(e) => {
                            eprintln!("lbctl: {e}");
                            return ExitCode::from(1);
                        }
                    }
                }
                CtWhat::Count { .. } => {
                    let n = ctl::conntrack(&maps, &catalog, f).len();
                    if as_json {
                        return json(&serde_json::json!({ "entries": n }));
                    }
                    println!("{n}");
                }
                CtWhat::List { .. } => {
                    let rows = ctl::conntrack(&maps, &catalog, f);
                    if as_json {
                        return json(&rows);
                    }
                    table(
                        &["CLIENT", "FRONTEND", "PROTO", "BACKEND", "SERVICE", "IDLE"],
                        rows.into_iter()
                            .map(|r| {
                                vec![
                                    r.client.to_string(),
                                    r.frontend.to_string(),
                                    r.protocol,
                                    r.backend.map_or("<gone>".into(), |b| b.to_string()),
                                    r.service.unwrap_or_default(),
                                    format!("{:.0}s", r.idle_s),
                                ]
                            })
                            .collect(),
                    );
                }
            }
        }
        Cmd::Maglev { service } => {
            let rows = ctl::maglev(&maps, &catalog, &service);
            if rows.is_empty() {
                eprintln!(
                    "lbctl: no programmed Service {service:?} (NAMESPACE/NAME; see `lbctl get services`)"
                );
                return ExitCode::from(3);
            }
            if as_json {
                return json(&rows);
            }
            table(
                &["PROGRAM", "BACKEND", "SLOTS", "SHARE", "M"],
                rows.into_iter()
                    .map(|r| {
                        vec![
                            r.program,
                            r.backend.to_string(),
                            r.slots.to_string(),
                            format!("{:.2}%", r.share),
                            r.m.to_string(),
                        ]
                    })
                    .collect(),
            );
        }
        Cmd::Completions { .. } => {}
        Cmd::Top { sort, interval, iterations } => {
            top(&maps, &catalog, sort, interval, iterations);
        }
        Cmd::Describe { what: DescribeWhat::Service { name } } => {
            let Some(d) = ctl::describe(&maps, &catalog, &name) else {
                eprintln!("lbctl: no Service {name:?} (NAMESPACE/NAME; see `lbctl get services`)");
                return ExitCode::from(3);
            };
            if as_json {
                return json(&d);
            }
            let s = &d.summary;
            println!("Name:          {}", s.name);
            println!("Namespace:     {}", s.namespace);
            println!("Type:          {}", s.type_);
            println!(
                "Cluster IPs:   {}",
                s.cluster_ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
            println!(
                "External IPs:  {}",
                s.external_ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
            println!("Ports:         {}", s.ports.join(", "));
            println!("Source file:   {}", s.file.display());
            println!(
                "Datapath:      {}",
                s.not_programmed
                    .as_deref()
                    .map_or("programmed".into(), |r| format!("not programmed: {r}"))
            );
            for p in &d.programs {
                println!("\n{} (service id {})", p.key, p.id);
                println!("  Frontends:   {}", p.frontends.join(", "));
                println!(
                    "  Affinity:    {}",
                    p.affinity_timeout_s.map_or("None".into(), |t| format!("ClientIP, {t} s"))
                );
                println!(
                    "  Policy:      {}",
                    if p.local_only { "Local (this node's endpoints)" } else { "Cluster" }
                );
                if !p.source_ranges.is_empty() {
                    println!("  Sources:     {}", p.source_ranges.join(", "));
                }
                println!(
                    "  Counters:    {} packets, {} bytes, {} new flows, {} drops",
                    p.packets, p.bytes, p.new_flows, p.drops
                );
                table(
                    &["  BACKEND", "STATE", "WEIGHT", "MAGLEV", "NEW FLOWS", "PACKETS"],
                    p.backends
                        .iter()
                        .map(|b| {
                            vec![
                                format!("  {}", b.backend),
                                b.state.clone(),
                                b.weight.to_string(),
                                format!("{:.1}%", b.maglev_share),
                                b.new_flows.to_string(),
                                b.packets.to_string(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Cmd::Explain { src, dst, protocol, live } => {
            let (client, frontend) = match (parse_endpoint(&src), parse_endpoint(&dst)) {
                (Ok(c), Ok(f)) => (c, f),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("lbctl: {e}");
                    return ExitCode::from(2);
                }
            };
            let proto = match protocol {
                Proto::Tcp => Protocol::Tcp,
                Proto::Udp => Protocol::Udp,
            };
            let e = ctl::explain(&maps, &catalog, client, frontend, proto);
            let found = e.service.is_some();
            let run = if live {
                match ctl::explain_live(&maps, client, frontend, proto) {
                    Ok(r) => Some(r),
                    Err(err) => {
                        eprintln!("lbctl: running the synthetic packet: {err}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                None
            };
            if as_json {
                json(&serde_json::json!({ "explanation": e, "live": run }));
            } else {
                println!("flow:     {} -> {} {}", e.client, e.frontend, e.protocol);
                println!("service:  {}", e.service.as_deref().unwrap_or("<none>"));
                println!("backend:  {}", e.backend.map_or("<none>".into(), |b| b.to_string()));
                println!("why:      {}", e.reason);
                if let Some(r) = run {
                    let addr =
                        |a: Option<std::net::SocketAddr>| a.map_or("?".into(), |a| a.to_string());
                    println!(
                        "live:     {} in {} ns; out: {} -> {}; checksums {}",
                        r.verdict,
                        r.duration_ns,
                        addr(r.source_after),
                        addr(r.destination_after),
                        if r.checksums_ok { "valid" } else { "INVALID" }
                    );
                }
            }
            if !found {
                return ExitCode::from(3);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Redraws a table of per-backend counters and rates every `interval` seconds.
fn top(maps: &Maps, catalog: &Catalog, sort: TopSort, interval: f64, iterations: Option<u64>) {
    use std::collections::BTreeMap;
    let interval = std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
    // Which Service port(s) each backend serves, for the SERVICE column.
    let mut users: BTreeMap<std::net::SocketAddr, Vec<String>> = BTreeMap::new();
    for p in &catalog.programs {
        for b in &p.program.backends {
            let v = users.entry(std::net::SocketAddr::new(b.addr, b.port)).or_default();
            let name = format!("{}:{}", p.service(), p.port());
            if !v.contains(&name) {
                v.push(name);
            }
        }
    }
    // Packets and new flows per backend at the last refresh.
    type Sample = BTreeMap<std::net::SocketAddr, (u64, u64)>;
    let mut last: Option<(std::time::Instant, Sample)> = None;
    let mut n = 0u64;
    loop {
        let now = std::time::Instant::now();
        let stats = ctl::stats(maps, catalog);
        let mut rows: Vec<(String, String, u64, u64, u64, f64, f64)> = stats
            .backends
            .iter()
            .map(|b| {
                let (fr, pr) = last
                    .as_ref()
                    .and_then(|(t, prev)| {
                        let (pp, pf) = prev.get(&b.backend)?;
                        let dt = now.duration_since(*t).as_secs_f64().max(1e-9);
                        Some(((b.new_flows - pf) as f64 / dt, (b.packets - pp) as f64 / dt))
                    })
                    .unwrap_or((0.0, 0.0));
                let svc = users.get(&b.backend).map(|v| v.join(",")).unwrap_or_default();
                (b.backend.to_string(), svc, b.packets, b.bytes, b.new_flows, fr, pr)
            })
            .collect();
        rows.sort_by(|a, b| match sort {
            TopSort::FlowRate => b.5.total_cmp(&a.5),
            TopSort::PacketRate => b.6.total_cmp(&a.6),
            TopSort::NewFlows => b.4.cmp(&a.4),
            TopSort::Packets => b.2.cmp(&a.2),
            TopSort::Bytes => b.3.cmp(&a.3),
            TopSort::Backend => a.0.cmp(&b.0),
        });
        // Clear the screen and home the cursor, then draw.
        print!("\x1b[2J\x1b[H");
        let drops: u64 = stats.drops.values().sum();
        println!(
            "lbctl top: {} backends, {} drops; refresh {:.1} s; Ctrl-C to quit\n",
            rows.len(),
            drops,
            interval.as_secs_f64()
        );
        table(
            &["BACKEND", "SERVICE", "FLOWS/S", "PKTS/S", "NEW FLOWS", "PACKETS", "BYTES"],
            rows.iter()
                .map(|r| {
                    vec![
                        r.0.clone(),
                        r.1.clone(),
                        format!("{:.1}", r.5),
                        format!("{:.1}", r.6),
                        r.4.to_string(),
                        r.2.to_string(),
                        r.3.to_string(),
                    ]
                })
                .collect(),
        );
        last = Some((
            now,
            stats.backends.iter().map(|b| (b.backend, (b.packets, b.new_flows))).collect(),
        ));
        n += 1;
        if iterations.is_some_and(|max| n >= max) {
            return;
        }
        std::thread::sleep(interval);
    }
}
