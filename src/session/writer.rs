//! The single writer: a dedicated thread that owns the write connection and commits everything it
//! received within one batch interval in one transaction.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::StoreError;
use super::db::{self, Deleted, Finish};
use super::model::{SessionId, SessionRecord};
use super::store::Retention;
use crate::sample::Sample;

/// At most this many queued operations go into one transaction, so a flood cannot make one huge.
const MAX_BATCH: usize = 4096;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One queued write.
#[derive(Debug)]
pub(crate) enum Op {
    Create(Box<SessionRecord>, Reply<()>),
    Append(SessionId, Box<Sample>),
    AppendMany(SessionId, Vec<Sample>),
    Finish(Box<Finish>, Reply<()>),
    Delete(SessionId, Reply<bool>),
    Flush(Reply<()>),
    /// An outage as it stands (issue 18). Committed with whatever else is queued, without
    /// waiting out the batch interval: an outage is rare, and what it has lost must survive a
    /// `kill -9` a moment later.
    Outage(Box<super::outages::OutageRecord>),
    Shutdown,
}

impl Op {
    /// Commit without waiting for the rest of the interval: someone awaits this op, or it is
    /// an outage record.
    fn awaited(&self) -> bool {
        !matches!(self, Self::Append(..) | Self::AppendMany(..))
    }
}

/// Counters the writer shares with the store handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Samples dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Samples the writer could not store (unknown session, or a failed transaction).
    pub failed: AtomicU64,
    /// Transactions that failed.
    pub failed_batches: AtomicU64,
    /// Ops sent and not yet taken by the writer: what bounds the queue (see [`Inbox`]).
    pub queued: AtomicUsize,
    /// Samples not stored, per session still running: dropped from the queue or lost in a
    /// failed write. Taken when the session ends and recorded with it.
    pub lost: parking_lot::Mutex<HashMap<SessionId, u64>>,
    /// Times the database file was found removed or replaced under the store.
    pub file_lost: AtomicU64,
    /// The database file is removed or replaced now: new sessions are refused.
    pub detached: AtomicBool,
}

impl Counters {
    /// Counts `n` samples of session `id` as not stored.
    pub(crate) fn lose(&self, id: Option<SessionId>, n: usize) {
        if let (Some(id), true) = (id, n > 0) {
            *self.lost.lock().entry(id).or_default() += n as u64;
        }
    }
}

/// The writer's end of the queue. The channel itself is unbounded and allocates as it fills
/// (a bounded std channel allocates every slot at once: 384 KiB for 8,192 ops, resident from
/// the start whether sessions are used or not); the senders bound it by [`Counters::queued`],
/// which this takes down for every op received.
pub(crate) struct Inbox {
    rx: Receiver<Op>,
    counters: Arc<Counters>,
}

impl Inbox {
    pub(crate) fn new(rx: Receiver<Op>, counters: Arc<Counters>) -> Self {
        Self { rx, counters }
    }

    fn taken(&self, op: Op) -> Op {
        self.counters.queued.fetch_sub(1, Ordering::Relaxed);
        op
    }

    fn recv_timeout(&self, wait: Duration) -> Result<Op, RecvTimeoutError> {
        self.rx.recv_timeout(wait).map(|op| self.taken(op))
    }

    fn try_recv(&self) -> Result<Op, TryRecvError> {
        self.rx.try_recv().map(|op| self.taken(op))
    }
}

pub(crate) struct Writer {
    // Declared before `lock`, so the connection closes before the lock is released.
    pub conn: Connection,
    pub _lock: db::StoreLock,
    pub rx: Inbox,
    pub path: PathBuf,
    pub batch_interval: Duration,
    pub retention: Retention,
    pub retention_every: Duration,
    pub counters: Arc<Counters>,
    /// (device, inode) of the database file when it was opened.
    pub identity: Option<(u64, u64)>,
}

/// How often the writer checks that its database file is still the one at its path.
const IDENTITY_EVERY: Duration = Duration::from_secs(1);

/// (device, inode) of the file at `path`, `None` when there is none.
pub(crate) fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Notices the database file removed or replaced under the store: what is written then goes
/// to a file no one will open again, so new sessions are refused until it is back. Run by the
/// writer every [`IDENTITY_EVERY`] and by every session start (one `stat`), so a start right
/// after the removal is refused too. Returns whether the file is lost now; counts and logs
/// only the change.
pub(crate) fn check_identity(
    counters: &Counters,
    path: &std::path::Path,
    opened: Option<(u64, u64)>,
) -> bool {
    let detached = opened.is_some() && identity(path) != opened;
    let was = counters.detached.swap(detached, Ordering::Relaxed);
    if detached && !was {
        counters.file_lost.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            path = %path.display(),
            "session database file removed or replaced while in use; new sessions are refused \
             until it is back (restart pingscope to start a new file)"
        );
    } else if was && !detached {
        tracing::info!(path = %path.display(), "session database file is back");
    }
    detached
}

/// The outcome of one op, handed back once the transaction it belongs to has committed.
enum Done {
    Unit(Reply<()>, Result<(), StoreError>),
    Bool(Reply<bool>, Result<bool, StoreError>),
    /// Samples (of a session) that are lost if the transaction does not commit.
    Samples(Option<SessionId>, usize),
}

impl Done {
    /// The outcome of an op that never ran (its transaction could not begin).
    fn from_op(op: Op) -> Self {
        match op {
            Op::Create(_, r) | Op::Finish(_, r) | Op::Flush(r) => Self::Unit(r, Ok(())),
            Op::Delete(_, r) => Self::Bool(r, Ok(false)),
            Op::Append(id, _) => Self::Samples(Some(id), 1),
            Op::AppendMany(id, v) => Self::Samples(Some(id), v.len()),
            Op::Shutdown | Op::Outage(_) => Self::Samples(None, 0),
        }
    }

    fn send(self) {
        // A waiter that went away no longer needs its answer.
        let _ = match self {
            Self::Unit(tx, r) => tx.send(r).is_ok(),
            Self::Bool(tx, r) => tx.send(r).is_ok(),
            Self::Samples(..) => true,
        };
    }
}

/// Answers every waiter of a batch whose transaction failed, and counts its samples as failed
/// (those that failed on their own were counted then).
fn fail_batch(counters: &Counters, path: &std::path::Path, message: &str, done: Vec<Done>) {
    counters.failed_batches.fetch_add(1, Ordering::Relaxed);
    let lost: usize = done
        .iter()
        .map(|d| if let Done::Samples(_, n) = d { *n } else { 0 })
        .sum();
    for d in &done {
        if let Done::Samples(id, n) = d {
            counters.lose(*id, *n);
        }
    }
    counters.failed.fetch_add(lost as u64, Ordering::Relaxed);
    tracing::error!(path = %path.display(), error = message, samples = lost, "session database write failed");
    for d in done {
        let err = || StoreError::Write {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        let _ = match d {
            Done::Unit(tx, _) => tx.send(Err(err())).is_ok(),
            Done::Bool(tx, _) => tx.send(Err(err())).is_ok(),
            Done::Samples(..) => true,
        };
    }
}

/// Stores samples of one session in a savepoint, so a failure part-way leaves neither samples
/// nor count behind; returns how many were stored.
fn append(
    tx: &mut rusqlite::Transaction<'_>,
    counters: &Counters,
    id: &SessionId,
    samples: &[Sample],
) -> usize {
    let result = tx.savepoint().and_then(|mut sp| {
        let known = db::insert_samples(&sp, id, samples)?;
        if known {
            sp.commit()?;
        } else {
            sp.rollback()?;
        }
        Ok(known)
    });
    let lost = |n: usize| {
        counters.lose(Some(*id), n);
        counters.failed.fetch_add(n as u64, Ordering::Relaxed)
    };
    match result {
        Ok(true) => samples.len(),
        Ok(false) => {
            tracing::warn!(session = %id, samples = samples.len(), "samples for an unknown session not stored");
            lost(samples.len());
            0
        }
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "samples not stored");
            lost(samples.len());
            0
        }
    }
}

/// Merges the appends of each session into one `AppendMany` at the place of its first append,
/// so a batch costs one savepoint and one count update per session rather than per sample.
/// A create, finish or delete of the session ends its group: nothing moves across those.
fn group_appends(batch: Vec<Op>) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::with_capacity(batch.len());
    let mut open: HashMap<SessionId, usize> = HashMap::new();
    for op in batch {
        let (id, samples) = match op {
            Op::Append(id, s) => (id, vec![*s]),
            Op::AppendMany(id, v) => (id, v),
            other => {
                match &other {
                    Op::Create(rec, _) => open.remove(&rec.id),
                    Op::Finish(f, _) => open.remove(&f.id),
                    Op::Delete(id, _) => open.remove(id),
                    _ => None,
                };
                out.push(other);
                continue;
            }
        };
        match open.get(&id).and_then(|&i| out.get_mut(i)) {
            Some(Op::AppendMany(_, group)) => group.extend(samples),
            _ => {
                open.insert(id, out.len());
                out.push(Op::AppendMany(id, samples));
            }
        }
    }
    out
}

impl Writer {
    /// Runs until `Shutdown` or until every sender is gone, committing what is left first.
    pub(crate) fn run(mut self) {
        let mut next_retention = Instant::now() + self.retention_every;
        let mut next_identity = Instant::now() + IDENTITY_EVERY;
        loop {
            let wait = next_retention
                .min(next_identity)
                .saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(first) => {
                    let (batch, stop) = self.gather(first);
                    self.commit(batch);
                    if stop {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_identity {
                self.check_identity();
                next_identity = Instant::now() + IDENTITY_EVERY;
            }
            // Checked after every batch too, so steady traffic cannot postpone retention.
            if Instant::now() >= next_retention {
                self.retention_alone();
                next_retention = Instant::now() + self.retention_every;
            }
        }
        // Merges the WAL into the database file, so a copy of the file alone is a whole backup.
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(path = %self.path.display(), error = %e, "session database checkpoint at shutdown failed");
        }
        tracing::debug!(path = %self.path.display(), "session writer stopped");
    }

    fn check_identity(&self) {
        check_identity(&self.counters, &self.path, self.identity);
    }

    /// Collects ops until the batch interval has passed since `first`, or at once when someone
    /// awaits one of them. Returns the batch and whether the writer must stop afterwards.
    fn gather(&self, first: Op) -> (Vec<Op>, bool) {
        let deadline = Instant::now() + self.batch_interval;
        let mut urgent = first.awaited();
        let mut batch = Vec::new();
        if matches!(first, Op::Shutdown) {
            return (self.drain(batch), true);
        }
        batch.push(first);
        while batch.len() < MAX_BATCH {
            let next = if urgent {
                match self.rx.try_recv() {
                    Ok(op) => Ok(op),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.rx.recv_timeout(left)
            };
            match next {
                Ok(Op::Shutdown) => return (self.drain(batch), true),
                Ok(op) => {
                    urgent |= op.awaited();
                    batch.push(op);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return (batch, true),
            }
        }
        (batch, false)
    }

    /// Adds whatever is still queued, for a final commit.
    fn drain(&self, mut batch: Vec<Op>) -> Vec<Op> {
        while let Ok(op) = self.rx.try_recv() {
            if !matches!(op, Op::Shutdown) {
                batch.push(op);
            }
        }
        batch
    }

    fn commit(&mut self, batch: Vec<Op>) {
        if batch.is_empty() {
            return;
        }
        let path = self.path.clone();
        let mut tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => {
                let message = e.to_string();
                fail_batch(
                    &self.counters,
                    &path,
                    &message,
                    batch.into_iter().map(Done::from_op).collect(),
                );
                return;
            }
        };
        let batch = group_appends(batch);
        let mut done = Vec::with_capacity(batch.len());
        let mut finished = false;
        for op in batch {
            let d = match op {
                Op::Create(rec, reply) => {
                    let r = db::insert_session(&tx, &rec).map_err(|source| StoreError::Sqlite {
                        op: "create a session",
                        path: path.clone(),
                        source,
                    });
                    Done::Unit(reply, r)
                }
                Op::Append(id, sample) => Done::Samples(
                    Some(id),
                    append(&mut tx, &self.counters, &id, std::slice::from_ref(&*sample)),
                ),
                Op::AppendMany(id, samples) => {
                    Done::Samples(Some(id), append(&mut tx, &self.counters, &id, &samples))
                }
                Op::Finish(f, reply) => {
                    finished = true;
                    let r = match db::finish(&tx, &f) {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(StoreError::NotFound(f.id)),
                        Err(source) => Err(StoreError::Sqlite {
                            op: "finish a session",
                            path: path.clone(),
                            source,
                        }),
                    };
                    Done::Unit(reply, r)
                }
                Op::Delete(id, reply) => {
                    let r = match db::delete(&tx, &id) {
                        Ok(Deleted::Yes) => Ok(true),
                        Ok(Deleted::Missing) => Ok(false),
                        Ok(Deleted::Running) => Err(StoreError::SessionRunning(id)),
                        Err(source) => Err(StoreError::Sqlite {
                            op: "delete a session",
                            path: path.clone(),
                            source,
                        }),
                    };
                    Done::Bool(reply, r)
                }
                Op::Flush(reply) => Done::Unit(reply, Ok(())),
                Op::Outage(rec) => {
                    if let Err(e) = super::outages::upsert(&tx, &rec) {
                        tracing::warn!(path = %path.display(), target_name = %rec.target, error = %e, "outage not stored");
                    }
                    Done::Samples(None, 0)
                }
                Op::Shutdown => Done::Samples(None, 0),
            };
            done.push(d);
        }
        if finished {
            // Retention after a finish keeps the table at its cap without waiting for the timer.
            match db::apply_retention(&tx, &self.retention, SystemTime::now()) {
                Ok(n) if n > 0 => tracing::debug!(deleted = n, "session retention"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "session retention failed")
                }
            }
        }
        match tx.commit() {
            Ok(()) => {
                for d in done {
                    d.send();
                }
            }
            Err(e) => fail_batch(&self.counters, &path, &e.to_string(), done),
        }
    }

    fn retention_alone(&mut self) {
        let r = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .and_then(|tx| {
                let n = db::apply_retention(&tx, &self.retention, SystemTime::now())?;
                tx.commit().map(|()| n)
            });
        match r {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "session retention"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "session retention failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::SessionStatus;

    fn sample(seq: u64) -> Sample {
        Sample::local_error("t", "h", None, Some(seq), "x".into())
    }

    /// (session, seqs) of each op, with `None` seqs for a non-append op.
    fn shape(ops: &[Op]) -> Vec<(SessionId, Option<Vec<u64>>)> {
        ops.iter()
            .map(|op| match op {
                Op::AppendMany(id, v) => (*id, Some(v.iter().filter_map(|s| s.seq).collect())),
                Op::Append(id, s) => (*id, Some(s.seq.into_iter().collect())),
                Op::Finish(f, _) => (f.id, None),
                Op::Create(r, _) => (r.id, None),
                Op::Delete(id, _) => (*id, None),
                _ => (SessionId::new(), None),
            })
            .collect()
    }

    #[test]
    fn appends_group_per_session_without_crossing_a_finish() {
        let (a, b) = (SessionId::new(), SessionId::new());
        let finish = |id| {
            let (tx, _rx) = oneshot::channel();
            Op::Finish(
                Box::new(Finish {
                    id,
                    status: SessionStatus::Completed,
                    summary: None,
                    error: None,
                    ended_at: SystemTime::now(),
                    samples_lost: 0,
                }),
                tx,
            )
        };
        let batch = vec![
            Op::Append(a, Box::new(sample(1))),
            Op::Append(b, Box::new(sample(1))),
            Op::Append(a, Box::new(sample(2))),
            finish(a),
            Op::Append(a, Box::new(sample(3))),
            Op::AppendMany(b, vec![sample(2), sample(3)]),
        ];
        let grouped = group_appends(batch);
        assert_eq!(
            shape(&grouped),
            vec![
                (a, Some(vec![1, 2])),
                (b, Some(vec![1, 2, 3])),
                (a, None),
                (a, Some(vec![3])),
            ]
        );
    }
}
