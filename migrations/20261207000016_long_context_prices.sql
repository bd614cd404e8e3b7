-- Long-context prices: when one request's input is more than
-- `long_context_above` tokens, every token of it is priced at
-- `long_context` (per kind, nano-units per million tokens, as the columns
-- of the base price; a kind it leaves out keeps the base price).
-- Catalogues carry these (LiteLLM's `*_above_200k_tokens`, models.dev's
-- `context_over_200k`); before this migration imports dropped them.
alter table price_book
    add column long_context_above bigint,
    add column long_context       jsonb,
    add constraint price_book_long_context check (
        (long_context_above is null) = (long_context is null)
        and (long_context_above is null or long_context_above > 0));
