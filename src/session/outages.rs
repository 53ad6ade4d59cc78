//! Outage history (issue 18 part 3): the stored shape of an outage, the queue the monitors write
//! it through, and its statements. The rows live in the session database (same file, writer and
//! retention); the monitors never wait for it: [`OutageLog::note`] drops and counts when full.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::db::{from_us, to_us};
use super::store::Retention;
use crate::config::CaptureRule;

/// Where an outage stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutageStatus {
    /// Still going on.
    Open,
    /// Ended by `outage.until` replies in a row.
    Ended,
    /// Cut by a stop, a crash, a reload or the address going away; ends at its last lost probe.
    Interrupted,
}

impl OutageStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Ended => "ended",
            Self::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "open" => Self::Open,
            "ended" => Self::Ended,
            _ => Self::Interrupted,
        }
    }
}

/// One outage of a monitored address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutageRecord {
    /// Row id (0 before it is stored); the `before` cursor of the list.
    pub id: i64,
    /// Target name.
    pub target: String,
    /// The address.
    #[schema(value_type = String)]
    pub ip: IpAddr,
    /// Send time of the first lost probe (RFC 3339).
    #[serde(with = "super::model::time_str")]
    #[schema(value_type = String)]
    pub start: SystemTime,
    /// Send time of the first reply of the run that ended it; for `interrupted`, its last lost
    /// probe; absent while open.
    #[serde(
        default,
        with = "super::model::time_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub end: Option<SystemTime>,
    /// Send time of the last lost probe.
    #[serde(with = "super::model::time_str")]
    #[schema(value_type = String)]
    pub last_lost: SystemTime,
    /// Probes lost from start to end.
    pub lost: u64,
    /// Of those, the ones answered by an ICMP error.
    pub icmp_errors: u64,
    /// Where it stands.
    pub status: OutageStatus,
    /// The path session that captured the path when it began (or a loss capture of the
    /// address shortly before), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_session: Option<String>,
}

/// Which outages a list wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutageQuery {
    /// Only this target.
    pub target: Option<String>,
    /// Only outages still going on at or after this time (end ≥ since, or open).
    pub since: Option<SystemTime>,
    /// Only outages that began before this time.
    pub until: Option<SystemTime>,
    /// Only ids below this (the previous page's `next_cursor`).
    pub before: Option<i64>,
    /// Page size, clamped to `1..=MAX_PAGE`.
    pub limit: u32,
}

/// One page of outages, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutagePage {
    /// Outages of this page, newest first.
    pub items: Vec<OutageRecord>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
}

/// What the monitors send through an [`OutageLog`]: their outages for the history, and what may
/// start a capture, each with the target's `capture:` rule as the monitor had it.
#[derive(Clone, Debug, PartialEq)]
pub enum OutageNote {
    /// An outage as it stands; its first note (status `open`) may start a capture.
    Outage {
        rec: OutageRecord,
        capture: CaptureRule,
    },
    /// The window loss of the address reached the target's `alert.loss` from below
    /// (`capture.on_loss`).
    LossCrossed {
        target: String,
        ip: IpAddr,
        capture: CaptureRule,
    },
}

/// The monitors' end of the outage history (and of the captures it may start): a bounded queue to
/// whoever stores it, in the order the monitors saw things. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OutageLog {
    tx: Option<tokio::sync::mpsc::Sender<OutageNote>>,
    dropped: Arc<AtomicU64>,
}

impl OutageLog {
    /// A log and the receiver the store side drains; `capacity` notes wait at most.
    pub fn new(capacity: usize) -> (Self, tokio::sync::mpsc::Receiver<OutageNote>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (
            Self {
                tx: Some(tx),
                dropped: Arc::default(),
            },
            rx,
        )
    }

    /// A log that keeps nothing (tests, and daemons without a store).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            dropped: Arc::default(),
        }
    }

    /// Queues a note, never waiting; a full queue drops and counts it (the next change of the
    /// same outage carries its figures again).
    pub fn note(&self, note: OutageNote) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(note).is_err() {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before == 0 || (before + 1).is_multiple_of(10_000) {
                tracing::warn!(dropped_total = before + 1, "outage history queue full");
            }
        }
    }

    /// Notes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes the outage as it stands (the row of its target, address and start).
pub(crate) fn upsert(conn: &Connection, rec: &OutageRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO outages (target, ip, start_us, end_us, last_lost_us, lost, icmp_errors, status, capture_session) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (target, ip, start_us) DO UPDATE SET end_us = excluded.end_us, \
           last_lost_us = excluded.last_lost_us, lost = excluded.lost, icmp_errors = excluded.icmp_errors, \
           status = excluded.status, capture_session = coalesce(excluded.capture_session, capture_session) \
         WHERE outages.status = 'open'",
    )?
    .execute(params![
        rec.target,
        rec.ip.to_string(),
        to_us(rec.start),
        rec.end.map(to_us),
        to_us(rec.last_lost),
        i64::try_from(rec.lost).unwrap_or(i64::MAX),
        i64::try_from(rec.icmp_errors).unwrap_or(i64::MAX),
        rec.status.as_str(),
        rec.capture_session,
    ])?;
    Ok(())
}

/// Closes every `open` outage as `interrupted` at its last lost probe (found at start: the
/// daemon stopped or crashed during it). Returns how many.
pub(crate) fn mark_interrupted(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE outages SET status = 'interrupted', end_us = last_lost_us WHERE status = 'open'",
        [],
    )
}

/// Deletes ended outages older than `max_age` or beyond the newest `max_sessions` (the
/// sessions' retention, applied to outages on their own).
pub(crate) fn apply_retention(
    conn: &Connection,
    retention: &Retention,
    now: SystemTime,
) -> rusqlite::Result<usize> {
    super::db::Retained {
        table: "outages",
        live: "open",
        time: "start_us",
        no_id: "0",
    }
    .apply(conn, retention, now)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutageRecord> {
    let ip: String = r.get(2)?;
    let status: String = r.get(8)?;
    Ok(OutageRecord {
        id: r.get(0)?,
        target: r.get(1)?,
        ip: ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        start: from_us(r.get(3)?),
        end: r.get::<_, Option<i64>>(4)?.map(from_us),
        last_lost: from_us(r.get(5)?),
        lost: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
        icmp_errors: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
        status: OutageStatus::parse(&status),
        capture_session: r.get(9)?,
    })
}

/// One page of outages, newest first.
pub(crate) fn list(
    conn: &Connection,
    path: &Path,
    q: &OutageQuery,
) -> Result<OutagePage, StoreError> {
    let limit = q.limit.clamp(1, super::MAX_PAGE);
    let sqlite = |source| StoreError::Sqlite {
        op: "list outages",
        path: path.to_owned(),
        source,
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, target, ip, start_us, end_us, last_lost_us, lost, icmp_errors, status, capture_session \
             FROM outages WHERE (?1 IS NULL OR target = ?1) \
               AND (?2 IS NULL OR end_us IS NULL OR end_us >= ?2) \
               AND (?3 IS NULL OR start_us < ?3) \
               AND (?4 IS NULL OR id < ?4) \
             ORDER BY id DESC LIMIT ?5",
        )
        .map_err(sqlite)?;
    let items = stmt
        .query_map(
            params![
                q.target,
                q.since.map(to_us),
                q.until.map(to_us),
                q.before,
                i64::from(limit) + 1
            ],
            row,
        )
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(sqlite)?;
    let mut items = items;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|r| r.id)
    } else {
        None
    };
    Ok(OutagePage { items, next_cursor })
}

/// The outage `id`, or `None`.
pub(crate) fn get(
    conn: &Connection,
    path: &Path,
    id: i64,
) -> Result<Option<OutageRecord>, StoreError> {
    conn.query_row(
        "SELECT id, target, ip, start_us, end_us, last_lost_us, lost, icmp_errors, status, capture_session \
         FROM outages WHERE id = ?1",
        params![id],
        row,
    )
    .optional()
    .map_err(|source| StoreError::Sqlite {
        op: "read an outage",
        path: path.to_owned(),
        source,
    })
}
