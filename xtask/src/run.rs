//! `cargo xtask run`: set up, build, and run the lab (as root) — or, with `--host`, the agent
//! on this machine's own interfaces and manifests.

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::{is_root, run_cmd, step, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Stop after the traffic check instead of showing live counters (non-interactive).
    #[arg(long)]
    once: bool,
    /// Requests per service in the traffic check.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Number of backend pods.
    #[arg(long, default_value_t = 3)]
    backends: usize,
    /// Run lb-agent on this host instead of the lab: needs --manifests and at least one of
    /// --xdp-iface/--tc-iface. Every argument after `--` goes to lb-agent as is.
    #[arg(long)]
    host: bool,
    /// With --host: a manifest file or directory.
    #[arg(long, requires = "host")]
    manifests: Option<PathBuf>,
    /// With --host: external interfaces (XDP).
    #[arg(long = "xdp-iface", requires = "host")]
    xdp_interfaces: Vec<String>,
    /// With --host: pod-facing interfaces (TC).
    #[arg(long = "tc-iface", requires = "host")]
    tc_interfaces: Vec<String>,
    /// With --host: more lb-agent arguments (see `lb-agent --help`).
    #[arg(last = true)]
    agent_args: Vec<String>,
}

impl Args {
    /// The non-interactive lab run the test command makes.
    pub fn once(requests: usize) -> Self {
        Self {
            once: true,
            requests,
            backends: 3,
            host: false,
            manifests: None,
            xdp_interfaces: Vec::new(),
            tc_interfaces: Vec::new(),
            agent_args: Vec::new(),
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    if !is_root() {
        bail!(
            "the datapath needs root (XDP/TC, bpffs; the lab also network namespaces): run as root"
        );
    }
    crate::setup::run()?;
    step("building (release)");
    let root = workspace_root();
    run_cmd(
        Command::new("cargo")
            .current_dir(&root)
            .args(["build", "--release", "-q", "-p", "lb-tests", "--bin", "lb-lab"])
            .args(["-p", "lb-userspace", "--bin", "lb-agent", "--bin", "lbctl"]),
    )?;
    if args.host {
        let Some(manifests) = &args.manifests else {
            bail!("--host needs --manifests FILE|DIR");
        };
        if args.xdp_interfaces.is_empty() && args.tc_interfaces.is_empty() {
            bail!("--host needs at least one --xdp-iface or --tc-iface");
        }
        step(
            "starting lb-agent on this host (Ctrl-C stops it; the datapath keeps serving until `lb-agent cleanup`)",
        );
        let mut cmd = Command::new(root.join("target/release/lb-agent"));
        cmd.arg("--manifests").arg(manifests);
        for i in &args.xdp_interfaces {
            cmd.args(["--xdp-iface", i]);
        }
        for i in &args.tc_interfaces {
            cmd.args(["--tc-iface", i]);
        }
        cmd.args(&args.agent_args);
        return run_cmd(&mut cmd);
    }
    let mut cmd = Command::new(root.join("target/release/lb-lab"));
    cmd.args(["--requests", &args.requests.to_string(), "--backends", &args.backends.to_string()]);
    if args.once {
        cmd.arg("--once");
    }
    run_cmd(&mut cmd)
}
