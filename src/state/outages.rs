//! The monitors' outages on their way to the store, and the captures (path sessions to the
//! address) that outages and loss crossings start, limited per target and over all.

#[allow(clippy::wildcard_imports)]
use super::*;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use tokio::time::Instant;

use crate::config::CaptureRule;
use crate::metrics::capture::{CaptureReason, CaptureSkip};
use crate::session::outages::OutageNote;

/// Outage notes waiting for the store at most; the monitors never wait for it.
pub(super) const OUTAGE_QUEUE: usize = 8192;

/// Captures started within this long count against `sessions.max_captures_per_minute`.
const CAPTURE_WINDOW: Duration = Duration::from_secs(60);

/// How often targets whose last capture can no longer hold one back are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A target's last capture.
#[derive(Debug)]
struct Last {
    at: Instant,
    ip: IpAddr,
    reason: CaptureReason,
    /// Its session, once started.
    session: Option<String>,
}

/// What becomes of a capture the config asks for.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Start it (its slot is taken).
    Start,
    /// An outage of an address whose loss capture started within the target's `every`: link
    /// the outage to that session.
    Link(String),
    Skip(CaptureSkip),
}

/// The one limiter of every capture, whatever its reason: one per target per `capture.every`
/// (an outage opening after a loss capture of its address is linked to it instead), and
/// `sessions.max_captures_per_minute` in any [`CAPTURE_WINDOW`] over all targets.
#[derive(Debug, Default)]
struct Captures {
    last: HashMap<String, Last>,
    recent: VecDeque<Instant>,
    /// Outages already seen (target, address, start): the first note of one is its start.
    seen: HashSet<(String, IpAddr, SystemTime)>,
    pruned: Option<Instant>,
}

impl Captures {
    /// Whether `rec` is an outage that just began (its first note).
    fn begins(&mut self, rec: &OutageRecord) -> bool {
        let key = (rec.target.clone(), rec.ip, rec.start);
        if rec.status != OutageStatus::Open {
            self.seen.remove(&key);
            return false;
        }
        self.seen.insert(key)
    }

    /// Decides a capture of `ip` for `reason` at `now`, and on [`Decision::Start`] takes its
    /// slot (a capture that then fails to start still counts against the limits, so a failing
    /// start is not retried at every note).
    fn decide(
        &mut self,
        now: Instant,
        target: &str,
        ip: IpAddr,
        reason: CaptureReason,
        (every, per_minute): (Duration, u32),
    ) -> Decision {
        self.prune(now);
        if let Some(last) = self.last.get(target)
            && now.duration_since(last.at) < every
        {
            return match &last.session {
                Some(id)
                    if reason == CaptureReason::Outage
                        && last.reason == CaptureReason::Loss
                        && last.ip == ip =>
                {
                    Decision::Link(id.clone())
                }
                _ => Decision::Skip(CaptureSkip::RateLimit),
            };
        }
        if self.recent.len() >= per_minute as usize {
            return Decision::Skip(CaptureSkip::GlobalCap);
        }
        self.recent.push_back(now);
        self.last.insert(
            target.to_owned(),
            Last {
                at: now,
                ip,
                reason,
                session: None,
            },
        );
        Decision::Start
    }

    /// The session the capture of `target` just started got.
    fn started(&mut self, target: &str, session: &str) {
        if let Some(last) = self.last.get_mut(target) {
            last.session = Some(session.to_owned());
        }
    }

    fn prune(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= CAPTURE_WINDOW)
        {
            self.recent.pop_front();
        }
        if self
            .pruned
            .is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY)
        {
            self.pruned = Some(now);
            let longest = crate::config::outage::MAX_CAPTURE_EVERY;
            self.last.retain(|_, l| now.duration_since(l.at) < longest);
        }
    }
}

/// Hands the monitors' outage notes to the store, opening it at the first one (or at once when
/// `reopen`: an earlier run's outages left open are closed then), and starts the captures they
/// ask for (a path session to the address, linked from the outage). Ends with the daemon.
pub(super) async fn store_outages(
    inner: std::sync::Weak<Inner>,
    mut rx: tokio::sync::mpsc::Receiver<OutageNote>,
    reopen: bool,
) {
    let app = |inner: &std::sync::Weak<Inner>| inner.upgrade().map(|inner| App { inner });
    if reopen && let Some(app) = app(&inner) {
        let _ = app.sessions().await;
    }
    let mut captures = Captures::default();
    while let Some(note) = rx.recv().await {
        let Some(app) = app(&inner) else { break };
        let m = match app.sessions().await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "outage not stored: no session store");
                continue;
            }
        };
        let mut capture = Capture {
            app: &app,
            sessions: &m,
            captures: &mut captures,
        };
        match note {
            OutageNote::Outage {
                mut rec,
                capture: rule,
            } => {
                if rule.on_outage && capture.captures.begins(&rec) {
                    rec.capture_session = capture
                        .path(&rec.target, rec.ip, CaptureReason::Outage, rule)
                        .await;
                }
                m.store().record_outage(rec);
            }
            OutageNote::LossCrossed {
                target,
                ip,
                capture: rule,
            } => {
                capture.path(&target, ip, CaptureReason::Loss, rule).await;
            }
        }
    }
}

/// What starting a capture takes.
struct Capture<'a> {
    app: &'a App,
    sessions: &'a SessionManager,
    captures: &'a mut Captures,
}

impl Capture<'_> {
    /// Captures the path to `ip` (`rule.rounds` rounds, one a second) when the limits allow;
    /// the session an outage is to link to, if any.
    async fn path(
        &mut self,
        target: &str,
        ip: IpAddr,
        reason: CaptureReason,
        rule: CaptureRule,
    ) -> Option<String> {
        let config = self.app.config();
        let metrics = self.app.metrics();
        let limits = (rule.every, config.sessions.max_captures_per_minute);
        match self
            .captures
            .decide(Instant::now(), target, ip, reason, limits)
        {
            Decision::Link(id) => Some(id),
            Decision::Skip(skip) => {
                events::capture_skipped(metrics, target, ip, reason, skip, None);
                None
            }
            Decision::Start => {
                let req = StartRequest {
                    target: ip.to_string(),
                    kind: Some("path".to_owned()),
                    count: Some(i64::from(rule.rounds)),
                    interval: Some("1s".to_owned()),
                    ..StartRequest::default()
                };
                match self
                    .sessions
                    .start(req, &config, &self.app.resolver())
                    .await
                {
                    Ok(session) => {
                        let id = session.id.to_string();
                        self.captures.started(target, &id);
                        events::capture_started(metrics, target, ip, reason, &id);
                        Some(id)
                    }
                    Err(e) => {
                        let skip = CaptureSkip::Failed;
                        events::capture_skipped(metrics, target, ip, reason, skip, Some(&e));
                        None
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
    const MIN: Duration = Duration::from_secs(60);

    use CaptureReason::{Loss, Outage};
    use Decision::{Link, Skip, Start};

    /// Runs `(second, target, address, reason)` asks through one limiter (`every` 10 minutes,
    /// `per_minute` over all), a started capture getting session `s<i>`.
    fn run(per_minute: u32, asks: &[(u64, &str, IpAddr, CaptureReason)]) -> Vec<Decision> {
        let mut c = Captures::default();
        let t0 = Instant::now();
        asks.iter()
            .enumerate()
            .map(|(i, (s, target, ip, reason))| {
                let now = t0 + Duration::from_secs(*s);
                let d = c.decide(now, target, *ip, *reason, (10 * MIN, per_minute));
                if d == Start {
                    c.started(target, &format!("s{i}"));
                }
                d
            })
            .collect()
    }

    /// [`run`] over the asks of `rows`, each row's decision checked against its last column.
    fn check(per_minute: u32, rows: &[(u64, &str, IpAddr, CaptureReason, Decision)]) {
        let asks: Vec<_> = rows.iter().map(|r| (r.0, r.1, r.2, r.3)).collect();
        let want: Vec<&Decision> = rows.iter().map(|r| &r.4).collect();
        assert_eq!(run(per_minute, &asks).iter().collect::<Vec<_>>(), want);
    }

    const RATE_LIMIT: Decision = Skip(CaptureSkip::RateLimit);

    #[test]
    fn one_capture_per_target_per_every() {
        check(
            4,
            &[
                (0, "a", A, Outage, Start),
                (1, "b", A, Outage, Start),
                (300, "a", A, Outage, RATE_LIMIT),
                (599, "a", A, Loss, RATE_LIMIT),
                (600, "a", A, Outage, Start),
            ],
        );
    }

    #[test]
    fn the_global_cap_counts_the_last_minute_and_zero_is_off() {
        let asks: Vec<(u64, &str, IpAddr, CaptureReason)> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u64 * 20, *t, A, Outage))
            .collect();
        // At 0, 20, 40 s: two fit; the third is capped; at 60 s the first has left the window.
        assert_eq!(
            run(2, &asks),
            [Start, Start, Skip(CaptureSkip::GlobalCap), Start]
        );
        assert_eq!(run(0, &asks[..1]), [Skip(CaptureSkip::GlobalCap)]);
        // A capped ask takes no slot: the target may be captured at the next chance.
        assert_eq!(
            run(
                1,
                &[(0, "a", A, Outage), (30, "b", A, Loss), (61, "b", A, Loss)]
            ),
            [Start, Skip(CaptureSkip::GlobalCap), Start]
        );
    }

    #[test]
    fn an_outage_after_a_loss_capture_of_its_address_links_to_it() {
        check(
            4,
            &[
                (0, "a", A, Loss, Start),
                (30, "a", A, Outage, Link("s0".to_owned())),
                // Another address of the target: that capture is not of its path.
                (40, "a", B, Outage, RATE_LIMIT),
                (50, "a", A, Loss, RATE_LIMIT),
                // After an outage capture, an outage is only rate-limited.
                (60, "b", A, Outage, Start),
                (90, "b", A, Outage, RATE_LIMIT),
                // Past every, a capture of its own.
                (700, "a", A, Outage, Start),
            ],
        );
        // A loss capture that failed to start has no session to link to.
        let mut c = Captures::default();
        let t0 = Instant::now();
        assert_eq!(c.decide(t0, "a", A, Loss, (10 * MIN, 4)), Start);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(c.decide(later, "a", A, Outage, (10 * MIN, 4)), RATE_LIMIT);
    }

    #[test]
    fn an_outage_begins_at_its_first_note_only() {
        let mut c = Captures::default();
        let mut rec = OutageRecord {
            id: 0,
            target: "a".into(),
            ip: A,
            start: SystemTime::UNIX_EPOCH,
            end: None,
            last_lost: SystemTime::UNIX_EPOCH,
            lost: 3,
            icmp_errors: 0,
            status: OutageStatus::Open,
            capture_session: None,
        };
        assert!(c.begins(&rec));
        rec.lost = 4;
        assert!(!c.begins(&rec), "it grew");
        rec.status = OutageStatus::Ended;
        assert!(!c.begins(&rec));
        assert!(c.seen.is_empty(), "forgotten once it ended");
    }
}
