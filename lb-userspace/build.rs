//! Compiles lb-ebpf for the BPF target (nightly + bpf-linker; `cargo xtask setup` installs
//! both) and leaves the object in OUT_DIR for `include_bytes_aligned!`.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf = Package {
        name: "lb-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../lb-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], Toolchain::default())
}
