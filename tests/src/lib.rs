//! Test support shared by the integration tests and `cargo xtask run`.
//!
//! # Layout
//! - [`root`]: the loud skip for tests that need root.
//! - [`packets`]: test packets built with etherparse, and a checker that re-parses output
//!   and recomputes every checksum from scratch.
//! - [`fixture`]: a datapath loaded with its own pin directory, for BPF_PROG_TEST_RUN.
//! - [`netns`]: network namespaces and veths as RAII guards, and running code inside a
//!   namespace on its own thread.
//! - [`http`]: the backend HTTP server (answers with its name) and client.
//! - [`lab`]: the client/node/backends lab built from the pieces above.

pub mod agent;
pub mod fixture;
pub mod http;
pub mod kube_proxy;
pub mod lab;
pub mod load;
pub mod netns;
pub mod packets;
pub mod root;

use std::sync::atomic::{AtomicU32, Ordering};

/// A name prefix unique to this process and call: `lbt-<pid>-<n>`. Everything a test
/// creates (namespaces, pins) carries one, so parallel tests and runs never clash and
/// leftovers are recognisable.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("lbt-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
