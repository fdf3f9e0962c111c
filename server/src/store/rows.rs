//! Reading stored rows by column name, with the few conversions both
//! backends need: booleans (PostgreSQL `BOOLEAN`, SQLite integers), lists
//! kept as JSON text, states kept as text, and unsigned numbers kept in
//! signed 64-bit columns. A value that does not convert is an error, never
//! a default.

use std::str::FromStr;

use sqlx::{any::AnyRow, Row as _};

use super::error::{StoreError, StoreResult};
use super::{Backend, UnknownState};

/// A boolean column, selected as `CAST(col AS INTEGER) AS col`: sqlx's Any
/// driver refuses a SQLite column declared BOOLEAN outright ("does not
/// support the SQLite type Bool"), and both backends cast a boolean to an
/// integer. PostgreSQL answers int4, SQLite int8; both read here.
pub(super) fn flag(row: &AnyRow, column: &str) -> StoreResult<bool> {
    if let Ok(value) = row.try_get::<i64, _>(column) {
        return Ok(value != 0);
    }
    Ok(row.try_get::<i32, _>(column)? != 0)
}

/// A list of strings kept as JSON text.
pub(super) fn list(row: &AnyRow, column: &str) -> StoreResult<Vec<String>> {
    let text: String = row.try_get(column)?;
    parse_list(column, &text)
}

/// A nullable list of strings kept as JSON text (NULL = empty).
pub(super) fn optional_list(row: &AnyRow, column: &str) -> StoreResult<Vec<String>> {
    match row.try_get::<Option<String>, _>(column)? {
        Some(text) => parse_list(column, &text),
        None => Ok(Vec::new()),
    }
}

fn parse_list(column: &str, text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::damaged(format!(
            "stored {column} is not a JSON list of strings: {e}"
        ))
    })
}

/// A state or status kept as text.
pub(super) fn state<T: FromStr<Err = UnknownState>>(row: &AnyRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column)?;
    Ok(text.parse()?)
}

/// An unsigned number kept in a BIGINT column.
pub(super) fn unsigned(row: &AnyRow, column: &str) -> StoreResult<u64> {
    non_negative(column, row.try_get(column)?)
}

/// A u64 the chain chose freely (a session's nonce), kept in a BIGINT
/// column by its bits: BIGINT is signed, and values from 2^63 up, which a
/// program accepts, must round-trip rather than read back as damage.
pub(super) fn u64_bits(row: &AnyRow, column: &str) -> StoreResult<u64> {
    Ok(row.try_get::<i64, _>(column)? as u64)
}

/// A nullable unsigned number kept in a BIGINT column.
pub(super) fn optional_unsigned(row: &AnyRow, column: &str) -> StoreResult<Option<u64>> {
    row.try_get::<Option<i64>, _>(column)?
        .map(|value| non_negative(column, value))
        .transpose()
}

fn non_negative(column: &str, value: i64) -> StoreResult<u64> {
    u64::try_from(value)
        .map_err(|_| StoreError::damaged(format!("stored {column} is negative ({value})")))
}

/// A u32 counter kept in a BIGINT column.
pub(super) fn count(row: &AnyRow, column: &str) -> StoreResult<u32> {
    let value = unsigned(row, column)?;
    u32::try_from(value).map_err(|_| StoreError::damaged(format!("stored {column} is {value}")))
}

/// `$1, $2, …, $n`: the parameters of an `IN (…)` list.
pub(super) fn placeholders(n: usize) -> String {
    let marks: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    marks.join(", ")
}

/// `($1, $2), ($3, $4), …` (PostgreSQL) or `(?, ?), (?, ?), …` (SQLite):
/// `rows` rows of `columns` parameters each, for one multi-row INSERT,
/// bound in order. SQLite gets anonymous parameters because sqlx looks up
/// each numbered one by name, a scan of the statement's names: quadratic
/// in a statement of thousands of parameters (a quarter of ingest's CPU).
pub(super) fn value_rows(backend: Backend, rows: usize, columns: usize) -> String {
    let row = |r: usize| {
        let marks: Vec<String> = (1..=columns)
            .map(|c| match backend {
                Backend::Postgres => format!("${}", r * columns + c),
                Backend::Sqlite => "?".to_string(),
            })
            .collect();
        format!("({})", marks.join(", "))
    };
    let all: Vec<String> = (0..rows).map(row).collect();
    all.join(", ")
}

/// `n` parameters bound in order after the first `before`, as
/// [`value_rows`] writes them.
pub(super) fn list_marks(backend: Backend, before: usize, n: usize) -> String {
    let marks: Vec<String> = (before + 1..=before + n)
        .map(|i| match backend {
            Backend::Postgres => format!("${i}"),
            Backend::Sqlite => "?".to_string(),
        })
        .collect();
    marks.join(", ")
}
