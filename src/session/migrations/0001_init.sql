-- Sessions and their samples. Times are microseconds since the Unix epoch, UTC.
-- Ids are hyphenated lowercase UUIDv7 text, so `ORDER BY id` is creation order.
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY NOT NULL,
    params       TEXT NOT NULL,            -- JSON of SessionParams
    status       TEXT NOT NULL CHECK (status IN ('running', 'completed', 'stopped', 'failed', 'interrupted')),
    created_us   INTEGER NOT NULL,
    started_us   INTEGER,
    ended_us     INTEGER,
    error        TEXT,
    summary      TEXT,                     -- JSON of Summary
    sample_count INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX sessions_by_status ON sessions (status);
CREATE INDEX sessions_by_created ON sessions (created_us);

-- The indexed fields as columns, plus the whole sample as JSON so fields added later survive.
-- `n` (the rowid) is arrival order, which is the order samples are returned in.
CREATE TABLE samples (
    n          INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER,
    type       TEXT NOT NULL,
    ts         TEXT NOT NULL,
    body       TEXT NOT NULL
) STRICT;

CREATE INDEX samples_by_session ON samples (session_id, n);
