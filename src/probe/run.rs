//! The one runner of a bounded request to one address, for the CLI, `/probe` and sessions: probes
//! on the request's cadence, each on its own deadline, every outcome handed to the caller as a
//! [`Sample`] the moment it happens, and a tally at the end.
//!
//! - It stops sending at the request's count or duration, on cancellation, or before a probe
//!   whose whole timeout would not fit before a hard deadline (a scrape budget): so a run never
//!   ends with probes cut short and loss is never biased by them.
//! - Once every probe has settled it listens [`LINGER`] longer, so duplicates and late replies of
//!   the last probes are still counted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::request::ProbeRequest;
use super::ticks::Ticks;
use crate::engine::{EventKind, EventSink, Pinger, ProbeEvent};
use crate::sample::{RttSummaryMs, Sample, Summary, SummaryTag, secs_to_ms};
use crate::stats::{Accumulator, Outcome};

/// How long to keep listening for duplicates and late replies after the last probe settled.
pub const LINGER: Duration = Duration::from_millis(250);

/// Maps an engine event to the statistics' outcome.
pub fn outcome(kind: &EventKind) -> Outcome {
    match kind {
        EventKind::Reply(r) => Outcome::Reply(r.rtt.as_secs_f64()),
        EventKind::Timeout => Outcome::Timeout,
        EventKind::IcmpError(_) => Outcome::Error,
        EventKind::Late(_) => Outcome::Late,
        EventKind::Duplicate(_) => Outcome::Duplicate,
    }
}

/// Runs `request` against `ip` until its count or duration, `cancel`, or `hard_deadline`;
/// calls `on_sample` for every outcome as it happens and returns the tally.
pub async fn run(
    pinger: &Arc<dyn Pinger>,
    request: &ProbeRequest,
    ip: IpAddr,
    hard_deadline: Option<Instant>,
    cancel: &CancellationToken,
    mut on_sample: impl FnMut(Sample),
) -> Accumulator {
    let spec = request.spec(ip);
    let timeout = spec.timeout;
    let target = request.target.as_str();
    // Sized for every probe that can be outstanding, plus late and duplicate replies; a bounded
    // channel allocates as it fills, so a large cap costs nothing up front.
    let per_timeout = timeout.as_secs_f64() / request.interval.as_secs_f64().max(1e-3);
    let cap = (per_timeout.ceil() as usize)
        .saturating_mul(4)
        .clamp(64, 65_536);
    let (tx, mut rx) = mpsc::channel::<ProbeEvent>(cap);
    let tx = EventSink::from(tx);
    let mut acc = Accumulator::new();
    let start = Instant::now();
    let send_until = request.duration.map(|d| start + d);
    let mut ticks = Ticks::new(start, request.interval);
    let mut seq: u64 = 0;
    let mut outstanding: u64 = 0;
    let mut sending = true;
    // Safety net: the engine owes one terminal event per probe; never wait forever.
    let mut drain_until = start + timeout + Duration::from_secs(1);
    let mut linger_until: Option<Instant> = None;
    loop {
        let due = ticks.due();
        if sending
            && (request.count.is_some_and(|c| seq >= c)
                || send_until.is_some_and(|u| due > u)
                || hard_deadline.is_some_and(|d| due + timeout > d))
        {
            sending = false;
        }
        if !sending && outstanding == 0 && linger_until.is_none() {
            let mut until = Instant::now() + LINGER.min(timeout);
            if let Some(d) = hard_deadline {
                until = until.min(d);
            }
            linger_until = Some(until);
        }
        tokio::select! {
            biased;
            Some(ev) = rx.recv() => {
                if ev.kind.is_terminal() {
                    outstanding = outstanding.saturating_sub(1);
                }
                acc.on_outcome(ev.tag, outcome(&ev.kind));
                on_sample(Sample::from_event(target, target, &ev));
            }
            () = tokio::time::sleep_until(due), if sending => {
                seq += 1;
                match pinger.send(&spec, seq, &tx) {
                    Ok(_) => {
                        acc.on_sent();
                        outstanding += 1;
                    }
                    Err(e) => on_sample(Sample::local_error(target, target, Some(ip), Some(seq), e.to_string())),
                }
                let now = Instant::now();
                drain_until = now + timeout + Duration::from_secs(1);
                ticks.advance(now);
            }
            () = cancel.cancelled(), if sending => sending = false,
            () = tokio::time::sleep_until(drain_until), if !sending => break,
            () = tokio::time::sleep_until(linger_until.unwrap_or(drain_until)), if linger_until.is_some() => break,
        }
    }
    acc
}

/// The summary of one address's run, in the shape shared by CLI lines, sessions and WebSockets.
pub fn summary(target: &str, ip: Option<IpAddr>, acc: &Accumulator) -> Summary {
    let t = acc.tally();
    let ms = secs_to_ms;
    let (ipdv, rfc) = acc.jitter();
    Summary {
        kind: SummaryTag::Summary,
        target: target.to_owned(),
        host: target.to_owned(),
        ip,
        sent: t.sent,
        received: t.received,
        lost: t.lost,
        loss_ratio: t.loss_ratio(),
        late: t.late,
        duplicates: t.duplicates,
        errors: t.errors,
        rtt_ms: acc.rtt().map(|r| RttSummaryMs {
            min: ms(r.min),
            avg: ms(r.mean),
            max: ms(r.max),
            stddev: ms(r.stddev),
            p50: ms(r.p50),
            p95: ms(r.p95),
            p99: ms(r.p99),
        }),
        jitter_ms: ipdv.map(ms),
        jitter_rfc3550_ms: rfc.map(ms),
        hops: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{FakePinger, Step};
    use crate::probe::{Defaults, Limits, RawRequest, validate};

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9));

    fn request(count: Option<&str>, duration: Option<&str>) -> ProbeRequest {
        let raw = RawRequest {
            target: Some("h".to_owned()),
            count: count.map(str::to_owned),
            duration: duration.map(str::to_owned),
            interval: Some("100ms".to_owned()),
            timeout: Some("300ms".to_owned()),
            ..RawRequest::default()
        };
        validate(&raw, &Defaults::default(), &Limits::default()).expect("valid")
    }

    fn pinger(fake: FakePinger) -> Arc<dyn Pinger> {
        Arc::new(fake)
    }

    #[tokio::test(start_paused = true)]
    async fn sends_count_and_settles_every_probe() {
        let fake = FakePinger::new();
        fake.script(
            IP,
            vec![
                Step::Reply {
                    rtt: Duration::from_millis(5),
                    ttl: 60,
                },
                Step::Drop,
            ],
        );
        let mut samples = 0;
        let acc = run(
            &pinger(fake),
            &request(Some("10"), None),
            IP,
            None,
            &CancellationToken::new(),
            |_| samples += 1,
        )
        .await;
        let t = acc.tally();
        assert_eq!((t.sent, t.received, t.lost), (10, 5, 5));
        assert_eq!(samples, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn never_sends_a_probe_that_cannot_settle_before_the_hard_deadline() {
        let started = Instant::now();
        // Deadline 1 s, timeout 300 ms, interval 100 ms: probes at 0..=700 ms fit (8 probes).
        let acc = run(
            &pinger(FakePinger::new()),
            &request(Some("100"), None),
            IP,
            Some(started + Duration::from_secs(1)),
            &CancellationToken::new(),
            |_| {},
        )
        .await;
        assert_eq!((acc.tally().sent, acc.tally().lost), (8, 8));
        assert!(started.elapsed() <= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_duration_bounds_the_sends_and_every_probe_still_settles() {
        // 1 s at 100 ms: probes at 0, 100, ..., 1000 ms (11), each waiting out its timeout.
        let acc = run(
            &pinger(FakePinger::new()),
            &request(None, Some("1s")),
            IP,
            None,
            &CancellationToken::new(),
            |_| {},
        )
        .await;
        assert_eq!((acc.tally().sent, acc.tally().lost), (11, 11));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_sending_but_waits_for_what_is_in_flight() {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            stop.cancel();
        });
        let acc = run(
            &pinger(FakePinger::new()),
            &request(None, None),
            IP,
            None,
            &cancel,
            |_| {},
        )
        .await;
        assert_eq!((acc.tally().sent, acc.tally().lost), (3, 3));
    }
}
