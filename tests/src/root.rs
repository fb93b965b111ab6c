//! Tests that need root (BPF, netns) skip loudly when not root; CI runs them as root.

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns from the calling test, with a message on stderr, when not running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::root::is_root() {
            eprintln!(
                "SKIP (not root): {} needs CAP_BPF/CAP_NET_ADMIN; run `cargo xtask test` as root",
                module_path!()
            );
            return;
        }
    };
}
