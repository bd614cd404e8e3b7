-- Day rows for cold reads (docs/DECISIONS.md, "Cold reads: day rows"):
-- one row per user x UTC day x series, built from the quarter-hour rollup
-- once the day is sealed, at several groupings, so that a whole year is 365
-- rows per series the view shows instead of 8,760 hourly or 35,040
-- quarter-hour rows of every series the user has, in any time zone: the
-- row keeps the running sums over its day's quarter-hours, so the part of a
-- UTC day that falls in a local day (any real offset is a multiple of 15
-- minutes) is the difference of two of them.
create table usage_day (
    user_id            text   not null,
    -- Which dimensions are summed away, as SQL's grouping() bits: activity
    -- 8, model 4, source 2, project 1. 0: every dimension kept (filters,
    -- breakdowns); 7: by activity; 11: by model; 13: by source; 14: by
    -- project; 15: the user's total. A summed-away dimension is ''.
    summed             int2   not null constraint usage_day_summed_known check (summed in (0, 7, 11, 13, 14, 15)),
    -- The UTC day the row covers: [day 00:00Z, day + 1 00:00Z).
    day                date   not null,
    activity           text   not null,
    model              text   not null,
    source             text   not null,
    project            text   not null,
    -- The day's sums, as in the rollups (a whole UTC day needs no more).
    input_tokens       bigint not null,
    output_tokens      bigint not null,
    events             bigint not null,
    cache_read_tokens  bigint not null,
    cache_write_tokens bigint not null,
    reasoning_tokens   bigint not null,
    cost_nanos         bigint not null,
    unpriced_tokens    bigint not null,
    supplied_events    bigint not null,
    -- The quarter-hours of the day (0 = 00:00-00:15Z ... 95) that have
    -- usage, ascending: only those, so a quiet series' row stays small.
    quarters           int4[] not null,
    -- running[j][m]: measure m (the order of the sums above, as
    -- `Sums::to_array`) summed over quarters[1..j]. The sum over the
    -- quarter-hours before quarter k is running[width_bucket(k - 1,
    -- quarters)][m] (no row: 0).
    running            int8[] not null,
    constraint usage_day_pkey primary key (user_id, summed, day, activity, model, source, project),
    constraint usage_day_shape check (cardinality(quarters) between 1 and 96
                                      and cardinality(running) = 9 * cardinality(quarters))
-- Rows are written once per sealing and read whole: keep them in the page
-- (up to ~7 KB for a series busy in all 96 quarter-hours), uncompressed, so
-- a read subscripts the arrays in place instead of de-TOASTing them.
) with (toast_tuple_target = 8160, fillfactor = 100);

-- An int8 sum that stays int8, for the reads: sum(int8) accumulates in
-- numeric and is cast back, which was a third of the aggregation time of a
-- cold year view. 0 over no rows; an overflow fails (int8pl checks), as the
-- cast back did.
create aggregate tokenusage_sum(bigint) (
    sfunc = int8pl, stype = bigint, initcond = '0', combinefunc = int8pl, parallel = safe
);

-- Views of everyone (admins) read one grouping over a range of days for
-- all users: without the user, the primary key cannot serve them.
create index usage_day_everyone on usage_day (summed, day);

-- Which days the day rows stand for, per user: every UTC day before
-- `sealed_through` has day rows equal to its quarter-hour rollup rows;
-- days from it on are read from the fine rollups (their day rows, if
-- any, are stale and are rebuilt before the seal moves past them). Counting
-- an event before the seal lowers it in the same transaction, so a read
-- that uses day rows below the seal is always exact. '-infinity': nothing
-- sealed yet.
create table usage_day_seal (
    user_id        text not null constraint usage_day_seal_pkey primary key,
    sealed_through date not null
);
-- The sealer's work list, and the lowest seal of everyone (admins' views).
create index usage_day_seal_through on usage_day_seal (sealed_through);

-- Everyone counted so far starts unsealed; the sealer builds their history.
insert into usage_day_seal (user_id, sealed_through)
select distinct user_id, '-infinity'::date from usage_hour;

-- TimescaleDB: day rows are a hypertable too (the time column is in the
-- primary key, as it requires); a year per chunk.
do $$
begin
    if exists (select 1 from pg_extension where extname = 'timescaledb') then
        perform create_hypertable('usage_day', 'day',
            chunk_time_interval => interval '365 days', if_not_exists => true, migrate_data => true);
    end if;
exception when others then
    raise notice 'usage_day stays a plain table: %', sqlerrm;
end
$$;

-- Counting: as tokenusage_count_events_v3 of migration 0011, plus the
-- seals. A user seen for the first time gets a seal at the first day of
-- their batch (nothing before it exists to be sealed); a batch with rows
-- before a user's seal lowers it to that day. The insert comes first so
-- that, when two transactions meet a new user at once, the second one's
-- update sees the first one's row and can still lower it.
create or replace function tokenusage_count_events_v4(
    book_version bigint,
    e_occurred_at timestamptz[], e_source text[], e_event_id text[], e_user_id text[],
    e_activity text[], e_model text[], e_project text[], e_input bigint[], e_output bigint[], e_metadata jsonb[],
    e_partition integer[], e_offset bigint[], e_detail jsonb[], e_cost bigint[], e_unpriced bigint[],
    r_table text[], r_user_id text[], r_bucket timestamptz[], r_activity text[], r_model text[],
    r_source text[], r_project text[],
    r_input bigint[], r_output bigint[], r_events bigint[],
    r_cache_read bigint[], r_cache_write bigint[], r_reasoning bigint[], r_cost bigint[], r_unpriced bigint[],
    r_supplied bigint[],
    channel text, bodies text[])
returns bigint
language plpgsql as $$
declare
    g text;
    first_days text[];
    first_users text[];
begin
    perform 1 from price_book_state where version = book_version;
    if not found then
        raise exception 'the price book changed since this batch was priced (version %)', book_version
            using errcode = 'TU001';
    end if;

    insert into usage_events (occurred_at, source, event_id, user_id, activity, model, project,
                              input_tokens, output_tokens, metadata, kafka_partition, kafka_offset,
                              detail, cost_nanos, unpriced_tokens)
    select * from unnest(e_occurred_at, e_source, e_event_id, e_user_id, e_activity, e_model, e_project,
                         e_input, e_output, e_metadata, e_partition, e_offset, e_detail, e_cost, e_unpriced)
    on conflict do nothing;

    -- One statement per grain; the table name comes from this fixed list.
    foreach g in array array['usage_minute', 'usage_quarter_hour', 'usage_hour'] loop
        execute format($f$
            insert into %1$I as t (user_id, bucket, activity, model, source, project, input_tokens, output_tokens,
                                   events, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos,
                                   unpriced_tokens, supplied_events)
            select u, b, a, m, s, p, i, o, n, cr, cw, rs, c, up, sp
            from unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 as r(gr, u, b, a, m, s, p, i, o, n, cr, cw, rs, c, up, sp)
            where gr = %1$L
            on conflict (user_id, bucket, activity, model, source, project) do update
            set input_tokens = t.input_tokens + excluded.input_tokens,
                output_tokens = t.output_tokens + excluded.output_tokens,
                events = t.events + excluded.events,
                cache_read_tokens = t.cache_read_tokens + excluded.cache_read_tokens,
                cache_write_tokens = t.cache_write_tokens + excluded.cache_write_tokens,
                reasoning_tokens = t.reasoning_tokens + excluded.reasoning_tokens,
                cost_nanos = t.cost_nanos + excluded.cost_nanos,
                unpriced_tokens = t.unpriced_tokens + excluded.unpriced_tokens,
                supplied_events = t.supplied_events + excluded.supplied_events
            $f$, g, g)
        using r_table, r_user_id, r_bucket, r_activity, r_model, r_source, r_project, r_input, r_output, r_events,
              r_cache_read, r_cache_write, r_reasoning, r_cost, r_unpriced, r_supplied;
    end loop;

    perform tokenusage_lower_day_seals(r_user_id, r_bucket);

    return tokenusage_notify_rollups(channel, bodies);
end
$$;

-- The seal rule for a set of rollup rows (user, bucket) just written, in
-- the writer's transaction (after the writes): a user seen for the first
-- time gets a seal at their first day; a seal above a written day drops to
-- it.
--
-- The sealer holds the seal rows it works on `for update` and raises them
-- when it commits; its build read the rollups before this transaction
-- committed. So before comparing, this transaction locks the seal rows of
-- its users with rows before today (UTC): if the sealer holds one, this
-- waits for it and then sees the raised seal and lowers it; if this holds
-- it first, the sealer skips the user (`skip locked`). Rows of today need
-- no lock: the sealer never seals a day until an hour after it ended, and
-- a counting transaction is far shorter than that. Live traffic, all of
-- today, takes no lock at all; late rows (backfills, replays) do.
create or replace function tokenusage_lower_day_seals(users text[], buckets timestamptz[])
returns void
language plpgsql as $$
declare
    f_users text[];
    f_days date[];
begin
    select array_agg(u), array_agg((b at time zone 'UTC')::date) into f_users, f_days
      from (select u, min(b) as b from unnest(users, buckets) as r(u, b) group by u) f;
    insert into usage_day_seal (user_id, sealed_through)
    select * from unnest(f_users, f_days)
    on conflict do nothing;
    perform 1 from usage_day_seal
      where user_id in (select u from unnest(f_users, f_days) as f(u, day)
                         where day < (clock_timestamp() at time zone 'UTC')::date)
      order by user_id
        for no key update;
    update usage_day_seal s set sealed_through = f.day
      from unnest(f_users, f_days) as f(u, day)
     where s.user_id = f.u and f.day < s.sealed_through;
end
$$;

-- A projector of the previous release fails its commits (and retries)
-- rather than writing rows below a seal without lowering it.
drop function tokenusage_count_events_v3(bigint, timestamptz[], text[], text[], text[], text[], text[], text[],
    bigint[], bigint[], jsonb[], integer[], bigint[], jsonb[], bigint[], bigint[],
    text[], text[], timestamptz[], text[], text[], text[], text[],
    bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], text, text[]);
