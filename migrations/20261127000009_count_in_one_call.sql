-- Counting a batch's new events in one round trip.
--
-- A projector commit used to send each write as its own statement: raw
-- events, three rollup upserts, the sequence number, the notification. On a
-- busy 2-core machine every round trip is also a wait for a core, and the
-- commit's length is paid twice by live latency (the next batch waits for
-- it). These functions run the same plain statements server-side, so a
-- commit is begin, offsets, keys, this call, commit (docs/DECISIONS.md,
-- "Commit round trips").
--
-- Every write here is a plain top-level INSERT ... SELECT FROM unnest, the
-- form TimescaleDB hypertables support everywhere (its history has bugs with
-- upserts into hypertables inside data-modifying CTEs, so those are avoided).

-- Takes the next number of `rollup_sequence` (migration 0007) and sends the
-- notification bodies with it. Each body is the rest of a JSON object after
-- its first member: `'{"seq":' || seq || body` is the payload. Call it last
-- in a transaction: the row lock it takes orders committers and is held only
-- until the commit.
create or replace function tokenusage_notify_rollups(channel text, bodies text[])
returns bigint
language plpgsql as $$
declare
    next_seq bigint;
begin
    update rollup_sequence set seq = seq + 1 where id returning seq into next_seq;
    perform pg_notify(channel, '{"seq":' || next_seq || body) from unnest(bodies) as body;
    return next_seq;
end
$$;

-- Stores events already known to be new (their keys were inserted in the
-- same transaction), adds their sums to the rollups, and notifies. The
-- rollup rows of all three grains come in one set of arrays; `r_table` names
-- each row's table. Returns the sequence number taken.
create or replace function tokenusage_count_events(
    e_occurred_at timestamptz[], e_source text[], e_event_id text[], e_user_id text[],
    e_activity text[], e_model text[], e_input bigint[], e_output bigint[], e_metadata jsonb[],
    e_partition integer[], e_offset bigint[],
    r_table text[], r_user_id text[], r_bucket timestamptz[], r_activity text[], r_model text[],
    r_input bigint[], r_output bigint[], r_events bigint[],
    channel text, bodies text[])
returns bigint
language plpgsql as $$
begin
    insert into usage_events (occurred_at, source, event_id, user_id, activity, model,
                              input_tokens, output_tokens, metadata, kafka_partition, kafka_offset)
    select * from unnest(e_occurred_at, e_source, e_event_id, e_user_id, e_activity, e_model,
                         e_input, e_output, e_metadata, e_partition, e_offset)
    on conflict do nothing;

    -- Three static statements rather than one dynamic one: PL/pgSQL caches
    -- their plans for the connection's life.
    insert into usage_minute as t (user_id, bucket, activity, model, input_tokens, output_tokens, events)
    select u, b, a, m, i, o, n
    from unnest(r_table, r_user_id, r_bucket, r_activity, r_model, r_input, r_output, r_events) as r(g, u, b, a, m, i, o, n)
    where g = 'usage_minute'
    on conflict (user_id, bucket, activity, model) do update
    set input_tokens = t.input_tokens + excluded.input_tokens,
        output_tokens = t.output_tokens + excluded.output_tokens,
        events = t.events + excluded.events;

    insert into usage_quarter_hour as t (user_id, bucket, activity, model, input_tokens, output_tokens, events)
    select u, b, a, m, i, o, n
    from unnest(r_table, r_user_id, r_bucket, r_activity, r_model, r_input, r_output, r_events) as r(g, u, b, a, m, i, o, n)
    where g = 'usage_quarter_hour'
    on conflict (user_id, bucket, activity, model) do update
    set input_tokens = t.input_tokens + excluded.input_tokens,
        output_tokens = t.output_tokens + excluded.output_tokens,
        events = t.events + excluded.events;

    insert into usage_hour as t (user_id, bucket, activity, model, input_tokens, output_tokens, events)
    select u, b, a, m, i, o, n
    from unnest(r_table, r_user_id, r_bucket, r_activity, r_model, r_input, r_output, r_events) as r(g, u, b, a, m, i, o, n)
    where g = 'usage_hour'
    on conflict (user_id, bucket, activity, model) do update
    set input_tokens = t.input_tokens + excluded.input_tokens,
        output_tokens = t.output_tokens + excluded.output_tokens,
        events = t.events + excluded.events;

    return tokenusage_notify_rollups(channel, bodies);
end
$$;
