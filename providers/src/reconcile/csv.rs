//! A reconciliation line as a CSV record.

use tokenusage_contract::money;

use super::Line;

/// The CSV header, in the order of [`csv_record`].
pub const CSV_HEADER: [&str; 22] = [
    "day",
    "provider",
    "connection",
    "model",
    "target_source",
    "target_project",
    "provider_scope",
    "our_input_tokens",
    "our_output_tokens",
    "our_cache_read_tokens",
    "our_cache_write_tokens",
    "our_cost",
    "our_unpriced_tokens",
    "reported_input_tokens",
    "reported_output_tokens",
    "reported_cache_read_tokens",
    "reported_cache_write_tokens",
    "billed",
    "billed_currency",
    "token_difference",
    "cost_difference",
    "reasons",
];

/// One line as CSV fields (money as exact decimal text). Text from the
/// provider or our publishers cannot start a spreadsheet formula.
pub fn csv_record(l: &Line) -> Vec<String> {
    use tokenusage_contract::text::spreadsheet_safe as safe;
    let opt = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let text = |v: &Option<String>| safe(v.as_deref().unwrap_or_default());
    let (ours, rep) = (l.ours, l.reported);
    vec![
        l.day.to_string(),
        l.provider.map(|p| p.name().to_owned()).unwrap_or_default(),
        text(&l.connection),
        safe(&l.model),
        text(&l.target.as_ref().and_then(|t| t.source.clone())),
        text(&l.target.as_ref().and_then(|t| t.project.clone())),
        text(&l.provider_scope),
        opt(ours.map(|c| c.tokens.input_tokens)),
        opt(ours.map(|c| c.tokens.output_tokens)),
        opt(ours.map(|c| c.tokens.cache_read_tokens)),
        opt(ours.map(|c| c.tokens.cache_write_tokens)),
        ours.map(|c| money::format_nanos(c.cost_nanos)).unwrap_or_default(),
        opt(ours.map(|c| c.unpriced_tokens)),
        opt(rep.map(|r| r.tokens.input_tokens)),
        opt(rep.map(|r| r.tokens.output_tokens)),
        opt(rep.map(|r| r.tokens.cache_read_tokens)),
        opt(rep.map(|r| r.tokens.cache_write_tokens)),
        l.billed.as_ref().map(|b| signed_nanos(b.amount_nanos)).unwrap_or_default(),
        l.billed.as_ref().map(|b| b.currency.clone()).unwrap_or_default(),
        l.token_difference.to_string(),
        l.cost_difference_nanos.map(signed_nanos).unwrap_or_default(),
        l.reasons
            .iter()
            .map(|r| serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" "),
    ]
}

/// Nano-units as decimal text, negative amounts with a sign.
pub fn signed_nanos(n: i64) -> String {
    if n < 0 {
        format!("-{}", money::format_nanos(n.checked_neg().unwrap_or(i64::MAX)))
    } else {
        money::format_nanos(n)
    }
}
