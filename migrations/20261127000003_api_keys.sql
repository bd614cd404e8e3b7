-- Publisher API keys: they allow ingest only. The key itself is shown once
-- at creation; only its SHA-256 is stored (keys are 190 bits of randomness,
-- so a slow password hash adds nothing but latency on every request).
create table api_keys (
    id           uuid        not null constraint api_keys_pkey primary key,
    name         text        not null,                     -- operator's label, e.g. "billing-svc prod"
    source       text        not null,                     -- the `source` stamped on every event sent with this key
    key_prefix   text        not null,                     -- first characters, to recognise a key in lists and logs
    key_hash     bytea       not null constraint api_keys_hash_unique unique, -- sha256 of the whole key
    rate_per_sec integer     not null default 5000 constraint api_keys_rate_positive check (rate_per_sec > 0),
    created_at   timestamptz not null default now(),
    revoked_at   timestamptz                               -- set once; a revoked key never works again
);
