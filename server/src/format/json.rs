//! NDJSON (one object per line) and JSON (one array of objects), written by hand around
//! serde_json's string escaping so that a row costs no intermediate map.

use super::RowWriter;
use crate::source::Value;
use std::io::{self, Write};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Lines,
    Array,
}

pub struct JsonWriter<W: Write> {
    out: io::BufWriter<W>,
    /// `"name":` for each column, escaped once.
    keys: Vec<Vec<u8>>,
    layout: Layout,
    rows: u64,
    scratch: String,
}

impl<W: Write> JsonWriter<W> {
    pub fn new(out: W, columns: &[String], layout: Layout) -> io::Result<Self> {
        let mut out = io::BufWriter::with_capacity(64 * 1024, out);
        if layout == Layout::Array {
            out.write_all(b"[")?;
        }
        let keys = columns
            .iter()
            .map(|c| {
                let mut key = serde_json::to_vec(c).expect("strings serialise");
                key.push(b':');
                key
            })
            .collect();
        Ok(Self {
            out,
            keys,
            layout,
            rows: 0,
            scratch: String::new(),
        })
    }
}

impl<W: Write + Send> RowWriter<W> for JsonWriter<W> {
    fn write_row(&mut self, row: &[Value]) -> io::Result<()> {
        if self.layout == Layout::Array {
            self.out
                .write_all(if self.rows == 0 { b"\n" } else { b",\n" })?;
        }
        self.out.write_all(b"{")?;
        for (i, (key, value)) in self.keys.iter().zip(row).enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            self.out.write_all(key)?;
            match value {
                Value::Text(s) => serde_json::to_writer(&mut self.out, s)?,
                other => {
                    self.scratch.clear();
                    write_nested(&mut self.scratch, other);
                    self.out.write_all(self.scratch.as_bytes())?;
                }
            }
        }
        self.out.write_all(b"}")?;
        if self.layout == Layout::Lines {
            self.out.write_all(b"\n")?;
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<W> {
        if self.layout == Layout::Array {
            self.out
                .write_all(if self.rows == 0 { b"]\n" } else { b"\n]\n" })?;
        }
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Appends `value` as JSON, the way the JSON formats write a cell: JSON documents embedded,
/// arrays as arrays (recursively), the rest as in a row.
fn write_nested(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(_) | Value::UInt(_) => value.write_plain(out),
        Value::Float(f) if !f.is_finite() => out.push_str("null"),
        Value::Float(_) => value.write_plain(out),
        Value::Json(text) => match embeddable(text) {
            Some(json) => out.push_str(&json),
            None => push_string(out, text),
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_nested(out, item);
            }
            out.push(']');
        }
        Value::Text(s) => push_string(out, s),
        // Dates, times, decimals and base64 are made of characters JSON never escapes.
        Value::Decimal(_)
        | Value::Date(_)
        | Value::DateTime(_)
        | Value::Timestamp(_)
        | Value::Time(_)
        | Value::Bytes(_) => {
            out.push('"');
            value.write_plain(out);
            out.push('"');
        }
    }
}

fn push_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings serialise"));
}

/// `text` ready to be written as a JSON value on one line, or `None` when it is not valid
/// JSON (a text column that only looks like it): such a value is written as a string instead,
/// so a file is never broken by a cell. Valid JSON has line breaks only between tokens, where
/// a space means the same, so NDJSON keeps one record per line.
pub(crate) fn embeddable(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    Some(if text.contains(['\n', '\r']) {
        text.replace(['\n', '\r'], " ").into()
    } else {
        text.into()
    })
}

/// A cell as a JSON value, mapped as the JSON formats write it (previews use it).
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Text(s) => J::String(s.clone()),
        Value::Json(text) => serde_json::from_str(text).unwrap_or_else(|_| J::String(text.clone())),
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        other => {
            let mut s = String::new();
            other.write_plain(&mut s);
            J::String(s)
        }
    }
}
