//! The daemon's state: [`App`], the cheap-clone handle every HTTP handler gets. It hides the
//! config in force, the scheduler, the registry, the engine and the session store behind domain
//! methods (`reload`, `sessions`, `try_probe_slot`, ...); `app` builds it and drives it.

mod mesh;
mod outages;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, Shard};
use crate::engine::Pinger;
use crate::live::LiveHub;
use crate::metrics::{BuildInfo, Metrics, MetricsOptions, ScrapeCounter, ScrapeGauge, events};
use crate::resolve::Resolver;
use crate::scheduler::{Deps, Scheduler};
use crate::session::manager::{SessionManager, StartRequest};
use crate::session::outages::{OutageLog, OutageRecord, OutageStatus};
use crate::session::{Claim, Retention, Store, StoreOptions};

/// Default of `--web.max-probes`: `/probe` requests running at once; past it they get 429.
pub const MAX_CONCURRENT_PROBES: usize = 64;
/// How long a reload may take to read and validate the config and its target files. Past it the
/// reload fails (the running config stays, the reload gauge drops to 0) and the next one may
/// start; it is below the HTTP request timeout, so `/-/reload` always answers with the outcome.
pub const RELOAD_DEADLINE: Duration = Duration::from_secs(25);

/// Default of `--web.max-ws-clients`: WebSocket clients at once; past it an upgrade gets 503.
pub const MAX_WS_CLIENTS: usize = 256;

/// What `serve` was started with, beyond the config file's content.
#[derive(Clone, Debug)]
pub struct AppOptions {
    /// The config file; `None` runs the embedded default.
    pub config_path: Option<PathBuf>,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// Shard of the target list this instance keeps.
    pub shard: Option<Shard>,
    /// `/probe` requests running at once (`--web.max-probes`).
    pub max_probes: usize,
    /// WebSocket clients connected at once (`--web.max-ws-clients`).
    pub max_ws_clients: usize,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            config_path: None,
            telemetry_path: "/metrics".to_owned(),
            shard: None,
            max_probes: MAX_CONCURRENT_PROBES,
            max_ws_clients: MAX_WS_CLIENTS,
        }
    }
}

struct Inner {
    options: AppOptions,
    // Swapped whole on a successful reload; readers clone the Arc and never hold the lock.
    config: RwLock<Arc<Config>>,
    scheduler: Scheduler,
    // Configured targets and mesh peers, applied to the scheduler as one list.
    mesh: Arc<mesh::MeshState>,
    metrics: Metrics,
    live: LiveHub,
    pinger: Arc<dyn Pinger>,
    // Bounds /probe requests in flight; past it a request is refused at once (429).
    probe_slots: Arc<tokio::sync::Semaphore>,
    // The session store: claimed at start (folder, file type, lock), opened at the first use
    // of sessions (see `App::sessions`). An error is kept and served as 503; monitors go on.
    sessions_claim: parking_lot::Mutex<Option<Result<Claim, String>>>,
    sessions_config: config::SessionsConfig,
    sessions: OnceLock<Result<SessionManager, String>>,
    // Held by whoever is opening the store, until the outcome is in `sessions`.
    sessions_opening: Arc<tokio::sync::Mutex<()>>,
    // Bounds WebSocket clients; the count is the `pingscope_live_clients` gauge.
    ws_slots: Arc<tokio::sync::Semaphore>,
    // The reload in progress, if any: every caller meanwhile waits for its outcome (single
    // flight), so a SIGHUP storm or a burst of `/-/reload` runs one reload, not a queue of them.
    // A plain mutex: held only to look at or swap the slot, never across an await.
    reload_flight: parking_lot::Mutex<Option<ReloadFlight>>,
    shutdown: CancellationToken,
    /// Reverse names of hop responders, for the page's hop tables.
    names: crate::resolve::names::ReverseNames,
}

/// Cheap-clone handle to the running daemon.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Builds every handle and applies the config's targets. Call inside a tokio runtime.
    pub async fn start(
        options: AppOptions,
        config: Config,
        pinger: Arc<dyn Pinger>,
    ) -> anyhow::Result<Self> {
        let metrics = Metrics::new(MetricsOptions {
            histogram: config.histogram.clone(),
            build: BuildInfo::default(),
        })
        .context("building the metrics registry")?;
        let resolver = make_resolver(&config)?;
        let live = LiveHub::default();
        let (outages, outage_rx) = OutageLog::new(outages::OUTAGE_QUEUE);
        // A database from an earlier run may hold outages it cut: open it now to close them as
        // interrupted (a daemon that never had one still opens SQLite only at first use).
        let reopen = config.sessions.database.exists();
        let scheduler = Scheduler::new(
            Deps {
                pinger: pinger.clone(),
                resolver,
                metrics: metrics.clone(),
                live: live.clone(),
                outages,
                clock: Arc::new(crate::engine::clock::SystemClock),
            },
            config.dns.refresh,
        );
        {
            let pinger = pinger.clone();
            metrics.set_gauge_source(ScrapeGauge::ProbesInFlight, move || {
                i64::try_from(pinger.in_flight()).unwrap_or(i64::MAX)
            });
        }
        {
            let pinger = pinger.clone();
            metrics.set_counter_source(ScrapeCounter::EngineEventsDropped, move || {
                pinger.counters().events_dropped
            });
        }
        {
            let pinger = pinger.clone();
            metrics.set_counter_source(ScrapeCounter::EngineUnmatchedPackets, move || {
                pinger.counters().unmatched_packets
            });
        }
        {
            let pinger = pinger.clone();
            metrics.set_timestamp_source(move || pinger.timestamp_stats());
        }
        let max_ws = options.max_ws_clients;
        let ws_slots = Arc::new(tokio::sync::Semaphore::new(max_ws));
        {
            let slots = ws_slots.clone();
            metrics.set_gauge_source(ScrapeGauge::LiveClients, move || {
                i64::try_from(max_ws.saturating_sub(slots.available_permits())).unwrap_or(i64::MAX)
            });
        }
        let sessions_config = config.sessions.clone();
        let sessions_claim = {
            // Claiming may wait for the file lock: keep it off the workers.
            let path = config.sessions.database.clone();
            tokio::task::spawn_blocking(move || {
                Store::claim(&path).map_err(|e| {
                    tracing::error!(error = %e, "sessions are unavailable; monitors go on");
                    e.to_string()
                })
            })
            .await
            .unwrap_or_else(|e| Err(format!("claiming the session store panicked: {e}")))
        };
        let mesh = Arc::new(mesh::MeshState::new());
        let targets = config.targets_for(options.shard);
        scheduler.set_path_pacing(config.path_pacing);
        let (added, _, _) = mesh
            .apply_configured(&scheduler, targets, config.dns.refresh)
            .await;
        release_free_heap();
        metrics.set_reload_status(true, SystemTime::now());
        tracing::info!(
            targets = added,
            config = %options.config_path.as_deref().map_or("<embedded default>".into(), |p| p.display().to_string()),
            "monitors started"
        );
        let probe_slots = Arc::new(tokio::sync::Semaphore::new(options.max_probes));
        let app = Self {
            inner: Arc::new(Inner {
                options,
                config: RwLock::new(Arc::new(config)),
                scheduler,
                mesh,
                metrics,
                live,
                pinger,
                sessions_claim: parking_lot::Mutex::new(Some(sessions_claim)),
                sessions_config,
                sessions: OnceLock::new(),
                sessions_opening: Arc::new(tokio::sync::Mutex::new(())),
                ws_slots,
                probe_slots,
                reload_flight: parking_lot::Mutex::new(None),
                shutdown: CancellationToken::new(),
                names: Default::default(),
            }),
        };
        tokio::spawn(outages::store_outages(
            Arc::downgrade(&app.inner),
            outage_rx,
            reopen,
        ));
        tokio::spawn(
            app.inner
                .mesh
                .clone()
                .follow_peers(app.inner.scheduler.clone(), app.inner.shutdown.clone()),
        );
        app.follow_mesh_config();
        Ok(app)
    }

    /// The scheduler of the configured monitors.
    pub fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    /// Starts, restarts or stops mesh discovery as the config in force asks.
    fn follow_mesh_config(&self) {
        let scheduler = self.inner.scheduler.clone();
        self.inner.mesh.follow_config(
            &self.config(),
            Arc::new(move || scheduler.resolver()),
            &self.inner.shutdown,
        );
    }

    /// The mesh peers this instance monitors now (empty outside mesh mode).
    pub fn mesh_peers(&self) -> Vec<Arc<config::TargetConfig>> {
        self.inner.mesh.peers()
    }

    /// This instance's `source` label in mesh mode.
    pub fn mesh_name(&self) -> Option<String> {
        self.inner.mesh.name()
    }

    /// The registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The live hub of monitor samples.
    pub fn live(&self) -> &LiveHub {
        &self.inner.live
    }

    /// The ICMP engine.
    pub fn pinger(&self) -> &Arc<dyn Pinger> {
        &self.inner.pinger
    }

    /// The resolver now in force.
    pub fn resolver(&self) -> Resolver {
        self.inner.scheduler.resolver()
    }

    /// The reverse names (PTR) of hop responders: cached, looked up through [`App::resolver`].
    pub fn hop_names(&self) -> &crate::resolve::names::ReverseNames {
        &self.inner.names
    }

    /// A slot for one `/probe`, or `None` when all are taken.
    pub fn try_probe_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.probe_slots.clone().try_acquire_owned().ok()
    }

    /// The session runner, or why sessions are unavailable. The first call opens the store
    /// claimed at start.
    pub async fn sessions(&self) -> Result<SessionManager, String> {
        if let Some(opened) = self.inner.sessions.get() {
            return opened.clone();
        }
        let opening = self.inner.sessions_opening.clone().lock_owned().await;
        if let Some(opened) = self.inner.sessions.get() {
            return opened.clone();
        }
        // The blocking thread records the outcome and only then lets go of the opening lock,
        // so a caller that goes away mid-open loses nothing and the next one waits for it.
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let opened = open_sessions(&inner);
            let _ = inner.sessions.set(opened);
            drop(opening);
        })
        .await;
        self.inner
            .sessions
            .get()
            .cloned()
            .unwrap_or_else(|| Err("opening the session store panicked".to_owned()))
    }

    /// A slot for one WebSocket client, or `None` when all are taken.
    pub fn try_ws_slot(&self) -> Option<WsSlot> {
        self.inner.ws_slots.clone().try_acquire_owned().ok()
    }

    /// The config now in force.
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.read().clone()
    }

    /// Path of the metrics endpoint.
    pub fn telemetry_path(&self) -> &str {
        &self.inner.options.telemetry_path
    }

    /// Fires when the daemon shuts down (long-lived handlers stop on it).
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Re-reads the config file and applies it as a diff. An invalid file is rejected, the
    /// running config stays, and `pingscope_config_last_reload_successful` drops to 0.
    ///
    /// Every front (`/-/reload`, SIGHUP, `--config.watch`) goes through here, so the outcome is
    /// logged here once, in the words of its `Display` (the text `/-/reload` answers with).
    ///
    /// Single flight: a call while a reload runs waits for that reload and gets its outcome.
    /// The reload runs on its own task, so a caller that goes away never cuts it short.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut outcome = {
            let mut flight = self.inner.reload_flight.lock();
            match &*flight {
                Some(running) => running.clone(),
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    *flight = Some(rx.clone());
                    let this = self.clone();
                    tokio::spawn(async move {
                        let outcome = this.reload_now().await;
                        // Cleared before the outcome is out: a call that comes after it starts
                        // a new reload, one that came before gets this outcome.
                        *this.inner.reload_flight.lock() = None;
                        let _ = tx.send(Some(outcome));
                    });
                    rx
                }
            }
        };
        match outcome.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or(Err(ReloadError::Aborted)),
            Err(_) => Err(ReloadError::Aborted),
        }
    }

    async fn reload_now(&self) -> Result<Reloaded, ReloadError> {
        let outcome = self.reload_file().await;
        let metrics = &self.inner.metrics;
        match &outcome {
            // Nothing was re-read: the gauge keeps telling about the last real load.
            Ok(r @ Reloaded::Embedded) => tracing::info!("{r}"),
            Ok(r @ Reloaded::Applied { .. }) => events::reload_succeeded(metrics, r),
            Err(e) => events::reload_failed(metrics, e),
        }
        outcome
    }

    async fn reload_file(&self) -> Result<Reloaded, ReloadError> {
        let Some(path) = self.inner.options.config_path.clone() else {
            return Ok(Reloaded::Embedded);
        };
        // Read and validated off the workers, under a deadline: a file system that hangs or a
        // config that takes too long fails this reload and never wedges the next one.
        let load = tokio::task::spawn_blocking(move || config::load_file(&path));
        let new = match tokio::time::timeout(RELOAD_DEADLINE, load).await {
            Ok(Ok(loaded)) => loaded.map_err(|issues| ReloadError::Invalid { issues })?,
            Ok(Err(_)) => return Err(ReloadError::Aborted),
            Err(_) => {
                return Err(ReloadError::TimedOut {
                    deadline: RELOAD_DEADLINE,
                });
            }
        };
        let old = self.config();
        if new.histogram != old.histogram {
            tracing::warn!("histogram buckets changed; they take effect at the next restart");
        }
        if new.dns.servers != old.dns.servers {
            self.inner.scheduler.set_resolver(make_resolver(&new)?);
        }
        let targets = new.targets_for(self.inner.options.shard);
        let total = targets.len();
        self.inner.scheduler.set_path_pacing(new.path_pacing);
        let (added, changed, removed) = self
            .inner
            .mesh
            .apply_configured(&self.inner.scheduler, targets, new.dns.refresh)
            .await;
        *self.inner.config.write() = Arc::new(new);
        self.follow_mesh_config();
        release_free_heap();
        Ok(Reloaded::Applied {
            targets: total,
            added,
            changed,
            removed,
        })
    }

    /// Stops scheduling and lets long-lived handlers end.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let sessions = async {
            if let Some(Ok(m)) = self.inner.sessions.get() {
                m.shutdown().await;
            }
        };
        tokio::join!(self.inner.scheduler.shutdown(), sessions);
    }
}

/// A held WebSocket client slot; dropping it frees the slot.
pub type WsSlot = tokio::sync::OwnedSemaphorePermit;

/// What a successful [`App::reload`] did. Its `Display` is the answer of `/-/reload` and the
/// log line of every reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// No config file: the embedded default runs and there is nothing to re-read.
    Embedded,
    /// The file was applied as a diff.
    Applied {
        /// Targets of this instance in the new config.
        targets: usize,
        /// Targets started.
        added: usize,
        /// Targets restarted with their new settings.
        changed: usize,
        /// Targets stopped, their series deleted.
        removed: usize,
    },
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded => f.write_str("running the embedded default config; nothing to reload"),
            Self::Applied {
                targets,
                added,
                changed,
                removed,
            } => write!(
                f,
                "config reloaded: {targets} targets ({added} added, {changed} changed, {removed} removed)"
            ),
        }
    }
}

/// The outcome of the reload in progress, once it is in.
type ReloadFlight = tokio::sync::watch::Receiver<Option<Result<Reloaded, ReloadError>>>;

/// Why [`App::reload`] kept the running config. Its `Display` is the answer of `/-/reload` and
/// the log line of every reload.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not validate: every issue, with its file, line and key.
    #[error("config reload rejected; the running config stays:\n{issues}")]
    Invalid {
        /// Every issue found.
        issues: config::ConfigError,
    },
    /// The new `dns.servers` cannot be used.
    #[error("config reload rejected; the running config stays: {0}")]
    Resolver(#[from] ResolverSetupError),
    /// Reading and validating the files took longer than the deadline.
    #[error(
        "config reload failed: reading and validating the config took longer than {}; the running config stays",
        humantime::format_duration(*deadline)
    )]
    TimedOut {
        /// [`RELOAD_DEADLINE`].
        deadline: Duration,
    },
    /// The reload task ended without an outcome (it panicked, or the runtime is shutting down).
    #[error("config reload failed: the reload ended without an outcome; the running config stays")]
    Aborted,
}

/// The resolver a config asks for could not be set up.
#[derive(Clone, Debug, thiserror::Error)]
#[error("setting up the {what}: {error}")]
pub struct ResolverSetupError {
    what: &'static str,
    error: Arc<crate::resolve::ResolveError>,
}

/// Opens the store claimed at start and makes the session runner. Blocking.
fn open_sessions(inner: &Inner) -> Result<SessionManager, String> {
    let claim = inner
        .sessions_claim
        .lock()
        .take()
        .unwrap_or_else(|| Err("the session store was already opened".to_owned()))?;
    let s = &inner.sessions_config;
    let options = StoreOptions {
        retention: Retention {
            max_sessions: Some(s.retention.max_sessions as u64),
            max_age: Some(s.retention.max_age),
        },
        ..StoreOptions::default()
    };
    match claim.open(options) {
        Ok(store) => {
            inner.metrics.set_counter_source(
                ScrapeCounter::SessionSamplesDropped,
                store.dropped_samples_reader(),
            );
            inner.metrics.set_counter_source(
                ScrapeCounter::SessionSamplesLost,
                store.failed_samples_reader(),
            );
            inner.metrics.set_counter_source(
                ScrapeCounter::StoreWriteErrors,
                store.failed_batches_reader(),
            );
            inner
                .metrics
                .set_counter_source(ScrapeCounter::StoreFileLost, store.file_lost_reader());
            let m = SessionManager::new(store, inner.pinger.clone());
            let active = m.clone();
            inner
                .metrics
                .set_gauge_source(ScrapeGauge::SessionsActive, move || {
                    i64::try_from(active.active()).unwrap_or(i64::MAX)
                });
            Ok(m)
        }
        Err(e) => {
            tracing::error!(error = %e, "sessions are unavailable; monitors go on");
            Err(e.to_string())
        }
    }
}

/// The resolver `config` asks for: the system's, or its `dns.servers`.
fn make_resolver(config: &Config) -> Result<Resolver, ResolverSetupError> {
    let (what, resolver) = if config.dns.servers.is_empty() {
        ("system resolver", Resolver::system())
    } else {
        ("DNS resolver", Resolver::with_servers(&config.dns.servers))
    };
    resolver.map_err(|error| ResolverSetupError {
        what,
        error: Arc::new(error),
    })
}

/// Gives the heap's free memory back to the system. Parsing a config and starting or replacing
/// thousands of monitors leaves freed blocks spread over the heap that glibc keeps (about 10 MiB
/// at 10,000 targets); after a load or reload, once the HTTP routes are built (the OpenAPI
/// document's tree is written out and dropped) and after each scrape are the moments such
/// garbage is known to exist.
pub(crate) fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests;
