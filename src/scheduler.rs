//! The monitor scheduler: one task per target, all cancelled through a token tree on reload and
//! shutdown. A target whose host is an address literal probes in that task; a DNS name's task
//! resolves and re-resolves it and runs one probe task per address.
//!
//! - Probe results do not come back through the tasks: the engine hands each event to the
//!   address's [`Recorder`] (an [`EventHandler`]), which updates metrics, the window and the
//!   status slot inline. No channel and no wake-up per event, and little memory per target:
//!   that is what lets one process run tens of thousands of targets.
//! - Start times are spread across the interval by a stable hash of (target, address), so a
//!   thousand targets do not all fire at t=0 and a restart keeps their phase.
//! - Ticks are computed as `start + k·interval` (no drift from processing time); how late each
//!   send was against that schedule goes to `pingscope_scheduler_lag_seconds`. A task that falls
//!   more than one interval behind skips the missed ticks instead of bursting.
//! - [`Scheduler::apply`] is a diff by target name: unchanged targets keep their tasks, series
//!   and windows; changed ones are stopped (their series deleted) before the new version starts;
//!   removed ones are stopped and deleted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::TargetConfig;
use crate::engine::{
    EventHandler, EventKind, EventSink, Pinger, ProbeEvent, ProbeSpec, SocketOptions,
};
use crate::live::LiveHub;
use crate::metrics::{Metrics, TargetLabels, TargetMetrics, WindowRtt};
use crate::resolve::{Family, Resolver};
use crate::sample::Sample;
use crate::stats::{Window, WindowStats};

/// Shortest wait before re-resolving, whatever the record's TTL says.
const MIN_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between retries of a failing lookup.
const MAX_RESOLVE_BACKOFF: Duration = Duration::from_secs(60);

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

/// What a probe task shares with readers of `/api/v1/targets`: updated once per settled probe
/// under its own (uncontended) lock; statistics with percentiles are computed only on read.
#[derive(Debug)]
struct Slot {
    cfg: Arc<TargetConfig>,
    ip: IpAddr,
    sent: u64,
    window: Window,
    last: Option<ProbeEvent>,
}

impl Slot {
    fn status(&self) -> AddressStatus {
        let cfg = &self.cfg;
        AddressStatus {
            target: cfg.name.clone(),
            host: cfg.host.clone(),
            ip: self.ip,
            labels: cfg
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            interval: cfg.interval,
            sent: self.sent,
            window: self.window.stats(),
            last: self
                .last
                .as_ref()
                .map(|ev| Sample::from_event(&cfg.name, &cfg.host, ev)),
        }
    }
}

type StatusSlot = Arc<Mutex<Slot>>;

struct TargetTask {
    config: Arc<TargetConfig>,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

struct Shared {
    deps: Deps,
    // Replaced when a reload changes `dns.servers`; lookups clone it first.
    resolver: Mutex<Resolver>,
    dns_refresh: Mutex<Duration>,
    // Held only to add/remove entries and to copy them out; never across an await.
    tasks: tokio::sync::Mutex<HashMap<String, TargetTask>>,
    // Status slots of every running address task; each slot's own lock is taken by its task
    // once per settled probe and by snapshot readers.
    statuses: Mutex<HashMap<(String, IpAddr), StatusSlot>>,
    failures: Mutex<HashMap<String, ResolveFailure>>,
    readiness: Readiness,
    shutdown: CancellationToken,
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
        Self {
            shared: Arc::new(Shared {
                resolver: Mutex::new(deps.resolver.clone()),
                deps,
                dns_refresh: Mutex::new(dns_refresh),
                tasks: tokio::sync::Mutex::new(HashMap::new()),
                statuses: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
                readiness: Readiness::default(),
                shutdown: CancellationToken::new(),
            }),
        }
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
            targets.iter().map(|t| (t.name.as_str(), &**t)).collect();
        let mut stopping = Vec::new();
        let mut changed = 0;
        let mut removed = 0;
        let names: Vec<String> = tasks.keys().cloned().collect();
        for name in names {
            match wanted.get(name.as_str()) {
                Some(cfg) if **cfg == *tasks[&name].config => {}
                Some(_) => {
                    changed += 1;
                    if let Some(t) = tasks.remove(&name) {
                        t.cancel.cancel();
                        stopping.push(t.handle);
                    }
                }
                None => {
                    removed += 1;
                    if let Some(t) = tasks.remove(&name) {
                        t.cancel.cancel();
                        stopping.push(t.handle);
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
            if tasks.contains_key(&cfg.name) {
                continue;
            }
            added += 1;
            if first {
                self.shared.readiness.pending.fetch_add(1, Ordering::SeqCst);
            }
            let cancel = self.shared.shutdown.child_token();
            let config = cfg.clone();
            let handle = tokio::spawn(target_task(
                self.shared.clone(),
                config.clone(),
                cancel.clone(),
                first,
            ));
            tasks.insert(
                cfg.name.clone(),
                TargetTask {
                    config,
                    cancel,
                    handle,
                },
            );
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
        let mut names: Vec<String> = self.shared.tasks.lock().await.keys().cloned().collect();
        names.sort();
        names
    }

    /// Status of every monitored address, sorted by target and address.
    pub fn snapshot(&self) -> Vec<AddressStatus> {
        let slots: Vec<StatusSlot> = self.shared.statuses.lock().values().cloned().collect();
        let mut out: Vec<AddressStatus> = slots.iter().map(|s| s.lock().status()).collect();
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
        for (_, t) in tasks.drain() {
            let _ = t.handle.await;
        }
    }
}

fn mark_first_round(shared: &Shared, pending: &mut bool) {
    if std::mem::take(pending) {
        shared.readiness.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one target until its token is cancelled: an address literal gets one probe task and
/// nothing else; a DNS name goes to [`dns_target`].
///
/// This future lives as long as the target, tens of thousands of them at once, so the literal
/// path is kept small and the DNS loop (with its resolver state) is boxed.
async fn target_task(
    shared: Arc<Shared>,
    cfg: Arc<TargetConfig>,
    cancel: CancellationToken,
    counts_for_ready: bool,
) {
    if crate::resolve::parse_ip_literal(&cfg.host).is_some() {
        // A literal that does not fit the target's family takes the DNS path, which reports
        // the error and retries like any failed lookup. (Only the address is kept past the
        // lookup: whatever lives across an await is in this future for the target's life.)
        let ip = match Box::pin(lookup(&shared, &cfg)).await {
            Ok(resolved) => match resolved.addrs[..] {
                [ip] => Some(ip),
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(ip) = ip {
            literal_target(shared, cfg, ip, cancel, counts_for_ready).await;
            return;
        }
    }
    Box::pin(dns_target(shared, cfg, cancel, counts_for_ready)).await;
}

/// Looks the target's host up with the resolver now in force.
async fn lookup(
    shared: &Shared,
    cfg: &TargetConfig,
) -> Result<crate::resolve::Resolved, crate::resolve::ResolveError> {
    let resolver = shared.resolver.lock().clone();
    resolver.lookup(&cfg.host, cfg.family).await
}

/// A target whose host is an address literal: one probe task, ready after its first settled
/// probe, stopped and its series deleted when the token is cancelled.
async fn literal_target(
    shared: Arc<Shared>,
    cfg: Arc<TargetConfig>,
    ip: IpAddr,
    cancel: CancellationToken,
    counts_for_ready: bool,
) {
    let mut first_round_pending = counts_for_ready;
    let first = Arc::new(Notify::new());
    let (run, recorder) = match prepare_address(&shared, &cfg, ip, cancel, &first) {
        // The probe loop runs in this task (one task per literal target, not two); it ends
        // when the target's token is cancelled.
        Ok((task, _, recorder)) => (task.run(), recorder),
        Err(e) => {
            tracing::warn!(target_name = %cfg.name, %ip, error = %e, "cannot monitor address");
            mark_first_round(&shared, &mut first_round_pending);
            return;
        }
    };
    tokio::pin!(run);
    let mut finished = false;
    if first_round_pending {
        tokio::select! {
            () = &mut run => finished = true,
            () = first.notified() => {}
        }
        mark_first_round(&shared, &mut first_round_pending);
    }
    if !finished {
        run.await;
    }
    shared.deps.metrics.forget(recorder.metrics.labels());
    shared.statuses.lock().remove(&(cfg.name.clone(), ip));
}

/// A target whose host is a DNS name: resolves it, keeps one probe task per address,
/// re-resolves on the record's TTL (bounded by `dns.refresh`), retries failures with backoff.
async fn dns_target(
    shared: Arc<Shared>,
    cfg: Arc<TargetConfig>,
    cancel: CancellationToken,
    counts_for_ready: bool,
) {
    let mut first_round_pending = counts_for_ready;
    // Names that go through DNS get their resolve-error counter at zero from the start.
    let uses_dns = crate::resolve::parse_ip_literal(&cfg.host).is_none();
    if uses_dns {
        shared.deps.metrics.track_resolve(&cfg.name);
    }
    let mut addresses: HashMap<IpAddr, AddressEntry> = HashMap::new();
    let mut backoff = MIN_RESOLVE_INTERVAL;
    // Each address's recorder flags its first settled probe and wakes this task.
    let first = Arc::new(Notify::new());
    let mut awaiting_first: Vec<Arc<Recorder>> = Vec::new();
    loop {
        // Boxed: the lookup's state is large and this task lives as long as its target.
        let lookup = tokio::select! {
            r = Box::pin(lookup(&shared, &cfg)) => r,
            () = cancel.cancelled() => break,
        };
        let refresh = *shared.dns_refresh.lock();
        let next_lookup = match lookup {
            Ok(resolved) => {
                shared.failures.lock().remove(&cfg.name);
                backoff = MIN_RESOLVE_INTERVAL;
                let mut wanted = resolved.addrs.clone();
                wanted.sort();
                wanted.dedup();
                // Stop addresses the name no longer has: their series go away.
                let gone: Vec<IpAddr> = addresses
                    .keys()
                    .filter(|ip| !wanted.contains(ip))
                    .copied()
                    .collect();
                for ip in gone {
                    if let Some(entry) = addresses.remove(&ip) {
                        awaiting_first.retain(|r| !Arc::ptr_eq(r, &entry.recorder));
                        entry.cancel.cancel();
                        let _ = entry.handle.await;
                        shared.deps.metrics.forget(&entry.labels);
                        shared.statuses.lock().remove(&(cfg.name.clone(), ip));
                        tracing::info!(target_name = %cfg.name, %ip, "address retired");
                    }
                }
                for ip in wanted {
                    if addresses.contains_key(&ip) {
                        continue;
                    }
                    match start_address(&shared, &cfg, ip, &cancel, &first) {
                        Ok(entry) => {
                            awaiting_first.push(entry.recorder.clone());
                            addresses.insert(ip, entry);
                        }
                        Err(e) => {
                            tracing::warn!(target_name = %cfg.name, %ip, error = %e, "cannot monitor address")
                        }
                    }
                }
                if addresses.is_empty() || awaiting_first.is_empty() {
                    mark_first_round(&shared, &mut first_round_pending);
                }
                let ttl_wait = resolved
                    .valid_until
                    .checked_duration_since(std::time::Instant::now())
                    .unwrap_or(Duration::ZERO);
                ttl_wait.min(refresh).max(MIN_RESOLVE_INTERVAL)
            }
            Err(e) => {
                shared.deps.metrics.inc_resolve_error(&cfg.name);
                tracing::warn!(target_name = %cfg.name, host = %cfg.host, error = %e, "lookup failed; keeping known addresses and retrying");
                shared.failures.lock().insert(
                    cfg.name.clone(),
                    ResolveFailure {
                        target: cfg.name.clone(),
                        host: cfg.host.clone(),
                        error: e.to_string(),
                    },
                );
                shared.deps.live.publish(Sample::local_error(
                    &cfg.name,
                    &cfg.host,
                    None,
                    None,
                    e.to_string(),
                ));
                mark_first_round(&shared, &mut first_round_pending);
                let wait = backoff.min(refresh);
                backoff = (backoff * 2).min(MAX_RESOLVE_BACKOFF);
                wait
            }
        };
        let sleep = tokio::time::sleep(next_lookup);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                () = first.notified() => {
                    awaiting_first.retain(|r| !r.settled_once.load(Ordering::Acquire));
                    if awaiting_first.is_empty() {
                        mark_first_round(&shared, &mut first_round_pending);
                    }
                }
                () = cancel.cancelled() => break,
            }
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    mark_first_round(&shared, &mut first_round_pending);
    for (ip, entry) in addresses.drain() {
        entry.cancel.cancel();
        let _ = entry.handle.await;
        shared.deps.metrics.forget(&entry.labels);
        shared.statuses.lock().remove(&(cfg.name.clone(), ip));
    }
    shared.failures.lock().remove(&cfg.name);
    if uses_dns {
        shared.deps.metrics.forget_resolve(&cfg.name);
    }
}

/// A running address: its probe task and what stopping it needs.
struct AddressEntry {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
    labels: TargetLabels,
    recorder: Arc<Recorder>,
}

/// Starts probing one address of a target in a task of its own, under a child of `parent`.
fn start_address(
    shared: &Arc<Shared>,
    cfg: &Arc<TargetConfig>,
    ip: IpAddr,
    parent: &CancellationToken,
    first: &Arc<Notify>,
) -> Result<AddressEntry, crate::metrics::MetricsError> {
    let cancel = parent.child_token();
    let (task, labels, recorder) = prepare_address(shared, cfg, ip, cancel.clone(), first)?;
    let handle = tokio::spawn(task.run());
    Ok(AddressEntry {
        cancel,
        handle,
        labels,
        recorder,
    })
}

/// Creates an address's series, status slot and recorder, and the probe loop that stops with
/// `cancel` (not yet running).
fn prepare_address(
    shared: &Arc<Shared>,
    cfg: &Arc<TargetConfig>,
    ip: IpAddr,
    cancel: CancellationToken,
    first: &Arc<Notify>,
) -> Result<(ProbeTask, TargetLabels, Arc<Recorder>), crate::metrics::MetricsError> {
    let extra: Vec<(String, String)> = cfg
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let labels = TargetLabels::new(cfg.name.clone(), ip, extra)?;
    // target_info tells which address family the target resolved to, not the setting.
    let family = if ip.is_ipv4() {
        Family::Ip4
    } else {
        Family::Ip6
    };
    let tm = shared.deps.metrics.target(&labels, &cfg.host, family);
    let status = Arc::new(Mutex::new(Slot {
        cfg: cfg.clone(),
        ip,
        sent: 0,
        window: Window::new(cfg.window),
        last: None,
    }));
    shared
        .statuses
        .lock()
        .insert((cfg.name.clone(), ip), status.clone());
    let recorder = Arc::new(Recorder {
        cfg: cfg.clone(),
        live: shared.deps.live.clone(),
        metrics: tm.clone(),
        status: status.clone(),
        cancel: cancel.clone(),
        settled_once: AtomicBool::new(false),
        first: first.clone(),
    });
    let task = ProbeTask {
        shared: shared.clone(),
        cfg: cfg.clone(),
        ip,
        metrics: tm,
        status,
        cancel,
        sink: EventSink::from(recorder.clone()),
    };
    Ok((task, labels, recorder))
}

/// Stable phase of a (target, address) within its interval: FNV-1a of both, modulo the interval.
pub fn phase(name: &str, ip: IpAddr, interval: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(ip.to_string().into_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(h) % nanos) as u64)
}

/// Sends one (target, address)'s probes on schedule. Their events go straight from the engine
/// to the address's [`Recorder`].
struct ProbeTask {
    shared: Arc<Shared>,
    cfg: Arc<TargetConfig>,
    ip: IpAddr,
    metrics: TargetMetrics,
    status: StatusSlot,
    cancel: CancellationToken,
    sink: EventSink,
}

impl ProbeTask {
    async fn run(self) {
        let interval = self.cfg.interval;
        let start = Instant::now() + phase(&self.cfg.name, self.ip, interval);
        let mut k: u32 = 0;
        let mut seq: u64 = 0;
        let mut next = start;
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    let lag = now.saturating_duration_since(next);
                    self.shared.deps.metrics.observe_scheduler_lag(lag.as_secs_f64());
                    seq += 1;
                    self.send(seq);
                    k = k.saturating_add(1);
                    next = start + interval.saturating_mul(k);
                    if next <= now {
                        // More than an interval behind: skip the missed ticks rather than burst.
                        let behind = now.saturating_duration_since(start).as_nanos() / interval.as_nanos().max(1);
                        k = u32::try_from(behind + 1).unwrap_or(u32::MAX);
                        next = start + interval.saturating_mul(k);
                    }
                }
            }
        }
    }

    fn send(&self, seq: u64) {
        // Built per send rather than held: it would sit in every target's future between
        // sends, and building it costs a few copies (the interface name is rarely set).
        let spec = ProbeSpec {
            ip: self.ip,
            size: self.cfg.size,
            timeout: self.cfg.timeout,
            options: SocketOptions {
                ttl: self.cfg.ttl,
                tos: self.cfg.tos,
                source: self.cfg.source,
                interface: self.cfg.interface.clone(),
            },
        };
        match self.shared.deps.pinger.send(&spec, seq, &self.sink) {
            Ok(_) => {
                self.metrics.on_sent();
                self.status.lock().sent += 1;
            }
            Err(e) => {
                self.metrics.on_send_error(e.reason());
                tracing::debug!(target_name = %self.cfg.name, ip = %self.ip, error = %e, "send failed");
                self.shared.deps.live.publish(Sample::local_error(
                    &self.cfg.name,
                    &self.cfg.host,
                    Some(self.ip),
                    Some(seq),
                    e.to_string(),
                ));
            }
        }
    }
}

/// Records one (target, address)'s probe events as the engine delivers them: metrics, the
/// window and last event of its status slot, and live samples. Runs inline on the engine's task
/// (see [`EventHandler`]): a few atomics, one histogram, one uncontended lock; no channel and no
/// task wake-up per event.
struct Recorder {
    cfg: Arc<TargetConfig>,
    live: LiveHub,
    metrics: TargetMetrics,
    status: StatusSlot,
    /// The address's token: once stopped, no live samples for probes still in flight.
    cancel: CancellationToken,
    /// Set when the first probe settles (reply, timeout or ICMP error), for readiness.
    settled_once: AtomicBool,
    /// Wakes the target's task to look at `settled_once`.
    first: Arc<Notify>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("target", &self.cfg.name)
            .finish_non_exhaustive()
    }
}

impl EventHandler for Recorder {
    fn on_event(&self, ev: ProbeEvent) {
        // After the address stops, events of probes still in flight land in detached metrics
        // and a slot nobody reads; only live samples must not go out. (The token check takes
        // a lock, so it stays off the path of every event.)
        self.metrics.on_event(&ev);
        let settled = match &ev.kind {
            EventKind::Reply(r) => Some(Some(r.rtt.as_secs_f64())),
            EventKind::Timeout | EventKind::IcmpError(_) => Some(None),
            EventKind::Late(_) | EventKind::Duplicate(_) => None,
        };
        // Building a sample allocates: only when someone is listening.
        let sample = (self.live.readers() > 0 && !self.cancel.is_cancelled())
            .then(|| Sample::from_event(&self.cfg.name, &self.cfg.host, &ev));
        if let Some(rtt) = settled {
            let gauges = {
                let mut slot = self.status.lock();
                slot.window.push(rtt);
                slot.last = Some(ev);
                slot.window.gauges()
            };
            self.metrics.set_window(
                gauges.loss_ratio,
                gauges.rtt.map(|(min, mean, max, stddev)| WindowRtt {
                    min,
                    mean,
                    max,
                    stddev,
                }),
            );
            if !self.settled_once.swap(true, Ordering::AcqRel) {
                self.first.notify_one();
            }
        }
        if let Some(sample) = sample {
            self.live.publish(sample);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{FakePinger, Step};
    use std::collections::BTreeMap;

    fn target(name: &str, host: &str, interval_ms: u64) -> Arc<TargetConfig> {
        Arc::new(TargetConfig {
            name: name.into(),
            host: host.into(),
            labels: BTreeMap::new(),
            kind: crate::probe::ProbeKind::Icmp,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(500),
            size: 56,
            family: Family::Auto,
            ttl: None,
            tos: None,
            source: None,
            interface: None,
            window: 10,
        })
    }

    fn deps(fake: &FakePinger) -> Deps {
        Deps {
            pinger: Arc::new(fake.clone()),
            resolver: Resolver::system().unwrap_or_else(|e| panic!("{e}")),
            metrics: Metrics::new(crate::metrics::MetricsOptions::default())
                .unwrap_or_else(|e| panic!("{e}")),
            live: LiveHub::default(),
        }
    }

    // Each target's future lives as long as the target, tens of thousands at once: whatever it
    // holds across an await costs that many times over. A budget, so that growth is a choice.
    #[test]
    fn a_target_future_stays_small() {
        let fake = FakePinger::default();
        let s = Scheduler::new(deps(&fake), Duration::from_secs(300));
        let cfg = target("a", "192.0.2.1", 1000);
        let future = target_task(s.shared.clone(), cfg, CancellationToken::new(), false);
        let size = std::mem::size_of_val(&future);
        assert!(size <= 768, "target future is {size} bytes");
    }

    #[test]
    fn phases_are_stable_and_spread() {
        let iv = Duration::from_secs(1);
        let a = phase("a", IpAddr::from([127, 0, 0, 1]), iv);
        assert_eq!(a, phase("a", IpAddr::from([127, 0, 0, 1]), iv));
        assert!(a < iv);
        let distinct: std::collections::HashSet<Duration> = (0..100)
            .map(|i| phase(&format!("t{i}"), IpAddr::from([127, 0, 0, 1]), iv))
            .collect();
        assert!(distinct.len() > 95, "phases collide: {}", distinct.len());
    }

    #[tokio::test(start_paused = true)]
    async fn holds_the_interval_without_drift() {
        let fake = FakePinger::new();
        let ip = IpAddr::from([192, 0, 2, 1]);
        fake.script(
            ip,
            vec![Step::Reply {
                rtt: Duration::from_millis(30),
                ttl: 60,
            }],
        );
        let s = Scheduler::new(deps(&fake), Duration::from_secs(300));
        s.apply(&[target("a", "192.0.2.1", 100)], Duration::from_secs(300))
            .await;
        tokio::time::sleep(Duration::from_millis(10_050)).await;
        // Phase < 100ms, then one probe every 100ms: 100 or 101 probes in 10.05 s.
        let sent = fake.sent();
        assert!((100..=101).contains(&sent), "sent {sent}");
        assert!(s.ready());
        let snap = s.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].window.loss_ratio, 0.0);
        assert_eq!(snap[0].window.probes, 10);
        s.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn apply_is_a_diff() {
        let fake = FakePinger::new();
        for i in 1..=3u8 {
            fake.script(
                IpAddr::from([192, 0, 2, i]),
                vec![Step::Reply {
                    rtt: Duration::from_millis(1),
                    ttl: 60,
                }],
            );
        }
        let s = Scheduler::new(deps(&fake), Duration::from_secs(300));
        let a = target("a", "192.0.2.1", 100);
        let b = target("b", "192.0.2.2", 100);
        assert_eq!(
            s.apply(&[a.clone(), b.clone()], Duration::from_secs(300))
                .await,
            (2, 0, 0)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sent_a_before = s
            .snapshot()
            .iter()
            .find(|x| x.target == "a")
            .map(|x| x.sent);
        let mut b2 = (*b).clone();
        b2.interval = Duration::from_millis(200);
        let b2 = Arc::new(b2);
        let c = target("c", "192.0.2.3", 100);
        assert_eq!(
            s.apply(&[a.clone(), b2, c], Duration::from_secs(300)).await,
            (1, 1, 0)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let snap = s.snapshot();
        let sent_a_after = snap.iter().find(|x| x.target == "a").map(|x| x.sent);
        assert!(
            sent_a_after > sent_a_before,
            "unchanged target kept counting"
        );
        assert!(
            sent_a_after >= Some(19),
            "unchanged target was not restarted: {sent_a_after:?}"
        );
        assert_eq!(s.apply(&[a], Duration::from_secs(300)).await, (0, 0, 2));
        assert_eq!(s.target_names().await, vec!["a".to_owned()]);
        assert_eq!(s.snapshot().len(), 1);
        s.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn unresolvable_host_does_not_stop_the_others() {
        let fake = FakePinger::new();
        fake.script(
            IpAddr::from([192, 0, 2, 1]),
            vec![Step::Reply {
                rtt: Duration::from_millis(1),
                ttl: 60,
            }],
        );
        let s = Scheduler::new(deps(&fake), Duration::from_secs(300));
        // Not a valid host name: rejected before any query leaves the process.
        s.apply(
            &[
                target("ok", "192.0.2.1", 100),
                target("bad", "bad name!", 100),
            ],
            Duration::from_secs(300),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(s.ready());
        assert_eq!(s.resolve_failures().len(), 1);
        assert!(fake.sent() >= 19);
        s.shutdown().await;
    }
}
