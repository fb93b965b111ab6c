//! Network namespaces and veths as RAII guards.
//!
//! Everything is created with `ip` inside namespaces this process made, so test traffic
//! never touches the host's own interfaces; dropping a [`NetNs`] deletes it with every
//! link inside it.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    thread::{self, JoinHandle},
};

/// Runs `ip ARGS`, panicking with the command and its stderr on failure.
pub fn ip(args: &[&str]) {
    run_cmd("ip", args);
}

fn run_cmd(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `name` with its loopback up.
    pub fn create(name: &str) -> Self {
        ip(&["netns", "add", name]);
        let ns = Self { name: name.to_owned() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Runs a program inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Sets `/proc/sys/<key>` (dots as slashes) inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.exec("sh", &["-c", &format!("echo {value} > {path}")]);
    }

    /// Runs `f` on a new thread that lives in this namespace; sockets it opens belong to it.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
            drop(file);
            f()
        })
    }

    /// Runs `f` inside the namespace and waits for it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// The calling thread is inside a namespace until this is dropped.
pub struct Entered {
    original: File,
}

impl NetNs {
    /// Moves the calling thread into this namespace (e.g. to attach programs by interface
    /// name); it returns to its original namespace when the guard drops.
    pub fn enter(&self) -> Entered {
        let original = File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|e| panic!("opening /proc/thread-self/ns/net: {e}"));
        let path = format!("/run/netns/{}", self.name);
        let target = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        Entered { original }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: as above; the fd is the thread's own original namespace.
        let rc = unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            eprintln!(
                "warning: returning to the original netns: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let out = Command::new("ip").args(["netns", "del", &self.name]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}

/// A veth pair created directly inside two namespaces (names only need to be unique per
/// namespace, so parallel labs can all use `eth0`).
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    ip(&[
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}
