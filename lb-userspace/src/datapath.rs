//! Loading the datapath object, pinning its maps, and attaching its programs.

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink},
        xdp::XdpLink,
    },
    util::KernelVersion,
};
use lb_common::{
    counters::TrafficCounters,
    maps::{self as m, *},
};

use crate::EBPF_OBJECT;

/// bpffs magic (`statfs.f_type`), from `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is mounted on every distribution that mounts it.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("bpffs at {path}: {source}")]
    Bpffs { path: PathBuf, source: io::Error },
    #[error("loading the eBPF object (maps pinned under {pin_dir}): {source}")]
    Load { pin_dir: PathBuf, source: Box<aya::EbpfError> },
    #[error("program `{name}` in the lb-ebpf object: {reason}")]
    Program { name: &'static str, reason: String },
    #[error("map `{name}` in the lb-ebpf object: {reason}")]
    Map { name: &'static str, reason: String },
    #[error("attaching `{program}` to interface {interface}: {reason}")]
    Attach { program: &'static str, interface: String, reason: String },
}

/// Sizes and settings fixed when the object is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Directory on bpffs holding the pinned maps; an existing pin is adopted, so flows and
    /// programming survive a restart.
    pub pin_dir: PathBuf,
    pub conntrack_size: u32,
    pub affinity_size: u32,
    pub max_frontends: u32,
    pub max_maglev_chunks: u32,
    /// Service ids are `0..max_service_ids` (`SERVICE_STATS` is a per-CPU array this long).
    pub max_service_ids: u32,
    pub config: DatapathConfig,
}

impl LoadOptions {
    /// Sizes the frontend and Maglev maps for `services` service programs with tables of
    /// `maglev_m` slots (room for every table twice: old and new during a swap, in bursts).
    pub fn size_for(&mut self, services: u32, maglev_m: u32) {
        self.max_frontends = self.max_frontends.max(services.saturating_mul(4));
        let chunks = maglev_m.div_ceil(MAGLEV_CHUNK);
        self.max_maglev_chunks = services.saturating_add(1024).saturating_mul(chunks);
        self.max_service_ids = self.max_service_ids.max(services.saturating_add(1024));
    }

    pub fn new(pin_dir: impl Into<PathBuf>) -> Self {
        Self {
            pin_dir: pin_dir.into(),
            conntrack_size: DEFAULT_CONNTRACK_SIZE,
            affinity_size: DEFAULT_AFFINITY_SIZE,
            max_frontends: DEFAULT_MAX_FRONTENDS,
            max_maglev_chunks: DEFAULT_MAX_MAGLEV_CHUNKS,
            max_service_ids: DEFAULT_MAX_SERVICE_IDS,
            config: DatapathConfig::DEFAULT,
        }
    }
}

/// The maps userspace writes and reads, typed by lb-common.
pub struct Maps {
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub backends: Array<MapData, BackendValue>,
    pub maglev: HashMap<MapData, MaglevKey, MaglevChunk>,
    pub src_ranges: LpmTrie<MapData, SourceRangeKey, u8>,
    pub conntrack: HashMap<MapData, CtKey, CtValue>,
    pub revnat: HashMap<MapData, CtKey, RevNatValue>,
    pub affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    pub backend_stats: PerCpuArray<MapData, TrafficCounters>,
    pub service_stats: PerCpuArray<MapData, TrafficCounters>,
    pub drop_stats: PerCpuArray<MapData, u64>,
    pub config: Array<MapData, DatapathConfig>,
}

impl Maps {
    /// Opens the maps a running (or stopped) agent pinned under `pin_dir`, without loading
    /// any program: what `lbctl` and the metrics read.
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, DatapathError> {
        fn open<T>(pin_dir: &Path, name: &'static str) -> Result<T, DatapathError>
        where
            T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
        {
            let path = pin_dir.join(name);
            let err = |reason: String| DatapathError::Map {
                name,
                reason: format!("{}: {reason}", path.display()),
            };
            let data = aya::maps::MapData::from_pin(&path).map_err(|e| err(e.to_string()))?;
            let map = aya::maps::Map::from_map_data(data).map_err(|e| err(e.to_string()))?;
            T::try_from(map).map_err(|e| err(e.to_string()))
        }
        Ok(Self {
            services: open(pin_dir, m::SERVICES)?,
            backends: open(pin_dir, m::BACKENDS)?,
            maglev: open(pin_dir, m::MAGLEV)?,
            src_ranges: open(pin_dir, m::SRC_RANGES)?,
            conntrack: open(pin_dir, m::CONNTRACK)?,
            revnat: open(pin_dir, m::REVNAT)?,
            affinity: open(pin_dir, m::AFFINITY)?,
            backend_stats: open(pin_dir, m::BACKEND_STATS)?,
            service_stats: open(pin_dir, m::SERVICE_STATS)?,
            drop_stats: open(pin_dir, m::DROP_STATS)?,
            config: open(pin_dir, m::LB_CONFIG)?,
        })
    }
}

/// The loaded programs and their maps. Dropping it detaches every program it attached; the
/// pinned maps stay until [`remove_pins`].
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl Datapath {
    /// Loads (verifies) every program and creates or adopts the pinned maps.
    pub fn load(opts: &LoadOptions) -> Result<(Self, Maps), DatapathError> {
        ensure_bpffs()?;
        std::fs::create_dir_all(&opts.pin_dir)
            .map_err(|source| DatapathError::Bpffs { path: opts.pin_dir.clone(), source })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&opts.pin_dir)
            .map_max_entries(m::CONNTRACK, opts.conntrack_size)
            .map_max_entries(m::REVNAT, opts.conntrack_size)
            .map_max_entries(m::AFFINITY, opts.affinity_size)
            .map_max_entries(m::SERVICES, opts.max_frontends)
            .map_max_entries(m::MAGLEV, opts.max_maglev_chunks)
            .map_max_entries(m::SERVICE_STATS, opts.max_service_ids)
            .load(EBPF_OBJECT)
            .map_err(|e| DatapathError::Load {
                pin_dir: opts.pin_dir.clone(),
                source: Box::new(e),
            })?;

        let xdp: &mut Xdp = program(&mut ebpf, PROG_XDP_INGRESS)?;
        xdp.load().map_err(|e| prog_err(PROG_XDP_INGRESS, e))?;
        for name in [PROG_TC_INGRESS, PROG_TC_EGRESS] {
            let tc: &mut SchedClassifier = program(&mut ebpf, name)?;
            tc.load().map_err(|e| prog_err(name, e))?;
        }

        let mut maps = Maps {
            services: take_map(&mut ebpf, m::SERVICES)?,
            backends: take_map(&mut ebpf, m::BACKENDS)?,
            maglev: take_map(&mut ebpf, m::MAGLEV)?,
            src_ranges: take_map(&mut ebpf, m::SRC_RANGES)?,
            conntrack: take_map(&mut ebpf, m::CONNTRACK)?,
            revnat: take_map(&mut ebpf, m::REVNAT)?,
            affinity: take_map(&mut ebpf, m::AFFINITY)?,
            backend_stats: take_map(&mut ebpf, m::BACKEND_STATS)?,
            service_stats: take_map(&mut ebpf, m::SERVICE_STATS)?,
            drop_stats: take_map(&mut ebpf, m::DROP_STATS)?,
            config: take_map(&mut ebpf, m::LB_CONFIG)?,
        };
        maps.config
            .set(0, opts.config, 0)
            .map_err(|e| DatapathError::Map { name: m::LB_CONFIG, reason: e.to_string() })?;
        Ok((Self { ebpf, pin_dir: opts.pin_dir.clone() }, maps))
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Where the link of `program` on `interface` is pinned.
    pub fn link_pin(&self, program: &str, interface: &str) -> PathBuf {
        self.pin_dir.join("links").join(format!("{program}@{interface}"))
    }

    /// XDP ingress on an external interface (native mode where the driver has it).
    ///
    /// The link is pinned, so the program keeps running when this process exits; a link
    /// already pinned by an earlier process is taken over by atomically replacing its
    /// program (`bpf_link_update`), so no packet meets an interface without the datapath.
    pub fn attach_xdp(&mut self, interface: &str) -> Result<(), DatapathError> {
        let pin = self.link_pin(PROG_XDP_INGRESS, interface);
        let xdp: &mut Xdp = program(&mut self.ebpf, PROG_XDP_INGRESS)?;
        let err = |e: &dyn std::fmt::Display| attach_err(PROG_XDP_INGRESS, interface, e);
        if let Some(fd) = pinned_link(&pin)
            && let Ok(link) = XdpLink::try_from(fd)
            && xdp.attach_to_link(link).is_ok()
        {
            return Ok(());
        }
        let id = xdp.attach(interface, XdpMode::Default).map_err(|e| err(&e))?;
        let link: FdLink =
            xdp.take_link(id).map_err(|e| err(&e))?.try_into().map_err(|e| err(&e))?;
        pin_link(link, &pin).map_err(|e| err(&e))
    }

    /// TC ingress (service balancing for local pods) on a pod-facing interface.
    pub fn attach_tc_ingress(&mut self, interface: &str) -> Result<(), DatapathError> {
        self.attach_tc(PROG_TC_INGRESS, interface, TcAttachType::Ingress)
    }

    /// TC egress (reverse NAT of replies) on any interface that leads to clients.
    pub fn attach_tc_egress(&mut self, interface: &str) -> Result<(), DatapathError> {
        self.attach_tc(PROG_TC_EGRESS, interface, TcAttachType::Egress)
    }

    fn attach_tc(
        &mut self,
        name: &'static str,
        interface: &str,
        dir: TcAttachType,
    ) -> Result<(), DatapathError> {
        // Before tcx (6.6) classifiers hang off a clsact qdisc; with tcx none is needed.
        if KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0)) {
            match tc::qdisc_add_clsact(interface) {
                Ok(()) => {}
                Err(tc::TcError::AlreadyAttached) => {}
                Err(e) => return Err(attach_err(name, interface, e)),
            }
        }
        let pin = self.link_pin(name, interface);
        let prog: &mut SchedClassifier = program(&mut self.ebpf, name)?;
        let err = |e: &dyn std::fmt::Display| attach_err(name, interface, e);
        if let Some(fd) = pinned_link(&pin)
            && let Ok(link) = SchedClassifierLink::try_from(fd)
            && prog.attach_to_link(link).is_ok()
        {
            return Ok(());
        }
        let id = prog.attach(interface, dir).map_err(|e| err(&e))?;
        match prog.take_link(id).map_err(|e| err(&e))?.try_into() {
            Ok(link) => pin_link(link, &pin).map_err(|e| err(&e)),
            // A netlink (pre-tcx) classifier has no link to pin; it stays attached anyway.
            Err(_) => Ok(()),
        }
    }

    /// A loaded XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn xdp_program(&mut self) -> Result<&mut Xdp, DatapathError> {
        program(&mut self.ebpf, PROG_XDP_INGRESS)
    }

    /// A loaded TC program (`PROG_TC_INGRESS` or `PROG_TC_EGRESS`).
    pub fn tc_program(
        &mut self,
        name: &'static str,
    ) -> Result<&mut SchedClassifier, DatapathError> {
        program(&mut self.ebpf, name)
    }
}

/// The link pinned at `pin`, if one is there and still usable; a stale pin is removed.
fn pinned_link(pin: &Path) -> Option<FdLink> {
    if !pin.exists() {
        return None;
    }
    match PinnedLink::from_pin(pin) {
        Ok(p) => Some(p.into()),
        Err(_) => {
            let _ = std::fs::remove_file(pin);
            None
        }
    }
}

fn pin_link(link: FdLink, pin: &Path) -> Result<(), io::Error> {
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(pin);
    // The pin holds the link; dropping our handle leaves it attached.
    link.pin(pin).map(drop).map_err(|e| io::Error::other(e.to_string()))
}

/// Detaches every link pinned under `pin_dir/links` now (BPF_LINK_DETACH), rather than when
/// the kernel gets round to freeing the unlinked pins. Returns how many were detached.
pub fn detach_pinned_links(pin_dir: &Path) -> io::Result<usize> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let dir = pin_dir.join("links");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut detached = 0;
    for entry in entries {
        let path =
            CString::new(entry?.path().as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32).
        let mut get = [0u64; 2];
        get[0] = path.as_ptr() as u64;
        // SAFETY: the attr buffer is valid and sized; the path outlives the call.
        let fd = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, get.as_mut_ptr(), std::mem::size_of_val(&get))
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // union bpf_attr for BPF_LINK_DETACH: link_fd (u32).
        let mut detach = [0u64; 1];
        detach[0] = fd as u64;
        // SAFETY: as above; fd is ours and closed right after.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_LINK_DETACH,
                detach.as_mut_ptr(),
                std::mem::size_of_val(&detach),
            )
        };
        let err = io::Error::last_os_error();
        // SAFETY: fd was returned by BPF_OBJ_GET above and is not used after this.
        unsafe { libc::close(fd as i32) };
        if rc < 0 {
            return Err(err);
        }
        detached += 1;
    }
    Ok(detached)
}

/// What one pinned map costs the kernel.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MapMemory {
    pub name: &'static str,
    pub max_entries: u32,
    /// The kernel's own account (`memlock` in fdinfo): the whole capacity for preallocated
    /// maps, the entries present for `MAGLEV` (no prealloc).
    pub bytes: u64,
}

/// Kernel memory of every map pinned under `pin_dir`.
pub fn map_memory(pin_dir: &Path) -> Result<Vec<MapMemory>, DatapathError> {
    ALL_MAPS
        .iter()
        .map(|&name| {
            let path = pin_dir.join(name);
            let err = |reason: String| DatapathError::Map {
                name,
                reason: format!("{}: {reason}", path.display()),
            };
            let data = MapData::from_pin(&path).map_err(|e| err(e.to_string()))?;
            let fd = data.fd().as_fd().as_raw_fd();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
                .map_err(|e| err(format!("reading fdinfo: {e}")))?;
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
                    .ok_or_else(|| err(format!("no {key} in fdinfo")))
            };
            Ok(MapMemory {
                name,
                max_entries: field("max_entries:")? as u32,
                bytes: field("memlock:")?,
            })
        })
        .collect()
}

/// Removes every pinned map under `pin_dir` and the directory itself.
pub fn remove_pins(pin_dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(pin_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Mounts bpffs at [`BPFFS_ROOT`] when nothing is mounted there yet.
pub fn ensure_bpffs() -> Result<(), DatapathError> {
    let err = |source| DatapathError::Bpffs { path: BPFFS_ROOT.into(), source };
    let path = CString::new(BPFFS_ROOT).map_err(|e| err(e.into()))?;
    // SAFETY: statfs writes only into `st`; `path` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    if st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fstype = CString::new("bpf").map_err(|e| err(e.into()))?;
    // SAFETY: all pointers are valid NUL-terminated strings; data is unused by bpffs.
    let rc = unsafe {
        libc::mount(fstype.as_ptr(), path.as_ptr(), fstype.as_ptr(), 0, std::ptr::null())
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(DatapathError::Program {
        name,
        reason: "not in the object (was lb-ebpf built from this tree?)".into(),
    })?;
    prog.try_into().map_err(|e: aya::programs::ProgramError| prog_err(name, e))
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::Map { name, reason: "not in the object".into() })?;
    T::try_from(map).map_err(|e| DatapathError::Map { name, reason: e.to_string() })
}

fn prog_err(name: &'static str, e: impl std::fmt::Display) -> DatapathError {
    DatapathError::Program { name, reason: verbose(&e) }
}

fn attach_err(program: &'static str, interface: &str, e: impl std::fmt::Display) -> DatapathError {
    DatapathError::Attach { program, interface: interface.to_owned(), reason: verbose(&e) }
}

/// `{:#}`-style message including the verifier log when there is one.
fn verbose(e: &impl std::fmt::Display) -> String {
    format!("{e:#}")
}
