//! Sources: where rows come from. One adapter per database driver, all streamed row by row.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use std::fmt::Write as _;

/// One cell, as every driver's value maps into it (see `format` for how each is written).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Exact decimal digits as the database printed them (NUMERIC / DECIMAL).
    Decimal(String),
    Text(String),
    Date(NaiveDate),
    /// A timestamp without time zone.
    DateTime(NaiveDateTime),
    /// A timestamp with time zone, normalised to UTC.
    Timestamp(DateTime<Utc>),
    Bytes(Vec<u8>),
}

impl Value {
    /// Appends the plain-text form used by CSV (and by JSON inside a string): see the table in
    /// `format`. Text is appended unchanged.
    pub fn write_plain(&self, out: &mut String) {
        match self {
            Value::Null => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            Value::Float(f) if f.is_finite() => out.push_str(ryu::Buffer::new().format_finite(*f)),
            Value::Float(f) => {
                let _ = write!(out, "{f}");
            }
            Value::Decimal(d) => out.push_str(d),
            Value::Text(s) => out.push_str(s),
            Value::Date(d) => {
                let _ = write!(out, "{}", d.format("%Y-%m-%d"));
            }
            Value::DateTime(dt) => {
                let _ = write!(out, "{}", dt.format("%Y-%m-%dT%H:%M:%S%.f"));
            }
            Value::Timestamp(ts) => {
                let _ = write!(out, "{}", ts.format("%Y-%m-%dT%H:%M:%S%.fZ"));
            }
            Value::Bytes(b) => out.push_str(&crate::format::base64(b)),
        }
    }
}
