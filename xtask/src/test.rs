//! Every test, as CI runs it.

use std::process::Command;

use anyhow::Result;

use crate::{is_root, run_cmd, step, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Skip rustfmt/clippy.
    #[arg(long)]
    no_lint: bool,
    /// Extra arguments for `cargo test` (e.g. a test name filter).
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    crate::setup::run()?;
    if !args.no_lint {
        crate::lint::run()?;
    }
    if !is_root() {
        eprintln!(
            "\n!!! NOT ROOT: the datapath (BPF_PROG_TEST_RUN) and lab (netns, XDP/TC) tests will \
             SKIP. Run `cargo xtask test` as root to run them. !!!\n"
        );
    }
    step("cargo test (unit, datapath, lab)");
    run_cmd(
        Command::new("cargo")
            .current_dir(workspace_root())
            .args(["test", "--workspace", "--exclude", "lb-ebpf"])
            .args(&args.cargo_args),
    )
}
