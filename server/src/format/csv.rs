//! CSV (RFC 4180) through the `csv` crate, with formula-injection protection.

use super::{FormatOptions, RowWriter};
use crate::source::Value;
use std::io::{self, Write};

pub struct CsvWriter<W: Write> {
    inner: ::csv::Writer<W>,
    protect: Vec<bool>,
    scratch: String,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(mut out: W, columns: &[String], options: &FormatOptions) -> io::Result<Self> {
        if options.csv_bom {
            out.write_all("\u{feff}".as_bytes())?;
        }
        let terminator = if options.csv_crlf {
            ::csv::Terminator::CRLF
        } else {
            ::csv::Terminator::Any(b'\n')
        };
        let mut inner = ::csv::WriterBuilder::new()
            .terminator(terminator)
            .delimiter(options.csv_delimiter)
            .buffer_capacity(64 * 1024)
            .from_writer(out);
        inner.write_record(columns).map_err(io_error)?;
        let protect = (0..columns.len())
            .map(|i| options.csv_formula_protection && !options.csv_raw_columns.contains(&i))
            .collect();
        Ok(Self {
            inner,
            protect,
            scratch: String::new(),
        })
    }
}

/// Keeps the writer's own I/O errors as they are (their kind tells the pipeline who failed).
fn io_error(e: ::csv::Error) -> io::Error {
    match e.into_kind() {
        ::csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// Whether a spreadsheet would treat the text as a formula (OWASP CSV injection list).
pub fn looks_like_formula(text: &str) -> bool {
    matches!(
        text.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

impl<W: Write + Send> RowWriter<W> for CsvWriter<W> {
    fn write_row(&mut self, row: &[Value]) -> io::Result<()> {
        for (i, value) in row.iter().enumerate() {
            let field: &[u8] = match value {
                Value::Text(s)
                    if self.protect.get(i).copied().unwrap_or(true) && looks_like_formula(s) =>
                {
                    self.scratch.clear();
                    self.scratch.push('\'');
                    self.scratch.push_str(s);
                    self.scratch.as_bytes()
                }
                Value::Text(s) => s.as_bytes(),
                other => {
                    self.scratch.clear();
                    other.write_plain(&mut self.scratch);
                    self.scratch.as_bytes()
                }
            };
            self.inner.write_field(field).map_err(io_error)?;
        }
        self.inner.write_record(None::<&[u8]>).map_err(io_error)
    }

    fn finish(self: Box<Self>) -> io::Result<W> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}
