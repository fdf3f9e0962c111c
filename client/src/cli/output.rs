//! Rendering: aligned tables, key/value blocks, JSON, and the small
//! formatting rules shared by every command. Tables show enums by short
//! name, times in RFC 3339 and "-" for nothing; `--json` prints messages in
//! the canonical proto3 JSON mapping (the impls pbjson-build generates).

use std::io::{self, Write};

use serde::Serialize;
use valence_lifecycle_api::{
    json::{rfc3339, short_name, ProtoEnum},
    Timestamp,
};

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: Serialize>(value: &T) {
    // Serializing generated messages cannot fail: no maps with non-string keys.
    let text = serde_json::to_string_pretty(value).expect("message serializes to JSON");
    println!("{text}");
}

/// A value as one line of compact JSON, for streams.
pub(crate) fn json_line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("message serializes to JSON")
}

/// Writes one line to stdout and flushes it, so a stream shows each line as
/// it arrives even through a pipe. An error (the reader of `| head` went
/// away) is returned rather than panicking, so the caller can stop quietly.
pub(crate) fn emit_line(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// A table printed with columns aligned on the widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub(crate) fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; cells beyond the headers are ignored.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, two spaces between columns, the
    /// last column unpadded so lines carry no trailing blanks.
    pub(crate) fn render(&self) -> String {
        let widths = self.widths();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for cells in std::iter::once(&header).chain(&self.rows) {
            out.push_str(&render_line(cells, &widths));
            out.push('\n');
        }
        out
    }

    /// Prints the table, or a note when it has no rows.
    pub(crate) fn print(&self, what: &str) {
        if self.rows.is_empty() {
            println!("no {what}");
        } else {
            print!("{}", self.render());
        }
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        widths
    }
}

fn render_line(cells: &[String], widths: &[usize]) -> String {
    let last = widths.len().saturating_sub(1);
    let mut line = String::new();
    for (i, width) in widths.iter().enumerate() {
        let cell = cells.get(i).map(String::as_str).unwrap_or("");
        if i == last {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    line.trim_end().to_string()
}

/// Key/value lines with the keys aligned, for single entities.
#[derive(Debug, Default)]
pub(crate) struct Fields(Vec<(&'static str, String)>);

impl Fields {
    /// Adds a line.
    pub(crate) fn add(&mut self, key: &'static str, value: impl Into<String>) -> &mut Self {
        self.0.push((key, value.into()));
        self
    }

    /// Prints the lines.
    pub(crate) fn print(&self) {
        let width = self.0.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in &self.0 {
            println!("{:<width$}  {value}", format!("{key}:"), width = width + 1);
        }
    }
}

/// An optional timestamp in RFC 3339, or "-".
pub(crate) fn time(ts: Option<&Timestamp>) -> String {
    ts.map_or_else(|| "-".to_string(), rfc3339)
}

/// An enum value by its short name (`active_session`).
pub(crate) fn name<E: ProtoEnum>(value: i32) -> String {
    short_name::<E>(value)
}

/// An enum value by its short name, or "-" for the unspecified value.
pub(crate) fn name_or_dash<E: ProtoEnum>(value: i32) -> String {
    if value == 0 {
        "-".to_string()
    } else {
        short_name::<E>(value)
    }
}

/// The text, or "-" when empty.
pub(crate) fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

/// A list joined by commas, or "-" when empty.
pub(crate) fn list(items: &[String]) -> String {
    or_dash(&items.join(","))
}

/// Bytes as lower-case hex, or "-" when empty.
pub(crate) fn hex(bytes: &[u8]) -> String {
    or_dash(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Shortens text to `max` characters, marking the cut with "…".
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// Tells the user on stderr how to fetch the next page, when there is one;
/// stderr so stdout stays a clean table for pipes.
pub(crate) fn next_page_hint(token: &str) {
    if !token.is_empty() {
        eprintln!("more results: --page-token {token}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let mut table = Table::new(&["ID", "STATE", "NOTE"]);
        table.row(vec!["a".into(), "active_session".into(), "x".into()]);
        table.row(vec!["long-id".into(), "s".into(), String::new()]);
        assert_eq!(
            table.render(),
            "ID       STATE           NOTE\n\
             a        active_session  x\n\
             long-id  s\n"
        );
    }

    #[test]
    fn times_render_as_rfc3339() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(time(Some(&ts)), "2023-11-14T22:13:20Z");
        assert_eq!(time(None), "-");
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
