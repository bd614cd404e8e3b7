-- The providers' own usage and cost reports: a second ledger beside what
-- we count, so an organisation can check our figures against the bill
-- (docs/RECONCILIATION.md). Written by the importer (crate
-- tokenusage-providers), read by reconciliation.

-- One admin connection to a provider's organisation reports. The admin key
-- is read only by the importer: no listing, API answer, log or audit entry
-- selects it.
create table provider_connections (
    id             bigint generated always as identity constraint provider_connections_pkey primary key,
    name           text        not null constraint provider_connections_name unique
                               constraint provider_connections_name_shape check (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    provider       text        not null constraint provider_connections_provider check (provider in ('openai', 'anthropic')),
    base_url       text        not null,
    admin_key      text        not null,
    -- The first day the importer reaches back to.
    import_from    date        not null,
    -- Every day before this one was imported whole at least once.
    imported_through date,
    -- One import at a time across processes: a lease, renewed per page.
    lease_owner    text,
    lease_until    timestamptz,
    created_at     timestamptz not null default now(),
    created_by     text        not null
);

-- Each import run: its range, progress and outcome (shown by `providers
-- list`, the admin API and readiness of the reconciliation).
create table provider_imports (
    id            bigint generated always as identity constraint provider_imports_pkey primary key,
    connection_id bigint      not null references provider_connections (id) on delete cascade,
    range_from    date        not null,
    range_to      date        not null,          -- exclusive
    started_at    timestamptz not null default now(),
    finished_at   timestamptz,
    pages         int4        not null default 0,
    usage_rows    int4        not null default 0,
    cost_rows     int4        not null default 0,
    outcome       text        not null default 'running'
                              constraint provider_imports_outcome check (outcome in ('running', 'ok', 'failed')),
    error         text
);
create index provider_imports_recent on provider_imports (connection_id, started_at desc);

-- Daily token usage as the provider reports it, normalised to our token
-- kinds (input_tokens is the whole input, cached and cache-written parts
-- included, as in our events). '' is "none" for every text key column.
create table provider_usage (
    connection_id         bigint not null references provider_connections (id) on delete cascade,
    day                   date   not null,    -- the UTC day bucket
    scope                 text   not null,    -- OpenAI project_id, Anthropic workspace_id
    api_key               text   not null,
    model                 text   not null,
    service_tier          text   not null,
    context_window        text   not null,
    input_tokens          int8   not null,
    output_tokens         int8   not null,
    cache_read_tokens     int8   not null,
    cache_write_tokens    int8   not null,    -- 5-minute and 1-hour together, as our rollups
    cache_write_1h_tokens int8   not null,
    audio_input_tokens    int8   not null,
    audio_output_tokens   int8   not null,
    requests              int8   not null,
    web_search_requests   int8   not null,
    import_id             bigint not null,    -- the import that last reported the row
    constraint provider_usage_pkey primary key (connection_id, day, scope, api_key, model, service_tier, context_window)
);

-- Daily cost as billed, in nano-units of its currency.
create table provider_costs (
    connection_id bigint not null references provider_connections (id) on delete cascade,
    day           date   not null,
    scope         text   not null,
    line_item     text   not null,    -- OpenAI line_item, Anthropic description
    model         text   not null,    -- '' when the report names none
    service_tier  text   not null,
    context_window text  not null,
    currency      text   not null,
    amount_nanos  int8   not null,
    import_id     bigint not null,
    constraint provider_costs_pkey primary key (connection_id, day, scope, line_item, model, service_tier, context_window)
);

-- What the provider revised: every change to (or disappearance of) an
-- imported row, with the figures before and after. Written by the trigger
-- below, so no import path can forget it.
create table provider_revisions (
    id            bigint generated always as identity constraint provider_revisions_pkey primary key,
    connection_id bigint      not null references provider_connections (id) on delete cascade,
    report        text        not null,   -- 'usage' or 'costs'
    day           date        not null,
    model         text        not null,
    before        jsonb       not null,
    after         jsonb,                  -- null: the provider no longer reports the row
    import_id     bigint,
    revised_at    timestamptz not null default now()
);
create index provider_revisions_day on provider_revisions (connection_id, day);

create function tokenusage_provider_revision() returns trigger language plpgsql as $$
declare
    was jsonb := to_jsonb(old) - 'import_id';
    is_now jsonb := case when tg_op = 'UPDATE' then to_jsonb(new) - 'import_id' end;
begin
    -- A re-import that reports the same figures only moves import_id.
    if tg_op = 'UPDATE' and was = is_now then
        return new;
    end if;
    insert into provider_revisions (connection_id, report, day, model, before, after, import_id)
    values (old.connection_id, tg_argv[0], old.day, old.model, was, is_now,
            case when tg_op = 'UPDATE' then new.import_id end);
    return coalesce(new, old);
end $$;

create trigger provider_usage_revised before update or delete on provider_usage
    for each row execute function tokenusage_provider_revision('usage');
create trigger provider_costs_revised before update or delete on provider_costs
    for each row execute function tokenusage_provider_revision('costs');

-- Which of our scopes a provider's project, workspace or API key is. A
-- target names a source (publisher), a project, or both; `null` is "any".
-- Targets never overlap (one of our events reconciles against at most one
-- target), which the code checks before inserting. An API key's mapping
-- wins over its project's or workspace's.
create table provider_mappings (
    connection_id  bigint not null references provider_connections (id) on delete cascade,
    kind           text   not null constraint provider_mappings_kind check (kind in ('scope', 'api_key')),
    external_id    text   not null,
    target_source  text,
    target_project text,
    created_at     timestamptz not null default now(),
    constraint provider_mappings_pkey primary key (connection_id, kind, external_id),
    constraint provider_mappings_target check (target_source is not null or target_project is not null)
);
