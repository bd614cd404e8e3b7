//! Reading events from NDJSON or CSV, line by line, with the line number of
//! every problem. Both formats go through the contract's native validation,
//! so a CSV cell gets the same message as a JSON field.

use std::io::BufRead;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokenusage_contract::{UsageEvent, ValidationErrors, parse_native};

/// Input formats `publish` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON event per line (contract v1, native encoding).
    Ndjson,
    /// A header row naming contract fields, then one event per row.
    Csv,
}

impl Format {
    /// Guesses from a file name; `None` when the extension says nothing.
    pub fn from_path(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Format::Csv)
        } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") || lower.ends_with(".json") {
            Some(Format::Ndjson)
        } else {
            None
        }
    }
}

/// One input record: where it was and what it parsed to.
#[derive(Debug)]
pub struct Record {
    /// 1-based line number in the input (for CSV, the row's first line).
    pub line: u64,
    pub event: Result<UsageEvent, ValidationErrors>,
}

/// The CSV columns that are numbers in the native encoding.
const NUMERIC: [&str; 2] = ["input_tokens", "output_tokens"];

/// Reads every record of `reader`, validating each against `now`. Blank
/// NDJSON lines are skipped; I/O errors stop the read and are returned.
pub fn read_all(
    reader: impl BufRead,
    format: Format,
    default_source: &str,
    now: DateTime<Utc>,
    mut each: impl FnMut(Record),
) -> std::io::Result<()> {
    match format {
        Format::Ndjson => {
            for (i, line) in reader.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                each(Record { line: i as u64 + 1, event: parse_native(line.as_bytes(), default_source, now) });
            }
        }
        Format::Csv => {
            let mut rdr = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(reader);
            let headers = rdr.headers().map_err(std::io::Error::other)?.clone();
            for row in rdr.records() {
                let row = match row {
                    Ok(r) => r,
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        if e.is_io_error() {
                            return Err(std::io::Error::other(e));
                        }
                        each(Record { line, event: Err(ValidationErrors::whole(format!("unreadable CSV row: {e}"))) });
                        continue;
                    }
                };
                let line = row.position().map_or(0, |p| p.line());
                if row.len() != headers.len() {
                    let msg = format!("row has {} cells but the header has {}", row.len(), headers.len());
                    each(Record { line, event: Err(ValidationErrors::whole(msg)) });
                    continue;
                }
                let mut obj = Map::new();
                for (h, cell) in headers.iter().zip(row.iter()) {
                    if cell.is_empty() {
                        continue; // an empty cell is an absent field
                    }
                    let value = if NUMERIC.contains(&h) {
                        // Keep non-integers as strings so validation names them.
                        cell.parse::<i128>()
                            .ok()
                            .and_then(|n| serde_json::Number::from_i128(n).map(Value::Number))
                            .unwrap_or_else(|| Value::String(cell.into()))
                    } else {
                        Value::String(cell.into())
                    };
                    obj.insert(h.to_owned(), value);
                }
                let bytes = serde_json::to_vec(&obj).unwrap_or_default();
                each(Record { line, event: parse_native(&bytes, default_source, now) });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    fn collect(input: &str, format: Format) -> Vec<Record> {
        let mut out = Vec::new();
        read_all(input.as_bytes(), format, "cli", now(), |r| out.push(r)).unwrap();
        out
    }

    #[test]
    fn ndjson_reports_bad_lines_with_their_numbers() {
        let input = concat!(
            r#"{"event_id":"a","user_id":"u","occurred_at":"2026-11-27T10:00:00Z","activity":"chat","model":"m","input_tokens":1,"output_tokens":2}"#,
            "\n\n",
            r#"{"event_id":"b","user_id":"u","occurred_at":"2026-11-27T10:00:00Z","activity":"chat","model":"m","input_tokens":-1,"output_tokens":2}"#,
            "\n"
        );
        let recs = collect(input, Format::Ndjson);
        assert_eq!(recs.len(), 2);
        assert!(recs[0].event.is_ok());
        assert_eq!(recs[1].line, 3);
        let err = recs[1].event.as_ref().unwrap_err();
        assert_eq!(err.0[0].field, "input_tokens");
        assert_eq!(err.0[0].reason, "must not be negative, got -1");
    }

    #[test]
    fn csv_rows_validate_like_json_and_keep_line_numbers() {
        let input = "event_id,user_id,occurred_at,activity,model,input_tokens,output_tokens\n\
                     a,u,2026-11-27T10:00:00Z,chat,m,10,20\n\
                     b,u,2026-11-27T10:00:00Z,chat,m,ten,20\n\
                     c,u,2026-11-27T10:00:00Z,chat\n";
        let recs = collect(input, Format::Csv);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].event.as_ref().unwrap().input_tokens, 10);
        assert_eq!(recs[0].event.as_ref().unwrap().source, "cli");
        assert_eq!(recs[1].line, 3);
        assert_eq!(recs[1].event.as_ref().unwrap_err().0[0].reason, "must be a whole number, got a string");
        assert_eq!(recs[2].line, 4);
        assert!(recs[2].event.as_ref().unwrap_err().to_string().contains("4 cells but the header has 7"));
    }

    #[test]
    fn format_is_guessed_from_the_extension() {
        assert_eq!(Format::from_path("x.CSV"), Some(Format::Csv));
        assert_eq!(Format::from_path("x.jsonl"), Some(Format::Ndjson));
        assert_eq!(Format::from_path("x.txt"), None);
    }
}
