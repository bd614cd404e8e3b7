-- Teams and projects (docs/DECISIONS.md, "Teams and projects"): the project
-- an event names and the publisher (source) that sent it become rollup
-- dimensions next to activity and model; teams are named groups of users,
-- each member a `member` or a `manager` of the team.

-- Raw events keep the project as published (null: none).
alter table usage_events add column project text;

-- Rollup rows are per user x bucket x activity x model x source x project.
-- `project` is '' for events without one. Rows counted before this
-- migration have source '' (not recorded in the rollups then): `tokenusage
-- replay` over a range whose raw events are kept fills it in.
do $$
declare
    t text;
    pk text;
begin
    foreach t in array array['usage_minute', 'usage_quarter_hour', 'usage_hour'] loop
        execute format('alter table %I add column source text not null default '''', '
                       'add column project text not null default ''''', t);
        select conname into pk from pg_constraint where conrelid = t::regclass and contype = 'p';
        execute format('alter table %I drop constraint %I', t, pk);
        execute format('alter table %I add constraint %I primary key (user_id, bucket, activity, model, source, project)',
                       t, t || '_pkey');
    end loop;
end $$;

-- Teams. The name is the handle views use (`team=`), so it follows the
-- activity rule: lowercase letters, digits, '-', '_' and '.'.
create table teams (
    id          bigint      generated always as identity constraint teams_pkey primary key,
    name        text        not null constraint teams_name_unique unique
                            constraint teams_name_rule check (name ~ '^[a-z0-9._-]{1,64}$'),
    created_at  timestamptz not null default now(),
    created_by  text        not null
);

-- Members by user id (the id events carry, local or from the identity
-- provider). `origin` says who keeps the row: `local` rows are managed with
-- the CLI and the admin API; `oidc` rows mirror a provider's group claim
-- and are replaced whenever that user signs in with a token.
create table team_members (
    team_id   bigint      not null references teams (id) on delete cascade,
    user_id   text        not null,
    role      text        not null default 'member' constraint team_members_role_known check (role in ('member', 'manager')),
    origin    text        not null default 'local' constraint team_members_origin_known check (origin in ('local', 'oidc')),
    added_at  timestamptz not null default now(),
    constraint team_members_pkey primary key (team_id, user_id)
);
create index team_members_user on team_members (user_id);

-- A view over several users (a team) records whom it covered, so "who
-- viewed my usage" finds managers' and admins' team views of a user even
-- after the membership changed. Part of the hash chain when not empty.
alter table audit_log add column covers text[];
create index audit_log_covers on audit_log using gin (covers);

-- Counting: as tokenusage_count_priced_events of migration 0010, with the
-- project (raw events and rollups) and the source (rollups).
create or replace function tokenusage_count_events_v3(
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

    return tokenusage_notify_rollups(channel, bodies);
end
$$;

-- As in migration 0010: a projector of the previous release fails its
-- commits (and retries) rather than writing rows without source and project.
drop function tokenusage_count_priced_events(bigint, timestamptz[], text[], text[], text[], text[], text[],
    bigint[], bigint[], jsonb[], integer[], bigint[], jsonb[], bigint[], bigint[],
    text[], text[], timestamptz[], text[], text[], bigint[], bigint[], bigint[],
    bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], text, text[]);
