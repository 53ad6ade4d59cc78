//! The monitor scheduler: a target whose host is an address literal goes straight on a wheel,
//! with no task of its own; a DNS name gets a task that resolves and re-resolves it and runs one
//! probe task per address (as does a path monitor, for its tracer); all are stopped through a
//! token tree on reload and shutdown. The probes themselves go out from a few [`wheel`] tasks
//! (one per runtime worker) that hold every address's next tick in one map of due times each,
//! so a probe costs no task wake-up of its own.
//!
//! - Probe results do not come back through the tasks: the engine hands each event to the
//!   address's [`Recorder`](recorder::Recorder) (an [`EventHandler`](crate::engine::EventHandler)), which updates metrics, the window and the
//!   status slot inline. No channel and no wake-up per event, and little memory per target:
//!   that is what lets one process run tens of thousands of targets.
//! - Start times are spread across the interval by a stable hash of (target, address), so a
//!   thousand targets do not all fire at t=0 and a restart keeps their phase; the wheels put
//!   them on a 20 ms grid, so that the probes of a step go out in one wake-up.
//! - Ticks are computed as `start + k·interval` (no drift from processing time); how late each
//!   send was against that schedule goes to `pingscope_scheduler_lag_seconds`. An address that
//!   falls more than one interval behind skips the missed ticks instead of bursting.
//! - [`Scheduler::apply`] is a diff by target name: unchanged targets keep their tasks, series
//!   and windows; changed ones are stopped (their series deleted) before the new version starts;
//!   removed ones are stopped and deleted.
//!
//! Split by concern: this file is the handle and the diff; [`resolution`] turns a target into
//! addresses (literal or DNS, re-resolved); [`address`] makes and retires one address (the one
//! place an address's series and status go away); [`tick`] is the probe loop and [`wheel`] its
//! timers; [`recorder`] records the engine's events inline; [`outage`] and [`capture`] turn the
//! settled probes into outages and into loss crossings that ask for a capture.

mod address;
mod capture;
mod keyed;
mod outage;
mod path;
mod recorder;
mod resolution;
mod tick;
mod wall;
mod wheel;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::TargetConfig;
use crate::engine::{Pinger, ProbeEvent};
use crate::live::LiveHub;
use crate::metrics::Metrics;
use crate::resolve::Resolver;
use crate::sample::Sample;
use crate::stats::{Window, WindowStats};

pub use path::{PathView, PathViewError};
use resolution::target_task;

/// What the scheduler needs from the rest of the daemon.
#[derive(Clone, Debug)]
pub struct Deps {
    /// The ICMP engine.
    pub pinger: Arc<dyn Pinger>,
    /// DNS.
    pub resolver: Resolver,
    /// The registry.
    pub metrics: Metrics,
    /// Live samples.
    pub live: LiveHub,
    /// Where outages are recorded.
    pub outages: crate::session::outages::OutageLog,
    /// The clocks outage times are read from: the machine's in the daemon, one whose wall clock
    /// tests step.
    pub clock: Arc<dyn crate::engine::clock::Clock>,
}

/// Current state of one monitored address, for `/api/v1/targets`.
#[derive(Clone, Debug, PartialEq)]
pub struct AddressStatus {
    /// Target name.
    pub target: String,
    /// Host as configured.
    pub host: String,
    /// The address.
    pub ip: IpAddr,
    /// Custom labels.
    pub labels: Vec<(String, String)>,
    /// Probe interval.
    pub interval: Duration,
    /// What kind of probe.
    pub kind: crate::probe::ProbeKind,
    /// The port of a TCP or UDP monitor.
    pub port: Option<u16>,
    /// Probes sent since the task started.
    pub sent: u64,
    /// Statistics of the window.
    pub window: WindowStats,
    /// The last sample, if any.
    pub last: Option<Sample>,
}

/// A target whose name could not be resolved (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveFailure {
    /// Target name.
    pub target: String,
    /// Host as configured.
    pub host: String,
    /// The error.
    pub error: String,
}

/// One monitored address as its probe loop, the engine (it is the address's event handler) and
/// the readers of `/api/v1/targets` share it: what it is, fixed for its life, beside what
/// changes under its own lock, and what records its events. One allocation per address for all
/// three (a recorder of its own cost another, and another pointer to follow per event).
#[derive(Debug)]
struct AddressSlot {
    cfg: Arc<TargetConfig>,
    ip: IpAddr,
    state: Mutex<Slot>,
    rec: recorder::Recorder,
}

/// An address's changing state: updated once per sent and settled probe under its own
/// (uncontended) lock; statistics with percentiles are computed only on read.
#[derive(Debug)]
struct Slot {
    sent: u64,
    window: Window,
    last: Option<LastEvent>,
    outage: outage::AddressOutage,
}

/// An address's last settled probe, for its status: the engine's event without the address,
/// which the slot holds already (16 bytes of every slot).
#[derive(Debug)]
struct LastEvent {
    tag: u64,
    seq: u16,
    at: std::time::SystemTime,
    kind: crate::engine::EventKind,
}

impl LastEvent {
    fn of(ev: ProbeEvent) -> Self {
        let ProbeEvent {
            tag,
            seq,
            ip: _,
            at,
            kind,
        } = ev;
        Self { tag, seq, at, kind }
    }

    /// The event again, of address `ip`.
    fn event(&self, ip: IpAddr) -> ProbeEvent {
        ProbeEvent {
            tag: self.tag,
            seq: self.seq,
            ip,
            at: self.at,
            kind: self.kind.clone(),
        }
    }
}

impl AddressSlot {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Slot> {
        self.state.lock()
    }

    /// Who an outage of this address is of.
    fn of(&self) -> outage::Of<'_> {
        outage::Of {
            cfg: &self.cfg,
            ip: self.ip,
            log: &self.rec.common.outages,
        }
    }

    fn status(&self) -> AddressStatus {
        let cfg = &self.cfg;
        let slot = self.lock();
        AddressStatus {
            target: cfg.name.to_string(),
            host: cfg.host.to_string(),
            ip: self.ip,
            labels: cfg
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            interval: cfg.options.interval,
            kind: cfg.options.kind,
            port: cfg.options.port.port,
            sent: slot.sent,
            window: slot.window.stats(),
            last: slot
                .last
                .as_ref()
                .map(|last| Sample::from_event(&cfg.name, &cfg.host, &last.event(self.ip))),
        }
    }
}

type StatusSlot = Arc<AddressSlot>;

impl keyed::Keyed for StatusSlot {
    fn key(&self) -> keyed::Key<'_> {
        (&self.cfg.name, Some(self.ip))
    }
}

struct TargetTask {
    config: Arc<TargetConfig>,
    run: Running,
}

impl keyed::Keyed for TargetTask {
    fn key(&self) -> keyed::Key<'_> {
        (&self.config.name, None)
    }
}

/// How a target runs.
enum Running {
    /// A task: DNS names (resolved and re-resolved), path monitors (their tracer), and literals
    /// that do not fit the target's family (reported and retried like a failed lookup).
    Task {
        cancel: CancellationToken,
        handle: JoinHandle<()>,
    },
    /// An address literal probed straight from a wheel, with no task (`None`: it could not be
    /// set up, which was logged).
    Literal(Option<address::Placed>),
}

impl TargetTask {
    /// Stops a literal at once; a task is cancelled and its handle returned to be awaited.
    fn stop(self, shared: &Shared) -> Option<JoinHandle<()>> {
        match self.run {
            Running::Task { cancel, handle } => {
                cancel.cancel();
                Some(handle)
            }
            Running::Literal(placed) => {
                if let Some(placed) = placed {
                    placed.stop(shared, &self.config.name);
                }
                None
            }
        }
    }
}

/// The address of a target that can go straight on a wheel: an address literal that fits the
/// target's family, probed by a kind that is not path tracing.
fn literal_address(cfg: &TargetConfig) -> Option<IpAddr> {
    if cfg.options.kind == crate::probe::ProbeKind::Path {
        return None;
    }
    match crate::resolve::lookup_literal(&cfg.host, cfg.options.family)? {
        Ok(resolved) => match resolved.addrs[..] {
            [ip] => Some(ip),
            _ => None,
        },
        Err(_) => None,
    }
}

struct Shared {
    deps: Deps,
    // Replaced when a reload changes `dns.servers`; lookups clone it first.
    resolver: Mutex<Resolver>,
    dns_refresh: Mutex<Duration>,
    // Held only to add/remove entries and to copy them out; never across an await.
    tasks: tokio::sync::Mutex<keyed::Table<TargetTask>>,
    // Status slots of every running address; each slot's own lock is taken by its probe loop
    // and its recorder once per probe, and by snapshot readers.
    statuses: Mutex<keyed::Table<StatusSlot>>,
    failures: Mutex<HashMap<String, ResolveFailure>>,
    // Figures and history of every running path monitor's address, by (target, address).
    paths: Mutex<HashMap<(String, IpAddr), path::PathSlot>>,
    readiness: Arc<Readiness>,
    /// What every address's recorder reaches, shared rather than kept by each.
    common: Arc<recorder::Common>,
    shutdown: CancellationToken,
    /// Per-router pacing shared by every path monitor's tracer.
    hop_pacer: crate::probe::path::HopPacer,
    /// The ticks of every address's probe loop (path monitors have their own).
    wheels: wheel::Wheels,
}

/// Cheap-clone handle to the scheduler.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

/// Counts targets that have not finished their first round yet.
#[derive(Debug, Default)]
struct Readiness {
    started: AtomicBool,
    pending: AtomicUsize,
}

impl Scheduler {
    /// A scheduler with no targets.
    pub fn new(deps: Deps, dns_refresh: Duration) -> Self {
        let shutdown = CancellationToken::new();
        let readiness = Arc::<Readiness>::default();
        let common = Arc::new(recorder::Common {
            live: deps.live.clone(),
            outages: deps.outages.clone(),
            readiness: readiness.clone(),
        });
        Self {
            shared: Arc::new(Shared {
                resolver: Mutex::new(deps.resolver.clone()),
                wheels: wheel::Wheels::new(&deps, &shutdown),
                deps,
                dns_refresh: Mutex::new(dns_refresh),
                tasks: tokio::sync::Mutex::default(),
                statuses: Mutex::default(),
                failures: Mutex::new(HashMap::new()),
                paths: Mutex::new(HashMap::new()),
                common,
                readiness,
                shutdown,
                hop_pacer: crate::probe::path::HopPacer::default(),
            }),
        }
    }

    /// Sets what every path monitor together asks of one router (`path_pacing`).
    pub fn set_path_pacing(&self, pacing: crate::config::PathPacingConfig) {
        self.shared
            .hop_pacer
            .configure(f64::from(pacing.router_rate), pacing.router_burst);
    }

    /// Applies a target list as a diff against the running one. Returns (added, changed, removed).
    pub async fn apply(
        &self,
        targets: &[Arc<TargetConfig>],
        dns_refresh: Duration,
    ) -> (usize, usize, usize) {
        *self.shared.dns_refresh.lock() = dns_refresh;
        let mut tasks = self.shared.tasks.lock().await;
        let first = !self.shared.readiness.started.swap(true, Ordering::SeqCst);
        let wanted: HashMap<&str, &TargetConfig> =
            targets.iter().map(|t| (&*t.name, &**t)).collect();
        let mut stopping = Vec::new();
        let mut changed = 0;
        let mut removed = 0;
        let names: Vec<Arc<str>> = tasks.iter().map(|t| t.config.name.clone()).collect();
        for name in names {
            let running = tasks.get((&name, None)).map(|t| &*t.config);
            match wanted.get(&*name) {
                Some(cfg) if Some(*cfg) == running => {}
                Some(_) => {
                    changed += 1;
                    if let Some(t) = tasks.remove((&name, None)) {
                        stopping.extend(t.stop(&self.shared));
                    }
                }
                None => {
                    removed += 1;
                    self.shared.deps.metrics.set_thresholds(&name, None);
                    self.shared.deps.metrics.set_capture_reasons(&name, &[]);
                    if let Some(t) = tasks.remove((&name, None)) {
                        stopping.extend(t.stop(&self.shared));
                    }
                }
            }
        }
        // Old tasks delete their series on the way out; wait so they cannot delete the series
        // the new version of a changed target is about to create.
        for h in stopping {
            let _ = h.await;
        }
        let mut added = 0;
        for cfg in targets {
            if tasks.contains((&cfg.name, None)) {
                continue;
            }
            added += 1;
            self.shared
                .deps
                .metrics
                .set_thresholds(&cfg.name, outage::thresholds(&cfg.options.alert));
            self.shared
                .deps
                .metrics
                .set_capture_reasons(&cfg.name, &outage::capture_reasons(cfg));
            if first {
                self.shared.readiness.pending.fetch_add(1, Ordering::SeqCst);
            }
            let config = cfg.clone();
            let run = match literal_address(cfg) {
                Some(ip) => {
                    match address::place_address(
                        &self.shared,
                        cfg,
                        ip,
                        &self.shared.shutdown,
                        first,
                    ) {
                        Ok(placed) => Running::Literal(Some(placed)),
                        Err(e) => {
                            tracing::warn!(target_name = %cfg.name, %ip, error = %e, "cannot monitor address");
                            let mut pending = first;
                            mark_first_round(&self.shared, &mut pending);
                            Running::Literal(None)
                        }
                    }
                }
                None => {
                    let cancel = self.shared.shutdown.child_token();
                    let handle = tokio::spawn(target_task(
                        self.shared.clone(),
                        config.clone(),
                        cancel.clone(),
                        first,
                    ));
                    Running::Task { cancel, handle }
                }
            };
            tasks.insert(TargetTask { config, run });
        }
        (added - changed, changed, removed)
    }

    /// The resolver now in force.
    pub fn resolver(&self) -> Resolver {
        self.shared.resolver.lock().clone()
    }

    /// Uses this resolver for every lookup from now on.
    pub fn set_resolver(&self, resolver: Resolver) {
        *self.shared.resolver.lock() = resolver;
    }

    /// True once every target of the first config has settled its first probe on every address
    /// (or failed to resolve).
    pub fn ready(&self) -> bool {
        let r = &self.shared.readiness;
        r.started.load(Ordering::SeqCst) && r.pending.load(Ordering::SeqCst) == 0
    }

    /// Names of the running targets.
    pub async fn target_names(&self) -> Vec<String> {
        let tasks = self.shared.tasks.lock().await;
        let mut names: Vec<String> = tasks.iter().map(|t| t.config.name.to_string()).collect();
        names.sort();
        names
    }

    /// Status of every monitored address, sorted by target and address.
    pub fn snapshot(&self) -> Vec<AddressStatus> {
        let slots: Vec<StatusSlot> = self.shared.statuses.lock().iter().cloned().collect();
        let mut out: Vec<AddressStatus> = slots.iter().map(|s| s.status()).collect();
        out.sort_by(|a, b| (&a.target, a.ip).cmp(&(&b.target, b.ip)));
        out
    }

    /// Targets whose host does not resolve right now.
    pub fn resolve_failures(&self) -> Vec<ResolveFailure> {
        let mut v: Vec<ResolveFailure> = self.shared.failures.lock().values().cloned().collect();
        v.sort_by(|a, b| a.target.cmp(&b.target));
        v
    }

    /// Stops every task and waits for them (bounded by the caller).
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let mut tasks = self.shared.tasks.lock().await;
        let all: Vec<TargetTask> = tasks.drain().collect();
        for t in all {
            if let Some(handle) = t.stop(&self.shared) {
                let _ = handle.await;
            }
        }
    }
}

fn mark_first_round(shared: &Shared, pending: &mut bool) {
    if std::mem::take(pending) {
        shared.readiness.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
