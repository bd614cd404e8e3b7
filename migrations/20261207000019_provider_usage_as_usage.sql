-- Usage without instrumentation (docs/RECONCILIATION.md): a connection
-- whose `as_usage` is on has its mapped daily usage counted as raw events
-- of the source and user `provider:<connection>` (a prefix no publisher may
-- use), for each mapped scope and day where we counted none of our own.
alter table provider_connections add column as_usage boolean not null default false;
