-- Samples of a session the store could not keep (queue full, or a failed write), recorded
-- when the session ends, so a gap in the stored samples is never silent.
ALTER TABLE sessions ADD COLUMN samples_lost INTEGER NOT NULL DEFAULT 0;
