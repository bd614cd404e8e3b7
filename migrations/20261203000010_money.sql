-- Money: token kinds, the price book, and exact cost in the rollups
-- (contract v2; docs/DECISIONS.md, "Exact cost").
--
-- Cost is an integer number of nano-units (10^-9) of the book's currency;
-- prices are nano-units per million tokens. Nothing on the path is a float.

-- One dated price per (model or pattern, currency, effective_from). A kind
-- with no price is null: its tokens are unpriced, never free.
create table price_book (
    id              bigint generated always as identity constraint price_book_pkey primary key,
    model           text        not null,            -- exact name, or a pattern with '*'
    currency        text        not null,            -- ISO 4217, the book's currency
    effective_from  timestamptz not null,
    effective_to    timestamptz,
    input           bigint,                           -- nano-units per million tokens, by kind
    output          bigint,
    cache_read      bigint,
    cache_write     bigint,
    cache_write_1h  bigint,
    reasoning       bigint,                           -- null: priced as output
    audio_input     bigint,
    audio_output    bigint,
    image_input     bigint,
    image_output    bigint,
    source          text        not null,            -- the public price page, an import, a person
    created_at      timestamptz not null default now(),
    created_by      text        not null,
    constraint price_book_unique unique (model, currency, effective_from),
    constraint price_book_dates check (effective_to is null or effective_to > effective_from)
);

-- The book's currency and version. Every change to the book bumps the
-- version in a transaction holding the counting advisory lock exclusively;
-- every counting transaction holds it shared and refuses to commit events
-- priced with another version (tokenusage_count_priced_events), so a price
-- change waits for commits in flight and every later commit prices with it.
-- (An advisory lock, not FOR SHARE on this row: concurrent FOR SHARE locks
-- create a MultiXact per commit; the projector measured 24k events/s with
-- it and 30-34k without; docs/BENCHMARKS.md.)
create table price_book_state (
    id        boolean     not null default true constraint price_book_state_pkey primary key check (id),
    currency  text        not null default 'USD',
    version   bigint      not null default 1,
    seeded    boolean     not null default false   -- the shipped catalogue was loaded once
);
insert into price_book_state default values;

-- Raw events keep what the publisher said (v2 kinds and a supplied cost,
-- as in the native JSON; null for v1 events) and what they were charged.
alter table usage_events
    add column detail          jsonb,
    add column cost_nanos      bigint not null default 0,
    add column unpriced_tokens bigint not null default 0;

alter table usage_minute
    add column cache_read_tokens  bigint not null default 0,
    add column cache_write_tokens bigint not null default 0,  -- 5-minute and 1-hour writes
    add column reasoning_tokens   bigint not null default 0,
    add column cost_nanos         bigint not null default 0,
    add column unpriced_tokens    bigint not null default 0,
    add column supplied_events    bigint not null default 0;  -- events whose cost the publisher gave
alter table usage_quarter_hour
    add column cache_read_tokens  bigint not null default 0,
    add column cache_write_tokens bigint not null default 0,
    add column reasoning_tokens   bigint not null default 0,
    add column cost_nanos         bigint not null default 0,
    add column unpriced_tokens    bigint not null default 0,
    add column supplied_events    bigint not null default 0;
alter table usage_hour
    add column cache_read_tokens  bigint not null default 0,
    add column cache_write_tokens bigint not null default 0,
    add column reasoning_tokens   bigint not null default 0,
    add column cost_nanos         bigint not null default 0,
    add column unpriced_tokens    bigint not null default 0,
    add column supplied_events    bigint not null default 0;

-- What was counted before this migration was never priced: its tokens are
-- unpriced until `tokenusage reprice` prices them with the book. (Under
-- TimescaleDB, compressed chunks may refuse the update: then it is skipped
-- with a notice and reprice does the same work.)
do $$
begin
    update usage_events set unpriced_tokens = input_tokens + output_tokens where input_tokens + output_tokens > 0;
exception when others then
    raise notice 'usage_events not marked unpriced (%): run tokenusage reprice', sqlerrm;
end
$$;
update usage_minute set unpriced_tokens = input_tokens + output_tokens where input_tokens + output_tokens > 0;
update usage_quarter_hour set unpriced_tokens = input_tokens + output_tokens where input_tokens + output_tokens > 0;
update usage_hour set unpriced_tokens = input_tokens + output_tokens where input_tokens + output_tokens > 0;

-- Counting priced events in one round trip: as tokenusage_count_events
-- (migration 0009), plus the kinds and cost, and the price book check.
create or replace function tokenusage_count_priced_events(
    book_version bigint,
    e_occurred_at timestamptz[], e_source text[], e_event_id text[], e_user_id text[],
    e_activity text[], e_model text[], e_input bigint[], e_output bigint[], e_metadata jsonb[],
    e_partition integer[], e_offset bigint[], e_detail jsonb[], e_cost bigint[], e_unpriced bigint[],
    r_table text[], r_user_id text[], r_bucket timestamptz[], r_activity text[], r_model text[],
    r_input bigint[], r_output bigint[], r_events bigint[],
    r_cache_read bigint[], r_cache_write bigint[], r_reasoning bigint[], r_cost bigint[], r_unpriced bigint[],
    r_supplied bigint[],
    channel text, bodies text[])
returns bigint
language plpgsql as $$
begin
    -- The caller holds the counting lock shared (schema/src/locks.rs): the
    -- version cannot change before this transaction ends. A batch priced
    -- with another version is refused, to be priced again.
    perform 1 from price_book_state where version = book_version;
    if not found then
        raise exception 'the price book changed since this batch was priced (version %)', book_version
            using errcode = 'TU001';
    end if;

    insert into usage_events (occurred_at, source, event_id, user_id, activity, model,
                              input_tokens, output_tokens, metadata, kafka_partition, kafka_offset,
                              detail, cost_nanos, unpriced_tokens)
    select * from unnest(e_occurred_at, e_source, e_event_id, e_user_id, e_activity, e_model,
                         e_input, e_output, e_metadata, e_partition, e_offset, e_detail, e_cost, e_unpriced)
    on conflict do nothing;

    insert into usage_minute as t (user_id, bucket, activity, model, input_tokens, output_tokens, events,
                                   cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos,
                                   unpriced_tokens, supplied_events)
    select u, b, a, m, i, o, n, cr, cw, rs, c, up, sp
    from unnest(r_table, r_user_id, r_bucket, r_activity, r_model, r_input, r_output, r_events,
                r_cache_read, r_cache_write, r_reasoning, r_cost, r_unpriced, r_supplied)
         as r(g, u, b, a, m, i, o, n, cr, cw, rs, c, up, sp)
    where g = 'usage_minute'
    on conflict (user_id, bucket, activity, model) do update
    set input_tokens = t.input_tokens + excluded.input_tokens,
        output_tokens = t.output_tokens + excluded.output_tokens,
        events = t.events + excluded.events,
        cache_read_tokens = t.cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens = t.cache_write_tokens + excluded.cache_write_tokens,
        reasoning_tokens = t.reasoning_tokens + excluded.reasoning_tokens,
        cost_nanos = t.cost_nanos + excluded.cost_nanos,
        unpriced_tokens = t.unpriced_tokens + excluded.unpriced_tokens,
        supplied_events = t.supplied_events + excluded.supplied_events;

    insert into usage_quarter_hour as t (user_id, bucket, activity, model, input_tokens, output_tokens, events,
                                         cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos,
                                         unpriced_tokens, supplied_events)
    select u, b, a, m, i, o, n, cr, cw, rs, c, up, sp
    from unnest(r_table, r_user_id, r_bucket, r_activity, r_model, r_input, r_output, r_events,
                r_cache_read, r_cache_write, r_reasoning, r_cost, r_unpriced, r_supplied)
         as r(g, u, b, a, m, i, o, n, cr, cw, rs, c, up, sp)
    where g = 'usage_quarter_hour'
    on conflict (user_id, bucket, activity, model) do update
    set input_tokens = t.input_tokens + excluded.input_tokens,
        output_tokens = t.output_tokens + excluded.output_tokens,
        events = t.events + excluded.events,
        cache_read_tokens = t.cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens = t.cache_write_tokens + excluded.cache_write_tokens,
        reasoning_tokens = t.reasoning_tokens + excluded.reasoning_tokens,
        cost_nanos = t.cost_nanos + excluded.cost_nanos,
        unpriced_tokens = t.unpriced_tokens + excluded.unpriced_tokens,
        supplied_events = t.supplied_events + excluded.supplied_events;

    insert into usage_hour as t (user_id, bucket, activity, model, input_tokens, output_tokens, events,
                                 cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos,
                                 unpriced_tokens, supplied_events)
    select u, b, a, m, i, o, n, cr, cw, rs, c, up, sp
    from unnest(r_table, r_user_id, r_bucket, r_activity, r_model, r_input, r_output, r_events,
                r_cache_read, r_cache_write, r_reasoning, r_cost, r_unpriced, r_supplied)
         as r(g, u, b, a, m, i, o, n, cr, cw, rs, c, up, sp)
    where g = 'usage_hour'
    on conflict (user_id, bucket, activity, model) do update
    set input_tokens = t.input_tokens + excluded.input_tokens,
        output_tokens = t.output_tokens + excluded.output_tokens,
        events = t.events + excluded.events,
        cache_read_tokens = t.cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens = t.cache_write_tokens + excluded.cache_write_tokens,
        reasoning_tokens = t.reasoning_tokens + excluded.reasoning_tokens,
        cost_nanos = t.cost_nanos + excluded.cost_nanos,
        unpriced_tokens = t.unpriced_tokens + excluded.unpriced_tokens,
        supplied_events = t.supplied_events + excluded.supplied_events;

    return tokenusage_notify_rollups(channel, bodies);
end
$$;

-- The unpriced function goes: a projector of the previous release still
-- running during an upgrade then fails its commits (and retries) instead
-- of counting tokens at a cost of 0.
drop function tokenusage_count_events(timestamptz[], text[], text[], text[], text[], text[], bigint[], bigint[],
    jsonb[], integer[], bigint[], text[], text[], timestamptz[], text[], text[], bigint[], bigint[], bigint[], text, text[]);
