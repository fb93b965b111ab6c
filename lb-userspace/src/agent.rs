//! The agent: keeps the datapath equal to the manifests, live.
//!
//! A sync starts when inotify reports a write to the manifests (a slow poll is the safety
//! net). Each sync reads the inputs (only changed files are parsed again:
//! [`crate::manifests::ManifestCache`]), translates them ([`crate::model::desired`]), and
//! applies only the difference to the maps: programs that changed are re-applied (an atomic
//! table swap each), programs that vanished are removed. A Service whose new version has
//! errors keeps its last good programs. Allocations are saved whenever they change so that a
//! restart hands out the same addresses and ports.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use std::sync::{Arc, Mutex};

use crate::{
    alloc::{Allocations, Allocator},
    catalog::{Catalog, CatalogProgram},
    datapath::{Datapath, LoadOptions},
    manifests::ManifestCache,
    metrics::{MetricsSource, SyncStatus},
    model::{NodeConfig, desired},
    services::{ProgramError, ServiceMaps, ServiceProgram},
};

/// Everything the agent is told.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub manifests: PathBuf,
    pub node: NodeConfig,
    /// External interfaces: XDP ingress + TC egress (reverse NAT).
    pub xdp_interfaces: Vec<String>,
    /// Pod-facing interfaces: TC ingress (east-west) + TC egress (reverse NAT).
    pub tc_interfaces: Vec<String>,
    pub load: LoadOptions,
    /// Where allocations are saved (a JSON file).
    pub state_file: PathBuf,
    /// Reaps retired Maglev tables; re-checks the inputs every 20 polls (every poll when
    /// inotify is unavailable).
    pub poll_interval: Duration,
    /// Where to serve Prometheus metrics; `None` for nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// What the agent has applied, by program key.
#[derive(Default)]
struct Applied {
    programs: BTreeMap<String, ServiceProgram>,
    owner: BTreeMap<String, String>,
    /// Service → the file it was last read from.
    files: BTreeMap<String, PathBuf>,
}

/// The `ns/name` an allocation key (`ns/name/...` or a program key `ns/name:...`) is for.
fn service_of(key: &str) -> &str {
    let after_ns = key.find('/').map_or(key.len(), |i| i + 1);
    let end = key[after_ns..].find(['/', ':']).map_or(key.len(), |i| after_ns + i);
    &key[..end]
}

/// With a watch, the fingerprint poll runs every this many ticks.
const WATCHED_POLL_EVERY: u64 = 20;

/// Wakes the sync loop when the manifests change (inotify on the directory, or on the
/// file's directory so editors that replace the file are seen too).
struct InputWatch {
    _watcher: notify::RecommendedWatcher,
    events: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl InputWatch {
    fn start(path: &Path) -> Result<Self> {
        use notify::Watcher as _;
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                use notify::EventKind as K;
                // Not access events: the agent's own reads would wake it again, forever.
                if let Ok(K::Create(_) | K::Modify(_) | K::Remove(_) | K::Any) =
                    event.map(|e| e.kind)
                {
                    let _ = tx.send(());
                }
            })?;
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
        };
        watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
        Ok(Self { _watcher: watcher, events })
    }

    /// Resolves once the inputs changed and the writer has been quiet for a moment (one
    /// save is several events; syncing on the first could read a half-written file).
    async fn changed(watch: &mut Option<Self>) -> Option<()> {
        let Some(w) = watch else { return std::future::pending().await };
        w.events.recv().await?;
        let quiet = Duration::from_millis(10);
        let give_up = Instant::now() + Duration::from_millis(200);
        while Instant::now() < give_up {
            match tokio::time::timeout(quiet, w.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => break,
            }
        }
        Some(())
    }
}

/// Aborts a spawned task when dropped (the metrics server stops with the agent).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where one sync's time went: reading and parsing changed manifests, translating them to
/// programs, writing the changed programs to the maps, saving allocations and catalog.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncPhases {
    pub read: Duration,
    pub model: Duration,
    pub apply: Duration,
    pub save: Duration,
}

pub struct Agent {
    cfg: AgentConfig,
    // Kept alive: dropping it would drop our program handles (the pinned links stay).
    _datapath: Datapath,
    services: ServiceMaps,
    applied: Applied,
    allocations: Allocations,
    summaries: BTreeMap<String, crate::model::ServiceSummary>,
    manifests: ManifestCache,
    last_sync: SyncPhases,
    first_sync: bool,
    first_save: bool,
    metrics: Arc<Mutex<MetricsSource>>,
}

impl Agent {
    /// Loads the datapath (adopting pinned maps and links) and attaches it.
    pub fn start(cfg: AgentConfig) -> Result<Self> {
        let (mut datapath, maps) = Datapath::load(&cfg.load)?;
        let services = ServiceMaps::adopt(maps)?;
        // The metrics read the same pinned maps through handles of their own.
        let metrics = Arc::new(Mutex::new(MetricsSource {
            maps: crate::datapath::Maps::open_pinned(&cfg.load.pin_dir)?,
            catalog: Catalog::default(),
            status: SyncStatus::default(),
            conntrack_capacity: cfg.load.conntrack_size,
            max_frontends: cfg.load.max_frontends,
            max_maglev_chunks: cfg.load.max_maglev_chunks,
        }));
        for iface in &cfg.xdp_interfaces {
            datapath.attach_xdp(iface)?;
            datapath.attach_tc_egress(iface)?;
        }
        for iface in &cfg.tc_interfaces {
            datapath.attach_tc_ingress(iface)?;
            datapath.attach_tc_egress(iface)?;
        }
        let allocations = match std::fs::read_to_string(&cfg.state_file) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!("reading allocations from {}", cfg.state_file.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Allocations::default(),
            Err(e) => return Err(e).context(format!("reading {}", cfg.state_file.display())),
        };
        info!(
            pin_dir = %cfg.load.pin_dir.display(),
            xdp = ?cfg.xdp_interfaces,
            tc = ?cfg.tc_interfaces,
            adopted_services = services.service_ids().count(),
            "datapath attached"
        );
        Ok(Self {
            cfg,
            _datapath: datapath,
            services,
            applied: Applied::default(),
            allocations,
            summaries: BTreeMap::new(),
            manifests: ManifestCache::default(),
            last_sync: SyncPhases::default(),
            first_save: true,
            metrics,
            first_sync: true,
        })
    }

    /// Syncs now and whenever the inputs change, until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        let _metrics = match self.cfg.metrics_addr {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics address {addr}"))?;
                Some(AbortOnDrop(tokio::spawn(crate::metrics::serve(
                    listener,
                    Arc::clone(&self.metrics),
                ))))
            }
            None => None,
        };
        let mut watch = match InputWatch::start(&self.cfg.manifests) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!("cannot watch {}: {e:#}; polling only", self.cfg.manifests.display());
                None
            }
        };
        let mut tick = tokio::time::interval(self.cfg.poll_interval);
        let mut ticks = 0u64;
        let watching = watch.is_some();
        loop {
            // An event always syncs (unchanged files cost a stat each); a poll syncs when
            // the parse cache no longer matches the files.
            let (event, poll) = tokio::select! {
                () = &mut stop => {
                    info!("stopping; the datapath keeps serving (pinned under {})", self.cfg.load.pin_dir.display());
                    return Ok(());
                }
                Some(()) = InputWatch::changed(&mut watch) => (true, false),
                _ = tick.tick() => {
                    self.services.reap()?;
                    ticks += 1;
                    // With a watch the poll is only a safety net for missed events.
                    // The first tick is the initial sync.
                    (false, !watching || ticks == 1 || ticks.is_multiple_of(WATCHED_POLL_EVERY))
                }
            };
            if event || (poll && (ticks == 1 || !self.manifests.is_current(&self.cfg.manifests))) {
                self.sync()?;
            }
        }
    }

    /// One full sync: read, translate, apply the difference.
    pub fn sync(&mut self) -> Result<()> {
        let started = Instant::now();
        let loaded = self.manifests.load(&self.cfg.manifests);
        let read = started.elapsed();
        for (kind, origin) in &loaded.skipped {
            info!(%origin, kind, "skipped: not a kind the agent handles");
        }
        for e in &loaded.errors {
            error!("{e}");
        }
        let mut alloc = Allocator::new(self.allocations.clone());
        let mut d = desired(&loaded.objects, &self.cfg.node, &mut alloc);
        for e in &d.errors {
            error!("{e}");
        }
        let modelled = started.elapsed();

        // Services that failed keep what they had; so do Services of files that could not be
        // read or parsed this time (their objects are missing, not deleted).
        let unreadable: BTreeSet<&Path> = loaded
            .errors
            .iter()
            .filter(|e| e.doc.is_none() || e.field.is_none())
            .map(|e| e.file.as_path())
            .collect();
        let keep = |svc: &String| {
            d.failed.contains(svc)
                || (!d.services.contains_key(svc)
                    && self
                        .applied
                        .files
                        .get(svc)
                        .is_some_and(|f| unreadable.contains(f.as_path())))
        };
        let kept: Vec<(String, String)> = self
            .applied
            .owner
            .iter()
            .filter(|(key, owner)| keep(owner) && !d.programs.contains_key(*key))
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        for (key, owner) in kept {
            if let Some(p) = self.applied.programs.get(&key) {
                d.programs.insert(key.clone(), p.clone());
                d.owner.insert(key, owner);
            }
        }
        for (svc, summary) in &d.services {
            self.applied.files.insert(svc.clone(), summary.file.clone());
        }
        // Allocations of Services that keep their programs stay, even if unused this round.
        let kept_services: BTreeSet<&str> = d
            .owner
            .values()
            .map(String::as_str)
            .chain(d.failed.iter().map(String::as_str))
            .collect();
        let allocations = alloc.finish(&|k| kept_services.contains(service_of(k)));
        let allocations_changed = allocations != self.allocations;
        self.allocations = allocations;

        // Removals first, so a frontend moving between Services is free when re-applied.
        let mut changes = 0;
        let gone: Vec<String> = self
            .applied
            .programs
            .keys()
            .filter(|k| !d.programs.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(p) = self.applied.programs.remove(&key) {
                self.services.remove(p.id)?;
                self.applied.owner.remove(&key);
                info!(program = %key, "removed");
                changes += 1;
            }
        }
        let mut retry = Vec::new();
        for (key, program) in &d.programs {
            if self.applied.programs.get(key) == Some(program) {
                continue;
            }
            match self.services.apply(program) {
                Ok(()) => {
                    self.log_applied(key, program);
                    self.applied.programs.insert(key.clone(), program.clone());
                    self.applied.owner.insert(key.clone(), d.owner[key].clone());
                    changes += 1;
                }
                Err(ProgramError::FrontendClash { .. }) => retry.push(key.clone()),
                Err(e) => error!(program = %key, "not applied: {e}"),
            }
        }
        for key in retry {
            let program = &d.programs[&key];
            match self.services.apply(program) {
                Ok(()) => {
                    self.log_applied(&key, program);
                    self.applied.programs.insert(key.clone(), program.clone());
                    self.applied.owner.insert(key.clone(), d.owner[&key].clone());
                    changes += 1;
                }
                Err(e) => error!(program = %key, "not applied: {e}"),
            }
        }
        if self.first_sync {
            // After a restart: drop what the previous process programmed and we no longer want.
            let keep: BTreeSet<u32> = self.applied.programs.values().map(|p| p.id).collect();
            self.services.retain(&keep)?;
            self.first_sync = false;
        }
        let applied = started.elapsed();
        // The first sync always saves: files from an older run may differ.
        if allocations_changed || self.first_save {
            self.save_allocations();
        }
        self.save_catalog(&d.services, changes > 0 || self.first_save);
        self.first_save = false;
        self.last_sync = SyncPhases {
            read,
            model: modelled - read,
            apply: applied - modelled,
            save: started.elapsed() - applied,
        };
        if let Ok(mut m) = self.metrics.lock() {
            m.status.syncs += 1;
            m.status.last_duration_s = started.elapsed().as_secs_f64();
            m.status.config_errors = (loaded.errors.len() + d.errors.len()) as u64;
        }
        info!(
            services = d.services.len(),
            programs = self.applied.programs.len(),
            changes,
            errors = loaded.errors.len() + d.errors.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            read_ms = read.as_secs_f64() * 1000.0,
            model_ms = self.last_sync.model.as_secs_f64() * 1000.0,
            apply_ms = self.last_sync.apply.as_secs_f64() * 1000.0,
            save_ms = self.last_sync.save.as_secs_f64() * 1000.0,
            "synced"
        );
        Ok(())
    }

    /// Where the last sync's time went.
    pub fn last_sync(&self) -> SyncPhases {
        self.last_sync
    }

    fn log_applied(&self, key: &str, p: &ServiceProgram) {
        let ready =
            p.backends.iter().filter(|b| b.state == crate::services::BackendState::Active).count();
        info!(
            program = %key,
            id = p.id,
            frontends = p.frontends.len(),
            backends = p.backends.len(),
            ready,
            "applied"
        );
    }

    /// Rewrites the catalog when programs changed or a Service's summary did.
    fn save_catalog(
        &mut self,
        services: &BTreeMap<String, crate::model::ServiceSummary>,
        programs_changed: bool,
    ) {
        // Services kept on their last good version stay listed with their last summary.
        let mut changed = programs_changed;
        for (k, v) in services {
            if self.summaries.get(k) != Some(v) {
                self.summaries.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        let live: BTreeSet<&String> = self.applied.owner.values().collect();
        let before = self.summaries.len();
        self.summaries.retain(|k, _| services.contains_key(k) || live.contains(k));
        if !changed && self.summaries.len() == before {
            return;
        }
        let catalog = Catalog {
            services: self.summaries.values().cloned().collect(),
            programs: self
                .applied
                .programs
                .iter()
                .map(|(key, program)| CatalogProgram { key: key.clone(), program: program.clone() })
                .collect(),
        };
        if let Err(e) = catalog.save(&Catalog::path_for(&self.cfg.state_file)) {
            warn!("{e}");
        }
        if let Ok(mut m) = self.metrics.lock() {
            m.catalog = catalog;
        }
    }

    fn save_allocations(&self) {
        let write = || -> Result<()> {
            if let Some(dir) = self.cfg.state_file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.cfg.state_file.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&self.allocations)?)?;
            std::fs::rename(&tmp, &self.cfg.state_file)?;
            Ok(())
        };
        if let Err(e) = write() {
            warn!("saving allocations to {}: {e:#}", self.cfg.state_file.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::service_of;

    #[test]
    fn allocation_keys_name_their_service() {
        assert_eq!(service_of("shop/web/IPv4"), "shop/web");
        assert_eq!(service_of("shop/web/http/TCP"), "shop/web");
        assert_eq!(service_of("shop/web:http/TCP/v4/lb"), "shop/web");
        assert_eq!(service_of("odd"), "odd");
    }
}
