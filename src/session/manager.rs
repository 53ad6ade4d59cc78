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

use axum::http::StatusCode;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{SessionId, SessionParams, SessionRecord, SessionStatus, Store, StoreError};
use crate::burst::{self, BurstEvent, BurstPlan};
use crate::config::{Config, format_duration, parse_duration};
use crate::engine::{Pinger, ProbeSpec, SocketOptions};
use crate::http::error::ApiError;
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

/// The body of `POST /api/v1/sessions` (and `POST /start_test`).
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Host name or address to ping.
    #[schema(min_length = 1, max_length = 253, pattern = "\\S")]
    pub target: String,
    /// Number of probes (default 10 when no duration is given).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub count: Option<u32>,
    /// How long to run, e.g. `"30s"`; with `count`, whichever ends first.
    #[serde(default)]
    pub duration: Option<String>,
    /// Time between probes, e.g. `"200ms"` (default `"1s"`).
    #[serde(default)]
    pub interval: Option<String>,
    /// Per-probe timeout, e.g. `"1s"` (default `"2s"`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// ICMP payload bytes (default 56; at most 65507 over IPv4, 65527 over IPv6).
    #[serde(default)]
    #[schema(maximum = 65527)]
    pub size: Option<u32>,
    /// `auto`, `ip4` or `ip6`.
    #[serde(default)]
    pub family: Option<Family>,
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

fn bad(msg: String) -> ApiError {
    ApiError::bad_request(msg)
}

fn field_duration(field: &str, v: &Option<String>) -> Result<Option<Duration>, ApiError> {
    v.as_deref()
        .map(|s| parse_duration(s).map_err(|e| bad(format!("invalid field \"{field}\": {e}"))))
        .transpose()
}

/// Checks a start request against the config and applies defaults.
pub fn validate(req: &StartRequest, config: &Config) -> Result<SessionParams, ApiError> {
    let target = req.target.trim();
    if target.is_empty() {
        return Err(bad("invalid field \"target\": must not be empty".to_owned()));
    }
    // Counted as the spec's maxLength counts: characters, before trimming.
    if req.target.chars().count() > 253 {
        return Err(bad(
            "invalid field \"target\": longer than 253 characters".to_owned()
        ));
    }
    let limits = &config.sessions;
    let interval = field_duration("interval", &req.interval)?.unwrap_or(DEFAULT_INTERVAL);
    if interval < limits.min_interval {
        return Err(bad(format!(
            "invalid field \"interval\": below the minimum of {}",
            format_duration(limits.min_interval)
        )));
    }
    let timeout = field_duration("timeout", &req.timeout)?.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        return Err(bad(
            "invalid field \"timeout\": must be greater than 0 and at most 1m".to_owned(),
        ));
    }
    let duration = field_duration("duration", &req.duration)?;
    if duration.is_some_and(|d| d.is_zero()) {
        return Err(bad(
            "invalid field \"duration\": must be greater than 0".to_owned()
        ));
    }
    if req.count == Some(0) {
        return Err(bad("invalid field \"count\": must be at least 1".to_owned()));
    }
    let count = match (req.count, duration) {
        (None, None) => Some(DEFAULT_COUNT),
        (c, _) => c,
    };
    // The longest this session can run: its duration, or count × interval plus the last timeout.
    let planned = match (count, duration) {
        (Some(c), d) => {
            let by_count = interval.saturating_mul(c.saturating_sub(1)) + timeout;
            d.map_or(by_count, |d| d.min(by_count))
        }
        (None, Some(d)) => d,
        (None, None) => Duration::ZERO,
    };
    if planned > limits.max_duration {
        return Err(bad(format!(
            "session would run {}, above sessions.max_duration {} (lower \"count\" or \"duration\", or raise \"interval\")",
            format_duration(planned),
            format_duration(limits.max_duration)
        )));
    }
    let family = req.family.unwrap_or(Family::Auto);
    if family == Family::All {
        return Err(bad(
            "invalid field \"family\": use auto, ip4 or ip6 (a session probes one address)"
                .to_owned(),
        ));
    }
    let size = req.size.unwrap_or(56);
    let max = if family == Family::Ip6 {
        crate::cli::MAX_PAYLOAD_V6
    } else {
        crate::cli::MAX_PAYLOAD_V4
    };
    if size > max {
        return Err(bad(format!(
            "invalid field \"size\": {size} is above the protocol maximum of {max} bytes"
        )));
    }
    Ok(SessionParams {
        target: target.to_owned(),
        count,
        duration,
        interval,
        timeout,
        size: u16::try_from(size).unwrap_or(u16::MAX),
        family,
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
    ) -> Result<SessionRecord, ApiError> {
        let params = validate(&req, config)?;
        if self.shared.shutdown.is_cancelled() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the daemon is shutting down",
            ));
        }
        if self.active() >= config.sessions.max_active {
            return Err(too_many(config.sessions.max_active));
        }
        let lookup = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            resolver.lookup(&params.target, params.family),
        )
        .await;
        let ip: IpAddr = match lookup {
            Ok(Ok(r)) => match r.addrs.first() {
                Some(ip) => *ip,
                None => return Err(unresolvable(&params.target, "no address")),
            },
            Ok(Err(e)) => return Err(unresolvable(&params.target, &e.to_string())),
            Err(_) => return Err(unresolvable(&params.target, "lookup timed out")),
        };
        if let Err(denied) = config.access.check(ip) {
            return Err(ApiError::denied(&params.target, ip, &denied));
        }
        let record = SessionRecord::start(params.clone());
        let (tx, _) = broadcast::channel(LIVE_BUFFER);
        let cancel = self.shared.shutdown.child_token();
        let stop_status = Arc::new(Mutex::new(SessionStatus::Stopped));
        {
            // Check and insert under one lock so concurrent starts cannot pass max_active.
            let mut running = self.shared.running.lock();
            if running.len() >= config.sessions.max_active {
                return Err(too_many(config.sessions.max_active));
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
        if let Err(e) = self.shared.store.create(&record).await {
            self.shared.running.lock().remove(&record.id);
            return Err(store_error(&e));
        }
        let manager = self.clone();
        let run_record = record.clone();
        self.shared.tracker.spawn(async move {
            manager.run(run_record, ip, cancel, stop_status).await;
        });
        Ok(record)
    }

    async fn run(
        &self,
        record: SessionRecord,
        ip: IpAddr,
        cancel: CancellationToken,
        stop_status: Arc<Mutex<SessionStatus>>,
    ) {
        let p = &record.params;
        let started = Instant::now();
        let deadline = started + p.duration.unwrap_or(Duration::from_secs(365 * 86_400));
        let plan = BurstPlan {
            spec: ProbeSpec {
                ip,
                size: p.size,
                timeout: p.timeout,
                options: SocketOptions::default(),
            },
            count: p.count.map(u64::from),
            interval: p.interval,
            deadline: deadline + p.timeout,
        };
        let id = record.id;
        let target = p.target.clone();
        let acc = burst::run(self.shared.pinger.clone(), plan, cancel.clone(), |ev| {
            let sample = match ev {
                BurstEvent::Probe(ev) => Sample::from_event(&target, &target, &ev),
                BurstEvent::SendFailed { seq, error } => {
                    Sample::local_error(&target, &target, Some(ip), Some(seq), error)
                }
            };
            self.publish(id, sample);
        })
        .await;
        let status = if cancel.is_cancelled() {
            *stop_status.lock()
        } else {
            SessionStatus::Completed
        };
        let summary: Summary = crate::ping::summary(&target, Some(ip), &acc);
        let mut ended = record.clone();
        ended.status = status;
        ended.ended_at = Some(SystemTime::now());
        ended.summary = Some(summary.clone());
        let error = (status == SessionStatus::Interrupted).then(|| "daemon shut down".to_owned());
        ended.error = error.clone();
        let finish = self
            .shared
            .store
            .finish(id, status, Some(summary), error)
            .await;
        if let Err(e) = &finish {
            tracing::error!(session = %id, error = %e, "cannot store the end of a session");
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

fn too_many(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_sessions",
        format!(
            "{max} sessions are running, the most sessions.max_active allows; retry when one ends"
        ),
    )
}

fn unresolvable(target: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unresolvable_target",
        format!("invalid field \"target\": cannot resolve {target}: {why}"),
    )
}

/// Maps a store failure to a 500/503 with its message.
pub fn store_error(e: &StoreError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!("session store: {e}"),
    )
}

/// Duration as the API spells it.
pub fn spell(d: Duration) -> String {
    format_duration(d)
}
