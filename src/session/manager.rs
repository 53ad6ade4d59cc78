//! Runs on-demand sessions: checks a request against the config's limits and access lists,
//! probes with the shared engine, streams samples to live readers and queues them for the store.
//!
//! Each running session keeps its samples in memory (for the replay of a late WebSocket reader)
//! next to its broadcast sender, under one lock, so a reader subscribing mid-run gets every
//! sample exactly once: the replay up to the subscription, then the stream.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tries to record a session's end while the store fails to write (a full disk may free up).
const FINISH_ATTEMPTS: u32 = 10;
/// Pause between those tries.
const FINISH_RETRY: Duration = Duration::from_secs(1);

use super::model::PathParams;
use super::{SessionId, SessionParams, SessionRecord, SessionStatus, Store, StoreError};
use crate::config::{Config, Denied, format_duration};
use crate::engine::Pinger;
use crate::probe::path::{RawPath, validate_path};
use crate::probe::{self, Defaults, Limits, ProbeKind, RawRequest, RequestError};
use crate::resolve::{Family, Resolver};
use crate::sample::{Sample, Summary};

/// Probes of a session when the request gives neither `count` nor `duration`.
pub const DEFAULT_COUNT: u32 = 10;
/// Interval when the request gives none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Timeout when the request gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest DNS lookup a start request waits for.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages a live reader may be behind before it is told it lagged.
pub const LIVE_BUFFER: usize = 256;

/// The body of `POST /api/v1/sessions` (and `POST /start_test`). Values are checked by the
/// request's own rules ([`crate::probe::validate`]), with the same messages as every other front.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Host name or address to ping.
    #[schema(min_length = 1, max_length = 253, pattern = "\\S")]
    pub target: String,
    /// What kind of probe (default `icmp`).
    #[schema(value_type = Option<ProbeKind>)]
    pub kind: Option<String>,
    /// Number of probes (default 10 when no duration is given).
    #[schema(minimum = 1)]
    pub count: Option<i64>,
    /// How long to run, e.g. `"30s"`; with `count`, whichever ends first.
    pub duration: Option<String>,
    /// Time between probes, e.g. `"200ms"` (default `"1s"`).
    pub interval: Option<String>,
    /// Per-probe timeout, e.g. `"1s"` (default `"2s"`).
    pub timeout: Option<String>,
    /// ICMP payload bytes (default 56; at most 65507 over IPv4, 65527 over IPv6).
    #[schema(minimum = 0, maximum = 65527)]
    pub size: Option<i64>,
    /// `auto`, `ip4` or `ip6`.
    #[schema(value_type = Option<Family>)]
    pub family: Option<String>,
    /// IPv4 TTL / IPv6 hop limit of the probes (1-255; default: the kernel's).
    #[schema(minimum = 1, maximum = 255)]
    pub ttl: Option<i64>,
    /// TOS byte / IPv6 traffic class of the probes (0-255).
    #[schema(minimum = 0, maximum = 255)]
    pub tos: Option<i64>,
    /// `kind: path`: first TTL probed (default 1).
    #[schema(minimum = 1, maximum = 255)]
    pub first_ttl: Option<i64>,
    /// `kind: path`: highest TTL probed (default 30).
    #[schema(minimum = 1, maximum = 255)]
    pub max_ttl: Option<i64>,
    /// `kind: path`: Paris flows per round (default 1).
    #[schema(minimum = 1, maximum = 16)]
    pub flows: Option<i64>,
    /// `kind: path`: what is sent at each hop (`icmp` or `udp`).
    pub protocol: Option<String>,
    /// `kind: path`: gap between two probes of a round (`10ms`; 1ms to 1s).
    pub pace: Option<String>,
    /// The port of a `tcp` or `udp` session (1-65535; required for those kinds only).
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<i64>,
    /// `udp` only: `closed` (the port unreachable is the reply, default) or `echo`.
    pub udp_mode: Option<String>,
}

impl StartRequest {
    /// The body in the request type every front shares.
    pub fn raw(&self) -> RawRequest {
        RawRequest {
            target: Some(self.target.clone()),
            kind: self.kind.clone(),
            count: self.count.map(|c| c.to_string()),
            duration: self.duration.clone(),
            interval: self.interval.clone(),
            timeout: self.timeout.clone(),
            size: self.size.map(|s| s.to_string()),
            family: self.family.clone(),
            ttl: self.ttl.map(|t| t.to_string()),
            tos: self.tos.map(|t| t.to_string()),
            port: self.port.map(|p| p.to_string()),
            udp_mode: self.udp_mode.clone(),
            ..RawRequest::default()
        }
    }
}

/// Why a session did not start. The HTTP layer maps each to its status in one place.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] RequestError),
    /// The daemon is stopping.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// `sessions.max_active` sessions run already.
    #[error("{max} sessions are running, the most sessions.max_active allows; retry when one ends")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// The target has no address in the asked family.
    #[error("cannot resolve {target}: {why}")]
    Unresolvable {
        /// The target as given.
        target: String,
        /// Why.
        why: String,
    },
    /// The access lists refuse the target's address.
    #[error("target {target} ({ip}) {denied}")]
    Denied {
        /// The target as given.
        target: String,
        /// Its address.
        ip: IpAddr,
        /// The rule that refused it.
        denied: Denied,
    },
    /// The store could not record the session.
    #[error("session store: {0}")]
    Store(#[from] StoreError),
}

/// A message of a session's live stream.
#[derive(Clone, Debug)]
pub enum LiveMsg {
    /// A probe outcome.
    Sample(Arc<Sample>),
    /// The session ended; this is its record, summary included.
    End(Arc<SessionRecord>),
}

struct Running {
    cancel: CancellationToken,
    // Why the session is being cancelled: stop request or shutdown.
    stop_status: Arc<Mutex<SessionStatus>>,
    samples: Vec<Arc<Sample>>,
    tx: broadcast::Sender<LiveMsg>,
    record: SessionRecord,
}

struct Shared {
    store: Store,
    pinger: Arc<dyn Pinger>,
    // Held briefly to add, remove, append to or copy a running session; never across an await.
    running: Mutex<HashMap<SessionId, Running>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// Cheap-clone handle to the session runner.
#[derive(Clone)]
pub struct SessionManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager").finish_non_exhaustive()
    }
}

/// What a live reader gets when it subscribes.
#[derive(Debug)]
pub enum Subscription {
    /// The session is running: the samples so far, then the stream.
    Running(Vec<Arc<Sample>>, broadcast::Receiver<LiveMsg>),
    /// The session has ended: its stored record and samples.
    Ended(Box<super::SessionDetail>),
}

/// Checks a start request against the config's limits and applies the session defaults.
pub fn validate(req: &StartRequest, config: &Config) -> Result<SessionParams, RequestError> {
    let defaults = Defaults {
        count: Some(u64::from(DEFAULT_COUNT)),
        interval: DEFAULT_INTERVAL,
        timeout: DEFAULT_TIMEOUT,
        ..Defaults::default()
    };
    let limits = Limits {
        max_interval: None,
        min_interval: config.sessions.min_interval,
        max_count: Some(u64::from(u32::MAX)),
        max_run: Some((config.sessions.max_duration, "sessions.max_duration")),
        one_address: true,
    };
    let r = probe::validate(&req.raw(), &defaults, &limits)?;
    let path = validate_path(&RawPath {
        first_ttl: req.first_ttl.map(|n| n.to_string()),
        max_ttl: req.max_ttl.map(|n| n.to_string()),
        flows: req.flows.map(|n| n.to_string()),
        protocol: req.protocol.clone(),
        pace: req.pace.clone(),
    })?;
    Ok(SessionParams {
        target: r.target,
        kind: r.kind,
        // max_count keeps it within u32.
        count: r.count.map(|c| u32::try_from(c).unwrap_or(u32::MAX)),
        duration: r.duration,
        interval: r.interval,
        timeout: r.timeout,
        size: r.size,
        family: r.family,
        ttl: r.options.ttl,
        tos: r.options.tos,
        path: (r.kind == ProbeKind::Path).then(|| PathParams::from(&path)),
        port: r.port.port,
        udp_mode: (r.kind == ProbeKind::Udp).then_some(r.port.udp_mode),
    })
}

impl SessionManager {
    /// A manager over this store and engine.
    pub fn new(store: Store, pinger: Arc<dyn Pinger>) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                pinger,
                running: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The store behind the manager.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Sessions running now.
    pub fn active(&self) -> usize {
        self.shared.running.lock().len()
    }

    /// Validates, resolves, checks access and limits, stores and starts a session.
    pub async fn start(
        &self,
        req: StartRequest,
        config: &Config,
        resolver: &Resolver,
    ) -> Result<SessionRecord, StartError> {
        let params = validate(&req, config)?;
        if self.shared.shutdown.is_cancelled() {
            return Err(StartError::ShuttingDown);
        }
        // Before the cap: with the file gone, 503 says what is wrong; a 429 would send clients
        // retrying for a slot that will not help.
        if self.shared.store.detached() {
            return Err(StoreError::Detached {
                path: self.shared.store.path().to_owned(),
            }
            .into());
        }
        let request = params.request();
        let ip = probe::resolve_one(resolver, &request, Instant::now() + RESOLVE_TIMEOUT)
            .await
            .map_err(|why| StartError::Unresolvable {
                target: params.target.clone(),
                why,
            })?;
        if let Err(denied) = config.access.check(ip) {
            return Err(StartError::Denied {
                target: params.target.clone(),
                ip,
                denied,
            });
        }
        // After the access lists: a target that will never be allowed gets 403 even when every
        // slot is taken, not a 429 that sends the client retrying for nothing.
        let max = config.sessions.max_active;
        if self.active() >= max {
            return Err(StartError::TooMany { max });
        }
        let record = SessionRecord::start(params.clone());
        let (tx, _) = broadcast::channel(LIVE_BUFFER);
        let cancel = self.shared.shutdown.child_token();
        let stop_status = Arc::new(Mutex::new(SessionStatus::Stopped));
        {
            // Check and insert under one lock so concurrent starts cannot pass max_active.
            let mut running = self.shared.running.lock();
            if running.len() >= max {
                return Err(StartError::TooMany { max });
            }
            running.insert(
                record.id,
                Running {
                    cancel: cancel.clone(),
                    stop_status: stop_status.clone(),
                    samples: Vec::new(),
                    tx: tx.clone(),
                    record: record.clone(),
                },
            );
        }
        // From here on the session's own task carries on, so that a request dropped half-way (a
        // client gone, the request timeout) can neither leave its slot taken nor a stored record
        // reading `running` with nothing behind it.
        let (created_tx, created_rx) = oneshot::channel();
        let manager = self.clone();
        let run_record = record.clone();
        self.shared.tracker.spawn(async move {
            if let Err(e) = manager.shared.store.create(&run_record).await {
                manager.shared.running.lock().remove(&run_record.id);
                let _ = created_tx.send(Err(e));
                return;
            }
            let _ = created_tx.send(Ok(()));
            manager.run(run_record, ip, cancel, stop_status).await;
        });
        match created_rx.await {
            Ok(Ok(())) => Ok(record),
            Ok(Err(e)) => Err(e.into()),
            // The task ended without a word: it panicked while storing.
            Err(_) => {
                self.shared.running.lock().remove(&record.id);
                Err(StoreError::Closed {
                    path: self.shared.store.path().to_owned(),
                }
                .into())
            }
        }
    }

    async fn run(
        &self,
        record: SessionRecord,
        ip: IpAddr,
        cancel: CancellationToken,
        stop_status: Arc<Mutex<SessionStatus>>,
    ) {
        let request = record.params.request();
        let id = record.id;
        let target = request.target.clone();
        let summary: Summary = match record.params.path {
            Some(path) => {
                probe::path::run::run(
                    &self.shared.pinger,
                    &request,
                    path.options(),
                    ip,
                    &cancel,
                    |p| self.publish(id, probe::path::hop_sample(&target, ip, p)),
                )
                .await
            }
            None => {
                let acc = probe::run(&self.shared.pinger, &request, ip, None, &cancel, |sample| {
                    self.publish(id, sample);
                })
                .await;
                probe::summary(&target, Some(ip), &acc)
            }
        };
        let status = if cancel.is_cancelled() {
            *stop_status.lock()
        } else {
            SessionStatus::Completed
        };
        let mut ended = record.clone();
        ended.status = status;
        ended.ended_at = Some(SystemTime::now());
        ended.summary = Some(summary.clone());
        let store = &self.shared.store;
        // Every queued sample is committed or counted lost before the count is taken.
        let _ = store.flush().await;
        let lost = store.samples_lost(id);
        let mut error =
            (status == SessionStatus::Interrupted).then(|| "daemon shut down".to_owned());
        if lost > 0 {
            let sent = summary.sent;
            let note = format!(
                "{lost} of the session's samples could not be stored (the store was full or failing); the summary counts all {sent} probes"
            );
            tracing::error!(session = %id, samples_lost = lost, "session ended with samples not stored");
            error = Some(match error {
                Some(e) => format!("{e}; {note}"),
                None => note,
            });
        }
        ended.error = error.clone();
        ended.samples_lost = lost;
        // The end must be recorded, or the session would read `running` until a restart marks it
        // interrupted: a store that is failing now (a full disk) gets a few more tries.
        let mut finish = Err(crate::session::StoreError::Closed {
            path: store.path().to_owned(),
        });
        for attempt in 0..FINISH_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(FINISH_RETRY).await;
            }
            finish = store
                .finish_with_loss(id, status, Some(summary.clone()), error.clone(), lost)
                .await;
            let failing = matches!(finish, Err(crate::session::StoreError::Write { .. }));
            if !failing || self.shared.shutdown.is_cancelled() {
                break;
            }
        }
        match &finish {
            Ok(()) => store.forget_lost(id),
            Err(e) => {
                tracing::error!(session = %id, error = %e, "cannot store the end of a session")
            }
        }
        let running = self.shared.running.lock().remove(&id);
        if let Some(r) = running {
            ended.sample_count = r.samples.len() as u64;
            let _ = r.tx.send(LiveMsg::End(Arc::new(ended)));
        }
    }

    fn publish(&self, id: SessionId, sample: Sample) {
        let sample = Arc::new(sample);
        {
            let mut running = self.shared.running.lock();
            if let Some(r) = running.get_mut(&id) {
                r.samples.push(sample.clone());
                // No reader is fine; a lagging reader is told by its receiver.
                let _ = r.tx.send(LiveMsg::Sample(sample.clone()));
            }
        }
        // Never waits: a full store queue drops the sample and counts it.
        if !self.shared.store.append(id, (*sample).clone()) {
            tracing::warn!(session = %id, "session store queue full; sample not stored");
        }
    }

    /// Whether session `id` is running and was already asked to stop (it is winding down).
    pub fn stopping(&self, id: SessionId) -> bool {
        self.shared
            .running
            .lock()
            .get(&id)
            .is_some_and(|r| r.cancel.is_cancelled())
    }

    /// Stops a running session; `Ok(false)` if it is not running.
    pub fn stop(&self, id: SessionId) -> bool {
        let running = self.shared.running.lock();
        match running.get(&id) {
            Some(r) => {
                *r.stop_status.lock() = SessionStatus::Stopped;
                r.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// The record of a running session (status `running`), if it is running.
    pub fn running_record(&self, id: SessionId) -> Option<(SessionRecord, Vec<Arc<Sample>>)> {
        let running = self.shared.running.lock();
        running.get(&id).map(|r| {
            let mut rec = r.record.clone();
            rec.sample_count = r.samples.len() as u64;
            (rec, r.samples.clone())
        })
    }

    /// Subscribes to a session: running → replay + stream; ended → the stored detail.
    pub async fn subscribe(&self, id: SessionId) -> Result<Option<Subscription>, StoreError> {
        {
            let running = self.shared.running.lock();
            if let Some(r) = running.get(&id) {
                return Ok(Some(Subscription::Running(
                    r.samples.clone(),
                    r.tx.subscribe(),
                )));
            }
        }
        // Ended: make sure its last samples are committed before reading them back.
        self.shared.store.flush().await?;
        Ok(self
            .shared
            .store
            .get(id)
            .await?
            .map(|d| Subscription::Ended(Box::new(d))))
    }

    /// Interrupts every running session, records them, and closes the store (bounded by the caller).
    pub async fn shutdown(&self) {
        {
            let running = self.shared.running.lock();
            for r in running.values() {
                *r.stop_status.lock() = SessionStatus::Interrupted;
            }
        }
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        if let Err(e) = self.shared.store.close().await {
            tracing::error!(error = %e, "closing the session store");
        }
    }
}

/// Duration as the API spells it.
pub fn spell(d: Duration) -> String {
    format_duration(d)
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
