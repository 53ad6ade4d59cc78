//! The monitors' outages on their way to the store, and the path captures they start.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Outage records waiting for the store at most; the monitors never wait for it.
pub(super) const OUTAGE_QUEUE: usize = 8192;

/// A target's outages start a capture (a path session to the address) at most this often.
pub(super) const CAPTURE_EVERY: Duration = Duration::from_secs(600);
/// Captures started in the last [`CAPTURE_WINDOW`] at most, over every target.
pub(super) const MAX_CAPTURES: usize = 4;
pub(super) const CAPTURE_WINDOW: Duration = Duration::from_secs(60);
/// Rounds of a capture, one a second.
pub(super) const CAPTURE_ROUNDS: i64 = 10;

/// Which outages get a capture: one per target per [`CAPTURE_EVERY`], [`MAX_CAPTURES`] per
/// [`CAPTURE_WINDOW`] over all.
#[derive(Debug, Default)]
pub(super) struct Captures {
    last: std::collections::HashMap<String, tokio::time::Instant>,
    recent: std::collections::VecDeque<tokio::time::Instant>,
    /// Outages already seen (target, address, start): the first record of one is its start.
    seen: std::collections::HashSet<(String, std::net::IpAddr, SystemTime)>,
}

impl Captures {
    /// Whether `rec` is an outage that just began and may be captured now.
    fn take(&mut self, rec: &OutageRecord) -> bool {
        if rec.status != OutageStatus::Open {
            self.seen.remove(&(rec.target.clone(), rec.ip, rec.start));
            return false;
        }
        if !self.seen.insert((rec.target.clone(), rec.ip, rec.start)) {
            return false;
        }
        let now = tokio::time::Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > CAPTURE_WINDOW)
        {
            self.recent.pop_front();
        }
        let due = self
            .last
            .get(&rec.target)
            .is_none_or(|t| now.duration_since(*t) >= CAPTURE_EVERY);
        if !due || self.recent.len() >= MAX_CAPTURES {
            return false;
        }
        self.last.insert(rec.target.clone(), now);
        self.recent.push_back(now);
        true
    }
}

/// Hands the monitors' outage records to the store, opening it at the first one (or at once when
/// `reopen`: an earlier run's outages left open are closed then), and starts a capture (a path
/// session to the address, linked from the outage) when an outage begins. Ends with the daemon.
pub(super) async fn store_outages(
    inner: std::sync::Weak<Inner>,
    mut rx: tokio::sync::mpsc::Receiver<OutageRecord>,
    reopen: bool,
) {
    let app = |inner: &std::sync::Weak<Inner>| inner.upgrade().map(|inner| App { inner });
    if reopen && let Some(app) = app(&inner) {
        let _ = app.sessions().await;
    }
    let mut captures = Captures::default();
    while let Some(mut rec) = rx.recv().await {
        let Some(app) = app(&inner) else { break };
        let m = match app.sessions().await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "outage not stored: no session store");
                continue;
            }
        };
        if captures.take(&rec) {
            let req = StartRequest {
                target: rec.ip.to_string(),
                kind: Some("path".to_owned()),
                count: Some(CAPTURE_ROUNDS),
                interval: Some("1s".to_owned()),
                ..StartRequest::default()
            };
            match m.start(req, &app.config(), &app.resolver()).await {
                Ok(session) => rec.capture_session = Some(session.id.to_string()),
                Err(e) => {
                    tracing::info!(target_name = %rec.target, ip = %rec.ip, error = %e, "outage not captured")
                }
            }
        }
        m.store().record_outage(rec);
    }
}
