//! Running the real `lb-agent` binary in a lab's node namespace.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    fixture::PinDir,
    lab::{BACKEND_PORT, NODE_V4, Topology},
};

/// `target/<profile>/lb-agent`: beside this binary, or beside the `deps/` directory a test
/// binary runs from.
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    let bin = if dir.join("lb-agent").exists() {
        dir.join("lb-agent")
    } else {
        dir.parent().unwrap_or(dir).join("lb-agent")
    };
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p lb-userspace --bin lb-agent` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// A directory removed with its contents on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent process; killed (by its PID) on drop if still running.
pub struct AgentProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl AgentProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn stop(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child this process started and has not reaped.
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows at least `n` completed syncs.
    pub fn wait_synced(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.log_text();
            if text.matches(" synced").count() >= n {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("lb-agent exited ({status}) before sync {n}:\n{text}");
            }
            assert!(Instant::now() < deadline, "lb-agent did not sync {n} times in 60 s:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop(libc::SIGKILL);
    }
}

/// A topology with `lb-agent` managing its node, from manifests in a temporary directory.
pub struct AgentLab {
    // Drop order: the agent, then namespaces, then pins and files.
    pub agent: Option<AgentProcess>,
    pub net: Topology,
    pub pins: PinDir,
    pub dir: TempDir,
}

impl AgentLab {
    pub fn new(backends: usize) -> Self {
        let net = Topology::new(backends);
        let pins = PinDir(PathBuf::from(lb_userspace::datapath::BPFFS_ROOT).join(&net.prefix));
        let dir = TempDir::new(&format!("{}-agent", net.prefix));
        std::fs::create_dir_all(dir.0.join("manifests")).expect("manifests dir");
        Self { agent: None, net, pins, dir }
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.0.join("allocations.json")
    }

    /// Runs `lbctl ARGS` against this lab's pins and catalog; returns (exit code, stdout, stderr).
    pub fn lbctl(&self, args: &[&str]) -> (i32, String, String) {
        let bin = agent_binary().with_file_name("lbctl");
        let out = Command::new(&bin)
            .arg("--pin-dir")
            .arg(&self.pins.0)
            .arg("--state-file")
            .arg(self.state_file())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Pods for this lab's backends (`app: web`, Ready, on node `node`, container port
    /// `http` 8080), for selector-based Services.
    pub fn pod_manifests(&self) -> String {
        self.net
            .backends
            .iter()
            .map(|b| {
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: default, labels: {{app: web}}}}\n\
                     spec: {{nodeName: node, containers: [{{name: http, ports: [{{name: http, containerPort: {BACKEND_PORT}}}]}}]}}\n\
                     status:\n  podIPs: [{{ip: {}}}, {{ip: \"{}\"}}]\n  conditions: [{{type: Ready, status: \"True\"}}]\n",
                    b.name, b.v4, b.v6
                )
            })
            .collect::<Vec<_>>()
            .join("---\n")
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.0.join("manifests")
    }

    /// Writes a manifest file atomically (write + rename), as editors and kubectl-like
    /// tools do, so the agent never reads half a file.
    pub fn write(&self, name: &str, text: &str) {
        let path = self.manifests().join(name);
        let tmp = self.dir.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, &path).expect("rename manifest");
    }

    /// Starts `lb-agent` in the node namespace; the `n`th process logs to `agent-<n>.log`.
    pub fn start_agent(&mut self) -> &mut AgentProcess {
        let n = std::fs::read_dir(&self.dir.0).map(|d| d.count()).unwrap_or(0);
        let log = self.dir.0.join(format!("agent-{n}.log"));
        let out = File::create(&log).expect("agent log");
        let err = out.try_clone().expect("agent log");
        // Not `ip netns exec`: it also enters a private mount namespace with a fresh /sys, so
        // the agent's bpffs pins would vanish with the process. Only the network namespace
        // is switched, in the child between fork and exec.
        let netns = File::open(format!("/run/netns/{}", self.net.node.name())).expect("node netns");
        let netns_fd = netns.as_raw_fd();
        let mut cmd = Command::new(agent_binary());
        // SAFETY: only async-signal-safe setns(2) runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.arg("--manifests")
            .arg(self.manifests())
            .args(["--node-name", "node", "--node-address", &NODE_V4.to_string()])
            .args(["--xdp-iface", "ext0"])
            .args(["--service-cidr", "198.19.0.0/16", "--service-cidr", "fd00:19::/108"])
            .args(["--lb-pool", "198.19.255.0/24"])
            // A slow poll: edits must reach the agent through its inotify watch (the poll's
            // safety net runs every 20 polls, 20 s here).
            .args(["--maglev-m", "1021", "--poll-ms", "1000"])
            .args(["--metrics-addr", "127.0.0.1:9108"])
            .arg("--pin-dir")
            .arg(&self.pins.0)
            .arg("--state-file")
            .arg(self.state_file());
        for iface in self.net.pod_interfaces() {
            cmd.args(["--tc-iface", &iface]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting lb-agent: {e}"));
        drop(netns);
        self.agent = Some(AgentProcess { child: Some(child), log });
        self.agent.as_mut().expect("just set")
    }
}
