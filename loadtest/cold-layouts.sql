-- Storage layouts for cold whole-year reads (issue: fast without the
-- cache), measured side by side on the history benchmark's data set: one
-- user, one event per minute of 2025 (525,600 events) over 30 series,
-- with the nine measures a rollup row carries today. Run by
-- loadtest/bench-cold-layouts.sh in a throwaway database; nothing here is
-- part of the product's schema.
--
-- Layouts:
--   exp_hour     the hourly rollup as today (one row per hour and series)
--   exp_quarter  the quarter-hour rollup as today (zones off the hour)
--   exp_dayq     one row per UTC day and series, each measure a 97-slot
--                array of prefix sums over the day's 96 quarter-hours
--                (slot 1 = 0, slot q+1 = the sum of quarters 0..q-1), so
--                any quarter-hour-aligned part of a day is two subscripts.

create table exp_quarter (
    user_id text not null, bucket timestamptz not null, series int2 not null,
    input_tokens int8 not null, output_tokens int8 not null, cache_read_tokens int8 not null,
    cache_write_tokens int8 not null, reasoning_tokens int8 not null, cost_nanos int8 not null,
    unpriced_tokens int8 not null, events int8 not null, supplied_events int8 not null,
    primary key (user_id, bucket, series)
);

insert into exp_quarter
select 'u', date_bin('15 minutes', m, '2025-01-01'), (extract(epoch from m)::int8 / 60 % 30)::int2,
       sum(100 + extract(epoch from m)::int8 / 60 % 7), sum(50 + extract(epoch from m)::int8 / 60 % 5),
       sum(extract(epoch from m)::int8 / 60 % 3 * 10), 0, sum(extract(epoch from m)::int8 / 60 % 2 * 5),
       sum(1000 + extract(epoch from m)::int8 / 60 % 11), 0, count(*), 0
  from generate_series(timestamptz '2025-01-01 00:00Z', timestamptz '2025-12-31 23:59Z', interval '1 minute') m
 group by 2, 3;

create table exp_hour (like exp_quarter including all);
insert into exp_hour
select user_id, date_bin('1 hour', bucket, '2025-01-01'), series,
       sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
       sum(reasoning_tokens), sum(cost_nanos), sum(unpriced_tokens), sum(events), sum(supplied_events)
  from exp_quarter group by 1, 2, 3;

create table exp_dayq (
    user_id text not null, day timestamptz not null, series int2 not null,
    dq int8 not null,  -- the day's first quarter-hour, counted from the epoch
    p_input int8[] not null, p_output int8[] not null, p_cache_read int8[] not null,
    p_cache_write int8[] not null, p_reasoning int8[] not null, p_cost int8[] not null,
    p_unpriced int8[] not null, p_events int8[] not null, p_supplied int8[] not null,
    primary key (user_id, day, series)
);

insert into exp_dayq
with days as (
    select distinct user_id, date_bin('1 day', bucket, '2025-01-01') as day, series from exp_quarter
), grid as (
    select d.user_id, d.day, d.series, q, coalesce(x.input_tokens, 0) i, coalesce(x.output_tokens, 0) o,
           coalesce(x.cache_read_tokens, 0) cr, coalesce(x.cache_write_tokens, 0) cw, coalesce(x.reasoning_tokens, 0) r,
           coalesce(x.cost_nanos, 0) c, coalesce(x.unpriced_tokens, 0) un, coalesce(x.events, 0) e,
           coalesce(x.supplied_events, 0) s
      from days d cross join generate_series(0, 95) q
      left join exp_quarter x on x.user_id = d.user_id and x.series = d.series
                             and x.bucket = d.day + q * interval '15 minutes'
), cum as (
    select user_id, day, series, q,
           sum(i) over w i, sum(o) over w o, sum(cr) over w cr, sum(cw) over w cw, sum(r) over w r,
           sum(c) over w c, sum(un) over w un, sum(e) over w e, sum(s) over w s
      from grid window w as (partition by user_id, day, series order by q)
)
select user_id, day, series, (extract(epoch from day) / 900)::int8,
       array[0::int8] || array_agg(i order by q), array[0::int8] || array_agg(o order by q),
       array[0::int8] || array_agg(cr order by q), array[0::int8] || array_agg(cw order by q),
       array[0::int8] || array_agg(r order by q), array[0::int8] || array_agg(c order by q),
       array[0::int8] || array_agg(un order by q), array[0::int8] || array_agg(e order by q),
       array[0::int8] || array_agg(s order by q)
  from cum group by 1, 2, 3;

-- The bucket plans: the starts of every day, week (Monday) and month of
-- 2025 in each zone, plus the end, as the API's planner makes them.
-- Stored inline and uncompressed: the API binds its plan as a parameter,
-- so a plan must not cost a TOAST fetch per row it is used on.
-- `q` is the same boundaries in quarter-hours from the epoch (integer
-- arithmetic per row instead of interval and numeric arithmetic).
create table exp_plan (name text primary key, starts timestamptz[] not null, q int8[]);
alter table exp_plan alter starts set storage plain, alter q set storage plain;
insert into exp_plan
select z || ':' || g,
       (select array_agg((d::timestamp) at time zone z order by d)
          from generate_series(
                 case g when 'week' then timestamp '2024-12-30' else timestamp '2025-01-01' end,
                 timestamp '2026-01-01',
                 case g when 'day' then interval '1 day' when 'week' then interval '1 week' else interval '1 month' end) d)
  from unnest(array['UTC', 'America/New_York', 'Asia/Kolkata', 'Asia/Kathmandu']) z,
       unnest(array['day', 'week', 'month']) g;

update exp_plan set q = array(select (extract(epoch from b) / 900)::int8 from unnest(starts) b);

vacuum full analyze exp_plan;
vacuum analyze exp_quarter, exp_hour, exp_dayq;

-- Rows summed, by layout, fine grains: the bucket total is a group by of
-- width_bucket over the rows in range (what the API does today).
create function exp_fine(plan text, fine text) returns table (k int, series int2, input int8, output int8, cost int8, events int8)
language plpgsql stable as $$
begin
    return query execute format(
        'select width_bucket(r.bucket, p.starts), r.series, sum(r.input_tokens)::int8, sum(r.output_tokens)::int8,
                sum(r.cost_nanos)::int8, sum(r.events)::int8
           from %I r, exp_plan p
          where p.name = $1 and r.user_id = ''u'' and r.bucket >= p.starts[1] and r.bucket < p.starts[cardinality(p.starts)]
          group by 1, 2', fine) using plan;
end $$;

-- The day-array layout: a UTC day row overlaps at most three buckets (a
-- 23-hour local day at a DST change can sit wholly inside one UTC day), so
-- it contributes to the bucket its start falls in and the next two, each
-- the difference of two prefix sums (empty parts drop out). Four of the
-- nine measures are summed, as in exp_fine: the product would read all
-- nine, so both layouts' figures understate its cost alike. `offset 0`
-- keeps the arrays out of the sort: only the differences are grouped.
create function exp_dayq_read(plan text) returns table (k int, series int2, input int8, output int8, cost int8, events int8)
language sql stable as $$
    select c.k, c.series, sum(c.i)::int8, sum(c.o)::int8, sum(c.c)::int8, sum(c.e)::int8
      from (
        select x.k, r.series,
               r.p_input[x.hi + 1] - r.p_input[x.lo + 1] as i, r.p_output[x.hi + 1] - r.p_output[x.lo + 1] as o,
               r.p_cost[x.hi + 1] - r.p_cost[x.lo + 1] as c, r.p_events[x.hi + 1] - r.p_events[x.lo + 1] as e
          from exp_plan p
          join exp_dayq r on r.user_id = 'u' and r.day > p.starts[1] - interval '1 day'
                         and r.day < p.starts[cardinality(p.starts)]
          cross join lateral (
              select y.k, y.lo, y.hi from (
                  select kk.k,
                         greatest(0, least(96, p.q[kk.k] - r.dq))::int as lo,
                         greatest(0, least(96, p.q[kk.k + 1] - r.dq))::int as hi
                    from (select greatest(width_bucket(r.dq, p.q), 1) + v.n as k from (values (0), (1), (2)) v(n)) kk
                   where kk.k < cardinality(p.q)) y
               where y.hi > y.lo) x
         where p.name = plan offset 0) c
     group by 1, 2
$$;
