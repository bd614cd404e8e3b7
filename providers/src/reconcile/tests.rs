use super::*;

fn acc(ours: Option<(i64, i64)>, reported: Option<i64>, billed: Option<i64>) -> Acc {
    Acc {
        ours: ours.map(|(t, c)| Counted {
            tokens: Tokens { input_tokens: t, ..Tokens::default() },
            events: 1,
            cost_nanos: c,
            unpriced_tokens: 0,
        }),
        reported: reported
            .map(|t| Reported { tokens: Tokens { input_tokens: t, ..Tokens::default() }, ..Reported::default() }),
        billed: billed.map(|b| Billed { amount_nanos: b, currency: "USD".into() }),
        revised: false,
    }
}

fn l(a: Acc) -> Line {
    let conn = ("c".to_owned(), Some(Provider::OpenAi));
    let t = Target { source: None, project: Some("p".into()) };
    line(Some(&conn), NaiveDate::MIN, "m".into(), Some(t), None, a, "USD")
}

#[test]
fn differences_are_named() {
    assert_eq!(l(acc(Some((10, 5)), Some(10), Some(5))).reasons, vec![]);
    assert_eq!(l(acc(Some((5, 5)), Some(10), Some(9))).reasons, vec![Reason::NotPublished]);
    assert_eq!(l(acc(None, Some(10), Some(9))).token_difference, 10);
    assert_eq!(l(acc(Some((12, 5)), Some(10), Some(9))).reasons, vec![Reason::CountedMore]);
    assert_eq!(l(acc(Some((10, 5)), Some(10), Some(9))).reasons, vec![Reason::PriceDiffers]);
    assert_eq!(l(acc(Some((10, 5)), Some(10), None)).reasons, vec![Reason::NoCostReport]);
    assert_eq!(l(acc(Some((10, 5)), Some(10), Some(9))).cost_difference_nanos, Some(4));
}

#[test]
fn tolerance_is_a_share_of_the_providers_figure() {
    let pct = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
    let line = l(acc(Some((99, 100)), Some(100), Some(100)));
    assert!(!line.exceeds(pct("1")));
    assert!(line.exceeds(pct("0.5")));
    assert!(l(acc(Some((1, 0)), Some(0), None)).exceeds(pct("50")));
}

#[test]
fn negative_amounts_keep_their_sign() {
    assert_eq!(signed_nanos(-1_500_000_000), "-1.5");
    assert_eq!(signed_nanos(60_000_000), "0.06");
}
