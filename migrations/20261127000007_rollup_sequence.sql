-- The commit order of rollup changes, for exact live views.
--
-- Every transaction that changes rollups increments this one row just
-- before it commits and puts the new number in its notification. Row locks
-- make the increments follow commit order, so a reader that sees `seq = S`
-- in its snapshot sees exactly the changes numbered 1..S: a live view read
-- at S applies only the notified changes numbered above S, never one twice
-- and never one missed. (A SEQUENCE would not do: nextval is not
-- transactional, so its order is not commit order.)
create table if not exists rollup_sequence (
    id boolean primary key default true check (id),
    seq bigint not null
);
insert into rollup_sequence (id, seq) values (true, 0) on conflict do nothing;
