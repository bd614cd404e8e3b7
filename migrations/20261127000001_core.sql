-- Core schema: accepted events, their de-duplication keys, the rollups the
-- API reads, the projector's offsets, and poison messages.
-- Runs on plain PostgreSQL 13+; 20261127000002 adds TimescaleDB when present.

-- Every distinct event the projector accepted, kept for rebuilding rollups
-- (`tokenusage replay`) and for `tokenusage verify`. Under TimescaleDB this is
-- a hypertable on occurred_at, which is why the primary key starts with it.
create table usage_events (
    occurred_at    timestamptz not null,              -- event time (UTC), the bucket it counts in
    source         text        not null,              -- publisher; de-duplication scope
    event_id       text        not null,              -- publisher's id, unique per source
    user_id        text        not null,              -- whose tokens
    activity       text        not null,              -- chat, embedding, agent-run, ...
    model          text        not null,              -- model name as published
    input_tokens   bigint      not null constraint usage_events_input_nonneg check (input_tokens >= 0),
    output_tokens  bigint      not null constraint usage_events_output_nonneg check (output_tokens >= 0),
    metadata       jsonb,                             -- bounded flat annotations (contract v1)
    received_at    timestamptz not null default now(), -- when the projector committed it
    kafka_partition integer    not null,              -- where it was read from, for audits
    kafka_offset   bigint      not null,
    constraint usage_events_pkey primary key (occurred_at, source, event_id)
);
create index usage_events_user_time on usage_events (user_id, occurred_at);

-- The de-duplication authority: one row per (source, event_id) ever accepted.
-- Separate from usage_events because a TimescaleDB hypertable cannot have a
-- unique index without its time column, and an event re-sent with another
-- occurred_at must still count once.
create table event_keys (
    source       text        not null,
    event_id     text        not null,
    occurred_at  timestamptz not null,               -- the time the first copy carried
    first_seen   timestamptz not null default now(), -- drives key retention with the raw events
    constraint event_keys_pkey primary key (source, event_id)
);
create index event_keys_first_seen on event_keys (first_seen);

-- Rollups: token sums per user x activity x model x bucket. Three grains so
-- that any IANA zone's days are sums of whole buckets (15 minutes divides
-- every current UTC offset) and long ranges read few rows (see
-- docs/DECISIONS.md). Buckets are UTC instants at the start of the bucket.
create table usage_minute (
    user_id        text        not null,
    bucket         timestamptz not null,
    activity       text        not null,
    model          text        not null,
    input_tokens   bigint      not null,
    output_tokens  bigint      not null,
    events         bigint      not null,             -- how many events were summed
    constraint usage_minute_pkey primary key (user_id, bucket, activity, model)
);
create table usage_quarter_hour (like usage_minute including all);
create table usage_hour (like usage_minute including all);

-- Where each projector is in each partition. Written in the same transaction
-- as the rollups it accounts for, so offsets follow durability exactly.
-- `epoch` fences a projector that lost its partition: it commits only if the
-- epoch it claimed is still current.
create table projector_offsets (
    consumer_group text        not null,
    topic          text        not null,
    partition      integer     not null,
    next_offset    bigint      not null,             -- first offset not yet accounted for
    epoch          bigint      not null default 0,   -- bumped by every claim
    owner          text        not null default '',  -- the claiming process, for operators
    updated_at     timestamptz not null default now(),
    constraint projector_offsets_pkey primary key (consumer_group, topic, partition)
);

-- Records that could not be decoded or failed validation. The partition
-- moves on; an admin can fix and re-drive them.
create table dead_letters (
    id             bigint generated always as identity constraint dead_letters_pkey primary key,
    topic          text        not null,
    partition      integer     not null,
    kafka_offset   bigint      not null,
    record_key     bytea,                            -- raw key bytes
    payload        bytea,                            -- raw value bytes, unmodified
    headers        jsonb       not null default '[]', -- [[name, value-as-text], ...]
    error          text        not null,             -- why it was refused, field by field
    received_at    timestamptz not null default now(),
    redriven_at    timestamptz,                      -- set when re-published after a fix
    constraint dead_letters_position unique (topic, partition, kafka_offset)
);

-- Local accounts for the dashboard. `id` is the same string events carry in
-- user_id, so a viewer's token subject selects their rows.
create table users (
    id             text        not null constraint users_pkey primary key,
    display_name   text        not null,
    password_hash  text,                             -- argon2id PHC string; null for SSO-only users
    role           text        not null default 'viewer' constraint users_role_known check (role in ('viewer', 'admin')),
    disabled       boolean     not null default false,
    created_at     timestamptz not null default now()
);
