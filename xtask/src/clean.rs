//! Removes what interrupted tests or labs left behind: network namespaces and bpffs pin
//! directories named `lbt-*` (the prefix every test resource carries). Nothing else.

use std::process::Command;

use anyhow::Result;

const PREFIX: &str = "lbt-";
const PIN_ROOT: &str = "/sys/fs/bpf";

pub fn run() -> Result<()> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        if name.starts_with(PREFIX) {
            eprintln!("removing netns {name}");
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    if let Ok(entries) = std::fs::read_dir(PIN_ROOT) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(PREFIX) {
                eprintln!("removing {}", e.path().display());
                std::fs::remove_dir_all(e.path())?;
            }
        }
    }
    Ok(())
}
