//! rustfmt and clippy. lb-ebpf is linted in its own pass on nightly: a workspace-wide pass
//! would unify lb-common's `user` feature (std + aya) into the eBPF crate.

use std::process::Command;

use anyhow::Result;

use crate::{run_cmd, step, workspace_root};

pub fn run() -> Result<()> {
    let root = workspace_root();
    step("rustfmt --check");
    run_cmd(Command::new("cargo").current_dir(&root).args(["fmt", "--all", "--check"]))?;
    step("clippy (host crates)");
    run_cmd(
        Command::new("cargo")
            .current_dir(&root)
            .args(["clippy", "--workspace", "--exclude", "lb-ebpf", "--all-targets"])
            .args(["--", "-D", "warnings"]),
    )?;
    step("clippy (lb-ebpf, bpfel-unknown-none)");
    run_cmd(Command::new("cargo").current_dir(root.join("lb-ebpf")).args([
        "+nightly",
        "clippy",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))
}
