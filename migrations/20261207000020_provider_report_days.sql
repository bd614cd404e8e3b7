-- The providers' reports summed per day (docs/RECONCILIATION.md, "A year at
-- a glance"): one row per connection, day and scope/key (usage) or scope
-- and currency (cost), so the reconciliation's day summary reads a year as
-- tens of thousands of rows instead of millions. Exact by construction:
-- every transaction that changes a connection's report rows of some days
-- re-sums exactly those days (`tokenusage_resum_provider_days`) before it
-- commits.
create table provider_usage_days (
    connection_id      bigint not null references provider_connections (id) on delete cascade,
    day                date   not null,
    scope              text   not null,
    api_key            text   not null,
    input_tokens       int8   not null,
    output_tokens      int8   not null,
    cache_read_tokens  int8   not null,
    cache_write_tokens int8   not null,
    requests           int8   not null,
    -- Some of it was long-context or a batch/flex/priority tier.
    tiered             boolean not null,
    constraint provider_usage_days_pkey primary key (connection_id, day, scope, api_key)
);
create index provider_usage_days_day on provider_usage_days (day);

create table provider_cost_days (
    connection_id bigint not null references provider_connections (id) on delete cascade,
    day           date   not null,
    scope         text   not null,
    currency      text   not null,
    amount_nanos  int8   not null,
    constraint provider_cost_days_pkey primary key (connection_id, day, scope, currency)
);
create index provider_cost_days_day on provider_cost_days (day);

create function tokenusage_resum_provider_days(conn bigint, from_day date, to_day date) returns void
language sql as $$
    delete from provider_usage_days where connection_id = conn and day >= from_day and day < to_day;
    insert into provider_usage_days
    select connection_id, day, scope, api_key, sum(input_tokens)::int8, sum(output_tokens)::int8,
           sum(cache_read_tokens)::int8, sum(cache_write_tokens)::int8, sum(requests)::int8,
           bool_or(context_window = '200k-1M' or service_tier not in ('', 'standard', 'default', 'auto'))
    from provider_usage where connection_id = conn and day >= from_day and day < to_day
    group by connection_id, day, scope, api_key;
    delete from provider_cost_days where connection_id = conn and day >= from_day and day < to_day;
    insert into provider_cost_days
    select connection_id, day, scope, currency, sum(amount_nanos)::int8
    from provider_costs where connection_id = conn and day >= from_day and day < to_day
    group by connection_id, day, scope, currency;
$$;

select tokenusage_resum_provider_days(id, '-infinity'::date, 'infinity'::date) from provider_connections;
