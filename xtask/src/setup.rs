//! Idempotent setup of the build chain and lab tools on a fresh machine.
//!
//! - nightly's `rust-src` (the eBPF crate builds `core` for bpfel-unknown-none);
//! - bpf-linker built against the nightly toolchain's own libLLVM, since the linker must use
//!   the LLVM major that emits the bitcode and no distribution package has it;
//! - Debian packages for the lab (iproute2, ethtool) and the end-to-end benchmark (wrk,
//!   nftables, iptables).

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::{is_root, run_cmd, step};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// (command, package): the lab's tools, and the end-to-end benchmark's load generator and
/// kube-proxy's own mechanisms (nftables, iptables) it measures against.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("wrk", "wrk"),
    ("nft", "nftables"),
    ("iptables-restore", "iptables"),
];

pub fn run() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    apt_packages()?;
    Ok(())
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain: the eBPF crate needs one (rustup toolchain install nightly): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "rust-src") {
        return Ok(());
    }
    step("installing rust-src for nightly");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker_works() -> bool {
    Command::new(cargo_bin_dir().join("bpf-linker")).arg("--version").output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
    })
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let sysroot = String::from_utf8(
        Command::new("rustc").args(["+nightly", "--print", "sysroot"]).output()?.stdout,
    )?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    // Both spellings rustup ships (`libLLVM.so.<ver>-rust-…` is the SONAME).
    let mut libllvm: Vec<PathBuf> = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM"))
        })
        .collect();
    libllvm.sort();
    let first = libllvm
        .first()
        .cloned()
        .with_context(|| format!("no libLLVM shared library in {}", lib_dir.display()))?;
    let verbose =
        String::from_utf8(Command::new("rustc").args(["+nightly", "-vV"]).output()?.stdout)?;
    let llvm_major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("nightly rustc -vV printed no LLVM version")?
        .to_owned();

    // bpf-linker's rpath points here, so this directory must outlive the install.
    let prefix = dirs_home().join(".local/share/lb-toolchain/llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    // `libLLVM.so` for the build to link against; every shipped name (one is the SONAME)
    // for the installed binary to find through its rpath.
    let mut links = vec![(prefix_lib.join("libLLVM.so"), first)];
    for lib in &libllvm {
        links.push((prefix_lib.join(lib.file_name().context("libLLVM file name")?), lib.clone()));
    }
    for (link, target) in links {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    }

    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {llvm_major} (about a minute)"
    ));
    run_cmd(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", &format!("llvm-{llvm_major}")])
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but `bpf-linker --version` still fails");
    }
    Ok(())
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(bin, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "warning: missing {} (the lab tests and benchmarks need them); install as root: apt-get install {}",
            missing.join(", "),
            missing.join(" ")
        );
        return Ok(());
    }
    step(&format!("installing {}", missing.join(", ")));
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
