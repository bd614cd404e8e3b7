//! A series as CSV (RFC 4180, CRLF): exactly the chart's buckets, zone and
//! filters, one row per bucket (per bucket and key when grouped), encoded a
//! chunk at a time as the client reads. A cell a spreadsheet would read as
//! a formula is prefixed with `'`.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokenusage_schema::Sums;

use super::params::View;
use super::plan::{GroupBy, Plan};
use super::present::fmt_time;
use super::read::{SeriesData, Subject};

const CHUNK_ROWS: usize = 1000;

/// The value columns, after the bucket bounds and the group key: the
/// sums' wire fields ([`Sums::wire_fields`]), so a new measure is a new
/// column with no edit here, except `cost_nanos`: a spreadsheet gets the
/// same amount once, as exact decimal `cost`.
pub fn columns() -> Vec<&'static str> {
    cells(&Sums::default()).into_iter().map(|(name, _)| name).collect()
}

fn cells(s: &Sums) -> Vec<(&'static str, String)> {
    s.wire_fields().into_iter().filter(|(name, _)| *name != "cost_nanos").map(|(name, v)| (name, v.cell())).collect()
}

use tokenusage_contract::text::spreadsheet_safe as safe_cell;

fn encode(rows: impl Iterator<Item = Vec<String>>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    for r in rows {
        // Writing to memory cannot fail.
        let _ = w.write_record(&r);
    }
    w.into_inner().unwrap_or_default()
}

/// The rows of a series (without the header).
pub fn rows(view: &View, plan: &Plan, data: &SeriesData) -> Vec<Vec<String>> {
    let grouped = view.group != GroupBy::None;
    // `cost` is exact decimal text, empty when tokens were used and none
    // had a price.
    let sums_row = |s: &Sums| cells(s).into_iter().map(|(_, v)| v).collect::<Vec<_>>();
    let mut rows = Vec::new();
    for i in 0..plan.edges.len() {
        let bounds = [fmt_time(plan.edges[i], &view.tz), fmt_time(plan.bucket_end(i), &view.tz)];
        if grouped {
            for (key, sums) in &data.groups {
                rows.push([bounds.to_vec(), vec![safe_cell(key)], sums_row(&sums[i])].concat());
            }
        } else {
            rows.push([bounds.to_vec(), sums_row(&data.totals[i])].concat());
        }
    }
    rows
}

/// The streamed response: a header row, then `rows`.
pub fn response(view: &View, plan: &Plan, subject: &Subject, rows: Vec<Vec<String>>) -> Response {
    let mut header_row = vec!["start", "end"];
    header_row.extend(view.group.name());
    header_row.extend(columns());
    let header_line = encode(std::iter::once(header_row.into_iter().map(str::to_owned).collect()));
    let mut rows = rows.into_iter().peekable();
    let chunks = std::iter::from_fn(move || rows.peek().is_some().then(|| encode(rows.by_ref().take(CHUNK_ROWS))));
    let body = futures::stream::iter(std::iter::once(header_line).chain(chunks).map(Ok::<_, std::io::Error>));
    let filename = format!(
        "tokenusage-{}-{}-{}.csv",
        subject.label().replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        plan.start().with_timezone(&view.tz).format("%Y%m%d"),
        serde_json::to_value(plan.granularity).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8; header=present".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_cannot_start_a_formula() {
        assert_eq!(safe_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(safe_cell("+1"), "'+1");
        assert_eq!(safe_cell("@sum"), "'@sum");
        assert_eq!(safe_cell("chat"), "chat");
        let out = String::from_utf8(encode(std::iter::once(vec!["a,b".into(), "say \"hi\"".into()]))).unwrap();
        assert_eq!(out, "\"a,b\",\"say \"\"hi\"\"\"\r\n");
    }

    /// The OpenAPI document describes the columns actually written.
    #[test]
    fn the_openapi_description_names_every_column_in_order() {
        let doc = serde_json::to_value(crate::http::openapi::document([])).unwrap();
        let description = doc["paths"]["/api/v1/usage/export.csv"]["get"]["responses"]["200"]["description"]
            .as_str()
            .unwrap()
            .to_owned();
        let listed = format!("`start,end[,<group>],{}`", columns().join(","));
        assert!(description.contains(&listed), "{description}");
        for g in ["activity", "model", "project", "source", "user"] {
            assert!(GroupBy::parse(g).is_some_and(|b| b.name() == Some(g)), "{g}");
            assert!(description.contains(g), "{g} is named");
        }
    }
}
