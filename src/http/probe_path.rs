//! `/probe` with `kind=path` (or a module of kind `path`): `count` tracer rounds within the
//! scrape-timeout budget, answered blackbox-style with the per-hop families of path monitors as
//! gauges (`probe_path_*`). `probe_success` is 1 when the destination answered in some round.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::engine::Pinger;
use crate::probe::path::{PathOptions, PathStats, Round, Tracer};
use crate::probe::{ProbeRequest, Ticks};

type FloatGauge = Gauge<f64, AtomicU64>;
type Labelled = MetricFamily<Vec<(String, String)>, FloatGauge>;

/// What one `/probe` of a path found.
#[derive(Debug, Default)]
pub(super) struct PathFigures {
    rounds: u64,
    stats: PathStats,
    /// Per TTL: every RTT answered, in seconds.
    rtts: BTreeMap<u8, Vec<f64>>,
}

/// Runs the request's rounds to `ip` until its count or the deadline (a round that would not end
/// by then is cut, and not counted); logs each hop probe when `debug`.
pub(super) async fn run(
    pinger: &Arc<dyn Pinger>,
    req: &ProbeRequest,
    options: PathOptions,
    ip: IpAddr,
    deadline: Instant,
    log: &mut String,
    debug: bool,
) -> PathFigures {
    let mut tracer = Tracer::for_request(pinger.clone(), ip, req, options);
    let mut f = PathFigures::default();
    let mut ticks = Ticks::new(Instant::now(), req.interval);
    let rounds = req.count.unwrap_or(1);
    while f.rounds < rounds {
        let mut lines = Vec::new();
        let round = match tokio::time::timeout_at(
            deadline,
            tracer.round(|p| {
                if debug {
                    lines.push(format!(
                        "round {} ttl {} flow {}/{}: {} from {} in {:?}",
                        p.round,
                        p.ttl,
                        p.flow,
                        p.identity,
                        p.result.as_str(),
                        p.responder.map_or("-".to_owned(), |r| r.to_string()),
                        p.rtt
                    ));
                }
            }),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                let _ = writeln!(log, "round {} cut by the scrape timeout", f.rounds + 1);
                break;
            }
        };
        for l in lines {
            let _ = writeln!(log, "{l}");
        }
        add(&mut f, &round);
        if f.rounds >= rounds {
            break;
        }
        ticks.advance(Instant::now());
        if ticks.due() >= deadline {
            let _ = writeln!(log, "no time left for round {}", f.rounds + 1);
            break;
        }
        tokio::time::sleep_until(ticks.due()).await;
    }
    f
}

fn add(f: &mut PathFigures, round: &Round) {
    f.rounds += 1;
    f.stats.add_round(round);
    for p in &round.probes {
        if let (Some(_), Some(rtt)) = (p.responder, p.rtt) {
            f.rtts.entry(p.ttl).or_default().push(rtt.as_secs_f64());
        }
    }
}

fn gauge(v: f64) -> FloatGauge {
    let g = FloatGauge::default();
    g.set(v);
    g
}

fn labels(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// The body: blackbox's common gauges, then the `probe_path_*` families.
pub(super) fn render(
    f: &PathFigures,
    duration: Duration,
    dns: f64,
    ip: Option<IpAddr>,
) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    let reached = f.stats.length().is_some();
    reg.register(
        "probe_success",
        "1 when the destination answered in some round",
        gauge(f64::from(u8::from(reached))),
    );
    reg.register(
        "probe_duration_seconds",
        "How long the probe took, DNS included",
        gauge(duration.as_secs_f64()),
    );
    reg.register(
        "probe_dns_lookup_time_seconds",
        "How long the DNS lookup took",
        gauge(dns),
    );
    let proto = ip.map_or(0.0, |ip| if ip.is_ipv4() { 4.0 } else { 6.0 });
    reg.register(
        "probe_ip_protocol",
        "IP version of the probed address (4 or 6; 0 when unresolved)",
        gauge(proto),
    );
    reg.register(
        "probe_path_rounds",
        "Rounds that ended within the budget",
        gauge(f.rounds as f64),
    );
    if let Some(len) = f.stats.length() {
        reg.register(
            "probe_path_length",
            "TTL at which the destination answered last",
            gauge(f64::from(len)),
        );
    }
    let (sent, lost, rtt, info, persists, path) = (
        Labelled::default(),
        Labelled::default(),
        Labelled::default(),
        Labelled::default(),
        Labelled::default(),
        Labelled::default(),
    );
    for h in f.stats.summaries() {
        let ttl = h.ttl.to_string();
        let l = labels(&[("ttl", ttl.clone())]);
        sent.get_or_create(&l).inc_by(h.sent as f64);
        lost.get_or_create(&l).inc_by(h.lost as f64);
        if h.lost > 0 {
            persists
                .get_or_create(&l)
                .set(f64::from(u8::from(h.loss_persists)));
        }
        if let Some(r) = h.responder {
            info.get_or_create(&labels(&[("ttl", ttl), ("hop_ip", r.to_string())]))
                .set(1.0);
        }
    }
    for (ttl, v) in &f.rtts {
        if v.is_empty() || f.stats.length().is_some_and(|l| *ttl > l) {
            continue;
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        for (stat, x) in [
            ("min", min),
            ("mean", mean),
            ("max", max),
            ("stddev", var.sqrt()),
        ] {
            rtt.get_or_create(&labels(&[
                ("ttl", ttl.to_string()),
                ("stat", stat.to_owned()),
            ]))
            .set(x);
        }
    }
    if let Some(id) = f.stats.path_id() {
        path.get_or_create(&labels(&[("path_id", id.to_owned())]))
            .set(1.0);
    }
    reg.register("probe_path_hop_sent", "Hop probes sent, per TTL", sent);
    reg.register(
        "probe_path_hop_lost",
        "Hop probes without an answer, per TTL",
        lost,
    );
    reg.register(
        "probe_path_hop_rtt_seconds",
        "RTT statistics of the answers, per TTL",
        rtt,
    );
    reg.register(
        "probe_path_hop_info",
        "1 for each responder seen at a TTL",
        info,
    );
    reg.register(
        "probe_path_hop_loss_persists",
        "Per TTL with loss: 1 when it reaches the destination, 0 when later hops do not share it (rate limiting)",
        persists,
    );
    reg.register(
        "probe_path_info",
        "1 for the path found (path_id: a hash of the responders per TTL)",
        path,
    );
    let mut out = String::new();
    encode(&mut out, &reg)?;
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        out.truncate(stripped.len());
    }
    Ok(out)
}
