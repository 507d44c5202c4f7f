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
                Value::Null => self.out.write_all(b"null")?,
                Value::Bool(b) => self.out.write_all(if *b { b"true" } else { b"false" })?,
                Value::Int(_) => {
                    self.scratch.clear();
                    value.write_plain(&mut self.scratch);
                    self.out.write_all(self.scratch.as_bytes())?;
                }
                Value::Float(f) if !f.is_finite() => self.out.write_all(b"null")?,
                Value::Float(_) => {
                    self.scratch.clear();
                    value.write_plain(&mut self.scratch);
                    self.out.write_all(self.scratch.as_bytes())?;
                }
                Value::Text(s) => serde_json::to_writer(&mut self.out, s)?,
                other => {
                    self.scratch.clear();
                    other.write_plain(&mut self.scratch);
                    serde_json::to_writer(&mut self.out, &self.scratch)?;
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
