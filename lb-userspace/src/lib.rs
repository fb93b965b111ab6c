//! The userspace side of the load balancer: loading and attaching the datapath, and
//! programming services into its maps.
//!
//! # Layout
//! - [`datapath`]: the compiled eBPF object, loading it with pinned maps, attaching hooks.
//! - [`services`]: the programming API: a service port's frontends and backends in, map
//!   entries out (backend ids, Maglev tables swapped atomically, source ranges).
//! - [`stats`]: counters read back from the per-CPU maps.
//! - [`net`]: small helpers for addresses and CIDRs.

pub mod agent;
pub mod alloc;
pub mod catalog;
pub mod ctl;
pub mod datapath;
pub mod manifests;
pub mod metrics;
pub mod model;
pub mod net;
pub mod services;
pub mod stats;

/// The eBPF object built from lb-ebpf by this crate's build script.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// Benchmark baselines (`floor_pass`, `floor_tx`), built alongside; not part of the datapath.
pub static EBPF_FLOORS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-floors"));
