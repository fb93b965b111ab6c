//! `cargo xtask bench`: benchmarks (figures printed, never asserted): the datapath's cost
//! per packet, the control plane's sync times and memory, and Maglev quality. Each is
//! printed as it runs and the whole report is written to BENCHMARKS.md with the machine,
//! the date and the command.

use std::{fmt::Write as _, process::Command};

use anyhow::{Context, Result, bail};

use crate::{is_root, run_cmd, step, workspace_root};

const BENCHES: &[(&str, &str)] = &[
    ("lb-bench", "Datapath cost per packet"),
    ("lb-sync-bench", "Control plane"),
    ("lb-maglev-bench", "Maglev quality"),
    ("lb-e2e-bench", "End to end against kube-proxy's mechanisms"),
];

pub fn run() -> Result<()> {
    if !is_root() {
        bail!("benchmarks run BPF programs (BPF_PROG_TEST_RUN): run as root");
    }
    crate::setup::run()?;
    step("building (release)");
    let root = workspace_root();
    let mut build = Command::new("cargo");
    build.current_dir(&root).args(["build", "--release", "-q", "-p", "lb-tests"]);
    for (bin, _) in BENCHES {
        build.args(["--bin", bin]);
    }
    run_cmd(&mut build)?;

    let mut report = String::from("# Benchmarks\n\n");
    let sh = |cmd: &str| {
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let _ = writeln!(report, "- command: `cargo xtask bench`");
    let _ = writeln!(report, "- date: {}", sh("date -u '+%Y-%m-%d %H:%M UTC'"));
    let _ = writeln!(
        report,
        "- machine: {}, {} cores, {}",
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("nproc"),
        sh("free -h | awk '/Mem:/ {print $2}'")
    );
    let _ = writeln!(report, "- kernel: {}", sh("uname -r"));
    let _ = writeln!(report, "- commit: {}", sh("git rev-parse --short HEAD"));
    report.push_str(
        "\nShared 2-core VMs are noisy: compare figures within one run, not across runs.\n",
    );
    for (bin, title) in BENCHES {
        step(title);
        let out = Command::new(root.join("target/release").join(bin))
            .output()
            .with_context(|| format!("running {bin}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        if !out.status.success() {
            bail!("{bin} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = write!(report, "\n## {title}\n\n```\n{text}```\n");
    }
    std::fs::write(root.join("BENCHMARKS.md"), report).context("writing BENCHMARKS.md")?;
    step("written to BENCHMARKS.md");
    Ok(())
}
