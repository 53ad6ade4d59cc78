//! The monitor scheduler: one task per target, all cancelled through a token tree on reload and
//! shutdown. A target whose host is an address literal probes from that task; a DNS name's task
//! resolves and re-resolves it and runs one probe task per address. The probes themselves go out
//! from a few [`wheel`] tasks (one per runtime worker) that hold every address's next tick in one
//! heap each, so a probe costs no task wake-up of its own.
//!
//! - Probe results do not come back through the tasks: the engine hands each event to the
//!   address's [`Recorder`](recorder::Recorder) (an [`EventHandler`](crate::engine::EventHandler)), which updates metrics, the window and the
//!   status slot inline. No channel and no wake-up per event, and little memory per target:
//!   that is what lets one process run tens of thousands of targets.
//! - Start times are spread across the interval by a stable hash of (target, address), so a
//!   thousand targets do not all fire at t=0 and a restart keeps their phase.
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
mod outage;
mod path;
mod recorder;
mod resolution;
mod tick;
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

/// What a probe task shares with readers of `/api/v1/targets`: updated once per settled probe
/// under its own (uncontended) lock; statistics with percentiles are computed only on read.
#[derive(Debug)]
struct Slot {
    cfg: Arc<TargetConfig>,
    ip: IpAddr,
    sent: u64,
    window: Window,
    last: Option<ProbeEvent>,
    outage: outage::AddressOutage,
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
            interval: cfg.options.interval,
            kind: cfg.options.kind,
            port: cfg.options.port.port,
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
    // Figures and history of every running path monitor's address, by (target, address).
    paths: Mutex<HashMap<(String, IpAddr), path::PathSlot>>,
    readiness: Readiness,
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
        Self {
            shared: Arc::new(Shared {
                resolver: Mutex::new(deps.resolver.clone()),
                wheels: wheel::Wheels::new(&deps, &shutdown),
                deps,
                dns_refresh: Mutex::new(dns_refresh),
                tasks: tokio::sync::Mutex::new(HashMap::new()),
                statuses: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
                paths: Mutex::new(HashMap::new()),
                readiness: Readiness::default(),
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
                    self.shared.deps.metrics.set_thresholds(&name, None);
                    self.shared.deps.metrics.set_capture_reasons(&name, &[]);
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

#[cfg(test)]
mod tests {
    use super::tick::phase;
    use super::*;
    use crate::engine::fake::{FakePinger, Step};
    use std::collections::BTreeMap;

    fn target(name: &str, host: &str, interval_ms: u64) -> Arc<TargetConfig> {
        Arc::new(TargetConfig {
            name: name.into(),
            host: host.into(),
            labels: BTreeMap::new(),
            options: crate::config::TargetOptions {
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_millis(500),
                window: 10,
                ..Default::default()
            },
        })
    }

    fn deps(fake: &FakePinger) -> Deps {
        Deps {
            pinger: Arc::new(fake.clone()),
            resolver: Resolver::system().unwrap_or_else(|e| panic!("{e}")),
            metrics: Metrics::new(crate::metrics::MetricsOptions::default())
                .unwrap_or_else(|e| panic!("{e}")),
            live: LiveHub::default(),
            outages: crate::session::outages::OutageLog::disabled(),
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
        b2.options.interval = Duration::from_millis(200);
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

    // The wheels: every address keeps its own schedule whichever wheel holds it, and an
    // address that is stopped sends nothing after `apply` returns.
    #[tokio::test(start_paused = true)]
    async fn wheels_keep_every_schedule_and_a_stopped_address_stays_silent() {
        let fake = FakePinger::new();
        let targets: Vec<Arc<TargetConfig>> = (0..200u32)
            .map(|i| {
                let ip = IpAddr::from([198, 18, (i / 250) as u8, (i % 250) as u8 + 1]);
                fake.script(
                    ip,
                    vec![Step::Reply {
                        rtt: Duration::from_millis(1),
                        ttl: 60,
                    }],
                );
                // Two intervals, so that the wheels hold ticks of both.
                target(
                    &format!("t{i}"),
                    &ip.to_string(),
                    100 + 100 * u64::from(i % 2),
                )
            })
            .collect();
        let s = Scheduler::new(deps(&fake), Duration::from_secs(300));
        s.apply(&targets, Duration::from_secs(300)).await;
        tokio::time::sleep(Duration::from_millis(2_050)).await;
        for a in s.snapshot() {
            let want = if a.interval == Duration::from_millis(100) {
                20
            } else {
                10
            };
            assert!(
                (want..=want + 1).contains(&a.sent),
                "{} sent {} in 2.05 s at {:?}",
                a.target,
                a.sent,
                a.interval
            );
        }
        s.apply(&targets[..100], Duration::from_secs(300)).await;
        let kept_before: u64 = s.snapshot().iter().map(|a| a.sent).sum();
        let total_before = fake.sent();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let kept_after: u64 = s.snapshot().iter().map(|a| a.sent).sum();
        assert_eq!(s.snapshot().len(), 100);
        assert_eq!(
            (fake.sent() - total_before) as u64,
            kept_after - kept_before,
            "stopped addresses went on sending"
        );
        // 50 addresses at 100 ms and 50 at 200 ms for 1 s.
        assert!((740..=760).contains(&(kept_after - kept_before)));
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

    /// The value of the one series of `name` in the text exposition.
    fn value(metrics: &Metrics, name: &str) -> f64 {
        let text = metrics.encode_text().unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .collect();
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        lines[0]
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {lines:?}"))
    }

    #[tokio::test(start_paused = true)]
    async fn outages_follow_the_sending_order_and_skip_failed_sends() {
        let fake = FakePinger::new();
        let reply = Step::Reply {
            rtt: Duration::from_millis(1),
            ttl: 60,
        };
        // Per cycle of 20 sends: 5 replies, 4 lost, a send that fails (no probe), 1 lost, then
        // replies. Timeouts (500ms) settle after later replies: only the sending order sees
        // five losses in a row.
        let mut steps = vec![reply.clone(); 5];
        steps.extend(vec![Step::Drop; 4]);
        steps.push(Step::SendFails);
        steps.push(Step::Drop);
        steps.extend(vec![reply; 9]);
        fake.script(IpAddr::from([192, 0, 2, 1]), steps);
        let d = deps(&fake);
        let metrics = d.metrics.clone();
        let s = Scheduler::new(d, Duration::from_secs(300));
        let mut t = (*target("a", "192.0.2.1", 100)).clone();
        t.options.outage = crate::config::OutageRule { after: 3, until: 3 };
        s.apply(&[Arc::new(t)], Duration::from_secs(300)).await;
        tokio::time::sleep(Duration::from_millis(10_050)).await;
        assert_eq!(value(&metrics, "pingscope_outages_total"), 5.0);
        assert_eq!(value(&metrics, "pingscope_outage_active"), 0.0);
        assert_eq!(value(&metrics, "pingscope_consecutive_lost"), 0.0);
        // Each from its first lost send to the first reply's send: 6 intervals.
        let secs = value(&metrics, "pingscope_outage_seconds_total");
        assert!((secs - 3.0).abs() < 0.01, "{secs}");
        let text = metrics.encode_text().unwrap_or_else(|e| panic!("{e}"));
        assert!(!text.contains("pingscope_target_threshold{"), "{text}");
        // Thresholds follow the config: set with `alert:`, deleted with the target.
        let mut b = (*target("b", "192.0.2.1", 100)).clone();
        b.options.alert.loss = Some(0.25);
        b.options.alert.rtt = Some(Duration::from_millis(100));
        s.apply(&[Arc::new(b)], Duration::from_secs(300)).await;
        let text = metrics.encode_text().unwrap_or_else(|e| panic!("{e}"));
        for line in [
            "pingscope_target_threshold{target=\"b\",metric=\"loss\"} 0.25",
            "pingscope_target_threshold{target=\"b\",metric=\"rtt\"} 0.1",
            "pingscope_target_threshold{target=\"b\",metric=\"for\"} 120.0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            !text.contains("pingscope_outages_total{target=\"a\""),
            "{text}"
        );
        s.apply(&[], Duration::from_secs(300)).await;
        let text = metrics.encode_text().unwrap_or_else(|e| panic!("{e}"));
        assert!(!text.contains("pingscope_target_threshold{"), "{text}");
        s.shutdown().await;
    }
}
