//! Project workflows: `cargo xtask <command>`.
//!
//! # Layout
//! - [`setup`]: installs what a fresh machine lacks (idempotent, quick when done).
//! - [`test`]: lint, then every test (root-only ones run for real as root).
//! - [`lint`]: rustfmt and clippy, with lb-ebpf in its own pass.
//! - [`run`]: the lab, end to end.
//! - [`bench`]: figures, printed with their baselines.
//! - [`clean`]: removes leftovers of interrupted runs (namespaces and pins named `lbt-*`).
//!
//! xtask deliberately depends on none of the project's crates: building them needs the
//! toolchain that `setup` installs.

mod bench;
mod clean;
mod lint;
mod run;
mod setup;
mod test;

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test and run the eBPF service load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: nightly rust-src, bpf-linker (against nightly's LLVM),
    /// and the Debian packages the lab uses (iproute2, ethtool).
    Setup,
    /// Lint and run every test. Root-only tests (BPF, netns) skip loudly when not root.
    Test(test::Args),
    /// rustfmt check and clippy -D warnings (host crates, then lb-ebpf on nightly).
    Lint,
    /// Build and run the lab: namespaces, datapath, example services, traffic, counters.
    Run(run::Args),
    /// Benchmarks: datapath ns/packet against XDP floors measured in the same run.
    Bench,
    /// Remove namespaces and bpffs pins left by interrupted tests or labs (`lbt-*`).
    Clean,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::Test(args) => test::run(&args),
        Cmd::Lint => lint::run(),
        Cmd::Run(args) => run::run(&args),
        Cmd::Bench => bench::run(),
        Cmd::Clean => clean::run(),
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs a command to completion, failing with the command line when it fails.
fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Prints a progress line for a long step.
fn step(msg: &str) {
    eprintln!("==> {msg}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
