//! Wiring for `pingscope serve`: build the handles, start the scheduler and the HTTP servers,
//! then wait for reload and shutdown signals.
//!
//! [`App`] is the cheap-clone handle every HTTP handler gets: it hides the current config, the
//! scheduler, the registry and the engine behind domain methods (`reload`, `scheduler`, ...).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, LogFormat, ServeArgs};
use crate::config::{self, Config, Shard};
use crate::engine::Pinger;
use crate::engine::icmp::{EngineConfig, IcmpEngine};
use crate::http::serve::{Limits, ServeOptions};
use crate::http::webconfig::{WebConfig, WebConfigError};
use crate::live::LiveHub;
use crate::metrics::{BuildInfo, Metrics, MetricsOptions, ScrapeGauge};
use crate::resolve::Resolver;
use crate::scheduler::{Deps, Scheduler};
use crate::session::manager::SessionManager;
use crate::session::{Claim, Retention, Store, StoreOptions};

/// How long shutdown may take before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
/// Default of `--web.max-probes`: `/probe` requests running at once; past it they get 429.
pub const MAX_CONCURRENT_PROBES: usize = 64;
/// Default of `--web.max-ws-clients`: WebSocket clients at once; past it an upgrade gets 503.
pub const MAX_WS_CLIENTS: usize = 256;
/// How often `--config.watch` looks at the config and target files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

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
    // Serializes reloads (a SIGHUP storm applies one diff at a time).
    reload_lock: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
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
            buckets: config.histogram.buckets.clone(),
            native: config.histogram.native,
            classic_in_protobuf: config.histogram.classic_in_protobuf,
            build: BuildInfo::default(),
        })
        .context("building the metrics registry")?;
        let resolver = make_resolver(&config)?;
        let live = LiveHub::default();
        let scheduler = Scheduler::new(
            Deps {
                pinger: pinger.clone(),
                resolver,
                metrics: metrics.clone(),
                live: live.clone(),
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
        let targets = config.targets_for(options.shard);
        let (added, _, _) = scheduler.apply(&targets, config.dns.refresh).await;
        drop(targets);
        release_free_heap();
        metrics.set_reload_status(true, SystemTime::now());
        tracing::info!(
            targets = added,
            config = %options.config_path.as_deref().map_or("<embedded default>".into(), |p| p.display().to_string()),
            "monitors started"
        );
        let probe_slots = Arc::new(tokio::sync::Semaphore::new(options.max_probes));
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                config: RwLock::new(Arc::new(config)),
                scheduler,
                metrics,
                live,
                pinger,
                sessions_claim: parking_lot::Mutex::new(Some(sessions_claim)),
                sessions_config,
                sessions: OnceLock::new(),
                sessions_opening: Arc::new(tokio::sync::Mutex::new(())),
                ws_slots,
                probe_slots,
                reload_lock: tokio::sync::Mutex::new(()),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The scheduler of the configured monitors.
    pub fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
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
    pub async fn reload(&self) -> Result<String, String> {
        let _serial = self.inner.reload_lock.lock().await;
        let Some(path) = self.inner.options.config_path.clone() else {
            return Ok("running the embedded default config; nothing to reload".to_owned());
        };
        let new = match config::load_file(&path) {
            Ok(c) => c,
            Err(e) => {
                self.inner
                    .metrics
                    .set_reload_status(false, SystemTime::now());
                tracing::error!(file = %path.display(), errors = %e, "config reload rejected; the running config stays");
                return Err(e.to_string());
            }
        };
        let old = self.config();
        if new.histogram != old.histogram {
            tracing::warn!("histogram buckets changed; they take effect at the next restart");
        }
        if new.dns.servers != old.dns.servers {
            match make_resolver(&new) {
                Ok(r) => self.inner.scheduler.set_resolver(r),
                Err(e) => {
                    self.inner
                        .metrics
                        .set_reload_status(false, SystemTime::now());
                    return Err(format!("{e:#}"));
                }
            }
        }
        let targets = new.targets_for(self.inner.options.shard);
        let (added, changed, removed) = self.inner.scheduler.apply(&targets, new.dns.refresh).await;
        let total = targets.len();
        drop(targets);
        *self.inner.config.write() = Arc::new(new);
        release_free_heap();
        self.inner
            .metrics
            .set_reload_status(true, SystemTime::now());
        let summary = format!(
            "config reloaded: {total} targets ({added} added, {changed} changed, {removed} removed)"
        );
        tracing::info!(added, changed, removed, targets = total, "config reloaded");
        Ok(summary)
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

fn make_resolver(config: &Config) -> anyhow::Result<Resolver> {
    if config.dns.servers.is_empty() {
        Resolver::system().context("setting up the system resolver")
    } else {
        Resolver::with_servers(&config.dns.servers).context("setting up the DNS resolver")
    }
}

/// Sets up logging for the daemon.
pub fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --log.level \"{level}\""))?;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let result = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .try_init()
            .map_err(|e| e.to_string()),
        // `ts=… level=info target=… msg="…" key=value`, as Prometheus' own exporters log.
        LogFormat::Logfmt => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_logfmt::builder()
                    .with_span_path(false)
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init()
            .map_err(|e| e.to_string()),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// `pingscope check-config FILE`.
pub fn check_config(file: &Path) -> u8 {
    let (ok, report) = config::check_config_report(file);
    if ok {
        print_line(&report);
        cli::EXIT_OK
    } else {
        eprint_line(&report);
        cli::EXIT_USAGE
    }
}

fn print_line(s: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{s}");
}

fn eprint_line(s: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{s}");
}

/// `pingscope serve`: returns the exit status.
pub fn main(args: ServeArgs) -> u8 {
    tune_allocator();
    if let Err(e) = init_logging(&args.log_level, args.log_format) {
        eprint_line(&format!("pingscope: {e:#}"));
        return cli::EXIT_USAGE;
    }
    let shard = match args.shard.as_deref().map(str::parse::<Shard>).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprint_line(&format!("pingscope: invalid --shard: {e}"));
            return cli::EXIT_USAGE;
        }
    };
    if !args.telemetry_path.starts_with('/') || args.telemetry_path.len() < 2 {
        eprint_line("pingscope: --web.telemetry-path must start with / and name a path");
        return cli::EXIT_USAGE;
    }
    let config = match &args.config_file {
        Some(path) => match config::load_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprint_line(&format!("pingscope: invalid config:\n{e}"));
                return cli::EXIT_USAGE;
            }
        },
        None => Config::embedded_default(),
    };
    let serve_options = match serve_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprint_line(&format!("pingscope: invalid --web.config.file: {e}"));
            return cli::EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pingscope")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprint_line(&format!("pingscope: cannot start the runtime: {e}"));
            return cli::EXIT_FAILURE;
        }
    };
    let options = AppOptions {
        config_path: args.config_file.clone(),
        telemetry_path: args.telemetry_path.clone(),
        shard,
        max_probes: args.max_probes,
        max_ws_clients: args.max_ws_clients,
    };
    let code = runtime.block_on(run(
        options,
        config,
        args.listen.clone(),
        args.config_watch,
        serve_options,
    ));
    // Tasks still running after the grace period must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// The web config (validated now) and the limits from the flags.
fn serve_options(args: &ServeArgs) -> Result<ServeOptions, WebConfigError> {
    let web_config = args
        .web_config_file
        .as_deref()
        .map(WebConfig::open)
        .transpose()?;
    Ok(ServeOptions {
        web_config,
        health_without_auth: args.health_without_auth,
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_header_bytes: args.max_header_bytes,
            max_headers: args.max_headers,
            header_read_timeout: args.header_read_timeout,
            request_timeout: args.request_timeout,
            max_connections: args.max_connections,
        },
    })
}

async fn run(
    options: AppOptions,
    config: Config,
    listen: Vec<SocketAddr>,
    watch: bool,
    serve_options: ServeOptions,
) -> u8 {
    let engine = match IcmpEngine::new(EngineConfig::default()) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot open ICMP sockets");
            eprint_line(&format!("pingscope: {e}"));
            return match e {
                crate::engine::SocketError::PermissionDenied { .. } => cli::EXIT_NOPERM,
                _ => cli::EXIT_FAILURE,
            };
        }
    };
    let mut listeners = Vec::new();
    for addr in &listen {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(address = %addr, "listening");
                listeners.push(l);
            }
            Err(e) => {
                eprint_line(&format!("pingscope: cannot listen on {addr}: {e}"));
                return cli::EXIT_FAILURE;
            }
        }
    }
    let app = match App::start(options, config, engine).await {
        Ok(app) => app,
        Err(e) => {
            eprint_line(&format!("pingscope: {e:#}"));
            return cli::EXIT_FAILURE;
        }
    };
    let http_shutdown = CancellationToken::new();
    let router = crate::http::serve::layered(crate::http::router(app.clone()), &serve_options);
    let server = tokio::spawn(crate::http::serve::serve_with(
        listeners,
        router,
        http_shutdown.clone(),
        SHUTDOWN_GRACE,
        serve_options,
    ));
    if watch {
        tokio::spawn(watch_config(app.clone()));
    }
    wait_for_signals(&app).await;
    tracing::info!("shutting down");
    let bounded = async {
        app.shutdown().await;
        http_shutdown.cancel();
        let _ = server.await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, bounded).await.is_err() {
        tracing::warn!("shutdown grace period over; exiting");
    }
    cli::EXIT_OK
}

/// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
async fn wait_for_signals(app: &App) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            Some(()) = hup.recv() => {
                let app = app.clone();
                // A reload waits for the previous one; signals keep being read meanwhile.
                tokio::spawn(async move { let _ = app.reload().await; });
            }
            Some(()) = term.recv() => return,
            Some(()) = int.recv() => return,
        }
    }
}

/// Reloads when the config file or a target file changes (polling: works with the symlink
/// swaps of Kubernetes ConfigMaps, where inotify on the file misses the change).
async fn watch_config(app: App) {
    let mut last = fingerprint(&app.config().watch_paths());
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.shutdown_token().cancelled() => return,
        }
        let now = fingerprint(&app.config().watch_paths());
        if now != last {
            last = now;
            tracing::info!("config or target files changed; reloading");
            let _ = app.reload().await;
        }
    }
}

fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    for p in paths {
        let entries: Vec<PathBuf> = if p.is_dir() {
            std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        } else {
            vec![p.clone()]
        };
        for e in entries {
            let meta = std::fs::metadata(&e).ok();
            out.push((
                e,
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map_or(0, |m| m.len()),
            ));
        }
    }
    out.sort();
    out
}

/// Serves large blocks (1 MiB and up) with their own mappings, always.
///
/// glibc raises its mmap threshold each time it frees a mapped block, up to 32 MiB, and keeps
/// up to twice that free in the heap before trimming. A `/metrics` body at 10,000 targets grows
/// through 16 and 32 MiB buffers, so after the first scrape every later buffer below 32 MiB came
/// from the heap and stayed there once freed: 13 MiB more resident at 10,000 targets, for good. Fixing the
/// threshold turns that adjustment off; a block this large costs one mmap/munmap pair, which is
/// nothing beside filling it.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's own tunables, under its own lock.
    unsafe {
        const THRESHOLD: libc::c_int = 1 << 20;
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
    }
}

/// Gives the heap's free memory back to the system. Parsing a config and starting or replacing
/// thousands of monitors leaves freed blocks spread over the heap that glibc keeps (about 10 MiB
/// at 10,000 targets); after a load or reload is the one moment such garbage is known to exist.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
