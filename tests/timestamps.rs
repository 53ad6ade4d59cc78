//! Timestamps you can prove (issue 20): the engine's RTT against the test network's truth, with
//! kernel timestamps on both ends, through clock steps, and under load.
//!
//! - every socket kind takes kernel RX and TX timestamps, and nothing falls back;
//! - a forward and a backward step of an injected wall clock during probes: RTTs stay true,
//!   two steps counted, never a 0 RTT (the machine's clock is never touched);
//! - at N = 1 on 127.0.0.1 the RTT is not above iputils `ping`'s median;
//! - a loaded daemon (CPU hogs on both cores above its priority) reports a 1 ms host within
//!   100 µs of the truth, with no fallback, while user-space timestamps are off by milliseconds
//!   (one probe of 150 may be off by up to 1 ms: the truth's own error on a VM, see the test).
//!
//! `measure_timestamp_paths` (ignored; run by hand, see README "Timestamps") writes the figures
//! of the README and of `bench/results/timestamps-*.jsonl`.
//!
//! Needs root (namespaces, raw sockets, SCHED_FIFO); without it the tests skip, unless `CI` is
//! set, where they fail.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::print_stdout,
    clippy::disallowed_methods
)]

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pingscope::engine::clock::{Fallback, SteppableClock};
use pingscope::engine::icmp::{
    EngineConfig, IcmpEngine, SocketPreference, TimestampSource, TimestampStats,
};
use pingscope::engine::{
    EventKind, EventSink, Pinger, ProbeEvent, ProbeSpec, SocketOptions, Transport,
};
use serde_json::{Value, json};
use support::api::{base_config, client, post_json, wait_ended};
use support::daemon::Daemon;
use support::expo::Scrape;
use support::{LogEntry, TestNet};
use tokio::sync::mpsc;

/// The test network's host that answers after 1 ms.
const HOST_1MS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// One that answers after 50 ms, long enough to step the clock in between.
const HOST_50MS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);

fn profiles() -> Value {
    json!({
        "default": {"delay": "1ms"},
        "hosts": {"198.18.0.50": {"delay": "50ms"}}
    })
}

fn spec(ip: IpAddr) -> ProbeSpec {
    ProbeSpec {
        ip,
        transport: Transport::Icmp,
        size: 56,
        timeout: Duration::from_secs(2),
        options: SocketOptions::default(),
    }
}

fn engine(timestamps: TimestampSource, socket: SocketPreference) -> Arc<IcmpEngine> {
    IcmpEngine::new(EngineConfig {
        timestamps,
        socket,
        ..EngineConfig::default()
    })
    .expect("starting the engine")
}

/// Every fallback counter, side and reason, that is not 0.
fn fallbacks(s: &TimestampStats) -> Vec<(&'static str, Fallback, u64)> {
    let rx = s.rx_fallbacks.iter().map(|(f, n)| ("rx", *f, *n));
    let tx = s.tx_fallbacks.iter().map(|(f, n)| ("tx", *f, *n));
    rx.chain(tx).filter(|(_, _, n)| *n > 0).collect()
}

/// One probe at a time (N = 1): `n` probes to `ip`, `gap` apart; (seq, RTT) of each reply.
/// A kernel-timestamping engine that has had its first replies: while it is held open the
/// kernel keeps RX timestamps on (it turns them on machine-wide through deferred work when the
/// first socket asks, so the very first reply can come without one, counted `missing`).
async fn warm_engine(socket: SocketPreference, ip: IpAddr) -> Arc<IcmpEngine> {
    let warm = engine(TimestampSource::Kernel, socket);
    series(&warm, ip, 2, Duration::from_millis(2)).await;
    warm
}

async fn series(engine: &IcmpEngine, ip: IpAddr, n: usize, gap: Duration) -> Vec<(u16, Duration)> {
    let (tx, mut rx) = mpsc::channel::<ProbeEvent>(16);
    let sink = EventSink::from(tx);
    let mut out = Vec::with_capacity(n);
    for tag in 0..n as u64 {
        let seq = engine.send(&spec(ip), tag, &sink).expect("send");
        out.push((
            seq,
            next_reply_rtt(&mut rx, &format!("{ip}: probe {tag}")).await,
        ));
        tokio::time::sleep(gap).await;
    }
    out
}

/// The RTT of the next event, which must be a reply within 5 s (`what` names the probe).
async fn next_reply_rtt(rx: &mut mpsc::Receiver<ProbeEvent>, what: &str) -> Duration {
    let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: no event within 5 s"))
        .expect("the sink is open");
    match ev.kind {
        EventKind::Reply(r) => r.rtt,
        other => panic!("{what} got {other:?}"),
    }
}

/// Runs the calling thread on `cpu` only.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: plain syscall on this thread with a valid, initialised CPU set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "pinning a thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Error of each reported RTT against the responder's log: reported minus the time the
/// responder held the request (kernel arrival at the device to the write of the answer).
fn errors_against_truth(
    log: &[LogEntry],
    dst: IpAddr,
    ident: u16,
    rtts: &[(u16, Duration)],
) -> Vec<i64> {
    let truth: HashMap<u16, u64> = log
        .iter()
        .filter(|e| e.id == ident && e.dst == dst)
        .filter_map(|e| Some((e.seq, e.actual_delay_ns?)))
        .collect();
    rtts.iter()
        .map(|(seq, rtt)| {
            let t = truth
                .get(seq)
                .unwrap_or_else(|| panic!("seq {seq} (id {ident}) is not in the responder's log"));
            rtt.as_nanos() as i64 - *t as i64
        })
        .collect()
}

/// Nearest-rank percentiles of errors in µs: (p50, p99, max of |error|, mean).
fn summary(errs: &[i64]) -> Value {
    let mut v: Vec<i64> = errs.to_vec();
    v.sort_unstable();
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let us = |ns: i64| (ns as f64 / 1e3 * 10.0).round() / 10.0;
    let mean = v.iter().sum::<i64>() as f64 / v.len() as f64;
    json!({
        "n": v.len(),
        "p50_us": us(rank(0.5)),
        "p90_us": us(rank(0.9)),
        "p99_us": us(rank(0.99)),
        "min_us": us(v[0]),
        "max_us": us(*v.last().unwrap()),
        "max_abs_us": us(v.iter().map(|e| e.abs()).max().unwrap()),
        "mean_us": (mean / 1e3 * 10.0).round() / 10.0,
    })
}

fn ident_of(engine: &IcmpEngine, v6: bool) -> u16 {
    engine
        .sockets()
        .into_iter()
        .find(|(is6, ..)| *is6 == v6)
        .map(|(.., ident)| ident)
        .expect("the socket is open")
}

#[test]
fn every_socket_kind_takes_kernel_rx_and_tx_timestamps() {
    if !support::require_root() {
        return;
    }
    // Raw sockets in the root namespace, on loopback.
    let rt = runtime();
    let raw = rt.block_on(async {
        // Held open while measuring: see `warm_engine`.
        let _warm = warm_engine(SocketPreference::Raw, IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
        let e = engine(TimestampSource::Kernel, SocketPreference::Raw);
        for ip in [
            IpAddr::from(Ipv4Addr::LOCALHOST),
            Ipv6Addr::LOCALHOST.into(),
        ] {
            let rtts = series(&e, ip, 20, Duration::from_millis(2)).await;
            assert!(rtts.iter().all(|(_, r)| *r > Duration::ZERO), "{ip}");
        }
        e.timestamp_stats()
    });
    drop(rt);
    // Datagram sockets inside a test network, through the TUN device.
    let net = TestNet::start(&profiles());
    net.enter();
    let out = net
        .command("sysctl")
        .args(["-qw", "net.ipv4.ping_group_range=0 2147483647"])
        .output()
        .expect("sysctl");
    assert!(out.status.success(), "{out:?}");
    let rt = runtime();
    let (dgram, errs) = rt.block_on(async {
        let _warm = warm_engine(SocketPreference::Dgram, IpAddr::V4(HOST_1MS)).await;
        let e = engine(TimestampSource::Kernel, SocketPreference::Dgram);
        let rtts = series(&e, IpAddr::V4(HOST_1MS), 20, Duration::from_millis(2)).await;
        let v6 = series(
            &e,
            "2001:db8::10".parse().unwrap(),
            20,
            Duration::from_millis(2),
        )
        .await;
        assert_eq!(v6.len(), 20);
        let log = net.wait_log(40, Duration::from_secs(5));
        (
            e.timestamp_stats(),
            errors_against_truth(&log, IpAddr::V4(HOST_1MS), ident_of(&e, false), &rtts),
        )
    });
    for (what, s) in [("raw", &raw), ("dgram", &dgram)] {
        eprintln!("{what}: {s:?}");
        assert_eq!(
            s.paths.len(),
            2,
            "{what}: one ip4 and one ip6 socket: {s:?}"
        );
        for p in &s.paths {
            assert_eq!((p.socket, p.rx, p.tx), (what, "kernel", "kernel"), "{p:?}");
        }
        assert_eq!(fallbacks(s), vec![], "{what}: no RTT fell back");
        assert_eq!(s.clock_steps, 0);
    }
    let figures = summary(&errs);
    eprintln!("dgram, 1 ms host, error against the responder's log: {figures}");
    assert!(
        figures["max_abs_us"].as_f64().unwrap() < 1000.0,
        "idle RTT error under 1 ms: {figures}"
    );
}

/// The wall clock (an injected one; the machine's is shared and never stepped) jumps 1 s
/// forward during one probe and 1 s back during another, both to a 50 ms host: each RTT is the
/// true one (50 ms and a little), never 0, and `clock_steps_total` ends at 2.
#[test]
fn clock_steps_during_probes_keep_rtts_true() {
    let Some(net) = TestNet::start_and_enter(&profiles()) else {
        return;
    };
    let rt = runtime();
    let clock = Arc::new(SteppableClock::default());
    let (rtts, stats, ident) = rt.block_on(async {
        let e = IcmpEngine::new(EngineConfig {
            clock: clock.clone(),
            ..EngineConfig::default()
        })
        .expect("engine");
        let (tx, mut rx) = mpsc::channel::<ProbeEvent>(16);
        let sink = EventSink::from(tx);
        let mut rtts = Vec::new();
        for (tag, step) in [
            (0u64, 0i64),
            (1, 1_000_000_000),
            (2, 0),
            (3, -1_000_000_000),
            (4, 0),
        ] {
            let seq = e
                .send(&spec(IpAddr::V4(HOST_50MS)), tag, &sink)
                .expect("send");
            tokio::time::sleep(Duration::from_millis(20)).await;
            clock.step(step);
            rtts.push((seq, next_reply_rtt(&mut rx, &format!("probe {tag}")).await));
        }
        (rtts, e.timestamp_stats(), ident_of(&e, false))
    });
    let log = net.wait_log(5, Duration::from_secs(5));
    let errs = errors_against_truth(&log, IpAddr::V4(HOST_50MS), ident, &rtts);
    eprintln!("RTTs {rtts:?}; errors against the log (ns) {errs:?}; {stats:?}");
    for ((_, rtt), err) in rtts.iter().zip(&errs) {
        let lead = support::ARRIVAL_LEAD;
        assert!(
            *rtt >= Duration::from_millis(50) - lead,
            "no RTT below the 50 ms delay (less the arrival lead): {rtt:?}"
        );
        assert!(
            *err >= -(lead.as_nanos() as i64) && *err < 1_000_000,
            "within 1 ms of the truth (or the arrival lead below it): {err} ns"
        );
    }
    assert_eq!(stats.clock_steps, 2, "{stats:?}");
    assert_eq!(
        fallbacks(&stats),
        vec![],
        "kernel timestamps map across the steps"
    );
}

/// Prints a result line and, when `TIMESTAMP_RESULTS` names a file, appends it there.
fn record(line: &Value) {
    println!("{line}");
    if let Some(path) = std::env::var_os("TIMESTAMP_RESULTS") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("opening TIMESTAMP_RESULTS");
        writeln!(f, "{line}").expect("writing TIMESTAMP_RESULTS");
    }
}

/// ms figures from iputils `ping` lines (`time=0.031 ms`).
fn ping_times(text: &str) -> Vec<Duration> {
    text.lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map(|ms| Duration::from_nanos((ms * 1e6).round() as u64))
        .collect()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// At N = 1 on an idle loopback, kernel TX and RX timestamps give an RTT not above iputils
/// `ping`'s (kernel RX, user-space TX) median, and below our own kernel RX + user-space TX.
/// `ping` runs at the same time as our probes and on the same CPU, so both see the same
/// machine; nextest runs this test alone (.config/nextest.toml).
#[test]
fn rtt_on_loopback_is_not_above_iputils_ping() {
    if !support::require_root() {
        return;
    }
    const ROUNDS: usize = 6;
    const PER_ROUND: usize = 100;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // One round of one engine, on a runtime of its own: a fresh engine, sockets and threads each
    // round, so where the scheduler placed one round's threads does not decide the whole test.
    // One engine at a time: each raw socket gets every echo reply of the host, so a second one
    // would add its wake-ups to the measured path.
    let round = |source: TimestampSource, with_ping: bool| {
        // Our runtime's threads and ping on the same CPU: a VM's vCPUs are not equally fast
        // from one second to the next (the host schedules them), so both sides of the
        // comparison run on one.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .on_thread_start(|| pin_to_cpu(0))
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let e = rt.block_on(async { engine(source, SocketPreference::Raw) });
        // The kernel enables software RX timestamps through deferred work when the first socket
        // of the machine asks for them: the first reply may come without one (`missing`).
        rt.block_on(series(&e, ip, 3, Duration::from_millis(5)));
        let before = e.timestamp_stats();
        let ping = with_ping.then(|| {
            Command::new("taskset")
                .args(["-c", "0", "ping", "-n", "-c", &PER_ROUND.to_string()])
                .args(["-i", "0.005", "-W", "2"])
                .arg("127.0.0.1")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("running iputils ping")
        });
        // Sent from a runtime worker, as the daemon sends, not from the thread in `block_on`
        // (whose every wake-up would be a hand-off from the worker that runs the timers).
        let probes = {
            let e = e.clone();
            rt.spawn(async move { series(&e, ip, PER_ROUND, Duration::from_millis(5)).await })
        };
        let r = rt.block_on(probes).expect("the probe task");
        let ours: Vec<Duration> = r.into_iter().map(|(_, d)| d).collect();
        let theirs = ping.map_or_else(Vec::new, |ping| {
            let out = ping.wait_with_output().expect("waiting for ping");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "ping failed: {text}");
            ping_times(&text)
        });
        let new_fallbacks = fallbacks(&e.timestamp_stats()) != fallbacks(&before);
        (ours, theirs, new_fallbacks)
    };
    let (mut ours, mut theirs, mut ours_rx_only) = (Vec::new(), Vec::new(), Vec::new());
    let mut fell_back = false;
    for _ in 0..ROUNDS {
        let (o, t, f) = round(TimestampSource::Kernel, true);
        ours.extend(o);
        theirs.extend(t);
        fell_back |= f;
        ours_rx_only.extend(round(TimestampSource::KernelRx, false).0);
    }
    assert!(!fell_back, "no fallback during the measurement");
    assert_eq!(theirs.len(), ROUNDS * PER_ROUND, "every ping line parsed");
    let (m_ours, m_rx, m_ping) = (
        median(&mut ours),
        median(&mut ours_rx_only),
        median(&mut theirs),
    );
    eprintln!(
        "127.0.0.1, N=1, {} probes each: median RTT kernel RX+TX {m_ours:?}, kernel RX + user TX \
         {m_rx:?}, iputils ping (run alongside kernel RX+TX) {m_ping:?}",
        ROUNDS * PER_ROUND
    );
    let us_f = |d: Duration| (d.as_nanos() as f64 / 100.0).round() / 10.0;
    record(&json!({
        "test": "rtt_on_loopback_is_not_above_iputils_ping",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "target": "127.0.0.1",
        "probes_each": ROUNDS * PER_ROUND,
        "median_us": {
            "kernel_rx_kernel_tx": us_f(m_ours),
            "kernel_rx_user_tx": us_f(m_rx),
            "iputils_ping": us_f(m_ping),
        },
    }));
    // The transmit timestamp takes our `sendto` path out of the RTT.
    assert!(
        m_ours < m_rx,
        "kernel RX+TX {m_ours:?} not below kernel RX + user TX {m_rx:?}"
    );
    // ping prints whole µs (truncated), so ours is compared in whole µs too. The raw socket
    // sends from a twin that nothing polls, so the TX timestamp wakes no thread between the
    // two stamps (engine::icmp, "Timestamps"); ping's RTT also holds its `sendto` path.
    let us = |d: Duration| d.as_micros();
    assert!(
        us(m_ours) <= us(m_ping),
        "kernel RX+TX median {m_ours:?} above ping's {m_ping:?}"
    );
}

/// CPU hogs: one SCHED_FIFO thread per core at `priority` (above every normal thread, below
/// the responder's 10), spinning `busy` then sleeping `idle`, stopped by drop, by `limit`, and
/// by a slice count, whichever comes first.
struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    slices: Arc<AtomicU64>,
}

impl Hogs {
    fn start(priority: i32, busy: Duration, idle: Duration, limit: Duration) -> Hogs {
        let stop = Arc::new(AtomicBool::new(false));
        let slices = Arc::new(AtomicU64::new(0));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_slices = (limit.as_micros() / (busy + idle).as_micros().max(1)) as u64 + 1;
        let threads = (0..cores)
            .map(|core| {
                let (stop, slices) = (stop.clone(), slices.clone());
                std::thread::spawn(move || {
                    // SAFETY: plain syscalls on this thread with valid, initialised arguments.
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(core, &mut set);
                        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
                        let param = libc::sched_param {
                            sched_priority: priority,
                        };
                        assert_eq!(
                            libc::sched_setscheduler(0, libc::SCHED_FIFO, &param),
                            0,
                            "SCHED_FIFO for the hog: {}",
                            std::io::Error::last_os_error()
                        );
                    }
                    let end = Instant::now() + limit;
                    for _ in 0..max_slices {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= end {
                            break;
                        }
                        let until = Instant::now() + busy;
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                        slices.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(idle);
                    }
                })
            })
            .collect();
        Hogs {
            stop,
            threads,
            slices,
        }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sum of the samples of `name` with these labels; `None` when there is no such sample.
fn metric_sum(scrape: &Scrape, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    (!scrape.find(name, want).is_empty()).then(|| scrape.sum(name, want))
}

/// A daemon whose cores are both taken by SCHED_FIFO hogs still reports the 1 ms host within
/// 100 µs of the truth (the responder's log), with no timestamp fallback; an engine in this
/// process with user-space timestamps, probing the same host meanwhile, is off by milliseconds.
#[test]
fn loaded_daemon_reports_rtt_within_100us_of_the_truth() {
    let Some(net) = TestNet::start_and_enter(&profiles()) else {
        return;
    };
    // Held open from before the daemon starts, so its first reply is not one without an RX
    // timestamp.
    let rt = runtime();
    let _warm = rt.block_on(warm_engine(
        SocketPreference::Raw,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    ));
    let config = format!(
        "{}targets:\n  - host: 127.0.0.1\n    interval: 100ms\n",
        base_config(4)
    );
    let d = Daemon::start(
        &support::write_config(net.dir(), "pingscope.yml", &config),
        &["--log.level", "warn"],
    );
    let c = client();
    // User-space timestamps, for comparison, in this process.
    let user = rt.block_on(async { engine(TimestampSource::Userspace, SocketPreference::Raw) });

    let hogs = Hogs::start(
        5,
        Duration::from_millis(4),
        Duration::from_millis(1),
        Duration::from_secs(30),
    );
    let (status, rec) = post_json(
        &c,
        &d.url("/api/v1/sessions"),
        &json!({"target": HOST_1MS.to_string(), "count": 150, "interval": "20ms"}),
    );
    assert_eq!(status, 201, "{rec}");
    let id = rec["id"].as_str().expect("id").to_owned();
    let user_rtts = rt.block_on(series(
        &user,
        IpAddr::V4(HOST_1MS),
        100,
        Duration::from_millis(20),
    ));
    let session = wait_ended(&c, &d, &id, Duration::from_secs(30));
    let slices = hogs.slices.load(Ordering::Relaxed);
    drop(hogs);
    assert!(slices > 100, "the hogs ran: {slices} slices");

    let log = net.wait_log(250, Duration::from_secs(5));
    let samples = session["samples"].as_array().expect("samples");
    let daemon_rtts: Vec<(u16, Duration)> = samples
        .iter()
        .filter(|s| s["type"] == "reply")
        .map(|s| {
            let seq = u16::try_from(s["seq"].as_u64().expect("seq")).expect("u16");
            let ms = s["rtt_ms"].as_f64().expect("rtt_ms");
            (seq, Duration::from_nanos((ms * 1e6).round() as u64))
        })
        .collect();
    assert_eq!(daemon_rtts.len(), 150, "every probe answered: {session}");
    // The session's samples number from 1; the wire sequence is the log's. Match by order.
    let ours: Vec<&LogEntry> = {
        let user_id = ident_of(&user, false);
        let mut v: Vec<&LogEntry> = log
            .iter()
            .filter(|e| e.dst == IpAddr::V4(HOST_1MS) && e.id != user_id)
            .collect();
        v.sort_by_key(|e| e.time_ns);
        v
    };
    assert_eq!(ours.len(), 150, "the daemon's requests in the log");
    let daemon_errs: Vec<i64> = daemon_rtts
        .iter()
        .zip(&ours)
        .map(|((_, rtt), e)| rtt.as_nanos() as i64 - e.actual_delay_ns.expect("answered") as i64)
        .collect();
    let user_errs = errors_against_truth(
        &log,
        IpAddr::V4(HOST_1MS),
        ident_of(&user, false),
        &user_rtts,
    );
    let (k, u) = (summary(&daemon_errs), summary(&user_errs));
    eprintln!("loaded, 1 ms host, error against the responder's log:");
    eprintln!("  daemon, kernel RX+TX timestamps: {k}");
    eprintln!("  user-space RX+TX timestamps:     {u}");
    let (_, _, body) = d.get("/metrics");
    let body = Scrape::parse(&body);
    let fell_back = metric_sum(&body, "pingscope_timestamp_fallbacks_total", &[]);
    let kernel_paths = metric_sum(
        &body,
        "pingscope_timestamp_info",
        &[("rx", "kernel"), ("tx", "kernel")],
    );
    eprintln!("  fallbacks {fell_back:?}, kernel-path sockets {kernel_paths:?}");
    assert_eq!(fell_back, Some(0.0), "no RTT fell back to user space");
    assert!(
        kernel_paths.is_some_and(|n| n >= 1.0),
        "the daemon's socket uses kernel RX and TX"
    );
    // The truth has its own error: the responder stamps a request's arrival with the kernel's
    // stamp on the device and reads its clock before the answer's `write`, and on this shared VM
    // a stolen vCPU now and then stretches the kernel work around one of those points by
    // 100-300 µs (about one run in ten, either sign; measured on 2026-12-03 against the hold
    // time and against kernel stamps of a capture on the device at both ends: the same
    // outliers, so they are not the responder's user-space clock read). So one probe of the
    // 150 may be off by up to 1 ms; two may not, and with no fallback counted every RTT above
    // is kernel-stamped. A user-space receive time under these hogs is off by milliseconds.
    let outliers: Vec<f64> = daemon_errs
        .iter()
        .filter(|e| e.abs() > 100_000)
        .map(|e| *e as f64 / 1e3)
        .collect();
    eprintln!("  beyond 100 µs (µs): {outliers:?}");
    assert!(
        outliers.len() <= 1 && k["max_abs_us"].as_f64().unwrap() <= 1000.0,
        "every reported RTT but one within 100 µs of the truth, that one within 1 ms: \
         {outliers:?} µs beyond 100 µs; {k}"
    );
    assert!(
        u["max_us"].as_f64().unwrap() >= 1000.0,
        "the load delays user-space timestamps by milliseconds (else this test proves nothing): {u}"
    );
}

/// Drops every event: the background probes of the loaded runs.
#[derive(Debug)]
struct Discard;

impl pingscope::engine::EventHandler for Discard {
    fn on_event(&self, _: ProbeEvent) {}
}

/// The background of a loaded daemon: `targets` addresses of the test network (answered after
/// 1 ms), each probed every `every`, through `engine`; stops with `stop` or after `limit`.
async fn background(
    engine: Arc<IcmpEngine>,
    targets: u32,
    every: Duration,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> u64 {
    let sink = EventSink::Handler(Arc::new(Discard));
    let tick = Duration::from_millis(1);
    let per_tick = (u128::from(targets) * tick.as_nanos() / every.as_nanos()).max(1) as u32;
    let mut timer = tokio::time::interval(tick);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = Instant::now() + limit;
    let (mut next, mut sent) = (0u32, 0u64);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        timer.tick().await;
        for _ in 0..per_tick {
            // 198.18.1.0 onwards: clear of the measured hosts in 198.18.0.0/24.
            let ip = IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(198, 18, 1, 0)) + next,
            ));
            next = (next + 1) % targets;
            if engine.send(&spec(ip), u64::from(next), &sink).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

/// The README's figures: RTT error against the test network's truth (the responder's log) for
/// the three timestamp paths, on an idle engine and on a loaded one (10,000 background targets
/// and SCHED_FIFO hogs on both cores). One JSON line per run goes to stdout and, when
/// `TIMESTAMP_RESULTS` names a file, is appended to it. Run it in a release build:
///
/// `sudo TIMESTAMP_RESULTS=bench/results/timestamps-$(date +%F).jsonl cargo test --release --test timestamps -- --ignored --nocapture measure_timestamp_paths`
#[test]
#[ignore = "a measurement for the README, not a check; about a minute"]
fn measure_timestamp_paths() {
    if !support::require_root() {
        return;
    }
    const PROBES: usize = 300;
    const TARGETS: u32 = 10_000;
    const EVERY: Duration = Duration::from_secs(5);
    let net = TestNet::start(&profiles());
    net.enter();
    let rt = runtime();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let paths = [
        (TimestampSource::Kernel, "kernel_rx_kernel_tx"),
        (TimestampSource::KernelRx, "kernel_rx_user_tx"),
        (TimestampSource::Userspace, "user_rx_user_tx"),
    ];
    for loaded in [false, true] {
        for (source, name) in paths {
            let e = rt.block_on(async { engine(source, SocketPreference::Raw) });
            let stop = Arc::new(AtomicBool::new(false));
            let (bg, hogs) = if loaded {
                let bg = rt.spawn(background(
                    e.clone(),
                    TARGETS,
                    EVERY,
                    stop.clone(),
                    Duration::from_secs(60),
                ));
                // Let the background reach its rate before measuring.
                std::thread::sleep(Duration::from_secs(1));
                let hogs = Hogs::start(
                    5,
                    Duration::from_millis(4),
                    Duration::from_millis(1),
                    Duration::from_secs(30),
                );
                (Some(bg), Some(hogs))
            } else {
                (None, None)
            };
            let before = e.timestamp_stats();
            let rtts = rt.block_on(series(
                &e,
                IpAddr::V4(HOST_1MS),
                PROBES,
                Duration::from_millis(10),
            ));
            let after = e.timestamp_stats();
            drop(hogs);
            stop.store(true, Ordering::Relaxed);
            let bg_sent = bg.map(|h| rt.block_on(h).expect("background task"));
            std::thread::sleep(Duration::from_millis(200));
            let log = net.log();
            let errs = errors_against_truth(&log, IpAddr::V4(HOST_1MS), ident_of(&e, false), &rtts);
            let mut line = summary(&errs);
            let fell_back: u64 = fallbacks(&after).iter().map(|(.., n)| n).sum::<u64>()
                - fallbacks(&before).iter().map(|(.., n)| n).sum::<u64>();
            line["path"] = json!(name);
            line["load"] = json!(if loaded { "loaded" } else { "idle" });
            line["build"] = json!(build);
            line["host_delay_ms"] = json!(1);
            line["probes_every_ms"] = json!(10);
            line["fallbacks_during_run"] = json!(fell_back);
            if loaded {
                line["background_targets"] = json!(TARGETS);
                line["background_every_s"] = json!(EVERY.as_secs());
                line["background_sent"] = json!(bg_sent);
                line["hogs"] = json!("SCHED_FIFO 5 on each core, 4 ms busy / 1 ms idle");
            }
            record(&line);
            drop(e);
        }
    }
}
