-- Budgets and alerts (docs/DECISIONS.md, "Budgets and alerts"). A budget's
-- spend is never counted here: it is summed from the rollups at each
-- evaluation and written to budget_state as a derived copy (for the
-- dashboard, the check endpoint and the CLI). What is remembered are the
-- facts that must not repeat: which threshold was crossed in which window
-- (budget_crossings), and the notifications that fact owes
-- (webhook_deliveries, the outbox), written in one transaction.

create table webhook_endpoints (
    id          bigint      generated always as identity constraint webhook_endpoints_pkey primary key,
    name        text        not null constraint webhook_endpoints_name_unique unique
                            constraint webhook_endpoints_name_rule check (name ~ '^[a-z0-9._-]{1,64}$'),
    url         text        not null constraint webhook_endpoints_url_rule check (url ~ '^https?://' and length(url) <= 2048),
    -- The HMAC-SHA256 key of this endpoint's signatures. Kept in clear:
    -- signing needs it (like an API client secret); only admins read it,
    -- and only when the endpoint is created.
    secret      text        not null,
    format      text        not null default 'json' constraint webhook_endpoints_format_known check (format in ('json', 'slack')),
    created_at  timestamptz not null default now(),
    created_by  text        not null
);

create table budgets (
    id          bigint      generated always as identity constraint budgets_pkey primary key,
    name        text        not null constraint budgets_name_length check (length(name) between 1 and 128),
    scope_kind  text        not null constraint budgets_scope_known check (scope_kind in ('user', 'team', 'project')),
    -- The user id or project name; for a team its id (a rename keeps the
    -- budget, a deleted team takes its budgets with it).
    scope       text,
    team_id     bigint      references teams (id) on delete cascade,
    measure     text        not null constraint budgets_measure_known check (measure in ('tokens', 'cost')),
    -- Tokens, or cost in nano-units of the price book's currency.
    amount      bigint      not null constraint budgets_amount_positive check (amount > 0),
    period      text        not null constraint budgets_period_known check (period in ('day', 'week', 'month', 'rolling')),
    -- IANA zone of a calendar window ('UTC' for rolling ones).
    zone        text        not null default 'UTC',
    -- Length of a rolling window.
    rolling_minutes integer constraint budgets_rolling_range check (rolling_minutes between 1 and 527040),
    thresholds  integer[]   not null constraint budgets_thresholds_rule check (
                                cardinality(thresholds) between 1 and 16 and 0 < all (thresholds) and 1000 >= all (thresholds)),
    -- Endpoint names notified of crossings (none: live and on the dashboard only).
    webhooks    text[]      not null default '{}',
    created_at  timestamptz not null default now(),
    created_by  text        not null,
    constraint budgets_scope_shape check (
        (scope_kind = 'team') = (team_id is not null) and (scope_kind = 'team') = (scope is null)),
    constraint budgets_window_shape check ((period = 'rolling') = (rolling_minutes is not null))
);
create index budgets_user on budgets (scope) where scope_kind = 'user';
create index budgets_team on budgets (team_id);

-- One row per threshold per window that was crossed. `episode` grows when
-- a crossing undone (re-pricing, a rolling window moving on) happens again.
create table budget_crossings (
    budget_id    bigint      not null references budgets (id) on delete cascade,
    window_start timestamptz not null,
    threshold    integer     not null,
    episode      integer     not null default 1,
    crossed_at   timestamptz not null,
    resolved_at  timestamptz,
    constraint budget_crossings_pkey primary key (budget_id, window_start, threshold)
);

-- The last evaluation of each budget (derived; rewritten every time).
create table budget_state (
    budget_id    bigint      not null constraint budget_state_pkey primary key references budgets (id) on delete cascade,
    window_start timestamptz not null,
    window_end   timestamptz not null,
    spent        bigint      not null,
    -- Unpriced tokens in the window (cost budgets: what the cost misses).
    unpriced     bigint      not null default 0,
    evaluated_at timestamptz not null,
    -- The rollup sequence number the sums include (migration 0007).
    seq          bigint      not null
);

-- The outbox: every notification owed, written with the crossing it tells
-- of. A sender delivers each until the endpoint answers 2xx, or marks it
-- dead after the configured number of attempts.
create table webhook_deliveries (
    id              bigint      generated always as identity constraint webhook_deliveries_pkey primary key,
    endpoint_id     bigint      not null references webhook_endpoints (id) on delete cascade,
    budget_id       bigint      references budgets (id) on delete set null,
    event           text        not null constraint webhook_deliveries_event_known check (event in ('budget.crossed', 'budget.resolved')),
    idempotency_key text        not null,
    payload         jsonb       not null,
    state           text        not null default 'pending' constraint webhook_deliveries_state_known check (state in ('pending', 'delivered', 'dead')),
    attempts        integer     not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error      text,
    created_at      timestamptz not null default now(),
    delivered_at    timestamptz,
    constraint webhook_deliveries_once unique (endpoint_id, idempotency_key)
);
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at) where state = 'pending';
