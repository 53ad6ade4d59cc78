//! The series of path monitors (DESIGN.md, "Probe kinds"), written at scrape time from each
//! monitored address's [`PathMetrics`]:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `pingscope_path_hop_sent_total`, `pingscope_path_hop_lost_total` | counter | target, ip, (custom), ttl |
//! | `pingscope_path_hop_rtt_seconds` | histogram (classic [`PATH_BUCKETS`] in text; in protobuf native, as `pingscope_rtt_seconds`) | target, ip, (custom), ttl |
//! | `pingscope_path_hop_info` | gauge 1 | target, ip, (custom), ttl, hop_ip |
//! | `pingscope_path_length` | gauge | target, ip, (custom) |
//! | `pingscope_path_changes_total` | counter | target, ip, (custom) |
//! | `pingscope_path_info` | gauge 1 | target, ip, (custom), path_id |
//!
//! Hop addresses appear only in `pingscope_path_hop_info`, so responder churn never mints new
//! counter or histogram series. A TTL no longer probed (the path got shorter) and a responder no
//! longer seen keep their series for [`GRACE_ROUNDS`] rounds, then they are deleted; the responders
//! kept per TTL are bounded by [`MAX_RESPONDERS_PER_TTL`] (the oldest go first), and TTLs by
//! 255, so the series of one monitor are bounded.
//!
//! The hop RTT histograms follow the registry's [`Layout`](super::Layout) as the per-target
//! ones do: with the default split layout each hop keeps classic and native buckets in one
//! histogram; the collector is registered once per registry as a [`PathView`], which encodes
//! the native buckets in the protobuf one.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::gauge::ConstGauge;

use super::histogram::{SharedHistogram, native_scope};
use super::{HistogramMaker, TargetLabels};
use crate::probe::path::{HopResult, PathStats, Round};

/// Classic buckets of `pingscope_path_hop_rtt_seconds`: a short layout (hops are many).
pub const PATH_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Rounds a TTL or a responder keeps its series after it was last seen.
pub const GRACE_ROUNDS: u64 = 10;
/// Responders kept per TTL in `pingscope_path_hop_info` (ECMP branches and churn).
pub const MAX_RESPONDERS_PER_TTL: usize = 8;

#[derive(Debug)]
struct Hop {
    sent: u64,
    lost: u64,
    rtt: SharedHistogram,
    last_round: u64,
    /// Responder → the round it was last seen in.
    responders: BTreeMap<IpAddr, u64>,
}

#[derive(Debug)]
struct Series {
    labels: TargetLabels,
    round: u64,
    hops: BTreeMap<u8, Hop>,
    length: Option<u8>,
    changes: u64,
    path_id: Option<String>,
}

/// One monitored address's path series. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PathMetrics {
    series: Arc<Mutex<Series>>,
    /// Makes the hop RTT histograms of the registry's layout.
    maker: Arc<HistogramMaker>,
}

impl PathMetrics {
    /// Folds one finished round in (its probes) and the path figures after it (`stats` has it
    /// folded in already).
    pub fn on_round(&self, round: &Round, stats: &PathStats) {
        let mut s = self.series.lock();
        s.round += 1;
        let now = s.round;
        // A send that failed locally is no probe (as for pings): the caller counts it in
        // `pingscope_send_errors_total`.
        for p in round
            .probes
            .iter()
            .filter(|p| p.result != HopResult::SendError)
        {
            let hop = s.hops.entry(p.ttl).or_insert_with(|| Hop {
                sent: 0,
                lost: 0,
                rtt: SharedHistogram::new(self.maker.new_metric()),
                last_round: now,
                responders: BTreeMap::new(),
            });
            hop.last_round = now;
            hop.sent += 1;
            match (p.responder, p.rtt) {
                (Some(r), Some(rtt)) => {
                    let secs = rtt.as_secs_f64();
                    hop.rtt.observe(secs);
                    hop.responders.insert(r, now);
                    if hop.responders.len() > MAX_RESPONDERS_PER_TTL
                        && let Some(oldest) = hop
                            .responders
                            .iter()
                            .min_by_key(|(_, seen)| **seen)
                            .map(|(ip, _)| *ip)
                    {
                        hop.responders.remove(&oldest);
                    }
                }
                _ => hop.lost += 1,
            }
        }
        let fresh = |seen: u64| now.saturating_sub(seen) < GRACE_ROUNDS;
        s.hops.retain(|_, h| fresh(h.last_round));
        for h in s.hops.values_mut() {
            h.responders.retain(|_, seen| fresh(*seen));
        }
        s.length = stats.length();
        s.changes = stats.changes();
        s.path_id = stats.path_id().map(str::to_owned);
    }
}

/// Every path monitor's series; encodes them at scrape time.
#[derive(Debug)]
pub(crate) struct PathCollector {
    // Taken to add or remove a monitor and by scrapes to copy the handles out; rounds lock only
    // their own series.
    targets: Mutex<BTreeMap<String, PathMetrics>>,
    maker: Arc<HistogramMaker>,
}

/// The path series as one registry encodes them: with `native` (the protobuf registry of the
/// split layout) the hop histograms give their native buckets.
#[derive(Clone, Debug)]
pub(crate) struct PathView {
    pub(crate) paths: Arc<PathCollector>,
    pub(crate) native: bool,
}

fn key(labels: &TargetLabels) -> String {
    format!("{}\u{0}{}", labels.target(), labels.ip())
}

impl PathCollector {
    /// No monitors yet; hop histograms made by `maker`.
    pub(crate) fn new(maker: HistogramMaker) -> Self {
        Self {
            targets: Mutex::new(BTreeMap::new()),
            maker: Arc::new(maker),
        }
    }

    /// The series of one monitored address, created empty (kept when asked again).
    pub(crate) fn target(&self, labels: &TargetLabels) -> PathMetrics {
        self.targets
            .lock()
            .entry(key(labels))
            .or_insert_with(|| PathMetrics {
                series: Arc::new(Mutex::new(Series {
                    labels: labels.clone(),
                    round: 0,
                    hops: BTreeMap::new(),
                    length: None,
                    changes: 0,
                    path_id: None,
                })),
                maker: self.maker.clone(),
            })
            .clone()
    }

    /// Deletes every series of one monitored address.
    pub(crate) fn forget(&self, labels: &TargetLabels) -> bool {
        self.targets.lock().remove(&key(labels)).is_some()
    }
}

type Labels = Vec<(String, String)>;

fn base(l: &TargetLabels) -> Labels {
    let mut v = vec![
        ("target".to_owned(), l.target().to_owned()),
        ("ip".to_owned(), l.ip().to_string()),
    ];
    v.extend(l.extra().iter().cloned());
    v
}

fn with(mut v: Labels, name: &str, value: String) -> Labels {
    v.push((name.to_owned(), value));
    v
}

impl Collector for PathView {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let handles: Vec<PathMetrics> = self.paths.targets.lock().values().cloned().collect();
        // Snapshot each monitor under its own lock, then encode without any lock held.
        let mut sent = Vec::new();
        let mut lost = Vec::new();
        let mut rtt = Vec::new();
        let mut info = Vec::new();
        let mut length = Vec::new();
        let mut changes = Vec::new();
        let mut path_info = Vec::new();
        for h in &handles {
            let s = h.series.lock();
            let b = base(&s.labels);
            for (ttl, hop) in &s.hops {
                let l = with(b.clone(), "ttl", ttl.to_string());
                sent.push((l.clone(), hop.sent));
                lost.push((l.clone(), hop.lost));
                rtt.push((l.clone(), hop.rtt.clone()));
                for ip in hop.responders.keys() {
                    info.push(with(l.clone(), "hop_ip", ip.to_string()));
                }
            }
            if let Some(len) = s.length {
                length.push((b.clone(), i64::from(len)));
            }
            changes.push((b.clone(), s.changes));
            if let Some(id) = &s.path_id {
                path_info.push(with(b, "path_id", id.clone()));
            }
        }
        let counters = [
            ("path_hop_sent", "Hop probes sent, per TTL.", sent),
            (
                "path_hop_lost",
                "Hop probes that got no answer, per TTL.",
                lost,
            ),
            ("path_changes", "Path changes seen.", changes),
        ];
        for (name, help, series) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (l, v) in series {
                ConstCounter::new(v).encode(m.encode_family(&l)?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "path_hop_rtt",
            "RTT of hop probes answered, per TTL.",
            Some(&prometheus_client::registry::Unit::Seconds),
            MetricType::Histogram,
        )?;
        {
            let _native = self.native.then(native_scope);
            for (l, h) in rtt {
                h.encode(m.encode_family(&l)?)?;
            }
        }
        let gauges = [
            (
                "path_hop_info",
                "1 for each responder seen at a TTL in the last rounds.",
                info.into_iter().map(|l| (l, 1)).collect::<Vec<_>>(),
            ),
            (
                "path_length",
                "TTL at which the destination answered last.",
                length,
            ),
            (
                "path_info",
                "1 for the current path (path_id: a hash of the responders per TTL).",
                path_info.into_iter().map(|l| (l, 1)).collect(),
            ),
        ];
        for (name, help, series) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (l, v) in series {
                ConstGauge::new(v).encode(m.encode_family(&l)?)?;
            }
        }
        Ok(())
    }
}
