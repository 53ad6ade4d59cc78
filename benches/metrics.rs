//! Hot paths of the `/metrics` registry: recording one probe result, and encoding the whole
//! registry at 10,000 targets as text and as protobuf (native histograms on), each plain and
//! gzip-compressed as a scrape that accepts gzip gets it; and the text scrape gzip-compressed at
//! levels 1 to 4, side by side, which is what chose the level scrapes use.
//!
//! Run: `cargo bench --bench metrics -- --warm-up-time 1 --measurement-time 3`. The body sizes
//! are printed once before the encode and the level benchmarks.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use pingscope::engine::{EventKind, ProbeEvent, ReplyInfo};
use pingscope::http::compress::{LEVEL, gzip_at, gzip_with};
use pingscope::metrics::Format;
use pingscope::metrics::{Metrics, MetricsOptions, TargetLabels, TargetMetrics, WindowRtt};
use pingscope::resolve::Family;

const TARGETS: u32 = 10_000;

fn reply(ip: IpAddr, seq: u16, micros: u64) -> ProbeEvent {
    ProbeEvent {
        tag: u64::from(seq),
        seq,
        ip,
        at: SystemTime::UNIX_EPOCH,
        kind: EventKind::Reply(ReplyInfo {
            rtt: Duration::from_micros(micros),
            ttl: Some(64),
            size: 64,
            refused: false,
        }),
    }
}

/// Target `i` on a distinct loopback address, with one custom label like a real config.
fn target(metrics: &Metrics, i: u32) -> Result<TargetMetrics, Box<dyn std::error::Error>> {
    let [_, b, c, d] = (i + 1).to_be_bytes();
    let ip = IpAddr::V4(Ipv4Addr::new(127, b, c, d));
    let extra = [("site".to_owned(), format!("site{}", i % 8))];
    let labels = TargetLabels::new(format!("target-{i}"), ip, extra)?;
    Ok(metrics.target(&labels, &ip.to_string(), Family::Auto))
}

/// A registry as a daemon has it after a few minutes: every target with a spread of RTTs
/// (so native histograms hold several buckets), some loss, window gauges set.
fn populated() -> Result<Metrics, Box<dyn std::error::Error>> {
    let metrics = Metrics::new(MetricsOptions::default())?;
    for i in 0..TARGETS {
        let t = target(&metrics, i)?;
        let ip = t.labels().ip();
        for seq in 0..60_u16 {
            t.on_sent();
            if seq % 20 == 7 {
                t.on_event(&ProbeEvent {
                    kind: EventKind::Timeout,
                    ..reply(ip, seq, 0)
                });
            } else {
                let micros = 20 + u64::from(seq * 37 % 400) + u64::from(i % 50) * 100;
                t.on_event(&reply(ip, seq, micros));
            }
        }
        let rtt = WindowRtt {
            min: 0.0001,
            mean: 0.0002,
            max: 0.0004,
            stddev: 0.00005,
        };
        t.set_window(0.05, Some(rtt));
    }
    Ok(metrics)
}

fn record(c: &mut Criterion) {
    let metrics = match Metrics::new(MetricsOptions::default()) {
        Ok(m) => m,
        Err(e) => panic!("registry: {e}"),
    };
    let t = match target(&metrics, 0) {
        Ok(t) => t,
        Err(e) => panic!("target: {e}"),
    };
    let ip = t.labels().ip();
    let events: Vec<ProbeEvent> = (0..256_u16)
        .map(|seq| reply(ip, seq, 15 + u64::from(seq % 64) * 3))
        .collect();
    let mut n = 0_usize;
    c.bench_function("record probe (sent + reply)", |b| {
        b.iter(|| {
            let event = &events[n % events.len()];
            n += 1;
            t.on_sent();
            t.on_event(black_box(event));
        })
    });
}

/// Recording as the daemon does at scale: each probe to the next of 10,000 targets, each reply
/// built in the loop (the single-target bench above reuses 256 built ones). Whether their
/// series stay in cache at this rate depends on the machine (on the 2-core VM of
/// bench/RESULTS.md they did: both benches took about the same time).
fn record_many(c: &mut Criterion) {
    let metrics = match Metrics::new(MetricsOptions::default()) {
        Ok(m) => m,
        Err(e) => panic!("registry: {e}"),
    };
    let targets: Vec<TargetMetrics> = (0..TARGETS)
        .map(|i| match target(&metrics, i) {
            Ok(t) => t,
            Err(e) => panic!("target: {e}"),
        })
        .collect();
    // A spread of RTTs per target, so that each keeps a realistic set of native buckets.
    for (i, t) in targets.iter().enumerate() {
        let ip = t.labels().ip();
        for seq in 0..64_u16 {
            t.on_sent();
            t.on_event(&reply(ip, seq, 15 + (u64::from(seq) * 7 + i as u64) % 200));
        }
    }
    let mut n = 0_usize;
    c.bench_function("record probe, 10k targets in turn", |b| {
        b.iter(|| {
            let t = &targets[n % targets.len()];
            let event = reply(
                t.labels().ip(),
                (n / targets.len()) as u16,
                15 + (n as u64 * 13) % 200,
            );
            n += 1;
            t.on_sent();
            t.on_event(black_box(&event));
        })
    });
}

#[expect(
    clippy::print_stderr,
    reason = "the body sizes are part of the benchmark's report"
)]
fn encode(c: &mut Criterion) {
    let metrics = match populated() {
        Ok(m) => m,
        Err(e) => panic!("registry: {e}"),
    };
    let gzip = |format| gzip_with(|w| metrics.encode_into(format, w));
    for format in [Format::Text, Format::Protobuf] {
        match (metrics.encode(format), gzip(format)) {
            (Ok(plain), Ok(gz)) => eprintln!(
                "body size at {TARGETS} targets, {format:?}: {} bytes, gzip {} bytes ({:.3}x)",
                plain.len(),
                gz.len(),
                gz.len() as f64 / plain.len() as f64
            ),
            (Err(e), _) | (_, Err(e)) => panic!("encode: {e}"),
        }
    }
    let mut group = c.benchmark_group("encode 10k targets");
    group.sample_size(10);
    group.bench_function("text", |b| b.iter(|| black_box(metrics.encode_text())));
    group.bench_function("text gzip", |b| b.iter(|| black_box(gzip(Format::Text))));
    group.bench_function("protobuf", |b| {
        b.iter(|| black_box(metrics.encode_protobuf()))
    });
    group.bench_function("protobuf gzip", |b| {
        b.iter(|| black_box(gzip(Format::Protobuf)))
    });
    group.finish();
}

#[expect(
    clippy::print_stderr,
    reason = "the body sizes are part of the benchmark's report"
)]
fn gzip_levels(c: &mut Criterion) {
    let metrics = match populated() {
        Ok(m) => m,
        Err(e) => panic!("registry: {e}"),
    };
    let text = |level| gzip_at(level, Vec::new(), |w| metrics.encode_into(Format::Text, w));
    let mut group = c.benchmark_group("gzip level, text at 10k targets");
    group.sample_size(10);
    for level in 1..=4 {
        match (metrics.encode(Format::Text), text(level)) {
            (Ok(plain), Ok(gz)) => eprintln!(
                "level {level}{}: {} of {} bytes ({:.4}x)",
                if level == LEVEL { " (scrapes)" } else { "" },
                gz.len(),
                plain.len(),
                gz.len() as f64 / plain.len() as f64
            ),
            (Err(e), _) | (_, Err(e)) => panic!("encode: {e}"),
        }
        group.bench_function(format!("level {level}"), |b| {
            b.iter(|| black_box(text(level)))
        });
    }
    group.finish();
}

criterion_group!(benches, record, record_many, encode, gzip_levels);
criterion_main!(benches);
