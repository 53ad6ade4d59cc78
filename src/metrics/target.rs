//! The per-target recording handle.
//!
//! [`TargetMetrics`] holds the target's counters and histograms themselves (each an `Arc` inside
//! prometheus-client), resolved from their families once when the target is created, so the
//! probe path touches only atomics and the histogram's own uncontended mutex: no family lock, no
//! hashing, no allocation.
//!
//! Series that do not always apply are created on first use, so an idle target does not carry
//! series with misleading values: `reply_ttl` and `jitter_rfc3550_seconds` (first reply),
//! `window_*` (first [`TargetMetrics::set_window`]), `icmp_errors_total{type}` and
//! `send_errors_total{reason}` (first error of that type or reason). That first use takes the
//! target's `lifecycle` lock, which [`super::Metrics::forget`] also takes, so a handle still
//! held by a task after its target was forgotten cannot bring a deleted series back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Unit;

use super::histogram::SeriesHistogram;
use super::labels::{InfoLabels, SeriesKey, Sub};
use super::{Families, FloatGauge};
use crate::engine::{EventKind, IcmpErrorKind, ProbeEvent};

/// Every ICMP error class, in the order of [`icmp_index`].
pub(crate) const ICMP_KINDS: [IcmpErrorKind; 5] = [
    IcmpErrorKind::Unreachable,
    IcmpErrorKind::TimeExceeded,
    IcmpErrorKind::PacketTooBig,
    IcmpErrorKind::ParameterProblem,
    IcmpErrorKind::Other,
];

fn icmp_index(kind: IcmpErrorKind) -> usize {
    match kind {
        IcmpErrorKind::Unreachable => 0,
        IcmpErrorKind::TimeExceeded => 1,
        IcmpErrorKind::PacketTooBig => 2,
        IcmpErrorKind::ParameterProblem => 3,
        IcmpErrorKind::Other => 4,
    }
}

/// `stat` label values of `pingscope_window_rtt_seconds`, in [`WindowRtt`] field order.
pub(crate) const WINDOW_STATS: [&str; 4] = ["min", "mean", "max", "stddev"];

/// RTT summary over a target's window, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowRtt {
    /// Smallest RTT.
    pub min: f64,
    /// Mean RTT.
    pub mean: f64,
    /// Largest RTT.
    pub max: f64,
    /// Standard deviation of the RTTs.
    pub stddev: f64,
}

/// Records one (target, address)'s probe results. Cheap to clone; clones share everything,
/// jitter state included.
///
/// Made by [`super::Metrics::target`]. Meant to get one event at a time (the engine delivers a
/// monitor's events to its recorder one by one, under the engine's table lock): the jitter
/// state is updated without a lock of its own.
#[derive(Clone, Debug)]
pub struct TargetMetrics {
    pub(crate) inner: Arc<TargetInner>,
}

#[derive(Debug)]
pub(crate) struct TargetInner {
    pub(crate) key: SeriesKey,
    /// The current `pingscope_target_info` labels (host and family may change on reload).
    pub(crate) info: Mutex<InfoLabels>,
    pub(crate) families: Arc<Families>,
    /// True once the target is forgotten; guards lazy creation (see the module docs).
    pub(crate) lifecycle: Mutex<bool>,
    sent: Counter,
    lost: Counter,
    late: Counter,
    duplicates: Counter,
    pub(crate) rtt: SeriesHistogram,
    pub(crate) jitter: SeriesHistogram,
    /// RTT of the previous reply as `f64` bits; NaN until the first reply.
    last_rtt: AtomicU64,
    jitter_rfc3550: OnceLock<FloatGauge>,
    reply_ttl: OnceLock<Gauge>,
    /// The last window figures, written at scrape time by [`WindowGauges`]; `None` until the
    /// first [`TargetMetrics::set_window`].
    /// Boxed: most targets never have them (48 bytes inline).
    window: Mutex<Option<Box<WindowFigures>>>,
    /// By [`icmp_index`]; boxed on the first ICMP error, as most targets never get one.
    icmp_errors: OnceLock<Box<[OnceLock<Counter>; 5]>>,
    /// `pingscope_tcp_refused_total`, at zero from the start for TCP targets only.
    tcp_refused: Option<Counter>,
    /// Few distinct reasons occur, and only on the error path, so a short list behind a mutex.
    pub(crate) send_errors: Mutex<Vec<(&'static str, Counter)>>,
}

impl TargetInner {
    /// Creates the base series at zero and returns the handle. Called by `Metrics::target`
    /// under its targets lock.
    pub(crate) fn new(key: SeriesKey, info: InfoLabels, families: Arc<Families>) -> Self {
        let f = &families;
        Self {
            sent: f.sent.get_or_create_owned(&key),
            lost: f.lost.get_or_create_owned(&key),
            late: f.late.get_or_create_owned(&key),
            duplicates: f.duplicates.get_or_create_owned(&key),
            rtt: f.rtt.get_or_create_owned(&key),
            jitter: f.jitter.get_or_create_owned(&key),
            last_rtt: AtomicU64::new(f64::NAN.to_bits()),
            jitter_rfc3550: OnceLock::new(),
            reply_ttl: OnceLock::new(),
            window: Mutex::new(None),
            icmp_errors: OnceLock::new(),
            tcp_refused: (info.probe.kind == "tcp")
                .then(|| f.tcp_refused.get_or_create_owned(&key)),
            send_errors: Mutex::new(Vec::new()),
            lifecycle: Mutex::new(false),
            info: Mutex::new(info),
            key,
            families,
        }
    }

    /// Creates a lazily made series, unless the target is already forgotten, in which case the
    /// metric is a detached one that no scrape sees.
    fn lazy<M: Default>(&self, create: impl FnOnce(&Families, &SeriesKey) -> M) -> M {
        let forgotten = self.lifecycle.lock();
        if *forgotten {
            M::default()
        } else {
            create(&self.families, &self.key)
        }
    }

    /// Deletes every series of this target from every family. The caller has set `lifecycle`.
    pub(crate) fn remove_series(&self) {
        let (f, key) = (&self.families, &self.key);
        f.sent.remove(key);
        f.lost.remove(key);
        f.late.remove(key);
        f.duplicates.remove(key);
        f.rtt.remove(key);
        f.jitter.remove(key);
        f.jitter_rfc3550.remove(key);
        f.reply_ttl.remove(key);
        f.tcp_refused.remove(key);
        for kind in ICMP_KINDS {
            let sub = Sub {
                name: "type",
                value: kind.as_str(),
            };
            f.icmp_errors.remove(&(key.clone(), sub));
        }
        for (reason, _) in self.send_errors.lock().iter() {
            let sub = Sub {
                name: "reason",
                value: reason,
            };
            f.send_errors.remove(&(key.clone(), sub));
        }
        f.target_info.remove(&self.info.lock());
    }
}

impl TargetMetrics {
    /// Counts an echo request sent.
    pub fn on_sent(&self) {
        self.inner.sent.inc();
    }

    /// Records one event of a probe (see [`crate::engine`] for the order events come in).
    ///
    /// Reply: RTT histogram, `reply_ttl`, and jitter from the previous reply (IPDV histogram
    /// and RFC 3550 gauge). Timeout: lost. ICMP error: lost and `icmp_errors_total{type}`.
    /// Late and duplicate replies: their counters only; they never touch RTT or jitter.
    pub fn on_event(&self, event: &ProbeEvent) {
        let t = &*self.inner;
        match &event.kind {
            EventKind::Reply(reply) => {
                let rtt = reply.rtt.as_secs_f64();
                t.rtt.observe(rtt);
                if let Some(ttl) = reply.ttl {
                    self.reply_ttl().set(i64::from(ttl));
                }
                if reply.refused
                    && let Some(c) = &t.tcp_refused
                {
                    c.inc();
                }
                // Jitter pairs consecutive *received* replies (RFC 3550 §6.4.1 works on
                // received packets); a loss in between does not reset the pair.
                let previous = f64::from_bits(t.last_rtt.swap(rtt.to_bits(), Ordering::Relaxed));
                if !previous.is_nan() {
                    let d = (rtt - previous).abs();
                    t.jitter.observe(d);
                    let gauge = self.jitter_rfc3550();
                    let j = gauge.get();
                    gauge.set(j + (d - j) / 16.0);
                }
            }
            EventKind::Timeout => {
                t.lost.inc();
            }
            EventKind::Late(_) => {
                t.late.inc();
            }
            EventKind::Duplicate(_) => {
                t.duplicates.inc();
            }
            EventKind::IcmpError(error) => {
                t.lost.inc();
                self.icmp_error(error.kind).inc();
            }
        }
    }

    /// Counts a send that failed locally; `reason` is [`crate::engine::SendError::reason`].
    pub fn on_send_error(&self, reason: &'static str) {
        let t = &*self.inner;
        let mut known = t.send_errors.lock();
        if let Some((_, counter)) = known.iter().find(|(r, _)| *r == reason) {
            counter.inc();
            return;
        }
        let counter: Counter = t.lazy(|f, key| {
            let sub = Sub {
                name: "reason",
                value: reason,
            };
            f.send_errors.get_or_create_owned(&(key.clone(), sub))
        });
        counter.inc();
        known.push((reason, counter));
    }

    /// Sets the `pingscope_window_*` gauges from the scheduler's window statistics. `rtt` is
    /// `None` when the window holds no reply; the RTT gauges then read NaN (no data). A target
    /// never set has no window series: the scheduler sets them only for targets with
    /// `metrics: {window_gauges: true}`.
    pub fn set_window(&self, loss_ratio: f64, rtt: Option<WindowRtt>) {
        let rtt = rtt.map_or([f64::NAN; 4], |r| [r.min, r.mean, r.max, r.stddev]);
        let figures = WindowFigures { loss_ratio, rtt };
        let mut window = self.inner.window.lock();
        match window.as_deref_mut() {
            Some(w) => *w = figures,
            None => *window = Some(Box::new(figures)),
        }
    }

    /// The labels this handle records under.
    pub fn labels(&self) -> &super::TargetLabels {
        &self.inner.key.0
    }

    fn reply_ttl(&self) -> &Gauge {
        let t = &*self.inner;
        t.reply_ttl
            .get_or_init(|| t.lazy(|f, key| f.reply_ttl.get_or_create_owned(key)))
    }

    fn jitter_rfc3550(&self) -> &FloatGauge {
        let t = &*self.inner;
        t.jitter_rfc3550
            .get_or_init(|| t.lazy(|f, key| f.jitter_rfc3550.get_or_create_owned(key)))
    }

    fn icmp_error(&self, kind: IcmpErrorKind) -> &Counter {
        let t = &*self.inner;
        let counters = t.icmp_errors.get_or_init(Box::default);
        counters[icmp_index(kind)].get_or_init(|| {
            t.lazy(|f, key| {
                let sub = Sub {
                    name: "type",
                    value: kind.as_str(),
                };
                f.icmp_errors.get_or_create_owned(&(key.clone(), sub))
            })
        })
    }
}

/// The live targets of a registry, by label set.
pub(crate) type TargetMap = HashMap<SeriesKey, Arc<TargetInner>>;

/// One target's window figures, as [`TargetMetrics::set_window`] last set them.
#[derive(Clone, Copy, Debug)]
struct WindowFigures {
    loss_ratio: f64,
    /// In [`WINDOW_STATS`] order; NaN when the window holds no reply.
    rtt: [f64; 4],
}

/// Writes `pingscope_window_loss_ratio{…}` and `pingscope_window_rtt_seconds{…,stat}` at scrape
/// time from every live target's [`WindowFigures`]. A forgotten target has left the map, so its
/// window series go with it.
#[derive(Clone, Debug)]
pub(crate) struct WindowGauges {
    pub(crate) targets: Arc<Mutex<TargetMap>>,
}

impl Collector for WindowGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copy the handles out, so loading a config never waits for a scrape.
        let targets: Vec<Arc<TargetInner>> = self.targets.lock().values().cloned().collect();
        let windows: Vec<(&SeriesKey, WindowFigures)> = targets
            .iter()
            .filter_map(|t| t.window.lock().as_deref().map(|w| (&t.key, *w)))
            .collect();
        {
            let mut family = encoder.encode_descriptor(
                "window_loss_ratio",
                "Loss ratio over the target's last window of probes.",
                None,
                MetricType::Gauge,
            )?;
            for (key, w) in &windows {
                ConstGauge::new(w.loss_ratio).encode(family.encode_family(*key)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "window_rtt",
            "RTT statistics over the target's last window of probes.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (key, w) in &windows {
            for (stat, value) in WINDOW_STATS.into_iter().zip(w.rtt) {
                let labels = (
                    (*key).clone(),
                    Sub {
                        name: "stat",
                        value: stat,
                    },
                );
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
