//! Exact amounts of money: nano-units (10^-9) of a currency in an `i64`,
//! parsed from and written as decimal text. No floating point anywhere: a
//! price or a cost that is not exactly representable is refused, never
//! rounded silently.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// Nano-units in one unit of a currency.
pub const NANOS_PER_UNIT: i64 = 1_000_000_000;

/// Parses a non-negative decimal amount ("0.0123", "12", "1.5e-3") into
/// nano-units. More than 9 decimal places, a negative amount or one over
/// [`crate::Limits::MAX_SUPPLIED_COST_NANOS`] is an error in words.
pub fn parse_nanos(text: &str) -> Result<i64, String> {
    let d = parse_decimal(text)?;
    to_scaled(d, 9, crate::Limits::MAX_SUPPLIED_COST_NANOS)
        .map_err(|why| format!("{why} (got {text:?}; amounts have at most 9 decimal places)"))
}

/// Parses an amount a publisher wrote as text: plain decimal digits with
/// at most one point ("12", "0.0123"), nothing else: no sign, exponent,
/// spaces, or separators. Into nano-units, as [`parse_nanos`].
pub fn parse_nanos_text(text: &str) -> Result<i64, String> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, "1"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) {
        return Err(format!(
            "must be decimal text like \"0.0123\" (digits and one point, no exponent or spaces), got {text:?}"
        ));
    }
    parse_nanos(text)
}

/// Parses decimal text, plain or in scientific notation, exactly.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    let parsed = if t.contains(['e', 'E']) { Decimal::from_scientific(t) } else { Decimal::from_str_exact(t) };
    parsed.map_err(|_| format!("must be a decimal number, got {text:?}"))
}

/// `d × 10^scale` as an integer in `0..=max`, refusing any remainder.
pub fn to_scaled(d: Decimal, scale: u32, max: i64) -> Result<i64, String> {
    if d.is_sign_negative() && !d.is_zero() {
        return Err("must not be negative".into());
    }
    let scaled = d.checked_mul(Decimal::from(10i64.pow(scale))).ok_or("is too large")?;
    if !scaled.fract().is_zero() {
        return Err("has more precision than can be kept exactly".into());
    }
    match scaled.to_i64() {
        Some(n) if n <= max => Ok(n),
        _ => Err(format!("must be at most {}", format_scaled(max, scale))),
    }
}

/// Nano-units as decimal text without trailing zeros: 12_300_000 → "0.0123".
pub fn format_nanos(n: i64) -> String {
    format_scaled(n, 9)
}

/// `n × 10^-scale` as decimal text without trailing zeros.
pub fn format_scaled(n: i64, scale: u32) -> String {
    Decimal::new(n, scale).normalize().to_string()
}

/// Is `code` shaped like an ISO 4217 currency code (three capital letters)?
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly_or_are_refused_in_words() {
        assert_eq!(parse_nanos("0.0123"), Ok(12_300_000));
        assert_eq!(parse_nanos("12"), Ok(12 * NANOS_PER_UNIT));
        assert_eq!(parse_nanos("1.5e-3"), Ok(1_500_000));
        assert_eq!(parse_nanos("0.000000001"), Ok(1));
        assert!(parse_nanos("0.0000000001").unwrap_err().contains("precision"));
        assert!(parse_nanos("-1").unwrap_err().contains("negative"));
        assert!(parse_nanos("1000000.000000001").unwrap_err().contains("at most 1000000"));
        assert!(parse_nanos("abc").unwrap_err().contains("decimal number"));
        assert_eq!(format_nanos(12_300_000), "0.0123");
        assert_eq!(format_nanos(12 * NANOS_PER_UNIT), "12");
        assert_eq!(format_nanos(0), "0");
    }

    #[test]
    fn amount_text_is_plain_decimal_digits_only() {
        assert_eq!(parse_nanos_text("0.0123"), Ok(12_300_000));
        assert_eq!(parse_nanos_text("12"), Ok(12 * NANOS_PER_UNIT));
        for bad in ["1e3", "1E3", " 5", "5 ", "+5", "-1", ".5", "5.", "1,5", "0x10", "", "1.2.3", "١"] {
            assert!(parse_nanos_text(bad).unwrap_err().contains("decimal text"), "{bad:?}");
        }
    }
}
