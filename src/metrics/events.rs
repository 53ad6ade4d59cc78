//! Failures and outcomes that are both logged and counted, each by one function, so that the
//! log line and the series never drift apart (vector's `internal_events`).
//!
//! Counters kept by other modules' atomics (the engine's dropped events, the session store's
//! dropped samples) are read at scrape time instead, see [`ScrapeCounter`](super::ScrapeCounter);
//! the log line of those stays next to their atomic.

use std::fmt::Display;
use std::net::IpAddr;
use std::time::SystemTime;

use super::capture::{CaptureReason, CaptureSkip};
use super::{Metrics, TargetMetrics};
use crate::engine::SendError;

/// A probe could not be sent: `pingscope_send_errors_total{reason}` and a debug line (a
/// failing route fails every probe; the counter is the signal, the log the detail).
pub fn send_failed(metrics: &TargetMetrics, target: &str, ip: IpAddr, error: &SendError) {
    send_failed_as(metrics, target, ip, error.reason(), error);
}

/// [`send_failed`] for an error known by its reason and text (a path's hop probe).
pub fn send_failed_as(
    metrics: &TargetMetrics,
    target: &str,
    ip: IpAddr,
    reason: &'static str,
    error: &dyn Display,
) {
    metrics.on_send_error(reason);
    tracing::debug!(target_name = %target, %ip, %reason, error = %error, "send failed");
}

/// A DNS lookup of a monitored target failed: `pingscope_resolve_errors_total{target}` and a
/// warning.
pub fn resolve_failed(metrics: &Metrics, target: &str, host: &str, error: &dyn Display) {
    metrics.inc_resolve_error(target);
    tracing::warn!(target_name = %target, %host, error = %error, "lookup failed; keeping known addresses and retrying");
}

/// A config reload was applied: `pingscope_config_last_reload_successful` 1, its timestamp now,
/// and the outcome logged at info in the words `/-/reload` answers with.
pub fn reload_succeeded(metrics: &Metrics, outcome: &dyn Display) {
    metrics.set_reload_status(true, SystemTime::now());
    tracing::info!("{outcome}");
}

/// A config reload was rejected (the running config stays): the success gauge drops to 0 and
/// the error is logged at error in the words `/-/reload` answers with.
pub fn reload_failed(metrics: &Metrics, error: &dyn Display) {
    metrics.set_reload_status(false, SystemTime::now());
    tracing::error!("{error}");
}

/// A monitor started a capture (a path session to `ip`): `pingscope_captures_total{target,reason}`
/// and an info line naming the session.
pub fn capture_started(
    metrics: &Metrics,
    target: &str,
    ip: IpAddr,
    reason: CaptureReason,
    session: &str,
) {
    metrics.shared.captures.started(target, reason);
    tracing::info!(target_name = %target, %ip, reason = reason.as_str(), %session, "path captured");
}

/// A capture the config asked for was not started: `pingscope_captures_skipped_total{reason}`,
/// and a line: at info when the session failed to start (with why), at debug when a limit held
/// it back (the counter is the signal).
pub fn capture_skipped(
    metrics: &Metrics,
    target: &str,
    ip: IpAddr,
    reason: CaptureReason,
    skip: CaptureSkip,
    error: Option<&dyn Display>,
) {
    metrics.shared.captures.skipped(skip);
    let (reason, skipped) = (reason.as_str(), skip.as_str());
    match error {
        Some(error) => {
            tracing::info!(target_name = %target, %ip, reason, skipped, error = %error, "path not captured");
        }
        None => tracing::debug!(target_name = %target, %ip, reason, skipped, "path not captured"),
    }
}
