//! The session store handle: writes queued to the writer thread, reads on blocking threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;
use super::db::{self, Finish};
use super::model::{Page, SessionDetail, SessionId, SessionRecord, SessionStatus};
use super::writer::{Counters, Inbox, Op, Writer};
use crate::sample::{Sample, Summary};

/// The longest batch interval: a killed process loses at most this much of its samples.
pub const MAX_BATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The most sessions one page of [`Store::list`] returns.
pub const MAX_PAGE: u32 = 1000;

/// Idle read connections kept for reuse.
const READ_POOL: usize = 4;

/// Which ended sessions are deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many sessions (running ones count but are never deleted); `None`: no cap.
    pub max_sessions: Option<u64>,
    /// Delete ended sessions created longer ago than this; `None`: keep forever.
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_sessions: Some(1000),
            max_age: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// How the store queues and keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Writes that may wait for the writer; samples beyond it are dropped and counted.
    pub queue_capacity: usize,
    /// Writes received within this interval share one transaction; capped at [`MAX_BATCH_INTERVAL`].
    pub batch_interval: Duration,
    /// Which ended sessions are deleted.
    pub retention: Retention,
    /// How often retention runs besides at open and after each finish (at least 10 ms).
    pub retention_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            batch_interval: Duration::from_millis(100),
            retention: Retention::default(),
            retention_interval: Duration::from_secs(300),
        }
    }
}

/// Handle to the session store; clones share one writer thread and one read pool.
#[derive(Clone, Debug)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    tx: Sender<Op>,
    /// Most ops queued for the writer before samples are dropped.
    capacity: usize,
    counters: Arc<Counters>,
    /// (device, inode) of the database file when it was opened.
    identity: Option<(u64, u64)>,
    // Idle read connections. A plain mutex: held only to push or pop, never across a query.
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `path`, creating the file and its folder when missing, migrating the
    /// schema, marking sessions left `running` as `interrupted`, applying retention and starting
    /// the writer thread.
    ///
    /// Blocking (file system and SQLite): call it before serving, or from `spawn_blocking`.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        Self::claim(path)?.open(opts)
    }

    /// The first half of [`Store::open`], without SQLite: creates the folder, checks that an
    /// existing file is an SQLite database and takes the store's lock, so a wrong path or a
    /// second store on the file fails here. Blocking, like `open`.
    pub fn claim(path: &Path) -> Result<Claim, StoreError> {
        Ok(Claim {
            path: path.to_owned(),
            lock: db::claim(path)?,
        })
    }
}

/// A database claimed by [`Store::claim`]: the lock is held until it is opened or dropped.
///
/// The daemon claims its database at start and opens it at the first use of sessions: opening
/// runs SQLite (migrations, `interrupted` marks, retention), whose code then stays resident,
/// about 1 MiB of a daemon that may never run a session.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    lock: db::StoreLock,
}

impl Claim {
    /// The rest of [`Store::open`]. Blocking.
    pub fn open(self, opts: StoreOptions) -> Result<Store, StoreError> {
        let path = self.path.as_path();
        let (mut conn, lock) = db::open_claimed(path, self.lock)?;
        let interrupted = db::mark_interrupted(&conn, path)?;
        let outages =
            super::outages::mark_interrupted(&conn).map_err(|source| StoreError::Sqlite {
                op: "mark open outages interrupted",
                path: path.to_owned(),
                source,
            })?;
        if outages > 0 {
            tracing::info!(path = %path.display(), outages, "outages cut by a restart marked interrupted");
        }
        if interrupted > 0 {
            tracing::info!(path = %path.display(), sessions = interrupted, "sessions cut by a restart marked interrupted");
        }
        let retention = Retention {
            // Zero would delete every ended session, which no one means by a cap.
            max_sessions: opts.retention.max_sessions.map(|n| n.max(1)),
            ..opts.retention
        };
        let deleted = conn
            .transaction()
            .and_then(|tx| {
                let n = db::apply_retention(&tx, &retention, SystemTime::now())?;
                tx.commit().map(|()| n)
            })
            .map_err(|source| StoreError::Sqlite {
                op: "apply retention",
                path: path.to_owned(),
                source,
            })?;
        if deleted > 0 {
            tracing::info!(path = %path.display(), sessions = deleted, "old sessions deleted");
        }
        let (tx, rx) = channel();
        let counters = Arc::new(Counters::default());
        let identity = super::writer::identity(path);
        let writer = Writer {
            conn,
            _lock: lock,
            rx: Inbox::new(rx, Arc::clone(&counters)),
            path: path.to_owned(),
            batch_interval: opts.batch_interval.min(MAX_BATCH_INTERVAL),
            retention,
            retention_every: opts.retention_interval.max(Duration::from_millis(10)),
            counters: Arc::clone(&counters),
            identity,
        };
        let handle = std::thread::Builder::new()
            .name("session-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Io {
                op: "start the writer thread for",
                path: path.to_owned(),
                source,
            })?;
        Ok(Store {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                tx,
                capacity: opts.queue_capacity.max(1),
                counters,
                identity,
                readers: Mutex::new(Vec::new()),
                writer: Mutex::new(Some(handle)),
            }),
        })
    }
}

impl Store {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Samples dropped because the write queue was full.
    pub fn dropped_samples(&self) -> u64 {
        self.shared.counters.dropped.load(Ordering::Relaxed)
    }

    /// Reads [`Store::dropped_samples`] without keeping the store open: for a counter read at
    /// scrape time, which must not hold the writer thread past shutdown.
    pub fn dropped_samples_reader(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let counters = Arc::clone(&self.shared.counters);
        move || counters.dropped.load(Ordering::Relaxed)
    }

    /// Samples the writer could not store (unknown session, or a failed write).
    pub fn failed_samples(&self) -> u64 {
        self.shared.counters.failed.load(Ordering::Relaxed)
    }

    /// Write transactions that failed.
    pub fn failed_batches(&self) -> u64 {
        self.shared.counters.failed_batches.load(Ordering::Relaxed)
    }

    /// Reads [`Store::failed_batches`] without keeping the store open (a scrape-time counter).
    pub fn failed_batches_reader(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let counters = Arc::clone(&self.shared.counters);
        move || counters.failed_batches.load(Ordering::Relaxed)
    }

    /// Reads [`Store::failed_samples`] without keeping the store open (a scrape-time counter).
    pub fn failed_samples_reader(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let counters = Arc::clone(&self.shared.counters);
        move || counters.failed.load(Ordering::Relaxed)
    }

    /// Reads how often the database file was found removed or replaced (a scrape-time counter).
    pub fn file_lost_reader(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let counters = Arc::clone(&self.shared.counters);
        move || counters.file_lost.load(Ordering::Relaxed)
    }

    /// Whether the database file is removed or replaced now. Looks at the file itself (one
    /// `stat`) rather than waiting for the writer's next check, which runs every second.
    pub fn detached(&self) -> bool {
        let s = &self.shared;
        super::writer::check_identity(&s.counters, &s.path, s.identity)
    }

    /// Samples of session `id` not stored so far (queue full, or a failed write).
    pub fn samples_lost(&self, id: SessionId) -> u64 {
        self.shared
            .counters
            .lost
            .lock()
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    /// Forgets the count of [`Store::samples_lost`] once it is recorded with the session.
    pub fn forget_lost(&self, id: SessionId) {
        self.shared.counters.lost.lock().remove(&id);
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            path: self.shared.path.clone(),
        }
    }

    /// Queues an op that must not be lost, however full the queue is: such ops are few (each
    /// has a caller awaiting it), and the bound is there for samples.
    fn send(&self, op: Op) -> Result<(), StoreError> {
        let counters = &self.shared.counters;
        counters.queued.fetch_add(1, Ordering::Relaxed);
        self.shared.tx.send(op).map_err(|_| {
            counters.queued.fetch_sub(1, Ordering::Relaxed);
            self.closed()
        })
    }

    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(op(tx))?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Stores a new session; returns once it is committed (so a read right after finds it).
    /// Fails for an id already stored.
    pub async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        if self.detached() {
            return Err(StoreError::Detached {
                path: self.shared.path.clone(),
            });
        }
        let record = Box::new(record.clone());
        self.call(|tx| Op::Create(record, tx)).await
    }

    /// Queues a sample of session `id` without waiting; when the queue is full the sample is
    /// dropped and counted in [`Store::dropped_samples`]. Returns whether it was queued.
    pub fn append(&self, id: SessionId, sample: Sample) -> bool {
        self.try_queue(Op::Append(id, Box::new(sample)), 1)
    }

    /// Queues samples of session `id` as one write; all are dropped and counted when the queue is full.
    pub fn append_many(&self, id: SessionId, samples: Vec<Sample>) -> bool {
        let n = samples.len();
        if n == 0 {
            return true;
        }
        self.try_queue(Op::AppendMany(id, samples), n)
    }

    fn try_queue(&self, op: Op, samples: usize) -> bool {
        let counters = &self.shared.counters;
        let id = match &op {
            Op::Append(id, _) | Op::AppendMany(id, _) => Some(*id),
            _ => None,
        };
        let room = counters.queued.fetch_add(1, Ordering::Relaxed) < self.shared.capacity;
        if room && self.shared.tx.send(op).is_ok() {
            return true;
        }
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        counters.lose(id, samples);
        let before = counters
            .dropped
            .fetch_add(samples as u64, Ordering::Relaxed);
        // Warn on the first drop and then sparsely, so a flood does not flood the log too.
        if before == 0 || (before + samples as u64) / 10_000 > before / 10_000 {
            tracing::warn!(path = %self.shared.path.display(), dropped_total = before + samples as u64, "session store queue full: samples dropped");
        }
        false
    }

    /// Records the end of session `id`; returns once committed. `status` must not be `running`.
    pub async fn finish(
        &self,
        id: SessionId,
        status: SessionStatus,
        summary: Option<Summary>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        self.finish_with_loss(id, status, summary, error, 0).await
    }

    /// [`Store::finish`], recording how many samples of the session were not stored.
    pub async fn finish_with_loss(
        &self,
        id: SessionId,
        status: SessionStatus,
        summary: Option<Summary>,
        error: Option<String>,
        samples_lost: u64,
    ) -> Result<(), StoreError> {
        if status == SessionStatus::Running {
            return Err(StoreError::FinishRunning(id));
        }
        let f = Box::new(Finish {
            id,
            status,
            summary,
            error,
            ended_at: SystemTime::now(),
            samples_lost,
        });
        self.call(|tx| Op::Finish(f, tx)).await
    }

    /// Deletes an ended session and its samples; `Ok(false)` when there is none, and
    /// [`StoreError::SessionRunning`] for a running one.
    pub async fn delete(&self, id: SessionId) -> Result<bool, StoreError> {
        self.call(|tx| Op::Delete(id, tx)).await
    }

    /// Returns once every write queued before the call is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.call(Op::Flush).await
    }

    /// Commits what is queued and stops the writer thread; later writes fail with `Closed`.
    pub async fn close(&self) -> Result<(), StoreError> {
        // A store already closed has nothing left to drain.
        if self.send(Op::Shutdown).is_err() {
            return Ok(());
        }
        let handle = self.shared.writer.lock().take();
        if let Some(handle) = handle {
            let joined = tokio::task::spawn_blocking(move || handle.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                return Err(StoreError::WriterPanicked {
                    path: self.shared.path.clone(),
                });
            }
        }
        Ok(())
    }

    /// Runs `f` on a pooled read-only connection on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        let joined = tokio::task::spawn_blocking(move || {
            let idle = shared.readers.lock().pop();
            let mut conn = match idle {
                Some(c) => c,
                None => db::open_read(&shared.path)?,
            };
            let out = f(&mut conn, &shared.path);
            let mut idle = shared.readers.lock();
            if idle.len() < READ_POOL {
                idle.push(conn);
            }
            out
        })
        .await;
        joined.map_err(|_| StoreError::ReaderPanicked {
            path: self.shared.path.clone(),
        })?
    }

    /// Queues an outage as it stands without waiting (see [`super::outages::OutageLog`]).
    pub fn record_outage(&self, rec: super::outages::OutageRecord) -> bool {
        self.try_queue(Op::Outage(Box::new(rec)), 0)
    }

    /// One page of the outage history, newest first.
    pub async fn outages(
        &self,
        q: super::outages::OutageQuery,
    ) -> Result<super::outages::OutagePage, StoreError> {
        self.read(move |conn, path| super::outages::list(conn, path, &q))
            .await
    }

    /// The outage `id`, or `None`.
    pub async fn outage(
        &self,
        id: i64,
    ) -> Result<Option<super::outages::OutageRecord>, StoreError> {
        self.read(move |conn, path| super::outages::get(conn, path, id))
            .await
    }

    /// The session `id` with every committed sample in arrival order, or `None`.
    pub async fn get(&self, id: SessionId) -> Result<Option<SessionDetail>, StoreError> {
        self.read(move |conn, path| db::get(conn, path, &id)).await
    }

    /// Up to `limit` (clamped to `1..=MAX_PAGE`) sessions older than `before`, newest first.
    pub async fn list(&self, limit: u32, before: Option<SessionId>) -> Result<Page, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        self.read(move |conn, path| db::list(conn, path, limit, before.as_ref()))
            .await
    }
}
