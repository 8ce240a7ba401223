-- 0003: where each job's clip goes, and what has been delivered (so a restart never delivers twice).

-- e.g. {"kind": "file", "path": "/home/me/clip.mp4"} or {"kind": "discord", "channel_id": "…", …}
ALTER TABLE jobs ADD COLUMN delivery_json TEXT;
-- What the owner was finally charged (set with the ledger capture, in the same transaction).
ALTER TABLE jobs ADD COLUMN charged_micros INTEGER NOT NULL DEFAULT 0 CHECK (charged_micros >= 0);
-- Who asked to cancel, while a provider-side cancel is in progress.
ALTER TABLE jobs ADD COLUMN cancel_requested_by TEXT;

-- One row per thing delivered for a job: 'clip', 'failure', 'status' (a status message id) …
CREATE TABLE deliveries (
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    what    TEXT NOT NULL,
    ref     TEXT NOT NULL,
    at      TEXT NOT NULL,
    PRIMARY KEY (job_id, what)
);

-- Which engine process drives the job (host:pid:start), until when. Another process takes a job over only
-- when the lease has expired or its owner's process is gone, so two processes never drive one job.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at TEXT;
