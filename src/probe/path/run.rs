//! Rounds of a bounded path request (sessions): the request's count is rounds, its interval the
//! time between round starts, its duration a bound, as for pings.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{HopProbe, HopResult, PathOptions, PathStats, Tracer};
use crate::engine::Pinger;
use crate::probe::{ProbeRequest, Ticks};
use crate::sample::Summary;
use crate::stats::{Accumulator, Outcome};

/// Runs the request's rounds to `ip` until its count, its duration or `cancel`, handing every
/// hop probe to `on_probe`; returns the summary: the destination's answer of each round as one
/// probe (answered when the destination answered), and the rows per (TTL, responder).
pub async fn run(
    pinger: &Arc<dyn Pinger>,
    request: &ProbeRequest,
    options: PathOptions,
    ip: IpAddr,
    cancel: &CancellationToken,
    mut on_probe: impl FnMut(&HopProbe),
) -> Summary {
    let mut tracer = Tracer::for_request(pinger.clone(), ip, request, options);
    let mut stats = PathStats::new();
    let mut acc = Accumulator::new();
    let start = Instant::now();
    let end = request.duration.map(|d| start + d);
    let mut ticks = Ticks::new(start, request.interval);
    let mut rounds = 0u64;
    while request.count.is_none_or(|c| rounds < c)
        && end.is_none_or(|e| Instant::now() < e)
        && !cancel.is_cancelled()
    {
        let round = tokio::select! {
            r = tracer.round(&mut on_probe) => r,
            () = cancel.cancelled() => break,
        };
        rounds += 1;
        stats.add_round(&round);
        acc.on_sent();
        let reply = round.reached_at.and_then(|ttl| {
            round
                .probes
                .iter()
                .find(|p| p.ttl == ttl && p.result == HopResult::Reply)
                .and_then(|p| p.rtt)
        });
        acc.on_outcome(
            rounds,
            reply.map_or(Outcome::Timeout, |rtt| Outcome::Reply(rtt.as_secs_f64())),
        );
        ticks.advance(Instant::now());
        if request.count.is_some_and(|c| rounds >= c) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(ticks.due()) => {}
            () = cancel.cancelled() => break,
        }
    }
    let mut summary = crate::probe::summary(&request.target, Some(ip), &acc);
    summary.hops = Some(stats.summaries());
    summary
}
