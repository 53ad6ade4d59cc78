//! `GET /probe?target=HOST`: blackbox_exporter's multi-target pattern, with several packets per
//! probe and the loss, RTT and jitter figures blackbox does not give for ICMP.
//!
//! Every request builds a fresh registry, so `/probe` never leaks series between targets.
//! `probe_success` is 1 when at least one echo reply came back within the timeout. A request of
//! kind `path` runs tracer rounds instead and answers with the `probe_path_*` families
//! ([`super::probe_path`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ProbeLimitsConfig, ProbeProfile};
use crate::http::error::ApiError;
use crate::probe::path::{PathOptions, RawPath, validate_path};
use crate::probe::{self, Defaults, Limits, ProbeKind, ProbeRequest, RawRequest};
use crate::sample::SampleType;
use crate::state::App;

/// Scrape timeout assumed when Prometheus does not send its header.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Kept free before the scrape timeout, so the answer reaches Prometheus in time.
pub const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A `/probe` request after the module and the query are merged and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeParams {
    /// What to probe, in the request type every front shares.
    pub request: ProbeRequest,
    /// Return the probe's log as text.
    pub debug: bool,
    /// The path options (`first_ttl`, `max_ttl`, `flows`, `protocol`, `pace`), for `kind=path`.
    pub path: PathOptions,
}

/// Merges the module (profile) with the query and checks the result with the rules every front
/// shares. The operator's profile is trusted; what the caller asks is held to
/// `sessions.min_interval` and to `probe_limits` (`max_interval`, `max_count`).
pub fn params(
    q: &HashMap<String, String>,
    profiles: &std::collections::BTreeMap<String, ProbeProfile>,
    min_interval: Duration,
    caps: &ProbeLimitsConfig,
) -> Result<ProbeParams, ApiError> {
    let module = q.get("module").map_or("default", String::as_str);
    let Some(profile) = profiles.get(module) else {
        let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
        return Err(ApiError::bad_request(format!(
            "unknown module \"{module}\" (configured: {})",
            known.join(", ")
        )));
    };
    let raw = RawRequest {
        target: q.get("target").cloned(),
        kind: q.get("kind").cloned(),
        count: q.get("count").cloned(),
        interval: q.get("interval").cloned(),
        timeout: q.get("timeout").cloned(),
        size: q.get("size").cloned(),
        family: q.get("family").cloned(),
        ttl: q.get("ttl").cloned(),
        tos: q.get("tos").cloned(),
        port: q.get("port").cloned(),
        udp_mode: q.get("udp_mode").cloned(),
        ..RawRequest::default()
    };
    let defaults = Defaults {
        kind: profile.kind,
        count: Some(u64::from(profile.count)),
        interval: profile.interval,
        timeout: profile.timeout,
        size: profile.size,
        family: profile.family,
        port: profile.port,
    };
    let limits = Limits {
        min_interval,
        max_interval: Some(caps.max_interval),
        max_count: Some(caps.max_count),
        max_run: None,
        one_address: true,
    };
    let request = probe::validate(&raw, &defaults, &limits)?;
    let path = validate_path(&RawPath {
        first_ttl: q.get("first_ttl").cloned(),
        max_ttl: q.get("max_ttl").cloned(),
        flows: q.get("flows").cloned(),
        protocol: q.get("protocol").cloned(),
        pace: q.get("pace").cloned(),
    })?;
    let debug = match q.get("debug").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "debug {other:?} is not a boolean (use true or false)"
            )));
        }
    };
    Ok(ProbeParams {
        request,
        debug,
        path,
    })
}

/// The query as pairs, each name at most once: a repeated parameter is refused rather than one
/// of its values silently taken.
pub fn single_valued(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if out.contains_key(&name) {
            return Err(ApiError::bad_request(format!(
                "query parameter {name:?} is given more than once; give it once"
            )));
        }
        out.insert(name, value);
    }
    Ok(out)
}

/// How long a probe may run: the scrape timeout header minus the offset, never more than
/// `cap` (`probe_limits.max_duration`), whatever the header says.
pub fn capped_budget(headers: &HeaderMap, cap: Duration) -> Duration {
    budget(headers).min(cap)
}

/// The deadline Prometheus gives us: its scrape timeout header minus the offset.
pub fn budget(headers: &HeaderMap) -> Duration {
    let scrape = headers
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(DEFAULT_SCRAPE_TIMEOUT);
    if scrape > SCRAPE_TIMEOUT_OFFSET * 2 {
        scrape - SCRAPE_TIMEOUT_OFFSET
    } else {
        scrape / 2
    }
}

#[derive(Default)]
struct Figures {
    success: bool,
    duration: f64,
    dns: f64,
    ip_protocol: u8,
    hop_limit: Option<u8>,
    sent: u64,
    received: u64,
    loss_ratio: f64,
    rtt: Option<crate::stats::RttStats>,
    jitter: Option<f64>,
}

fn render(f: &Figures) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    let gauge = |v: f64| {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(v);
        g
    };
    reg.register(
        "probe_success",
        "1 when at least one echo reply came back in time",
        gauge(f64::from(u8::from(f.success))),
    );
    reg.register(
        "probe_duration_seconds",
        "How long the probe took, DNS included",
        gauge(f.duration),
    );
    reg.register(
        "probe_dns_lookup_time_seconds",
        "How long the DNS lookup took",
        gauge(f.dns),
    );
    reg.register(
        "probe_ip_protocol",
        "IP version of the probed address (4 or 6; 0 when unresolved)",
        gauge(f64::from(f.ip_protocol)),
    );
    if let Some(h) = f.hop_limit {
        reg.register(
            "probe_icmp_reply_hop_limit",
            "TTL / hop limit of the last reply",
            gauge(f64::from(h)),
        );
    }
    reg.register(
        "probe_packets_sent",
        "Echo requests sent",
        gauge(f.sent as f64),
    );
    reg.register(
        "probe_packets_received",
        "Echo replies received within the timeout",
        gauge(f.received as f64),
    );
    reg.register(
        "probe_loss_ratio",
        "Lost packets over sent-and-settled packets",
        gauge(f.loss_ratio),
    );
    if let Some(r) = f.rtt {
        let fam: MetricFamily<Vec<(String, String)>, Gauge<f64, AtomicU64>> =
            MetricFamily::default();
        for (stat, v) in [
            ("min", r.min),
            ("mean", r.mean),
            ("max", r.max),
            ("stddev", r.stddev),
        ] {
            fam.get_or_create(&vec![("stat".to_owned(), stat.to_owned())])
                .set(v);
        }
        reg.register("probe_rtt_seconds", "RTT statistics of the replies", fam);
    }
    if let Some(j) = f.jitter {
        reg.register(
            "probe_jitter_seconds",
            "Mean |RTTi - RTTi-1| of consecutive replies (IPDV)",
            gauge(j),
        );
    }
    let mut out = String::new();
    encode(&mut out, &reg)?;
    // Prometheus 2.x text format: drop the OpenMetrics terminator.
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        out.truncate(stripped.len());
    }
    Ok(out)
}

/// `GET /probe`.
pub async fn probe(
    State(app): State<App>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let q = single_valued(pairs)?;
    let config = app.config();
    let caps = &config.probe_limits;
    let p = params(
        &q,
        &config.probe_profiles,
        config.sessions.min_interval,
        caps,
    )?;
    let Some(_permit) = app.try_probe_slot() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_probes",
            "too many probes in flight; retry later",
        ));
    };
    let started = Instant::now();
    let deadline = started + capped_budget(&headers, caps.max_duration);
    let req = &p.request;
    let mut log = String::new();
    let mut fig = Figures::default();
    let lookup = probe::resolve_one(&app.resolver(), req, deadline).await;
    fig.dns = started.elapsed().as_secs_f64();
    let ip = match lookup {
        Ok(ip) => Some(ip),
        Err(e) => {
            let _ = writeln!(log, "resolve {}: {e}", req.target);
            None
        }
    };
    if let Some(ip) = ip {
        let _ = writeln!(log, "resolved {} to {ip} in {:.3}s", req.target, fig.dns);
        if let Err(denied) = config.access.check(ip) {
            return Err(ApiError::denied(&req.target, ip, &denied));
        }
        fig.ip_protocol = if ip.is_ipv4() { 4 } else { 6 };
    }
    if req.kind == ProbeKind::Path {
        let figures = match ip {
            Some(ip) => {
                super::probe_path::run(
                    app.pinger(),
                    req,
                    p.path.clone(),
                    ip,
                    deadline,
                    &mut log,
                    p.debug,
                )
                .await
            }
            None => Default::default(),
        };
        let body = super::probe_path::render(&figures, started.elapsed(), fig.dns, ip);
        return respond(&headers, body, log, p.debug);
    }
    if let Some(ip) = ip {
        let mut hop_limit = None;
        let acc = probe::run(
            app.pinger(),
            req,
            ip,
            Some(deadline),
            &CancellationToken::new(),
            |s| {
                if s.kind == SampleType::Reply {
                    hop_limit = s.ttl.or(hop_limit);
                }
                if p.debug {
                    let _ = writeln!(log, "{}", serde_json::to_string(&s).unwrap_or_default());
                }
            },
        )
        .await;
        let t = acc.tally();
        fig.sent = t.sent;
        fig.received = t.received;
        fig.loss_ratio = t.loss_ratio();
        fig.success = t.received > 0;
        fig.rtt = acc.rtt();
        fig.jitter = acc.jitter().0;
        fig.hop_limit = hop_limit;
        let count = req.count.unwrap_or(0);
        if t.sent < count {
            let _ = writeln!(
                log,
                "sent {} of {count} packets: the rest would not settle before the scrape timeout",
                t.sent
            );
        }
    }
    fig.duration = started.elapsed().as_secs_f64();
    respond(&headers, render(&fig), log, p.debug)
}

/// The exposition, or with `debug` the log and the exposition as text.
fn respond(
    headers: &HeaderMap,
    body: Result<String, std::fmt::Error>,
    mut log: String,
    debug: bool,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding failed: {e}"),
        )
    })?;
    if debug {
        let _ = writeln!(log, "\nMetrics that would have been returned:\n{body}");
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], log).into_response());
    }
    Ok(super::compress::negotiated(
        headers,
        CONTENT_TYPE,
        body.into_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Family;
    use std::collections::BTreeMap;

    fn profiles() -> BTreeMap<String, ProbeProfile> {
        let p = ProbeProfile {
            kind: crate::probe::ProbeKind::Icmp,
            count: 5,
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
            size: 56,
            family: Family::Auto,
            port: Default::default(),
        };
        BTreeMap::from([("default".to_owned(), p)])
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    // The rejections and their messages: `tests/api_inprocess.rs`, through the HTTP front.

    #[test]
    fn a_profile_below_min_interval_is_the_operators_choice() {
        let mut p = profiles();
        if let Some(d) = p.get_mut("default") {
            d.interval = Duration::from_millis(20);
        }
        let caps = ProbeLimitsConfig::default();
        let got = params(
            &q(&[("target", "h")]),
            &p,
            Duration::from_millis(100),
            &caps,
        );
        assert_eq!(
            got.map(|p| p.request.interval).ok(),
            Some(Duration::from_millis(20))
        );
        let asked = params(
            &q(&[("target", "h"), ("interval", "20ms")]),
            &p,
            Duration::from_millis(100),
            &caps,
        );
        assert!(asked.is_err(), "a caller may not ask below the minimum");
    }

    #[test]
    fn module_defaults_and_query_overrides() {
        let p = params(
            &q(&[("target", "h"), ("count", "10"), ("interval", "20ms")]),
            &profiles(),
            Duration::from_millis(10),
            &ProbeLimitsConfig::default(),
        );
        let Ok(p) = p else { panic!("{p:?}") };
        assert_eq!(
            (
                p.request.count,
                p.request.interval,
                p.request.timeout,
                p.request.size
            ),
            (
                Some(10),
                Duration::from_millis(20),
                Duration::from_secs(1),
                56
            )
        );
    }

    #[test]
    fn budget_follows_the_scrape_timeout_header() {
        let mut h = HeaderMap::new();
        assert_eq!(budget(&h), Duration::from_millis(9_500));
        h.insert(
            "X-Prometheus-Scrape-Timeout-Seconds",
            "3".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(budget(&h), Duration::from_millis(2_500));
        h.insert(
            "X-Prometheus-Scrape-Timeout-Seconds",
            "0.6".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(budget(&h), Duration::from_millis(300));
        h.insert(
            "X-Prometheus-Scrape-Timeout-Seconds",
            "nan".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(budget(&h), Duration::from_millis(9_500));
    }

    #[test]
    fn render_uses_blackbox_names() {
        let f = Figures {
            success: true,
            ip_protocol: 4,
            hop_limit: Some(61),
            sent: 10,
            received: 8,
            loss_ratio: 0.2,
            rtt: crate::stats::summarize(&[0.01, 0.02]),
            jitter: Some(0.01),
            ..Figures::default()
        };
        let text = render(&f).unwrap_or_default();
        let value = |series: &str| -> Option<f64> {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(series)
                        .and_then(|rest| rest.strip_prefix(' '))
                })
                .and_then(|v| v.parse().ok())
        };
        let want = [
            ("probe_success", 1.0),
            ("probe_ip_protocol", 4.0),
            ("probe_icmp_reply_hop_limit", 61.0),
            ("probe_packets_sent", 10.0),
            ("probe_packets_received", 8.0),
            ("probe_loss_ratio", 0.2),
            ("probe_rtt_seconds{stat=\"max\"}", 0.02),
            ("probe_jitter_seconds", 0.01),
        ];
        for (series, v) in want {
            assert_eq!(value(series), Some(v), "{series} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }
}
