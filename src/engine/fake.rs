//! A scripted [`Pinger`] for unit tests: each address follows a script of outcomes, played on
//! tokio time so tests can use `time::pause()` and `advance()`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::{
    EventKind, EventSink, IcmpErrorInfo, IcmpErrorKind, Pinger, ProbeEvent, ProbeSpec, ReplyInfo,
    SendError,
};

/// What the fake network does with one probe.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Answer after `rtt` with this TTL (late if `rtt` exceeds the probe's timeout).
    Reply {
        /// Delay before the reply.
        rtt: Duration,
        /// TTL of the reply.
        ttl: u8,
    },
    /// Answer twice: after `rtt` and again after `rtt + gap`.
    Duplicate {
        /// Delay before the first reply.
        rtt: Duration,
        /// Delay between the two replies.
        gap: Duration,
    },
    /// Never answer.
    Drop,
    /// Answer with an ICMP error after `after`.
    Error {
        /// Delay before the error.
        after: Duration,
        /// The error class.
        kind: IcmpErrorKind,
    },
    /// Refuse the send locally.
    SendFails,
}

#[derive(Debug, Default)]
struct Script {
    steps: Vec<Step>,
    next: usize,
    seq: u16,
}

/// A scripted pinger. Addresses without a script are dropped (timeout).
#[derive(Clone, Debug, Default)]
pub struct FakePinger {
    // One lock for the scripts: tests only, contention is irrelevant.
    scripts: Arc<Mutex<HashMap<IpAddr, Script>>>,
    in_flight: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    counters: Arc<Mutex<super::EngineCounters>>,
}

impl FakePinger {
    /// A fake with no scripts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the script for `ip`; it repeats from the start when it runs out.
    pub fn script(&self, ip: IpAddr, steps: Vec<Step>) -> &Self {
        self.scripts.lock().insert(
            ip,
            Script {
                steps,
                next: 0,
                seq: 0,
            },
        );
        self
    }

    /// Probes sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Sets what [`Pinger::counters`] answers, as if the engine had dropped or ignored that much.
    pub fn set_counters(&self, counters: super::EngineCounters) {
        *self.counters.lock() = counters;
    }
}

impl Pinger for FakePinger {
    fn send(&self, spec: &ProbeSpec, tag: u64, sink: &EventSink) -> Result<u16, SendError> {
        let (step, seq) = {
            let mut scripts = self.scripts.lock();
            match scripts.get_mut(&spec.ip) {
                Some(s) if !s.steps.is_empty() => {
                    let step = s.steps[s.next % s.steps.len()].clone();
                    s.next += 1;
                    s.seq = s.seq.wrapping_add(1);
                    (step, s.seq)
                }
                _ => (Step::Drop, 0),
            }
        };
        if step == Step::SendFails {
            return Err(SendError::Io {
                ip: spec.ip,
                source: std::io::Error::from_raw_os_error(libc::ENETUNREACH),
            });
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let sink = sink.clone();
        let ip = spec.ip;
        let timeout = spec.timeout;
        let in_flight = self.in_flight.clone();
        let size = usize::from(spec.size) + 8;
        tokio::spawn(async move {
            let ev = |kind| ProbeEvent {
                tag,
                seq,
                ip,
                at: SystemTime::now(),
                kind,
            };
            let reply = |rtt, ttl| ReplyInfo {
                rtt,
                ttl: Some(ttl),
                size,
            };
            match step {
                Step::Reply { rtt, ttl } if rtt <= timeout => {
                    tokio::time::sleep(rtt).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let _ = sink.deliver(ev(EventKind::Reply(reply(rtt, ttl))));
                }
                Step::Reply { rtt, ttl } => {
                    tokio::time::sleep(timeout).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let _ = sink.deliver(ev(EventKind::Timeout));
                    tokio::time::sleep(rtt - timeout).await;
                    let _ = sink.deliver(ev(EventKind::Late(reply(rtt, ttl))));
                }
                Step::Duplicate { rtt, gap } => {
                    tokio::time::sleep(rtt).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let _ = sink.deliver(ev(EventKind::Reply(reply(rtt, 64))));
                    tokio::time::sleep(gap).await;
                    let _ = sink.deliver(ev(EventKind::Duplicate(reply(rtt + gap, 64))));
                }
                Step::Drop | Step::SendFails => {
                    tokio::time::sleep(timeout).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let _ = sink.deliver(ev(EventKind::Timeout));
                }
                Step::Error { after, kind } => {
                    tokio::time::sleep(after.min(timeout)).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let (icmp_type, from) = match (kind, ip) {
                        (IcmpErrorKind::TimeExceeded, IpAddr::V4(_)) => (11, ip),
                        (IcmpErrorKind::TimeExceeded, IpAddr::V6(_)) => (3, ip),
                        (_, IpAddr::V4(_)) => (3, ip),
                        (_, IpAddr::V6(_)) => (1, ip),
                    };
                    let _ = sink.deliver(ev(EventKind::IcmpError(IcmpErrorInfo {
                        kind,
                        icmp_type,
                        icmp_code: 0,
                        from,
                        rtt: Some(after.min(timeout)),
                    })));
                }
            }
        });
        Ok(seq)
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn counters(&self) -> super::EngineCounters {
        *self.counters.lock()
    }
}
