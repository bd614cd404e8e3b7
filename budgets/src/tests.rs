use super::*;

fn new(v: serde_json::Value) -> Result<Checked, BudgetError> {
    check(&serde_json::from_value(v).unwrap())
}

#[test]
fn budgets_are_checked_field_by_field() {
    let ok = new(serde_json::json!({"scope": {"kind": "team", "id": "ml"}, "measure": "cost", "amount": "250.50",
        "period": "month", "zone": "Asia/Kathmandu", "thresholds": [100, 80, 80]}))
    .unwrap();
    assert_eq!(ok.amount, 250_500_000_000);
    assert_eq!(ok.thresholds, vec![80, 100]);
    assert_eq!(ok.name, "team:ml cost per month (Asia/Kathmandu)");
    let r = new(serde_json::json!({"scope": {"kind": "user", "id": "a"}, "measure": "tokens", "amount": 1000,
        "period": "rolling", "window": "24h"}))
    .unwrap();
    assert_eq!((r.rolling_minutes, r.zone.as_str()), (Some(1440), "UTC"));
    let cases = [
        (
            serde_json::json!({"scope": {"kind": "team", "id": "No Caps"}, "measure": "tokens", "amount": 1, "period": "day"}),
            "scope.id",
        ),
        (
            serde_json::json!({"scope": {"kind": "user", "id": "a"}, "measure": "tokens", "amount": "1", "period": "day"}),
            "amount",
        ),
        (
            serde_json::json!({"scope": {"kind": "user", "id": "a"}, "measure": "cost", "amount": 5, "period": "day"}),
            "amount",
        ),
        (
            serde_json::json!({"scope": {"kind": "user", "id": "a"}, "measure": "tokens", "amount": 0, "period": "day"}),
            "amount",
        ),
        (
            serde_json::json!({"scope": {"kind": "user", "id": "a"}, "measure": "tokens", "amount": 1, "period": "day", "zone": "Mars/Olympus"}),
            "zone",
        ),
        (
            serde_json::json!({"scope": {"kind": "user", "id": "a"}, "measure": "tokens", "amount": 1, "period": "rolling"}),
            "window",
        ),
        (
            serde_json::json!({"scope": {"kind": "user", "id": "a"}, "measure": "tokens", "amount": 1, "period": "day", "window": "1d"}),
            "window",
        ),
        (
            serde_json::json!({"scope": {"kind": "user", "id": "a"}, "measure": "tokens", "amount": 1, "period": "rolling", "window": "400d"}),
            "rolling window",
        ),
        (
            serde_json::json!({"scope": {"kind": "user", "id": "a"}, "measure": "tokens", "amount": 1, "period": "day", "thresholds": [0]}),
            "thresholds",
        ),
        (
            serde_json::json!({"scope": {"kind": "user", "id": "a"}, "measure": "tokens", "amount": 1, "period": "day", "thresholds": []}),
            "thresholds",
        ),
    ];
    for (v, field) in cases {
        let e = new(v.clone()).expect_err(&v.to_string()).to_string();
        assert!(e.contains(field), "{v}: {e}");
    }
}

#[test]
fn rolling_windows_read_minutes_hours_and_days() {
    assert_eq!(parse_window("90m").unwrap(), 90);
    assert_eq!(parse_window("24h").unwrap(), 1440);
    assert_eq!(parse_window("7d").unwrap(), 10_080);
    for bad in ["", "h", "0m", "5", "5w", "-1h", "99999999999d", " 24h", "24h ", "2 4h"] {
        assert!(parse_window(bad).is_err(), "{bad}");
    }
}
