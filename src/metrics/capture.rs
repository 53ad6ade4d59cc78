//! Capture series (the path sessions the monitors start, docs/operations.md), written at scrape
//! time:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `pingscope_captures_total` | counter | target, reason (`outage`, `loss`) |
//! | `pingscope_captures_skipped_total` | counter | reason (`rate_limit`, `global_cap`, `failed`) |
//!
//! A target's `captures_total` series exist, from zero, for each reason its `capture:` turns on,
//! while it is configured; the three `captures_skipped_total` series always exist.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

/// Why a capture started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaptureReason {
    /// An outage of the address began (`capture.on_outage`).
    Outage,
    /// The address's window loss reached the target's `alert.loss` (`capture.on_loss`).
    Loss,
}

impl CaptureReason {
    const ALL: [Self; 2] = [Self::Outage, Self::Loss];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outage => "outage",
            Self::Loss => "loss",
        }
    }
}

/// Why a capture the config asked for was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaptureSkip {
    /// The target was captured less than its `capture.every` ago.
    RateLimit,
    /// `sessions.max_captures_per_minute` captures started in the last 60 s (or it is 0).
    GlobalCap,
    /// The path session could not start (access lists, `sessions.max_active`, the store).
    Failed,
}

impl CaptureSkip {
    const ALL: [Self; 3] = [Self::RateLimit, Self::GlobalCap, Self::Failed];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::GlobalCap => "global_cap",
            Self::Failed => "failed",
        }
    }
}

/// A count of captures, or [`OFF`] where the target does not capture for the reason: half the
/// size of an `Option<u64>`, for an entry per configured target (100,000 of them in the
/// benchmark). No count comes near it (one capture a second for 500 billion years).
const OFF: u64 = u64::MAX;

/// Captures per target and reason ([`OFF`] where the reason is off), and skips per reason.
#[derive(Debug, Default)]
pub(crate) struct CaptureCollector {
    // Taken to set a target's reasons (start, reload), to count one capture, and by scrapes to
    // copy the figures out: never on the probe path. Keyed by the config's own name.
    targets: Mutex<BTreeMap<Arc<str>, [u64; 2]>>,
    skipped: [AtomicU64; 3],
}

impl CaptureCollector {
    /// The reasons a target captures for; none deletes its series. Counts of a reason that
    /// stays on are kept.
    pub(crate) fn set_reasons(&self, target: &Arc<str>, on: &[CaptureReason]) {
        let mut map = self.targets.lock();
        if on.is_empty() {
            map.remove(target);
            return;
        }
        let counts = map.entry(target.clone()).or_insert([OFF; 2]);
        for reason in CaptureReason::ALL {
            let slot = &mut counts[reason as usize];
            *slot = if !on.contains(&reason) {
                OFF
            } else if *slot == OFF {
                0
            } else {
                *slot
            };
        }
    }

    /// Counts a capture of `target`, when its series for `reason` exists.
    pub(crate) fn started(&self, target: &str, reason: CaptureReason) {
        if let Some(n) = self
            .targets
            .lock()
            .get_mut(target)
            .map(|c| &mut c[reason as usize])
            .filter(|n| **n != OFF)
        {
            *n = (*n + 1).min(OFF - 1);
        }
    }

    pub(crate) fn skipped(&self, skip: CaptureSkip) {
        self.skipped[skip as usize].fetch_add(1, Ordering::Relaxed);
    }
}

impl Collector for CaptureCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Encoded under the lock, not copied out (a copy of the map took a megabyte per scrape
        // at 10,000 targets): nothing on the probe path takes it, and an encoder never waits on
        // its scraper (the body leaves through an unbounded channel), so a reload or a capture
        // waits at most for this one family to be written.
        let rows = self.targets.lock();
        let mut m = encoder.encode_descriptor(
            "captures",
            "Path sessions the monitors started to capture the path to an address, by reason (capture: in the config).",
            None,
            MetricType::Counter,
        )?;
        for (target, counts) in rows.iter() {
            for reason in CaptureReason::ALL {
                let n = counts[reason as usize];
                if n != OFF {
                    let l = [("target", &**target), ("reason", reason.as_str())];
                    ConstCounter::new(n).encode(m.encode_family(&l)?)?;
                }
            }
        }
        let mut m = encoder.encode_descriptor(
            "captures_skipped",
            "Captures the config asked for but not started: the target's capture.every, sessions.max_captures_per_minute, or a session that failed to start.",
            None,
            MetricType::Counter,
        )?;
        for skip in CaptureSkip::ALL {
            let n = self.skipped[skip as usize].load(Ordering::Relaxed);
            ConstCounter::new(n).encode(m.encode_family(&[("reason", skip.as_str())])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: CaptureCollector) -> String {
        let mut r = prometheus_client::registry::Registry::with_prefix("pingscope");
        r.register_collector(Box::new(c));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[test]
    fn series_follow_the_reasons_and_counts_only_land_on_them() {
        let c = CaptureCollector::default();
        c.set_reasons(&"a".into(), &[CaptureReason::Outage, CaptureReason::Loss]);
        c.set_reasons(&"b".into(), &[CaptureReason::Outage]);
        c.started("a", CaptureReason::Loss);
        c.started("a", CaptureReason::Outage);
        c.started("a", CaptureReason::Outage);
        // Off for b, and c is not configured: neither gets a series.
        c.started("b", CaptureReason::Loss);
        c.started("c", CaptureReason::Outage);
        // A reload turns a's loss captures off and keeps its outage count; b goes away.
        c.set_reasons(&"a".into(), &[CaptureReason::Outage]);
        c.set_reasons(&"b".into(), &[]);
        c.skipped(CaptureSkip::GlobalCap);
        // Turned on again, a reason starts from zero.
        c.set_reasons(&"d".into(), &[CaptureReason::Loss]);
        c.started("d", CaptureReason::Loss);
        c.set_reasons(&"d".into(), &[CaptureReason::Outage]);
        c.set_reasons(&"d".into(), &[CaptureReason::Loss, CaptureReason::Outage]);
        let text = text(c);
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            series,
            [
                "pingscope_captures_total{target=\"a\",reason=\"outage\"} 2",
                "pingscope_captures_total{target=\"d\",reason=\"outage\"} 0",
                "pingscope_captures_total{target=\"d\",reason=\"loss\"} 0",
                "pingscope_captures_skipped_total{reason=\"rate_limit\"} 0",
                "pingscope_captures_skipped_total{reason=\"global_cap\"} 1",
                "pingscope_captures_skipped_total{reason=\"failed\"} 0",
            ],
            "{text}"
        );
    }
}
