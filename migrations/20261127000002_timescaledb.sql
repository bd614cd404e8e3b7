-- TimescaleDB, where available: hypertables for raw events and rollups.
-- On plain PostgreSQL, or where the extension is installed but cannot be
-- created (e.g. not in shared_preload_libraries), this does nothing and the
-- plain tables above serve the same queries.
do $$
begin
    if exists (select 1 from pg_available_extensions where name = 'timescaledb') then
        begin
            create extension if not exists timescaledb;
            -- The 2.x signature (relation, time column, ...), documented and
            -- still accepted by current releases. Chunks of a day for raw
            -- events (retention drops whole chunks) and a month for rollups.
            perform create_hypertable('usage_events', 'occurred_at',
                chunk_time_interval => interval '1 day', if_not_exists => true, migrate_data => true);
            perform create_hypertable('usage_minute', 'bucket',
                chunk_time_interval => interval '7 days', if_not_exists => true, migrate_data => true);
            perform create_hypertable('usage_quarter_hour', 'bucket',
                chunk_time_interval => interval '30 days', if_not_exists => true, migrate_data => true);
            perform create_hypertable('usage_hour', 'bucket',
                chunk_time_interval => interval '90 days', if_not_exists => true, migrate_data => true);
        exception when others then
            raise notice 'timescaledb is available but could not be enabled (%); using plain tables', sqlerrm;
        end;
    end if;
end
$$;
