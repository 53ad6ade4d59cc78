//! A bounded run of probes to one address: `count` probes at `interval`, each with its own
//! timeout, ending by a deadline. Shared by `/probe` and on-demand sessions.
//!
//! A probe is only sent if its whole timeout fits before the deadline, so the run never ends
//! with probes still in flight and loss is never biased by probes cut short.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::{EventKind, Pinger, ProbeEvent, ProbeSpec};
use crate::stats::{Accumulator, Outcome};

/// What to run.
#[derive(Clone, Debug)]
pub struct BurstPlan {
    /// Where and how.
    pub spec: ProbeSpec,
    /// Probes to send at most; `None` = until the deadline or cancellation.
    pub count: Option<u64>,
    /// Time between probes.
    pub interval: Duration,
    /// No probe is sent whose timeout would end after this.
    pub deadline: Instant,
}

/// Something that happened during the run, in order.
#[derive(Clone, Debug)]
pub enum BurstEvent {
    /// An outcome from the engine.
    Probe(ProbeEvent),
    /// A probe that could not be sent.
    SendFailed {
        /// The caller's sequence number of that probe.
        seq: u64,
        /// Why.
        error: String,
    },
}

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

/// Runs the plan, calling `on_event` for each event as it happens, and returns the tally.
pub async fn run(
    pinger: Arc<dyn Pinger>,
    plan: BurstPlan,
    cancel: CancellationToken,
    mut on_event: impl FnMut(BurstEvent),
) -> Accumulator {
    let timeout = plan.spec.timeout;
    let cap = ((timeout.as_secs_f64() / plan.interval.as_secs_f64().max(1e-3)).ceil() as usize)
        .saturating_mul(4)
        .clamp(16, 4096);
    let (tx, mut rx) = mpsc::channel::<ProbeEvent>(cap);
    let tx = crate::engine::EventSink::from(tx);
    let mut acc = Accumulator::new();
    let start = Instant::now();
    let mut next = start;
    let mut seq: u64 = 0;
    let mut outstanding: u64 = 0;
    let mut sending = true;
    let mut drain_until = start + timeout + Duration::from_secs(1);
    let mut linger_until: Option<Instant> = None;
    loop {
        if sending && (plan.count.is_some_and(|c| seq >= c) || next + timeout > plan.deadline) {
            sending = false;
        }
        if !sending && outstanding == 0 && linger_until.is_none() {
            // Duplicates and late replies of the last probes, within what the deadline allows.
            let until = (Instant::now() + crate::ping::LINGER.min(timeout)).min(plan.deadline);
            linger_until = Some(until);
        }
        tokio::select! {
            biased;
            Some(ev) = rx.recv() => {
                if ev.kind.is_terminal() {
                    outstanding = outstanding.saturating_sub(1);
                }
                acc.on_outcome(ev.tag, outcome(&ev.kind));
                on_event(BurstEvent::Probe(ev));
            }
            () = tokio::time::sleep_until(next), if sending => {
                seq += 1;
                match pinger.send(&plan.spec, seq, &tx) {
                    Ok(_) => {
                        acc.on_sent();
                        outstanding += 1;
                    }
                    Err(e) => on_event(BurstEvent::SendFailed { seq, error: e.to_string() }),
                }
                drain_until = Instant::now() + timeout + Duration::from_secs(1);
                next += plan.interval;
            }
            () = cancel.cancelled(), if sending => sending = false,
            // Safety net: the engine owes one terminal event per probe; never wait forever.
            () = tokio::time::sleep_until(drain_until), if !sending => break,
            () = tokio::time::sleep_until(linger_until.unwrap_or(drain_until)), if linger_until.is_some() => break,
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SocketOptions;
    use crate::engine::fake::{FakePinger, Step};
    use std::net::IpAddr;

    fn plan(count: Option<u64>, deadline_ms: u64) -> BurstPlan {
        BurstPlan {
            spec: ProbeSpec {
                ip: IpAddr::from([192, 0, 2, 9]),
                size: 56,
                timeout: Duration::from_millis(300),
                options: SocketOptions::default(),
            },
            count,
            interval: Duration::from_millis(100),
            deadline: Instant::now() + Duration::from_millis(deadline_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sends_count_and_settles_every_probe() {
        let fake = FakePinger::new();
        fake.script(
            IpAddr::from([192, 0, 2, 9]),
            vec![
                Step::Reply {
                    rtt: Duration::from_millis(5),
                    ttl: 60,
                },
                Step::Drop,
            ],
        );
        let mut events = 0;
        let acc = run(
            Arc::new(fake),
            plan(Some(10), 10_000),
            CancellationToken::new(),
            |_| events += 1,
        )
        .await;
        let t = acc.tally();
        assert_eq!((t.sent, t.received, t.lost), (10, 5, 5));
        assert_eq!(events, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn never_sends_a_probe_that_cannot_settle_before_the_deadline() {
        let fake = FakePinger::new();
        let started = Instant::now();
        // Deadline 1 s, timeout 300 ms, interval 100 ms: probes at 0..=700 ms fit (8 probes).
        let acc = run(
            Arc::new(fake),
            plan(Some(100), 1_000),
            CancellationToken::new(),
            |_| {},
        )
        .await;
        assert_eq!(acc.tally().sent, 8);
        assert_eq!(acc.tally().lost, 8);
        assert!(started.elapsed() <= Duration::from_millis(1_000));
    }
}
