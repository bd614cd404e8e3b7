-- Budget names are chosen by people and unique per scope (#32): two
-- budgets on one team were both announced "Remove budget team:platform
-- tokens per week (UTC)". Names already taken twice keep the oldest
-- budget's; later ones get their id added, then an index holds the rule
-- (case-insensitive: "Monthly" and "monthly" are one name to a reader).
update budgets b
   set name = left(b.name, 100) || ' (budget ' || b.id || ')'
 where exists (select 1 from budgets o
                where o.scope_kind = b.scope_kind
                  and coalesce(o.scope, o.team_id::text) = coalesce(b.scope, b.team_id::text)
                  and lower(o.name) = lower(b.name)
                  and o.id < b.id);

create unique index budgets_name_per_scope on budgets (scope_kind, coalesce(scope, team_id::text), lower(name));
