//! `cargo xtask bench`: benchmarks (figures printed, never asserted): the datapath's cost
//! per packet and the control plane's sync times and memory.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{is_root, run_cmd, step, workspace_root};

pub fn run() -> Result<()> {
    if !is_root() {
        bail!("benchmarks run BPF programs (BPF_PROG_TEST_RUN): run as root");
    }
    crate::setup::run()?;
    step("building (release)");
    let root = workspace_root();
    run_cmd(
        Command::new("cargo")
            .current_dir(&root)
            .args(["build", "--release", "-q", "-p", "lb-tests"])
            .args(["--bin", "lb-bench", "--bin", "lb-sync-bench", "--bin", "lb-maglev-bench"]),
    )?;
    step("datapath cost per packet");
    run_cmd(&mut Command::new(root.join("target/release/lb-bench")))?;
    step("control plane");
    run_cmd(&mut Command::new(root.join("target/release/lb-sync-bench")))?;
    step("Maglev quality");
    run_cmd(&mut Command::new(root.join("target/release/lb-maglev-bench")))
}
