//! Every test, as CI runs it.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{is_root, step, workspace_root};

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
    let mut child = Command::new("cargo")
        .current_dir(workspace_root())
        .args(["test", "--workspace", "--exclude", "lb-ebpf"])
        .args(&args.cargo_args)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
    }
    let status = child.wait()?;
    if status.success() && is_root() && args.cargo_args.is_empty() {
        step("cargo xtask run --once: the lab end to end, then nothing left behind");
        match run_once_leaves_nothing() {
            Ok(()) => {
                println!("test xtask_run_once_leaves_nothing_behind ... ok");
                passed += 1;
            }
            Err(e) => {
                println!("test xtask_run_once_leaves_nothing_behind ... FAILED: {e:#}");
                failed += 1;
            }
        }
    }
    // One closing line for every test binary together.
    println!("\ntests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if failed > 0 {
        bail!("{failed} failed");
    }
    Ok(())
}

/// Names starting with `lbt-` among network namespaces, bpffs pins and temporary files.
fn lab_leftovers() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(n) = l.split_whitespace().next().filter(|n| n.starts_with("lbt-")) {
                names.insert(format!("netns {n}"));
            }
        }
    }
    for dir in ["/sys/fs/bpf", "/tmp"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("lbt-") {
                names.insert(format!("{dir}/{n}"));
            }
        }
    }
    names
}

fn run_once_leaves_nothing() -> Result<()> {
    let before = lab_leftovers();
    crate::run::run(&crate::run::Args::once(50))?;
    let left: Vec<String> = lab_leftovers().difference(&before).cloned().collect();
    if !left.is_empty() {
        bail!("left behind: {}", left.join(", "));
    }
    Ok(())
}

/// The number before `label` in a libtest summary (`ok. 13 passed; 0 failed; ...`).
fn count(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label.trim_start())
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn reads_libtest_summaries() {
        let s = "ok. 13 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.29s";
        assert_eq!((count(s, " passed"), count(s, " failed")), (13, 0));
        let f = "FAILED. 11 passed; 2 failed; 0 ignored";
        assert_eq!((count(f, " passed"), count(f, " failed")), (11, 2));
    }
}
