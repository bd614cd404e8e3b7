-- Alerts when a provider's day differs from ours by more than a percentage
-- (docs/RECONCILIATION.md): per connection, the percentage and the webhook
-- endpoints to notify. Deliveries go through the budgets' outbox
-- (`webhook_deliveries`, signed and retried by the same sender), once per
-- connection and day (the idempotency key).
alter table provider_connections
    add column alert_percent  numeric constraint provider_connections_alert_percent check (alert_percent >= 0 and alert_percent <= 100),
    add column alert_webhooks text[] not null default '{}';

alter table webhook_deliveries drop constraint webhook_deliveries_event_known;
alter table webhook_deliveries add constraint webhook_deliveries_event_known
    check (event in ('budget.crossed', 'budget.resolved', 'reconciliation.difference'));
