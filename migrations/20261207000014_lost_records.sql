-- Records the projector was owed and could not read: a partition's log no
-- longer held them when it got there (Kafka retention, or a broker that
-- trims its oldest records, like librdkafka's mock cluster). Written in the
-- same transaction as the batch whose offsets pass over them, so a loss is
-- on record exactly when it becomes permanent, and read by /readyz, the
-- live views' freshness, `tokenusage verify` and the metrics. Rows stay
-- until an operator acknowledges them (`tokenusage lost --acknowledge`).
create table lost_records (
    id              bigint generated always as identity primary key,
    consumer_group  text        not null,
    topic           text        not null,
    partition       int4        not null,
    -- Offsets from_offset .. to_offset - 1 are gone.
    from_offset     int8        not null,
    to_offset       int8        not null,
    detected_at     timestamptz not null default now(),
    acknowledged_at timestamptz,
    constraint lost_records_range check (to_offset > from_offset and from_offset >= 0)
);
create index lost_records_open on lost_records (detected_at) where acknowledged_at is null;
