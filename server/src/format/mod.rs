//! Format writers: rows in, bytes out, one row at a time.
//!
//! Every writer is fed the rows of one export in order and writes them to any `io::Write`; none
//! keeps more than a row (XLSX: a few pages, through rust_xlsxwriter's constant-memory mode and
//! a temporary file) in memory. Values map the same way in every format:
//!
//! | value      | CSV                          | NDJSON / JSON                | XLSX                       |
//! |------------|------------------------------|------------------------------|----------------------------|
//! | NULL       | empty field                  | `null`                       | empty cell                 |
//! | boolean    | `true` / `false`             | `true` / `false`             | boolean cell               |
//! | integer    | digits                       | number                       | number                     |
//! | float      | shortest round-trip digits   | number (`null` if NaN/±inf)  | number                     |
//! | decimal    | exact digits                 | string with the exact digits | number (nearest double)    |
//! | date       | `2024-03-01`                 | `"2024-03-01"`               | date cell, `yyyy-mm-dd`    |
//! | timestamp  | `2024-03-01T12:30:00Z` (UTC) or without `Z` when the column has no time zone | same, as a string | date-time cell |
//! | text       | as is; formula-like cells get a leading `'` (see below) | string | string            |
//! | bytes      | base64                       | base64 string                | base64 string              |
//!
//! Formula injection: a CSV cell whose text starts with `=`, `+`, `-`, `@`, tab or carriage
//! return is prefixed with `'` (OWASP's advice), so a spreadsheet shows it instead of running
//! it. Typed numbers are never touched (a negative number is not a formula). A dataset can opt
//! out for columns it knows to be safe (`csv_raw_columns`). XLSX stores text as text, so it
//! needs no such step.

mod csv;
mod json;
mod xlsx;

use crate::source::Value;
use app::jobs::ExportFormat;
pub use json::to_json;
use std::io::{self, Write};
use std::path::PathBuf;

/// Writes the rows of one export.
pub trait RowWriter<W: Write>: Send {
    fn write_row(&mut self, row: &[Value]) -> io::Result<()>;
    /// Writes whatever closes the file and hands back the output.
    fn finish(self: Box<Self>) -> io::Result<W>;
}

/// Options that shape a file beyond its format.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    /// CSV line ending: CRLF (RFC 4180) when true, LF otherwise.
    pub csv_crlf: bool,
    /// The CSV field delimiter byte.
    pub csv_delimiter: u8,
    /// A UTF-8 byte-order mark before the CSV header (Excel reads UTF-8 only with it).
    pub csv_bom: bool,
    /// Neutralise formula-like CSV cells (on by default).
    pub csv_formula_protection: bool,
    /// Column positions exempt from formula protection.
    pub csv_raw_columns: Vec<usize>,
    /// Where XLSX writing may keep its temporary files.
    pub temp_dir: PathBuf,
    /// Data rows per XLSX sheet before a new sheet starts (Excel's limit minus the header).
    pub xlsx_rows_per_sheet: u32,
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self {
            csv_crlf: true,
            csv_delimiter: b',',
            csv_bom: false,
            csv_formula_protection: true,
            csv_raw_columns: Vec::new(),
            temp_dir: std::env::temp_dir(),
            xlsx_rows_per_sheet: xlsx::MAX_DATA_ROWS_PER_SHEET,
        }
    }
}

/// Starts a file of `format` with the given column names (a header row where the format has one).
pub fn open<W: Write + Send + 'static>(
    format: ExportFormat,
    columns: &[String],
    options: &FormatOptions,
    out: W,
) -> io::Result<Box<dyn RowWriter<W>>> {
    Ok(match format {
        ExportFormat::Csv => Box::new(csv::CsvWriter::new(out, columns, options)?),
        ExportFormat::Ndjson => Box::new(json::JsonWriter::new(out, columns, json::Layout::Lines)?),
        ExportFormat::Json => Box::new(json::JsonWriter::new(out, columns, json::Layout::Array)?),
        ExportFormat::Xlsx => Box::new(xlsx::XlsxWriter::new(out, columns, options)?),
    })
}

/// Base64 (standard alphabet, padded) for binary values in text formats.
pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests;
