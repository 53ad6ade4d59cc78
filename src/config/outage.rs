//! The `outage:`, `alert:` and `capture:` blocks of `defaults` and targets: when a monitored
//! address is in an outage, the thresholds the shipped alert rules compare each target with
//! (`pingscope_target_threshold{target,metric}`), and when a path session captures the path to
//! the address. Each key of a target's block overrides the same key of the defaults' block.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use serde::Deserialize;

use super::error::Issues;
use super::raw::S;
use super::rules::{self, key, line};

/// Most consecutive probes `outage.after` and `outage.until` may ask for: past it an outage
/// would open or close hours late at a common interval.
pub const MAX_OUTAGE_PROBES: i64 = 1000;
/// `outage.after` when not set: three lost probes in a row, so one lost probe is not a "down".
pub const DEFAULT_AFTER: u32 = 3;
/// `outage.until` when not set.
pub const DEFAULT_UNTIL: u32 = 3;
/// `alert.for` when an `alert:` block leaves it out.
pub const DEFAULT_ALERT_FOR: Duration = Duration::from_secs(120);

/// `capture.rounds` when not set: path rounds, one a second.
pub const DEFAULT_CAPTURE_ROUNDS: u32 = 10;
/// Most rounds a capture may ask for: a minute of rounds, so a capture ends before the shortest
/// `capture.every` allows the next one.
pub const MAX_CAPTURE_ROUNDS: i64 = 60;
/// `capture.every` when not set.
pub const DEFAULT_CAPTURE_EVERY: Duration = Duration::from_secs(600);
/// Shortest `capture.every`: no longer than the longest capture.
pub const MIN_CAPTURE_EVERY: Duration = Duration::from_secs(60);
/// Longest `capture.every`.
pub const MAX_CAPTURE_EVERY: Duration = Duration::from_secs(86_400);

/// `outage: {after, until}` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutage {
    pub after: Option<S<i64>>,
    pub until: Option<S<i64>>,
}

/// `alert: {loss, rtt, for}` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlert {
    pub loss: Option<S<f64>>,
    pub rtt: Option<S<String>>,
    #[serde(rename = "for")]
    pub for_: Option<S<String>>,
}

/// `capture: {on_outage, on_loss, rounds, every}` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCapture {
    pub on_outage: Option<S<bool>>,
    pub on_loss: Option<S<bool>>,
    pub rounds: Option<S<i64>>,
    pub every: Option<S<String>>,
}

/// When a path session to a monitored address captures the path: as an outage of the address
/// begins, and (`on_loss`) as its window loss goes above the target's `alert.loss`; at most one
/// capture of the target per `every` (and `sessions.max_captures_per_minute` over all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct CaptureRule {
    pub on_outage: bool,
    pub on_loss: bool,
    /// Path rounds of a capture, one a second.
    pub rounds: u32,
    /// Least time between two captures of the target.
    #[serde(with = "crate::duration::serde_duration")]
    pub every: Duration,
}

impl Default for CaptureRule {
    fn default() -> Self {
        Self {
            on_outage: true,
            on_loss: false,
            rounds: DEFAULT_CAPTURE_ROUNDS,
            every: DEFAULT_CAPTURE_EVERY,
        }
    }
}

/// When an address is in an outage: it starts at `after` consecutive lost probes and ends at
/// `until` consecutive replies (by sending order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct OutageRule {
    pub after: u32,
    pub until: u32,
}

impl Default for OutageRule {
    fn default() -> Self {
        Self {
            after: DEFAULT_AFTER,
            until: DEFAULT_UNTIL,
        }
    }
}

/// A target's own alert thresholds; `None` where neither the target nor the defaults set one
/// (then no `pingscope_target_threshold` series, and the threshold alerts leave it alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct AlertThresholds {
    /// Loss ratio (0..=1) over the rule's window above which the target alerts.
    pub loss: Option<f64>,
    /// p95 RTT above which the target alerts.
    #[serde(with = "crate::duration::serde_duration::option")]
    pub rtt: Option<Duration>,
    /// How long a threshold must be crossed before the alert fires.
    #[serde(rename = "for", with = "crate::duration::serde_duration::option")]
    pub for_: Option<Duration>,
}

impl AlertThresholds {
    /// True when the target has any threshold.
    pub fn any(&self) -> bool {
        self.loss.is_some() || self.rtt.is_some()
    }

    /// `for`, or its default when a threshold is set without it.
    pub fn for_or_default(&self) -> Duration {
        self.for_.unwrap_or(DEFAULT_ALERT_FOR)
    }
}

// The loss is a validated ratio in 0..=1 (never NaN), so comparing its bits is equality.
impl Eq for AlertThresholds {}

impl Hash for AlertThresholds {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.loss.map(f64::to_bits).hash(state);
        self.rtt.hash(state);
        self.for_.hash(state);
    }
}

fn probes(issues: &mut Issues, v: &S<i64>, prefix: &str, name: &str) -> Option<u32> {
    rules::int_range(issues, v, &key(prefix, name), 1, MAX_OUTAGE_PROBES)
        .and_then(|n| u32::try_from(n).ok())
}

/// Applies an `outage:` block over `base`; a refused value is an issue and `base`'s stays.
pub(crate) fn outage_block(
    issues: &mut Issues,
    block: &S<RawOutage>,
    prefix: &str,
    base: OutageRule,
) -> OutageRule {
    let p = key(prefix, "outage");
    let mut out = base;
    if let Some(v) = &block.value.after
        && let Some(n) = probes(issues, v, &p, "after")
    {
        out.after = n;
    }
    if let Some(v) = &block.value.until
        && let Some(n) = probes(issues, v, &p, "until")
    {
        out.until = n;
    }
    out
}

/// Applies an `alert:` block over `base`; a refused value is an issue and `base`'s stays.
pub(crate) fn alert_block(
    issues: &mut Issues,
    block: &S<RawAlert>,
    prefix: &str,
    base: AlertThresholds,
) -> AlertThresholds {
    let p = key(prefix, "alert");
    let b = &block.value;
    let mut out = base;
    if let Some(v) = &b.loss {
        if v.value.is_finite() && (0.0..=1.0).contains(&v.value) {
            out.loss = Some(v.value);
        } else {
            issues.push(
                line(v),
                key(&p, "loss"),
                format!("loss must be a ratio between 0 and 1, got {}", v.value),
            );
        }
    }
    if let Some(v) = &b.rtt
        && let Some(d) = rules::duration_positive(issues, v, &key(&p, "rtt"))
    {
        out.rtt = Some(d);
    }
    if let Some(v) = &b.for_
        && let Some(d) = rules::duration(issues, v, &key(&p, "for"))
    {
        out.for_ = Some(d);
    }
    out
}

/// Applies a `capture:` block over `base`; a refused value is an issue and `base`'s stays.
/// `loss` is the `alert.loss` in force at this level: `on_loss` has nothing to cross without it
/// (and a target cannot unset it, so a target that inherits `on_loss` has one).
pub(crate) fn capture_block(
    issues: &mut Issues,
    block: &S<RawCapture>,
    prefix: &str,
    base: CaptureRule,
    loss: Option<f64>,
) -> CaptureRule {
    let p = key(prefix, "capture");
    let b = &block.value;
    let mut out = base;
    if let Some(v) = &b.on_outage {
        out.on_outage = v.value;
    }
    if let Some(v) = &b.on_loss {
        if v.value && loss.is_none() {
            issues.push(
                line(v),
                key(&p, "on_loss"),
                "on_loss needs alert.loss, the loss threshold it captures at",
            );
        } else {
            out.on_loss = v.value;
        }
    }
    if let Some(v) = &b.rounds
        && let Some(n) = rules::int_range(issues, v, &key(&p, "rounds"), 1, MAX_CAPTURE_ROUNDS)
        && let Ok(n) = u32::try_from(n)
    {
        out.rounds = n;
    }
    if let Some(v) = &b.every
        && let Some(d) = rules::duration_between(
            issues,
            v,
            &key(&p, "every"),
            (MIN_CAPTURE_EVERY, MAX_CAPTURE_EVERY),
        )
    {
        out.every = d;
    }
    out
}
