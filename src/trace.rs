//! `pingscope trace`: trace the path to hosts, mtr-style, and stream one line per hop probe,
//! then one `hop_summary` per (TTL, responder) and a `path` line per address.
//!
//! The flags become one [`ProbeRequest`] per host (count = rounds, interval = between rounds),
//! checked by [`crate::probe::validate`] like every front's, and one [`PathOptions`] checked by
//! [`validate_path`]; each host's first address in its family is traced by a [`Tracer`] on the
//! shared engine. `text` draws the mtr table: redrawn in place after every round on a terminal,
//! printed once at the end when piped.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::Pinger;
use crate::exit;
use crate::ping::{
    Format, Output, PingOptions, eprintln_safe, spawn_signal_watch, with_engine, write_line,
};
use crate::probe::path::validate_path;
use crate::probe::path::{HopProbe, HopSummary, PathOptions, PathStats, RawPath, Tracer};
use crate::probe::{self, Defaults, Limits, ProbeRequest, RawRequest, RequestError, Ticks};
use crate::resolve::Resolver;

/// What the command line asks for, before any check.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Hosts, DNS server, format, and the request as `ping` takes them (its count is rounds,
    /// its interval the time between rounds).
    pub common: PingOptions,
    /// TTLs, flows, protocol.
    pub path: RawPath,
}

/// One run of `trace`, checked.
#[derive(Clone, Debug)]
pub struct TracePlan {
    /// One request per host, in the order typed.
    pub requests: Vec<ProbeRequest>,
    /// The path options, for every host.
    pub path: PathOptions,
    /// Output format.
    pub format: Format,
    /// Redraw the text table after every round (stdout is a terminal).
    pub redraw: bool,
}

impl TracePlan {
    /// Checks every host's request and the path options with the rules every front shares.
    pub fn new(options: &TraceOptions, format: Format) -> Result<Self, RequestError> {
        let requests = options
            .common
            .hosts
            .iter()
            .map(|host| {
                let raw = RawRequest {
                    target: Some(host.clone()),
                    ..options.common.request.clone()
                };
                probe::validate(&raw, &Defaults::default(), &Limits::default())
            })
            .collect::<Result<_, _>>()?;
        let path = validate_path(&options.path)?;
        Ok(Self {
            requests,
            path,
            format,
            redraw: false,
        })
    }
}

/// One hop probe as a JSON line.
#[derive(Serialize)]
struct HopLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    target: &'a str,
    ip: IpAddr,
    round: u64,
    ttl: u8,
    flow: u16,
    identity: u8,
    ts: String,
    result: &'static str,
    responder: Option<IpAddr>,
    rtt_ms: Option<f64>,
    icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// One row of the table as a JSON line.
#[derive(Serialize)]
struct SummaryLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    target: &'a str,
    ip: IpAddr,
    #[serde(flatten)]
    hop: &'a HopSummary,
}

/// The path as a JSON line.
#[derive(Serialize)]
struct PathLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    target: &'a str,
    ip: IpAddr,
    rounds: u64,
    reached: bool,
    length: Option<u8>,
    path_id: Option<&'a str>,
    changes: u64,
    /// Per TTL, the responders last seen there.
    hops: Vec<Vec<IpAddr>>,
}

/// Entry point of the subcommand: check, build the runtime, engine and resolver, run, map to an
/// exit code (as `ping`'s: 0 every destination answered, 1 some never did, 2 unresolved, 64
/// bad arguments, 77 no permission).
pub fn main(options: TraceOptions) -> u8 {
    let terminal = std::io::stdout().is_terminal();
    let format =
        options
            .common
            .format
            .unwrap_or(if terminal { Format::Text } else { Format::Json });
    let mut plan = match TracePlan::new(&options, format) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln_safe(&format!("pingscope: {e}"));
            return exit::EXIT_USAGE;
        }
    };
    plan.redraw = terminal && format == Format::Text;
    // UDP paths need no ICMP socket: a user without ping permission can trace with them.
    let icmp = plan.path.protocol == crate::probe::path::PathProtocol::Icmp;
    with_engine(
        options.common.dns_server,
        icmp,
        |engine, resolver| async move {
            let cancel = CancellationToken::new();
            spawn_signal_watch(cancel.clone());
            let out: Output = Arc::new(Mutex::new(std::io::stdout()));
            run(&plan, engine, &resolver, out, cancel).await
        },
    )
}

/// The tables of every address, redrawn together on a terminal.
#[derive(Default)]
struct Screen {
    tables: BTreeMap<usize, String>,
    drawn_lines: usize,
}

/// Runs the plan: resolve every host, trace each first address, print; returns the exit status.
pub async fn run(
    plan: &TracePlan,
    pinger: Arc<dyn Pinger>,
    resolver: &Resolver,
    out: Output,
    cancel: CancellationToken,
) -> u8 {
    let screen = Arc::new(Mutex::new(Screen::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, request) in plan.requests.iter().enumerate() {
        let request = request.clone();
        let resolver = resolver.clone();
        let (pinger, out, cancel, screen) =
            (pinger.clone(), out.clone(), cancel.clone(), screen.clone());
        let (path, format, redraw) = (plan.path.clone(), plan.format, plan.redraw);
        tasks.spawn(async move {
            let ip = match resolver.lookup(&request.target, request.family).await {
                Ok(r) => r.addrs.first().copied(),
                Err(e) => {
                    eprintln_safe(&format!("pingscope: {}: {e}", request.target));
                    return Err(());
                }
            };
            let Some(ip) = ip else {
                eprintln_safe(&format!("pingscope: {}: no address", request.target));
                return Err(());
            };
            let traced = trace_address(&request, ip, path, pinger, &out, format, &cancel, |t| {
                if redraw {
                    let mut s = screen.lock();
                    s.tables.insert(i, t);
                    draw(&out, &mut s);
                }
            })
            .await;
            if format == Format::Text && !redraw {
                write_line(&out, &table(&request.target, ip, &traced));
            }
            Ok(traced.length().is_some() || traced.rounds() == 0)
        });
    }
    let (mut unresolved, mut unreached) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => unreached += 1,
            Ok(Err(())) => unresolved += 1,
            Err(_) => unreached += 1,
        }
    }
    if unresolved > 0 {
        exit::EXIT_UNRESOLVED
    } else if unreached > 0 {
        exit::EXIT_NO_REPLY
    } else {
        exit::EXIT_OK
    }
}

fn draw(out: &Output, s: &mut Screen) {
    let text: String = s.tables.values().cloned().collect::<Vec<_>>().join("\n");
    let mut w = out.lock();
    if s.drawn_lines > 0 {
        // Up to the first line drawn, and clear to the end of the screen.
        let _ = write!(w, "\x1b[{}A\r\x1b[J", s.drawn_lines);
    }
    let _ = writeln!(w, "{text}");
    let _ = w.flush();
    s.drawn_lines = text.lines().count();
}

/// Traces one address for the request's rounds (or until cancelled); prints each probe as JSON
/// lines, then the summaries and the path. `on_round` gets the text table after each round.
#[allow(clippy::too_many_arguments)]
async fn trace_address(
    request: &ProbeRequest,
    ip: IpAddr,
    path: PathOptions,
    pinger: Arc<dyn Pinger>,
    out: &Output,
    format: Format,
    cancel: &CancellationToken,
    mut on_round: impl FnMut(String),
) -> PathStats {
    let mut tracer = Tracer::for_request(pinger, ip, request, path);
    let mut stats = PathStats::new();
    let mut ticks = Ticks::new(tokio::time::Instant::now(), request.interval);
    let end = request.duration.map(|d| tokio::time::Instant::now() + d);
    let target = request.target.as_str();
    let mut rounds = 0u64;
    while request.count.is_none_or(|c| rounds < c) && !cancel.is_cancelled() {
        if end.is_some_and(|e| tokio::time::Instant::now() >= e) {
            break;
        }
        let round = tokio::select! {
            r = tracer.round(|p| {
                if format == Format::Json {
                    write_line(out, &hop_line(target, ip, p));
                }
            }) => r,
            () = cancel.cancelled() => break,
        };
        stats.add_round(&round);
        rounds += 1;
        on_round(table(target, ip, &stats));
        if request.count.is_some_and(|c| rounds >= c) {
            break;
        }
        ticks.advance(tokio::time::Instant::now());
        tokio::select! {
            () = tokio::time::sleep_until(ticks.due()) => {}
            () = cancel.cancelled() => break,
        }
    }
    if format == Format::Json {
        for hop in stats.summaries() {
            let line = SummaryLine {
                kind: "hop_summary",
                target,
                ip,
                hop: &hop,
            };
            write_line(out, &serde_json::to_string(&line).unwrap_or_default());
        }
        let line = PathLine {
            kind: "path",
            target,
            ip,
            rounds: stats.rounds(),
            reached: stats.length().is_some(),
            length: stats.length(),
            path_id: stats.path_id(),
            changes: stats.changes(),
            hops: stats
                .responders()
                .into_values()
                .map(|s| s.into_iter().collect())
                .collect(),
        };
        write_line(out, &serde_json::to_string(&line).unwrap_or_default());
    }
    stats
}

fn hop_line(target: &str, ip: IpAddr, p: &HopProbe) -> String {
    let ts = humantime::format_rfc3339_micros(p.at).to_string();
    let line = HopLine {
        kind: "hop",
        target,
        ip,
        round: p.round,
        ttl: p.ttl,
        flow: p.flow,
        identity: p.identity,
        ts,
        result: p.result.as_str(),
        responder: p.responder,
        rtt_ms: p.rtt.map(|r| r.as_secs_f64() * 1e3),
        icmp_type: p.icmp_type,
        error: p.error.as_deref(),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// The mtr table of one address. A hop whose loss does not reach the destination (a router
/// that rate-limits or does not answer) is marked `(rate limited?)`.
pub fn table(target: &str, ip: IpAddr, stats: &PathStats) -> String {
    let mut t = format!(
        "pingscope trace {target} ({ip}), {} rounds, path {}\n{:>3}  {:<40} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        stats.rounds(),
        stats.path_id().unwrap_or("-"),
        "hop",
        "host",
        "loss%",
        "sent",
        "last",
        "avg",
        "best",
        "worst",
        "stdev"
    );
    let mut last_ttl = 0;
    for h in stats.summaries() {
        let hop = if h.ttl == last_ttl {
            String::new()
        } else {
            h.ttl.to_string()
        };
        last_ttl = h.ttl;
        let host = h.responder.map_or("???".to_owned(), |r| r.to_string());
        let mark = if h.lost > 0 && !h.loss_persists {
            " (rate limited?)"
        } else {
            ""
        };
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let r = h.rtt_ms.as_ref();
        t.push_str(&format!(
            "\n{hop:>3}. {:<40} {:>6.1} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
            format!("{host}{mark}"),
            h.loss_ratio * 100.0,
            h.sent,
            f(r.map(|r| r.last)),
            f(r.map(|r| r.avg)),
            f(r.map(|r| r.best)),
            f(r.map(|r| r.worst)),
            f(r.map(|r| r.stdev)),
        ));
    }
    t
}
