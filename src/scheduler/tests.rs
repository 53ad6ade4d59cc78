//! The scheduler against the fake pinger (tokio time, paused): phases and drift, apply as a
//! diff, the wheels, a failing name beside good ones, and outages in sending order.

use super::tick::phase;
use super::*;
use crate::engine::fake::{FakePinger, Step};
use std::collections::BTreeMap;

fn target(name: &str, host: &str, interval_ms: u64) -> Arc<TargetConfig> {
    Arc::new(TargetConfig {
        name: name.into(),
        host: host.into(),
        labels: BTreeMap::new(),
        options: Arc::new(crate::config::TargetOptions {
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(500),
            window: 10,
            ..Default::default()
        }),
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
        clock: Arc::new(crate::engine::clock::SystemClock),
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
    Arc::make_mut(&mut b2.options).interval = Duration::from_millis(200);
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

/// `count` targets in 198.18.0.0/15 that always answer in 1 ms, target `i` every
/// `interval_ms(i)` milliseconds.
fn answering_targets(
    fake: &FakePinger,
    count: u32,
    interval_ms: impl Fn(u32) -> u64,
) -> Vec<Arc<TargetConfig>> {
    (0..count)
        .map(|i| {
            let ip = IpAddr::from([198, 18, (i / 250) as u8, (i % 250) as u8 + 1]);
            fake.script(
                ip,
                vec![Step::Reply {
                    rtt: Duration::from_millis(1),
                    ttl: 60,
                }],
            );
            target(&format!("t{i}"), &ip.to_string(), interval_ms(i))
        })
        .collect()
}

// The wheels: every address keeps its own schedule whichever wheel holds it, and an
// address that is stopped sends nothing after `apply` returns.
#[tokio::test(start_paused = true)]
async fn wheels_keep_every_schedule_and_a_stopped_address_stays_silent() {
    let fake = FakePinger::new();
    // Two intervals, so that the wheels hold ticks of both.
    let targets = answering_targets(&fake, 200, |i| 100 + 100 * u64::from(i % 2));
    let s = Scheduler::new(deps(&fake), Duration::from_secs(300));
    s.apply(&targets, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_millis(2_050)).await;
    for a in s.snapshot() {
        let want = u64::try_from(2_000 / a.interval.as_millis()).unwrap_or(0);
        // Its last probe, as the status shows it: a reply of this address.
        let last = a.last.as_ref().map(|l| (l.ip, l.rtt_ms));
        assert_eq!(last, Some((Some(a.ip), Some(1.0))), "{}", a.target);
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
    Arc::make_mut(&mut t.options).outage = crate::config::OutageRule { after: 3, until: 3 };
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
    let alert = &mut Arc::make_mut(&mut b.options).alert;
    alert.loss = Some(0.25);
    alert.rtt = Some(Duration::from_millis(100));
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

// The grid: 300 addresses at 1 s wake the wheels at most once per grid step each (50 times a
// second at 20 ms), where their hashed phases alone would spread them over some 260 milliseconds.
#[tokio::test(start_paused = true)]
async fn addresses_due_in_one_step_go_out_in_one_wake_up() {
    let fake = FakePinger::new();
    let targets = answering_targets(&fake, 300, |_| 1000);
    let s = Scheduler::new(deps(&fake), Duration::from_secs(300));
    s.apply(&targets, Duration::from_secs(300)).await;
    // Past the first round, then one interval in steps of the timer's resolution.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (mut last, mut wake_ups) = (fake.sent(), 0);
    for _ in 0..1000 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = fake.sent();
        wake_ups += usize::from(now != last);
        last = now;
    }
    let steps = usize::try_from(Duration::from_secs(1).as_millis() / wheel::GRID.as_millis())
        .unwrap_or(usize::MAX);
    let most = steps * s.shared.wheels.len();
    assert!(
        (1..=most).contains(&wake_ups),
        "probes went out in {wake_ups} different milliseconds (at most {most})"
    );
    assert_eq!(sent_by(&s), fake.sent() as u64);
    s.shutdown().await;
}

/// Probes sent by every address the scheduler runs.
fn sent_by(s: &Scheduler) -> u64 {
    s.snapshot().iter().map(|a| a.sent).sum()
}

// Address literals go straight on a wheel: a thousand of them add no task each (only the
// wheels' own), and stopping them stops their probes and their series at once.
#[tokio::test(start_paused = true)]
async fn address_literals_run_without_a_task_each() {
    let fake = FakePinger::new();
    let targets = answering_targets(&fake, 1000, |_| 1000);
    let s = Scheduler::new(deps(&fake), Duration::from_secs(300));
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    s.apply(&targets, Duration::from_secs(300)).await;
    let added = tasks() - before;
    assert!(
        added <= s.shared.wheels.len(),
        "1000 literal targets added {added} tasks"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(s.ready());
    assert_eq!(s.snapshot().len(), 1000);
    assert!(s.snapshot().iter().all(|a| a.sent >= 1));
    assert_eq!(
        s.apply(&targets[..10], Duration::from_secs(300)).await,
        (0, 0, 990)
    );
    assert_eq!(s.snapshot().len(), 10);
    let (kept_before, total_before) = (sent_by(&s), fake.sent());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sent_by(&s) - kept_before, 10);
    assert_eq!(
        fake.sent() - total_before,
        10,
        "stopped literals went on sending"
    );
    s.shutdown().await;
    assert!(s.snapshot().is_empty());
}

// A literal removed before its first probe settled still counts its first round done.
#[tokio::test(start_paused = true)]
async fn a_literal_removed_before_its_first_probe_leaves_the_scheduler_ready() {
    let fake = FakePinger::new();
    let s = Scheduler::new(deps(&fake), Duration::from_secs(300));
    let a = target("a", "192.0.2.1", 60_000);
    s.apply(&[a], Duration::from_secs(300)).await;
    assert!(!s.ready());
    assert_eq!(s.apply(&[], Duration::from_secs(300)).await, (0, 0, 1));
    assert!(s.ready());
    s.shutdown().await;
}

// A wheel with more due than one batch sends a batch, then lets the other tasks of its worker
// run (on a busy machine, the receive tasks: replies left in the socket are dropped by the
// kernel and would count as losses), and still sends everything due.
#[tokio::test(start_paused = true)]
async fn a_wheel_behind_sends_in_batches_and_lets_other_tasks_run() {
    let fake = FakePinger::new();
    let s = Scheduler::new(deps(&fake), Duration::from_secs(300));
    let wheels = s.shared.wheels.len();
    let count = u32::try_from(3 * wheel::SEND_BATCH * wheels).unwrap_or(u32::MAX);
    // At one grid step, every address is due at each point of its wheel's grid.
    let step = u64::try_from(wheel::GRID.as_millis()).unwrap_or(10);
    let targets = answering_targets(&fake, count, |_| step);
    s.apply(&targets, Duration::from_secs(300)).await;
    let mut largest = 0;
    for _ in 0..5 {
        // Every first probe (phases are within a step) and a grid point become due at once.
        let before = fake.sent();
        tokio::time::advance(wheel::GRID * 2).await;
        largest = largest.max(fake.sent() - before);
        for _ in 0..50 {
            let before = fake.sent();
            tokio::task::yield_now().await;
            largest = largest.max(fake.sent() - before);
        }
    }
    assert!(
        largest <= wheel::SEND_BATCH * wheels,
        "{largest} probes went out while this task waited one turn ({wheels} wheels)"
    );
    assert!(
        fake.sent() >= 5 * count as usize,
        "only {} of {count} addresses' 5 rounds went out",
        fake.sent()
    );
    s.shutdown().await;
}

// An address on a wheel has no token of its own: once it is stopped, the replies to its probes
// still in flight publish no live sample, while an address left running goes on publishing.
#[tokio::test(start_paused = true)]
async fn a_stopped_literal_publishes_no_sample_for_probes_in_flight() {
    let fake = FakePinger::new();
    let deps = deps(&fake);
    let mut live = deps.live.subscribe();
    let [kept, stopped] = ["198.18.0.1", "198.18.0.2"].map(|host| {
        let ip: IpAddr = host.parse().unwrap_or_else(|e| panic!("{e}"));
        let rtt = Duration::from_millis(300);
        fake.script(ip, vec![Step::Reply { rtt, ttl: 60 }]);
        target(host, host, 1000)
    });
    let s = Scheduler::new(deps, Duration::from_secs(300));
    s.apply(&[kept.clone(), stopped], Duration::from_secs(300))
        .await;
    while fake.sent() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Both first probes are in flight (300 ms), neither has settled.
    assert!(
        live.try_recv().is_err(),
        "the phases let a probe settle before both were sent"
    );
    s.apply(&[kept], Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut from = Vec::new();
    while let Ok(sample) = live.try_recv() {
        from.push(sample.target.clone());
    }
    assert!(from.contains(&"198.18.0.1".to_owned()), "{from:?}");
    assert!(!from.contains(&"198.18.0.2".to_owned()), "{from:?}");
    s.shutdown().await;
}

fn status_slot(name: &str, ip: IpAddr, sent: u64) -> StatusSlot {
    let cfg = target(name, "192.0.2.1", 1000);
    let metrics =
        Metrics::new(crate::metrics::MetricsOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let labels = crate::metrics::TargetLabels::new(name.to_owned(), ip, Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(AddressSlot {
        ip,
        state: Mutex::new(Slot {
            sent,
            window: Window::new(10),
            last: None,
            outage: outage::AddressOutage::new(&cfg, metrics.outage(&labels)),
        }),
        rec: super::recorder::Recorder {
            common: Arc::new(super::recorder::Common {
                live: crate::live::LiveHub::new(16),
                outages: crate::session::outages::OutageLog::disabled(),
                readiness: Arc::default(),
            }),
            metrics: metrics.target(&labels, "192.0.2.1", crate::resolve::Family::Ip4),
            cancel: CancellationToken::new(),
            stopped: AtomicBool::new(false),
            settled_once: AtomicBool::new(false),
            counts_for_ready: false,
            first: None,
            window_gauges: cfg.options.metrics.window_gauges,
        },
        cfg,
    })
}

// The table keeps no key of its own: each slot is found by the target and address it holds,
// through the growths of the table, and the same pair again replaces the slot.
#[test]
fn status_slots_are_found_by_target_and_address() {
    let ip = |last: u8| IpAddr::from([192, 0, 2, last]);
    let mut table = keyed::Table::<StatusSlot>::default();
    for (sent, name) in [(1, "a"), (2, "b")] {
        for last in 1..=50 {
            table.insert(status_slot(name, ip(last), sent));
        }
    }
    table.insert(status_slot("a", ip(7), 99));
    assert_eq!(table.iter().count(), 100);
    let found = |s: StatusSlot| (s.cfg.name.clone(), s.ip, s.lock().sent);
    assert_eq!(
        table.remove(("a", Some(ip(7)))).map(found),
        Some(("a".into(), ip(7), 99))
    );
    assert!(table.remove(("a", Some(ip(7)))).is_none());
    assert_eq!(
        table.remove(("b", Some(ip(7)))).map(found),
        Some(("b".into(), ip(7), 2))
    );
    assert_eq!(
        table.remove(("a", Some(ip(50)))).map(found),
        Some(("a".into(), ip(50), 1))
    );
    assert!(table.remove(("c", Some(ip(1)))).is_none());
    assert!(table.remove(("a", Some(ip(51)))).is_none());
    assert_eq!(table.iter().count(), 97);
}

// Outage times follow a step of the wall clock (NTP setting it after boot, a VM resumed): the
// wheels' anchor moves at the next wake-up. With an anchor taken once, this outage would start
// an hour before the wall clock says it did.
#[tokio::test(start_paused = true)]
async fn outage_times_follow_a_step_of_the_wall_clock() {
    use crate::session::outages::{OutageLog, OutageNote};
    let fake = FakePinger::new();
    let reply = Step::Reply {
        rtt: Duration::from_millis(1),
        ttl: 60,
    };
    let mut steps = vec![reply.clone(); 10];
    steps.extend(vec![Step::Drop; 10]);
    fake.script(IpAddr::from([192, 0, 2, 1]), steps);
    fake.script(IpAddr::from([192, 0, 2, 2]), vec![reply]);
    let clock = Arc::new(crate::engine::clock::SteppableClock::default());
    // The daemon's log: one line for the step, not one per wheel.
    let logged = Arc::new(parking_lot::Mutex::new(Vec::<u8>::new()));
    let writer = logged.clone();
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || Captured(writer.clone()))
            .finish(),
    );
    let (log, mut rx) = OutageLog::new(16);
    let mut d = deps(&fake);
    d.outages = log;
    d.clock = clock.clone();
    let s = Scheduler::new(d, Duration::from_secs(300));
    let mut t = (*target("a", "192.0.2.1", 100)).clone();
    Arc::make_mut(&mut t.options).outage = crate::config::OutageRule { after: 3, until: 3 };
    // A second address, on the other wheel where there are two: every wheel follows the step.
    let other = target("b", "192.0.2.2", 100);
    s.apply(&[Arc::new(t), other], Duration::from_secs(300))
        .await;
    // Replies for the first ten sends (about a second), then the wall clock an hour ahead.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hour = Duration::from_secs(3600);
    clock.step(i64::try_from(hour.as_nanos()).unwrap_or(i64::MAX));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let start = std::iter::from_fn(|| rx.try_recv().ok())
        .find_map(|n| match n {
            OutageNote::Outage { rec, .. } => Some(rec.start),
            OutageNote::LossCrossed { .. } => None,
        })
        .unwrap_or_else(|| panic!("no outage recorded"));
    // The first lost send went out about a second after the start, on the stepped clock; the
    // real clock moves by milliseconds in a paused test.
    let now = std::time::SystemTime::now();
    assert!(start > now + hour, "{start:?} is not past {:?}", now + hour);
    assert!(start < now + hour + Duration::from_secs(5), "{start:?}");
    s.shutdown().await;
    let logged = String::from_utf8_lossy(&logged.lock()).into_owned();
    assert_eq!(
        1,
        logged.matches("wall clock stepped").count(),
        "{} wheels logged:\n{logged}",
        s.shared.wheels.len()
    );
}

/// A log writer into a shared buffer.
struct Captured(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Every address keeps one slot (its state and recorder in one allocation; what every address
// shares behind one pointer) and one wheel entry; at 100,000 addresses 8 bytes are 0.8 MB.
#[test]
fn an_address_is_small() {
    let slot = size_of::<AddressSlot>();
    let entry = size_of::<super::tick::ProbeLoop>();
    assert!(slot <= 312 && entry <= 104, "slot, entry: {slot}, {entry}");
}
