-- Room on each page for updated rollup rows. A busy user's current minute,
-- quarter-hour and hour rows are updated by nearly every projector commit;
-- with free space on the page PostgreSQL updates them in place (HOT: no new
-- index entries), which is most of an upsert's cost. Applies to pages
-- written from now on.
do $$
declare t text;
begin
    foreach t in array array['usage_minute', 'usage_quarter_hour', 'usage_hour'] loop
        begin
            execute format('alter table %I set (fillfactor = 70)', t);
        exception when feature_not_supported or wrong_object_type then
            raise notice 'fillfactor not set on %: %', t, sqlerrm;
        end;
    end loop;
end $$;
