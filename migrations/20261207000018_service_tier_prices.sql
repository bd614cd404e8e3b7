-- Service-tier and per-request prices. `service_tiers` holds the batch,
-- flex and priority prices as {tier: {kind: nano-units per million}}, each
-- over the base price kind by kind (a kind a tier leaves out keeps the
-- base); `web_search` is nano-units per web search request. Catalogues
-- carry both (LiteLLM's `*_batches`/`*_flex`/`*_priority` and
-- `search_context_cost_per_query`); before this migration imports dropped
-- them, and events could not say which tier served them.
alter table price_book
    add column service_tiers jsonb not null default '{}',
    add column web_search    bigint,
    add constraint price_book_service_tiers check (jsonb_typeof(service_tiers) = 'object'),
    add constraint price_book_web_search check (web_search is null or web_search >= 0);
