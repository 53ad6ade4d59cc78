//! Address resolution of a target that runs in a task (most address literals do not: see
//! [`Running`](super::Running)): a path monitor's address literal is traced from the target's own
//! task; a DNS name is resolved, re-resolved on the record's TTL (bounded by `dns.refresh`), and
//! gets one probe task per address, retired when the name no longer has it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::address::{AddressEntry, prepare_address, retire_address, start_address};
use super::recorder::FirstRound;
use super::{ResolveFailure, Shared, StatusSlot, mark_first_round};
use crate::config::TargetConfig;
use crate::metrics::events;
use crate::resolve::{ResolveError, Resolved, parse_ip_literal};
use crate::sample::Sample;

/// Shortest wait before re-resolving, whatever the record's TTL says.
const MIN_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between retries of a failing lookup.
const MAX_RESOLVE_BACKOFF: Duration = Duration::from_secs(60);

/// Runs one target until its token is cancelled: an address literal gets one probe task and
/// nothing else; a DNS name goes to [`dns_target`].
///
/// This future lives as long as the target, tens of thousands of them at once, so the literal
/// path is kept small and the DNS loop (with its resolver state) is boxed.
pub(super) async fn target_task(
    shared: Arc<Shared>,
    cfg: Arc<TargetConfig>,
    cancel: CancellationToken,
    counts_for_ready: bool,
) {
    if parse_ip_literal(&cfg.host).is_some() {
        // A literal that does not fit the target's family takes the DNS path, which reports
        // the error and retries like any failed lookup. (Only the address is kept past the
        // lookup: whatever lives across an await is in this future for the target's life.)
        let ip = match Box::pin(lookup(&shared, &cfg)).await {
            Ok(resolved) => match resolved.addrs[..] {
                [ip] => Some(ip),
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(ip) = ip {
            literal_target(shared, cfg, ip, cancel, counts_for_ready).await;
            return;
        }
    }
    Box::pin(dns_target(shared, cfg, cancel, counts_for_ready)).await;
}

/// Looks the target's host up with the resolver now in force.
async fn lookup(shared: &Shared, cfg: &TargetConfig) -> Result<Resolved, ResolveError> {
    let resolver = shared.resolver.lock().clone();
    resolver.lookup(&cfg.host, cfg.options.family).await
}

/// A target whose host is an address literal: one probe task, ready after its first settled
/// probe, stopped and its series deleted when the token is cancelled.
async fn literal_target(
    shared: Arc<Shared>,
    cfg: Arc<TargetConfig>,
    ip: IpAddr,
    cancel: CancellationToken,
    counts_for_ready: bool,
) {
    let mut first_round_pending = counts_for_ready;
    let first = Arc::new(Notify::new());
    let (run, slot) =
        match prepare_address(&shared, &cfg, ip, cancel, FirstRound::Task(first.clone())) {
            // The probe loop (the address's place on a wheel) is held by this task, one task per
            // literal target, not two; it ends when the target's token is cancelled.
            Ok((task, _, slot)) => (task.run(), slot),
            Err(e) => {
                tracing::warn!(target_name = %cfg.name, %ip, error = %e, "cannot monitor address");
                mark_first_round(&shared, &mut first_round_pending);
                return;
            }
        };
    tokio::pin!(run);
    let mut finished = false;
    if first_round_pending {
        tokio::select! {
            () = &mut run => finished = true,
            () = first.notified() => {}
        }
        mark_first_round(&shared, &mut first_round_pending);
    }
    if !finished {
        run.await;
    }
    retire_address(&shared, &cfg.name, ip, slot.rec.metrics.labels());
}

/// A target whose host is a DNS name: resolves it, keeps one probe task per address,
/// re-resolves on the record's TTL (bounded by `dns.refresh`), retries failures with backoff.
async fn dns_target(
    shared: Arc<Shared>,
    cfg: Arc<TargetConfig>,
    cancel: CancellationToken,
    counts_for_ready: bool,
) {
    let mut first_round_pending = counts_for_ready;
    // Names that go through DNS get their resolve-error counter at zero from the start.
    let uses_dns = parse_ip_literal(&cfg.host).is_none();
    if uses_dns {
        shared.deps.metrics.track_resolve(&cfg.name);
    }
    let mut addresses: HashMap<IpAddr, AddressEntry> = HashMap::new();
    let mut backoff = MIN_RESOLVE_INTERVAL;
    // Each address's recorder flags its first settled probe and wakes this task.
    let first = Arc::new(Notify::new());
    let mut awaiting_first: Vec<StatusSlot> = Vec::new();
    loop {
        // Boxed: the lookup's state is large and this task lives as long as its target.
        let lookup = tokio::select! {
            r = Box::pin(lookup(&shared, &cfg)) => r,
            () = cancel.cancelled() => break,
        };
        let refresh = *shared.dns_refresh.lock();
        let next_lookup = match lookup {
            Ok(resolved) => {
                shared.failures.lock().remove(&*cfg.name);
                backoff = MIN_RESOLVE_INTERVAL;
                let mut wanted = resolved.addrs.clone();
                wanted.sort();
                wanted.dedup();
                // Stop addresses the name no longer has: their series go away.
                let gone: Vec<IpAddr> = addresses
                    .keys()
                    .filter(|ip| !wanted.contains(ip))
                    .copied()
                    .collect();
                for ip in gone {
                    if let Some(entry) = addresses.remove(&ip) {
                        awaiting_first.retain(|s| !Arc::ptr_eq(s, &entry.slot));
                        entry.stop(&shared, &cfg.name, ip).await;
                        tracing::info!(target_name = %cfg.name, %ip, "address retired");
                    }
                }
                for ip in wanted {
                    if addresses.contains_key(&ip) {
                        continue;
                    }
                    match start_address(&shared, &cfg, ip, &cancel, &first) {
                        Ok(entry) => {
                            awaiting_first.push(entry.slot.clone());
                            addresses.insert(ip, entry);
                        }
                        Err(e) => {
                            tracing::warn!(target_name = %cfg.name, %ip, error = %e, "cannot monitor address")
                        }
                    }
                }
                if addresses.is_empty() || awaiting_first.is_empty() {
                    mark_first_round(&shared, &mut first_round_pending);
                }
                let ttl_wait = resolved
                    .valid_until
                    .checked_duration_since(std::time::Instant::now())
                    .unwrap_or(Duration::ZERO);
                ttl_wait.min(refresh).max(MIN_RESOLVE_INTERVAL)
            }
            Err(e) => {
                events::resolve_failed(&shared.deps.metrics, &cfg.name, &cfg.host, &e);
                shared.failures.lock().insert(
                    cfg.name.to_string(),
                    ResolveFailure {
                        target: cfg.name.to_string(),
                        host: cfg.host.to_string(),
                        error: e.to_string(),
                    },
                );
                shared.deps.live.publish(Sample::local_error(
                    &cfg.name,
                    &cfg.host,
                    None,
                    None,
                    e.to_string(),
                ));
                mark_first_round(&shared, &mut first_round_pending);
                let wait = backoff.min(refresh);
                backoff = (backoff * 2).min(MAX_RESOLVE_BACKOFF);
                wait
            }
        };
        let sleep = tokio::time::sleep(next_lookup);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                () = first.notified() => {
                    awaiting_first.retain(|s| !s.rec.settled_once.load(Ordering::Acquire));
                    if awaiting_first.is_empty() {
                        mark_first_round(&shared, &mut first_round_pending);
                    }
                }
                () = cancel.cancelled() => break,
            }
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    mark_first_round(&shared, &mut first_round_pending);
    for (ip, entry) in addresses.drain() {
        entry.stop(&shared, &cfg.name, ip).await;
    }
    shared.failures.lock().remove(&*cfg.name);
    if uses_dns {
        shared.deps.metrics.forget_resolve(&cfg.name);
    }
}
