//! The one sample shape shared by CLI JSON lines, WebSocket messages and stored samples.
//!
//! Readers ignore fields they do not know, so fields may be added; none may change meaning.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::engine::{EventKind, ProbeEvent};

/// What a sample reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SampleType {
    /// An echo reply within the timeout.
    Reply,
    /// No reply within the timeout.
    Timeout,
    /// A reply after the timeout (its probe was already reported as `timeout`).
    Late,
    /// A further reply to an answered probe.
    Duplicate,
    /// An ICMP error for the probe, or a failure to send or resolve.
    Error,
    /// One hop probe of a `path` run: `ttl` (sent), `round`, `flow`, `result`, the responder in
    /// `from`, `rtt_ms` and `icmp_type` when answered.
    Hop,
}

/// One probe outcome, as written to JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sample {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: SampleType,
    /// The target's name (the `target` label).
    pub target: String,
    /// The host as configured or typed.
    pub host: String,
    /// The address probed; absent when the host could not be resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub ip: Option<IpAddr>,
    /// The probe's sequence number for this target (counts from 1; not the wire sequence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// RFC 3339 time of the event.
    pub ts: String,
    /// Round-trip time in milliseconds (reply, late, duplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// TTL / hop limit of the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    /// Bytes of the ICMP reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// Error text (type `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// ICMP type of an ICMP error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP code of an ICMP error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Address that sent the ICMP error (for a `hop`: the responder at its TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub from: Option<IpAddr>,
    /// A `hop` sample's round (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
    /// A `hop` sample's Paris flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<u16>,
    /// A `hop` sample's outcome: `reply`, `time_exceeded`, `unreachable`, `error`, `timeout`
    /// or `send_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// Formats a wall-clock time as RFC 3339 with microseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Seconds as milliseconds, rounded to the microsecond (how the API and CLI print RTTs).
pub fn secs_to_ms(s: f64) -> f64 {
    (s * 1e6).round() / 1e3
}

/// Milliseconds as a float, rounded to the microsecond.
pub fn millis(d: Duration) -> f64 {
    (d.as_nanos() as f64 / 1_000.0).round() / 1_000.0
}

impl Sample {
    /// A sample of `kind` at `at` with only its identity set; every other field is absent.
    pub fn new(
        kind: SampleType,
        target: &str,
        host: &str,
        ip: Option<IpAddr>,
        seq: Option<u64>,
        at: SystemTime,
    ) -> Self {
        Self {
            kind,
            target: target.to_owned(),
            host: host.to_owned(),
            ip,
            seq,
            ts: rfc3339(at),
            rtt_ms: None,
            ttl: None,
            size: None,
            error: None,
            icmp_type: None,
            icmp_code: None,
            from: None,
            round: None,
            flow: None,
            result: None,
        }
    }

    /// The sample for an engine event of `target`/`host`, with the caller's sequence number.
    pub fn from_event(target: &str, host: &str, ev: &ProbeEvent) -> Self {
        let mut s = Self::new(
            SampleType::Timeout,
            target,
            host,
            Some(ev.ip),
            Some(ev.tag),
            ev.at,
        );
        match &ev.kind {
            EventKind::Reply(r) | EventKind::Late(r) | EventKind::Duplicate(r) => {
                s.kind = match ev.kind {
                    EventKind::Reply(_) => SampleType::Reply,
                    EventKind::Late(_) => SampleType::Late,
                    _ => SampleType::Duplicate,
                };
                s.rtt_ms = Some(millis(r.rtt));
                s.ttl = r.ttl;
                s.size = Some(r.size);
            }
            EventKind::Timeout => {}
            EventKind::IcmpError(e) => {
                s.kind = SampleType::Error;
                s.error = Some(e.kind.as_str().to_owned());
                s.icmp_type = Some(e.icmp_type);
                s.icmp_code = Some(e.icmp_code);
                s.from = Some(e.from);
            }
        }
        s
    }

    /// An `error` sample that is not an ICMP error (resolution or send failure).
    pub fn local_error(
        target: &str,
        host: &str,
        ip: Option<IpAddr>,
        seq: Option<u64>,
        error: String,
    ) -> Self {
        Self {
            error: Some(error),
            ..Self::new(SampleType::Error, target, host, ip, seq, SystemTime::now())
        }
    }
}

/// RTT statistics of a summary, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RttSummaryMs {
    /// Smallest RTT.
    pub min: f64,
    /// Mean RTT.
    pub avg: f64,
    /// Largest RTT.
    pub max: f64,
    /// Population standard deviation.
    pub stddev: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The closing summary of a host or a session (`"type":"summary"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    /// Always `"summary"`.
    #[serde(rename = "type")]
    pub kind: SummaryTag,
    /// The target's name.
    pub target: String,
    /// The host as configured or typed.
    pub host: String,
    /// The address probed, when resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub ip: Option<IpAddr>,
    /// Echo requests sent.
    pub sent: u64,
    /// Replies received within the timeout (duplicates not counted).
    pub received: u64,
    /// Probes with no reply within the timeout, or answered by an ICMP error.
    pub lost: u64,
    /// `lost / (lost + received)`; 0 when nothing was settled.
    pub loss_ratio: f64,
    /// Replies after the timeout.
    pub late: u64,
    /// Duplicate replies.
    pub duplicates: u64,
    /// ICMP errors received.
    pub errors: u64,
    /// RTT statistics of the replies; `null` when there were none.
    pub rtt_ms: Option<RttSummaryMs>,
    /// Mean |RTTᵢ − RTTᵢ₋₁| of consecutive replies (IPDV); `null` with fewer than two replies.
    pub jitter_ms: Option<f64>,
    /// RFC 3550 smoothed jitter; `null` with fewer than two replies.
    pub jitter_rfc3550_ms: Option<f64>,
    /// A `path` run's rows per (TTL, responder); its probe counts above are rounds, answered
    /// when the destination answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hops: Option<Vec<HopSummary>>,
}

/// The constant tag of a summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SummaryTag {
    /// `"summary"`.
    #[default]
    Summary,
}

/// RTT figures of one hop, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HopRtt {
    /// Last answer.
    pub last: f64,
    /// Mean.
    pub avg: f64,
    /// Lowest.
    pub best: f64,
    /// Highest.
    pub worst: f64,
    /// Population standard deviation (never negative).
    pub stdev: f64,
}

/// One row of the mtr table: a TTL and one responder seen there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HopSummary {
    /// The TTL.
    pub ttl: u8,
    /// Who answered there; `None` when nobody did.
    #[schema(value_type = Option<String>)]
    pub responder: Option<IpAddr>,
    /// Probes charged to this row.
    pub sent: u64,
    /// Of them, not answered.
    pub lost: u64,
    /// `lost / sent` (0 to 1, as every pingscope ratio).
    pub loss_ratio: f64,
    /// The loss of this TTL that every later TTL up to the destination shares (0 to 1).
    pub persistent_loss_ratio: f64,
    /// True when the loss here reaches the destination: at least half of it is shared by
    /// every later TTL. False for a router that rate-limits or does not answer.
    pub loss_persists: bool,
    /// RTT figures of the answers; `None` without any.
    pub rtt_ms: Option<HopRtt>,
}
