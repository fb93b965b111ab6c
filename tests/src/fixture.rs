//! A datapath loaded for BPF_PROG_TEST_RUN: its own pin directory, removed on drop.

use std::path::PathBuf;
use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, TestRunResult};
use lb_userspace::{
    datapath::{self, BPFFS_ROOT, Datapath, LoadOptions},
    services::ServiceMaps,
};

pub struct TestDatapath {
    pub datapath: Datapath,
    pub services: ServiceMaps,
    _pins: PinDir,
}

/// A pin directory under bpffs, removed with everything in it on drop (also on panic).
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// A fresh, uniquely named directory path (created by the loader).
    pub fn unique() -> Self {
        Self(PathBuf::from(BPFFS_ROOT).join(crate::unique_prefix()))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = datapath::remove_pins(&self.0) {
            eprintln!("warning: removing pins under {}: {e}", self.0.display());
        }
    }
}

/// What a program did with a packet.
#[derive(Debug)]
pub struct RunResult {
    pub verdict: u32,
    pub packet: Vec<u8>,
    /// The kernel's measured run time.
    pub duration: Duration,
}

impl TestDatapath {
    /// Loads every program (so the verifier has accepted them) with fresh, empty maps.
    pub fn load() -> Self {
        Self::load_with(|_| {})
    }

    /// Like [`Self::load`], with map sizes or settings changed by `configure`.
    pub fn load_with(configure: impl FnOnce(&mut LoadOptions)) -> Self {
        let pins = PinDir::unique();
        let mut opts = LoadOptions::new(&pins.0);
        configure(&mut opts);
        let (datapath, maps) =
            Datapath::load(&opts).unwrap_or_else(|e| panic!("loading the datapath: {e}"));
        Self { datapath, services: ServiceMaps::new(maps), _pins: pins }
    }

    pub fn pin_dir(&self) -> &std::path::Path {
        &self._pins.0
    }

    pub fn run_xdp(&mut self, packet: &[u8]) -> RunResult {
        let prog = self.datapath.xdp_program().unwrap_or_else(|e| panic!("{e}"));
        run(prog, packet)
    }

    /// Runs `tc_ingress` or `tc_egress` (lb_common::maps::PROG_TC_*).
    pub fn run_tc(&mut self, name: &'static str, packet: &[u8]) -> RunResult {
        let prog = self.datapath.tc_program(name).unwrap_or_else(|e| panic!("{e}"));
        run(prog, packet)
    }
}

/// One BPF_PROG_TEST_RUN of `prog` on `packet` (repeat 1: see the comment inside).
pub fn run<P>(prog: &P, packet: &[u8]) -> RunResult
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut out = vec![0u8; packet.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            // repeat > 1 would re-feed the already rewritten packet: one run per call.
            repeat: 1,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"));
    out.truncate(r.data_size_out as usize);
    RunResult { verdict: r.return_value, packet: out, duration: r.duration }
}
