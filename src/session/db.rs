//! SQLite access shared by the writer thread and the readers: opening, schema migrations, and the
//! statements for each operation. Nothing here is async; callers run it on a blocking thread.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
};

use super::StoreError;
use super::model::{Page, SessionDetail, SessionId, SessionRecord, SessionStatus};
use super::store::Retention;
use crate::sample::Sample;

/// Schema migrations in order; migration `i` (0-based) brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_samples_lost.sql"),
    include_str!("migrations/0003_outages.sql"),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session without an end was closed at open.
pub const INTERRUPTED_MESSAGE: &str = "pingscope stopped while the session was running";

fn sqlite_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |source| {
        if source.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
            StoreError::NotADatabase {
                path: path.to_owned(),
            }
        } else {
            StoreError::Sqlite {
                op,
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// Refuses a file that exists, is not empty and does not start with the SQLite header, before
/// SQLite gets a chance to touch it.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                op: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut header = [0u8; 16];
    let mut got = 0;
    while got < header.len() {
        match file.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(source) => {
                return Err(StoreError::Io {
                    op: "read",
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    if got == 0 || (got == header.len() && &header == b"SQLite format 3\0") {
        Ok(())
    } else {
        Err(StoreError::NotADatabase {
            path: path.to_owned(),
        })
    }
}

/// How long `open` waits for another store on the same file (e.g. one still closing) to let go.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The lock that keeps a second store (in this or another process) off the same database: a
/// second one would mark the first one's running sessions interrupted. A sibling file, since
/// closing any descriptor of the database itself would drop SQLite's own POSIX locks.
pub(crate) type StoreLock = Flock<fs::File>;

fn lock(path: &Path) -> Result<StoreLock, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push("-lock");
    let lock_path = PathBuf::from(lock_path);
    let io = |source| StoreError::Io {
        op: "create the lock file of",
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(StoreError::InUse {
                    path: path.to_owned(),
                });
            }
            Err((_, e)) => return Err(io(std::io::Error::from(e))),
        }
    }
}

/// The first half of opening the database for writing, which needs no SQLite: creates the
/// folder, refuses a file that is not an SQLite database, and takes the store's lock.
pub(crate) fn claim(path: &Path) -> Result<StoreLock, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    check_header(path)?;
    lock(path)
}

/// Opens (creating it when missing) a database [`claim`]ed by this process for writing, and
/// migrates it.
pub(crate) fn open_claimed(
    path: &Path,
    lock: StoreLock,
) -> Result<(Connection, StoreLock), StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sqlite_err("set busy_timeout", path))?;
    // Read the version before anything writes: a newer schema is left exactly as it is.
    let found = user_version(&conn, path)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        // Version 0 with tables: another program's database, which migrating would alter.
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(sqlite_err("read the schema", path))?;
        if tables > 0 {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
            });
        }
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
        .map_err(sqlite_err("enable WAL", path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NoWal {
            path: path.to_owned(),
            mode,
        });
    }
    // NORMAL in WAL mode: a commit survives a killed process; only an OS crash may lose the last ones.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite_err("set synchronous", path))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sqlite_err("enable foreign keys", path))?;
    migrate(&mut conn, path)?;
    Ok((conn, lock))
}

/// Opens a read-only connection to a database `open_claimed` has prepared.
pub(crate) fn open_read(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sqlite_err("set busy_timeout", path))?;
    Ok(conn)
}

fn user_version(conn: &Connection, path: &Path) -> Result<u32, StoreError> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite_err("read the schema version", path))?;
    // A negative version was not written by pingscope: treat it as unknown and newer.
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as u32 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| StoreError::Migrate {
                path: path.to_owned(),
                version,
                source,
            })?;
        // Re-read inside the write lock: another process may have migrated meanwhile.
        let current = user_version(&tx, path)?;
        if current > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        if current >= version {
            continue;
        }
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version))
            .and_then(|()| tx.commit())
            .map_err(|source| StoreError::Migrate {
                path: path.to_owned(),
                version,
                source,
            })?;
        tracing::info!(path = %path.display(), version, "session database migrated");
    }
    Ok(())
}

/// Microseconds since the Unix epoch (0 for earlier times).
pub(crate) fn to_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

pub(crate) fn from_us(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Serializing these plain structs to a String cannot fail; an empty object is a safe fallback.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}

/// Marks every `running` session `interrupted`; returns how many there were.
pub(crate) fn mark_interrupted(conn: &Connection, path: &Path) -> Result<usize, StoreError> {
    conn.execute(
        "UPDATE sessions SET status = 'interrupted', error = coalesce(error, ?1) WHERE status = 'running'",
        params![INTERRUPTED_MESSAGE],
    )
    .map_err(sqlite_err("mark running sessions interrupted", path))
}

/// Deletes ended sessions beyond the newest `max_sessions` or created before `now - max_age`.
/// Running sessions are never deleted (they still count towards `max_sessions`).
pub(crate) fn apply_retention(
    conn: &Connection,
    retention: &Retention,
    now: SystemTime,
) -> rusqlite::Result<usize> {
    let sessions = Retained {
        table: "sessions",
        live: "running",
        time: "created_us",
        no_id: "''",
    };
    Ok(sessions.apply(conn, retention, now)?
        + super::outages::apply_retention(conn, retention, now)?)
}

/// A table under the sessions' retention: its rows in any status but `live` are deleted when
/// `time` is before `now - max_age`, or when they are older (by id) than the newest
/// `max_sessions` rows. The names are this module's constants, never input.
pub(crate) struct Retained {
    /// The table.
    pub(crate) table: &'static str,
    /// The status of rows that are never deleted.
    pub(crate) live: &'static str,
    /// The column of the row's time (µs since the epoch).
    pub(crate) time: &'static str,
    /// An id below every id of the table (its type's least value).
    pub(crate) no_id: &'static str,
}

impl Retained {
    /// Applies `retention` at `now`; returns how many rows went.
    pub(crate) fn apply(
        &self,
        conn: &Connection,
        retention: &Retention,
        now: SystemTime,
    ) -> rusqlite::Result<usize> {
        let Self {
            table,
            live,
            time,
            no_id,
        } = self;
        let mut deleted = 0;
        if let Some(age) = retention.max_age {
            let cutoff = now.checked_sub(age).map_or(i64::MIN, to_us);
            deleted += conn.execute(
                &format!("DELETE FROM {table} WHERE status != '{live}' AND {time} < ?1"),
                params![cutoff],
            )?;
        }
        if let Some(max) = retention.max_sessions {
            let keep = i64::try_from(max).unwrap_or(i64::MAX);
            deleted += conn.execute(
                &format!(
                    "DELETE FROM {table} WHERE status != '{live}' AND id < coalesce( \
                       (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?1 - 1), {no_id})"
                ),
                params![keep],
            )?;
        }
        Ok(deleted)
    }
}

pub(crate) fn insert_session(tx: &Connection, rec: &SessionRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO sessions (id, params, status, created_us, started_us, ended_us, error, summary) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        rec.id.to_string(),
        json(&rec.params),
        rec.status.as_str(),
        to_us(rec.created_at),
        rec.started_at.map(to_us),
        rec.ended_at.map(to_us),
        rec.error,
        rec.summary.as_ref().map(json),
    ])?;
    Ok(())
}

/// Inserts `samples` of session `id` and counts them; false (storing none) for an unknown session.
pub(crate) fn insert_samples(
    tx: &Connection,
    id: &SessionId,
    samples: &[Sample],
) -> rusqlite::Result<bool> {
    let id = id.to_string();
    let counted = tx
        .prepare_cached("UPDATE sessions SET sample_count = sample_count + ?2 WHERE id = ?1")?
        .execute(params![id, samples.len() as i64])?;
    if counted == 0 {
        return Ok(false);
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO samples (session_id, seq, type, ts, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for s in samples {
        let seq = s.seq.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let kind = serde_json::to_value(s.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        insert.execute(params![id, seq, kind.unwrap_or_default(), s.ts, json(s)])?;
    }
    Ok(true)
}

/// The end of a session, as handed to the writer.
#[derive(Debug)]
pub(crate) struct Finish {
    pub id: SessionId,
    pub status: SessionStatus,
    pub summary: Option<crate::sample::Summary>,
    pub error: Option<String>,
    pub ended_at: SystemTime,
    /// Samples the store could not keep.
    pub samples_lost: u64,
}

/// Records the end of a session; false when there is no such session.
pub(crate) fn finish(tx: &Connection, f: &Finish) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached("UPDATE sessions SET status = ?2, summary = ?3, error = ?4, ended_us = ?5, samples_lost = ?6 WHERE id = ?1")?
        .execute(params![
            f.id.to_string(),
            f.status.as_str(),
            f.summary.as_ref().map(json),
            f.error,
            to_us(f.ended_at),
            i64::try_from(f.samples_lost).unwrap_or(i64::MAX)
        ])?;
    Ok(n > 0)
}

/// What deleting a session found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Deleted {
    Yes,
    Missing,
    Running,
}

pub(crate) fn delete(tx: &Connection, id: &SessionId) -> rusqlite::Result<Deleted> {
    let id = id.to_string();
    let status: Option<String> = tx
        .prepare_cached("SELECT status FROM sessions WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    match status.as_deref() {
        None => Ok(Deleted::Missing),
        Some("running") => Ok(Deleted::Running),
        Some(_) => {
            tx.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
                .execute(params![id])?;
            Ok(Deleted::Yes)
        }
    }
}

const RECORD_COLUMNS: &str = "id, params, status, created_us, started_us, ended_us, error, summary, sample_count, samples_lost";

fn record_from_row(row: &Row<'_>, path: &Path) -> Result<SessionRecord, StoreError> {
    let sql = |source| StoreError::Sqlite {
        op: "read a session",
        path: path.to_owned(),
        source,
    };
    let corrupt = |what: &str, detail: String| StoreError::Corrupt {
        path: path.to_owned(),
        what: what.to_owned(),
        detail,
    };
    let id: String = row.get(0).map_err(sql)?;
    let id: SessionId = id
        .parse()
        .map_err(|e: super::model::ParseSessionIdError| corrupt("session id", e.to_string()))?;
    let params: String = row.get(1).map_err(sql)?;
    let params = serde_json::from_str(&params)
        .map_err(|e| corrupt("params", format!("session {id}: {e}")))?;
    let status: String = row.get(2).map_err(sql)?;
    let status = SessionStatus::from_name(&status)
        .ok_or_else(|| corrupt("status", format!("session {id}: {status:?}")))?;
    let summary: Option<String> = row.get(7).map_err(sql)?;
    let summary = summary
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| corrupt("summary", format!("session {id}: {e}")))?;
    let count: i64 = row.get(8).map_err(sql)?;
    let lost: i64 = row.get(9).map_err(sql)?;
    Ok(SessionRecord {
        id,
        params,
        status,
        created_at: from_us(row.get(3).map_err(sql)?),
        started_at: row.get::<_, Option<i64>>(4).map_err(sql)?.map(from_us),
        ended_at: row.get::<_, Option<i64>>(5).map_err(sql)?.map(from_us),
        error: row.get(6).map_err(sql)?,
        summary,
        sample_count: u64::try_from(count).unwrap_or(0),
        samples_lost: u64::try_from(lost).unwrap_or(0),
    })
}

/// The session `id` with every sample in arrival order, read in one snapshot.
pub(crate) fn get(
    conn: &mut Connection,
    path: &Path,
    id: &SessionId,
) -> Result<Option<SessionDetail>, StoreError> {
    let tx = conn
        .transaction()
        .map_err(sqlite_err("begin a read", path))?;
    let key = id.to_string();
    let record = {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM sessions WHERE id = ?1"
            ))
            .map_err(sqlite_err("read a session", path))?;
        let mut rows = stmt
            .query(params![key])
            .map_err(sqlite_err("read a session", path))?;
        match rows.next().map_err(sqlite_err("read a session", path))? {
            Some(row) => record_from_row(row, path)?,
            None => return Ok(None),
        }
    };
    let mut samples = Vec::with_capacity(
        usize::try_from(record.sample_count)
            .unwrap_or(0)
            .min(1 << 16),
    );
    {
        let mut stmt = tx
            .prepare_cached("SELECT body FROM samples WHERE session_id = ?1 ORDER BY n")
            .map_err(sqlite_err("read samples", path))?;
        let mut rows = stmt
            .query(params![key])
            .map_err(sqlite_err("read samples", path))?;
        while let Some(row) = rows.next().map_err(sqlite_err("read samples", path))? {
            let body: String = row.get(0).map_err(sqlite_err("read samples", path))?;
            let sample = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                path: path.to_owned(),
                what: "sample".to_owned(),
                detail: format!("session {id}: {e}"),
            })?;
            samples.push(sample);
        }
    }
    Ok(Some(SessionDetail { record, samples }))
}

/// Up to `limit` sessions older than `before` (all when `None`), newest first.
pub(crate) fn list(
    conn: &mut Connection,
    path: &Path,
    limit: u32,
    before: Option<&SessionId>,
) -> Result<Page, StoreError> {
    let tx = conn
        .transaction()
        .map_err(sqlite_err("begin a read", path))?;
    let before = before.map(ToString::to_string);
    let mut items = Vec::new();
    {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM sessions WHERE ?1 IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(sqlite_err("list sessions", path))?;
        // One more than asked tells whether there is a next page.
        let mut rows = stmt
            .query(params![before, i64::from(limit) + 1])
            .map_err(sqlite_err("list sessions", path))?;
        while let Some(row) = rows.next().map_err(sqlite_err("list sessions", path))? {
            items.push(record_from_row(row, path)?);
        }
    }
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|r| r.id)
    } else {
        None
    };
    let total: i64 = tx
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .map_err(sqlite_err("count sessions", path))?;
    Ok(Page {
        items,
        next_cursor,
        total: u64::try_from(total).unwrap_or(0),
    })
}
