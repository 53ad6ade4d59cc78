//! On-demand sessions: the stored shape ([`model`]) and the SQLite store ([`Store`]).
//!
//! The store owns the database file: one writer thread fed by a bounded queue commits in batches
//! (the probe path never waits for the disk), reads run on blocking threads over read-only
//! connections, and schema versions are migrated on open. The session runner and the HTTP routes
//! build on this API:
//!
//! - [`Store::create`], [`Store::finish`], [`Store::delete`] and [`Store::flush`] return once
//!   committed, so a read right after sees them; [`Store::append`] never waits: a full queue drops
//!   the sample and counts it ([`Store::dropped_samples`]).
//! - Appended samples become readable within one batch interval (at most 250 ms), which is also
//!   the most a `kill -9` can lose; a commit survives a killed process (WAL, `synchronous=NORMAL`).
//!   Outage records do not wait for the interval: each is committed as soon as the writer has it.
//! - One store per database file: a second [`Store::open`] on the same file is refused.

mod db;
pub mod manager;
pub mod model;
pub mod outages;
mod store;
mod writer;

use std::path::PathBuf;

pub use db::{INTERRUPTED_MESSAGE, SCHEMA_VERSION};
pub use model::{
    Page, ParseSessionIdError, SessionDetail, SessionId, SessionParams, SessionRecord,
    SessionStatus,
};
pub use store::{Claim, MAX_BATCH_INTERVAL, MAX_PAGE, Retention, Store, StoreOptions};

/// What went wrong in the session store; each names the operation and the database path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database folder could not be created.
    #[error("cannot create session database folder {}: {source}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file operation on the database failed.
    #[error("cannot {op} session database {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite could not open the file.
    #[error("cannot open session database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The file exists but is not a SQLite database; it is left alone.
    #[error("{} is not a SQLite database; refusing to use or overwrite it (choose another sessions.database)", path.display())]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// Another store (in this or another process) has the database open.
    #[error("session database {} is in use by another pingscope store", path.display())]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// A SQLite database of another program (tables, but no pingscope schema version); left alone.
    #[error(
        "{} is a SQLite database of another program (it has tables but no pingscope schema version); \
         refusing to modify it (choose another sessions.database)",
        path.display()
    )]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// The schema was written by a newer pingscope; the file is left untouched.
    #[error(
        "session database {} has schema version {found}, newer than the {supported} this pingscope knows; \
         refusing to open it (run a newer pingscope or choose another sessions.database)",
        path.display()
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this binary knows.
        supported: u32,
    },
    /// The file system did not allow WAL mode.
    #[error("session database {}: cannot use WAL journal mode (got {mode:?})", path.display())]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// A schema migration failed and was rolled back.
    #[error("cannot migrate session database {} to schema version {version}: {source}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version being applied.
        version: u32,
        /// Why.
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("cannot {op} in session database {}: {source}", path.display())]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database file was removed or replaced while the store had it open.
    #[error(
        "session database {} was removed or replaced while in use; new sessions are refused until it is back (restart pingscope to start a new file)",
        path.display()
    )]
    Detached {
        /// The database file.
        path: PathBuf,
    },
    /// A write transaction failed; its writes were rolled back.
    #[error("cannot write to session database {}: {message}", path.display())]
    Write {
        /// The database file.
        path: PathBuf,
        /// SQLite's reason.
        message: String,
    },
    /// A stored value could not be decoded.
    #[error("session database {} holds a bad {what}: {detail}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which value.
        what: String,
        /// Why it is bad.
        detail: String,
    },
    /// No session has this id.
    #[error("no session {0}")]
    NotFound(SessionId),
    /// The session is running; stop it first.
    #[error("session {0} is running; stop it before deleting it")]
    SessionRunning(SessionId),
    /// `finish` was asked to leave a session running.
    #[error("session {0} cannot finish with status running")]
    FinishRunning(SessionId),
    /// The store was closed.
    #[error("session store {} is closed", path.display())]
    Closed {
        /// The database file.
        path: PathBuf,
    },
    /// The writer thread panicked.
    #[error("session store writer for {} panicked", path.display())]
    WriterPanicked {
        /// The database file.
        path: PathBuf,
    },
    /// A read task panicked or was cancelled.
    #[error("session store read of {} failed: the reading task ended early", path.display())]
    ReaderPanicked {
        /// The database file.
        path: PathBuf,
    },
}
