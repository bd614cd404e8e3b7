-- Re-driving dead letters: an admin asks (API or CLI), the projector retries
-- the stored record through the normal counting path.
alter table dead_letters
    add column redrive_requested_at timestamptz, -- set by an admin; cleared when processed
    add column redrive_error        text;        -- why the last re-drive failed, if it did
