-- Outages of the monitors (issue 18): one row per outage of a (target, address), written as it
-- opens, as it grows and as it ends; an `open` row found at start was cut by a stop or a crash
-- and becomes `interrupted`, ending at its last lost probe.
CREATE TABLE outages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    target          TEXT    NOT NULL,
    ip              TEXT    NOT NULL,
    start_us        INTEGER NOT NULL,
    end_us          INTEGER,
    last_lost_us    INTEGER NOT NULL,
    lost            INTEGER NOT NULL,
    icmp_errors     INTEGER NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('open', 'ended', 'interrupted')),
    capture_session TEXT,
    UNIQUE (target, ip, start_us)
);
CREATE INDEX outages_by_target ON outages (target, id);
CREATE INDEX outages_by_start ON outages (start_us);
