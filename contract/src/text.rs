//! What text can be stored: the one rule every string that reaches
//! PostgreSQL is checked against, and the lossless escaping used where a
//! string must be kept whatever it holds (audit entries, dead letters).
//!
//! In a UTF-8 database, `text` holds every Unicode scalar value except NUL
//! (`invalid byte sequence for encoding "UTF8": 0x00`, SQLSTATE 22021) and
//! `jsonb` refuses `\u0000` (`unsupported Unicode escape sequence`, 22P05).
//! Rust strings cannot hold lone surrogates or invalid UTF-8, and serde_json
//! refuses both while parsing, so NUL is the one character left to refuse.
//! Both refusals are deterministic: a retry never helps, which is why a
//! value that could not be stored must be refused before it is accepted.

use std::borrow::Cow;

/// Why a string cannot be stored as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstorable {
    /// It holds U+0000, which PostgreSQL `text` and `jsonb` refuse.
    Nul,
}

impl Unstorable {
    /// The reason, in words for the field error.
    pub fn reason(self) -> &'static str {
        match self {
            Unstorable::Nul => "must not contain the NUL character (U+0000), which PostgreSQL cannot store",
        }
    }
}

/// Checks that `s` can be stored in a PostgreSQL `text` or `jsonb` string.
pub fn storable(s: &str) -> Result<(), Unstorable> {
    if s.contains('\0') { Err(Unstorable::Nul) } else { Ok(()) }
}

/// Checks every string of a JSON value (object keys included); on failure,
/// returns the dotted path of the first offending string (empty for the
/// value itself) and why.
pub fn storable_json(v: &serde_json::Value) -> Result<(), (String, Unstorable)> {
    fn walk(v: &serde_json::Value, path: &mut String) -> Result<(), Unstorable> {
        match v {
            serde_json::Value::String(s) => storable(s),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    push_segment(path, &i.to_string());
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            serde_json::Value::Object(map) => {
                for (k, item) in map {
                    let len = path.len();
                    // A bad key is reported by its escaped form, so the path
                    // itself stays printable.
                    push_segment(path, &escape(k));
                    storable(k)?;
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    let mut path = String::new();
    walk(v, &mut path).map_err(|why| (path, why))
}

fn push_segment(path: &mut String, segment: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(segment);
}

/// A lossless, printable form of any string: backslash becomes `\\` and
/// every control character `\u{XXXX}`; everything else is kept. Reversible
/// (a backslash in the output always starts an escape), and the result is
/// always [`storable`].
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || c.is_control()) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Undoes [`escape`]; `None` if `s` is not something `escape` produced.
pub fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
/// A CSV cell that a spreadsheet cannot mistake for a formula: text
/// starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a
/// leading `'` (OWASP's advice on CSV injection). For text cells only:
/// numbers are written as they are.
pub fn spreadsheet_safe(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_owned() }
}

pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn nul_is_the_one_character_refused() {
        assert_eq!(storable("x\0y"), Err(Unstorable::Nul));
        assert_eq!(storable("tab\tnew\nline \u{202e}rtl \u{1F600} \u{FFFF}"), Ok(()));
        let v = json!({"a": ["ok", {"b\0": 1}]});
        assert_eq!(storable_json(&v), Err(("a.1.b\\u{0000}".to_owned(), Unstorable::Nul)));
        assert_eq!(storable_json(&json!({"a": "x\0"})), Err(("a".to_owned(), Unstorable::Nul)));
        assert_eq!(storable_json(&json!({"a": ["x", 1, null]})), Ok(()));
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

    proptest! {
        /// Escaping is lossless, printable and always storable, and leaves
        /// ordinary text untouched.
        #[test]
        fn escaping_round_trips_any_string(s in any::<String>()) {
            let e = escape(&s);
            prop_assert!(storable(&e).is_ok());
            prop_assert!(!e.chars().any(char::is_control));
            prop_assert_eq!(unescape(&e), Some(s.clone()));
            if !s.chars().any(|c| c == '\\' || c.is_control()) {
                prop_assert!(matches!(e, Cow::Borrowed(_)));
            }
        }
    }
}
