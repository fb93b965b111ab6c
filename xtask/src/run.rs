//! `cargo xtask run`: set up, build, and run the lab binary (as root).

use std::process::Command;

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
}

impl Args {
    /// The non-interactive run the test command makes.
    pub fn once(requests: usize) -> Self {
        Self { once: true, requests, backends: 3 }
    }
}

pub fn run(args: &Args) -> Result<()> {
    if !is_root() {
        bail!("the lab needs root (network namespaces, XDP/TC, bpffs): run as root");
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
    let mut cmd = Command::new(root.join("target/release/lb-lab"));
    cmd.args(["--requests", &args.requests.to_string(), "--backends", &args.backends.to_string()]);
    if args.once {
        cmd.arg("--once");
    }
    run_cmd(&mut cmd)
}
