//! XLSX through rust_xlsxwriter in constant-memory mode: rows go to temporary files as they
//! arrive, and the workbook is zipped into a temporary file at the end (the zip writer needs to
//! seek), which is then copied to the output. Memory stays flat whatever the row count.

use super::{FormatOptions, RowWriter};
use crate::source::Value;
use rust_xlsxwriter::{Format, Workbook, XlsxError};
use std::io::{self, Write};

/// Excel's row limit is 1,048,576 including the header row.
pub const MAX_DATA_ROWS_PER_SHEET: u32 = 1_048_575;

pub struct XlsxWriter<W: Write> {
    out: W,
    workbook: Workbook,
    columns: Vec<String>,
    sheet: usize,
    /// The next data row on the current sheet (row 0 is the header).
    row: u32,
    rows_per_sheet: u32,
    header: Format,
    date: Format,
    datetime: Format,
    time: Format,
    temp_dir: std::path::PathBuf,
    scratch: String,
}

/// The largest integer every double holds exactly (2^53).
const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// Whether a decimal's digits survive as an Excel number: Excel shows (and keeps) 15
/// significant digits, so a decimal with more is written as text instead.
fn exact_in_excel(decimal: &str) -> bool {
    // From the first non-zero digit to the last, without allocating: this runs for every
    // decimal cell.
    let b = decimal.as_bytes();
    let nonzero = |d: &u8| d.is_ascii_digit() && *d != b'0';
    let (Some(first), Some(last)) = (b.iter().position(nonzero), b.iter().rposition(nonzero))
    else {
        return true;
    };
    b[first..=last]
        .iter()
        .filter(|d| d.is_ascii_digit())
        .count()
        <= 15
}

fn xlsx_err(e: XlsxError) -> io::Error {
    io::Error::other(format!("xlsx: {e}"))
}

impl<W: Write> XlsxWriter<W> {
    pub fn new(out: W, columns: &[String], options: &FormatOptions) -> io::Result<Self> {
        let mut workbook = Workbook::new();
        workbook.set_tempdir(&options.temp_dir).map_err(xlsx_err)?;
        let mut writer = Self {
            out,
            workbook,
            columns: columns.to_vec(),
            sheet: 0,
            row: 1,
            rows_per_sheet: options.xlsx_rows_per_sheet.max(1),
            header: Format::new().set_bold(),
            date: Format::new().set_num_format("yyyy-mm-dd"),
            datetime: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
            time: Format::new().set_num_format("hh:mm:ss"),
            temp_dir: options.temp_dir.clone(),
            scratch: String::new(),
        };
        writer.add_sheet()?;
        Ok(writer)
    }

    fn add_sheet(&mut self) -> io::Result<()> {
        let number = self.workbook.worksheets().len() + 1;
        let sheet = self
            .workbook
            .add_worksheet_with_constant_memory()
            .map_err(xlsx_err)?;
        let name = if number == 1 {
            "Data".to_string()
        } else {
            format!("Data {number}")
        };
        sheet.set_name(&name).map_err(xlsx_err)?;
        for (col, name) in self.columns.iter().enumerate() {
            sheet
                .write_string_with_format(0, col as u16, name, &self.header)
                .map_err(xlsx_err)?;
        }
        sheet.set_freeze_panes(1, 0).map_err(xlsx_err)?;
        self.sheet = number - 1;
        self.row = 1;
        Ok(())
    }
}

impl<W: Write + Send> RowWriter<W> for XlsxWriter<W> {
    fn write_row(&mut self, row: &[Value]) -> io::Result<()> {
        if self.row > self.rows_per_sheet {
            self.add_sheet()?;
        }
        let r = self.row;
        let sheet = self
            .workbook
            .worksheet_from_index(self.sheet)
            .map_err(xlsx_err)?;
        for (c, value) in row.iter().enumerate() {
            let c = c as u16;
            match value {
                Value::Null => continue,
                Value::Bool(b) => sheet.write_boolean(r, c, *b),
                // Excel's numbers are doubles: past 2^53 an integer would silently lose
                // digits (an id!), so it is written as text, every digit kept.
                Value::Int(i) if i.unsigned_abs() > MAX_EXACT_INTEGER => {
                    sheet.write_string(r, c, itoa::Buffer::new().format(*i))
                }
                Value::Int(i) => sheet.write_number(r, c, *i as f64),
                Value::UInt(u) if *u > MAX_EXACT_INTEGER => {
                    sheet.write_string(r, c, itoa::Buffer::new().format(*u))
                }
                Value::UInt(u) => sheet.write_number(r, c, *u as f64),
                Value::Float(f) if f.is_finite() => sheet.write_number(r, c, *f),
                Value::Float(_) => continue,
                Value::Decimal(d) => match d.parse::<f64>() {
                    Ok(f) if f.is_finite() && exact_in_excel(d) => sheet.write_number(r, c, f),
                    _ => sheet.write_string(r, c, d),
                },
                Value::Text(s) => sheet.write_string(r, c, s),
                Value::Date(d) => sheet.write_datetime_with_format(r, c, d, &self.date),
                Value::DateTime(dt) => sheet.write_datetime_with_format(r, c, dt, &self.datetime),
                // Excel has no time zones: the wall-clock time in the export's zone.
                Value::Timestamp(ts) => {
                    sheet.write_datetime_with_format(r, c, ts.naive_local(), &self.datetime)
                }
                Value::Time(t) => sheet.write_datetime_with_format(r, c, t, &self.time),
                Value::Json(_) | Value::Array(_) => {
                    self.scratch.clear();
                    value.write_plain(&mut self.scratch);
                    sheet.write_string(r, c, &self.scratch)
                }
                Value::Bytes(b) => sheet.write_string(r, c, super::base64(b)),
            }
            .map(|_| ())
            .map_err(xlsx_err)?;
        }
        self.row += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<W> {
        let file = tempfile::NamedTempFile::new_in(&self.temp_dir)?;
        self.workbook.save(file.path()).map_err(xlsx_err)?;
        let mut reader =
            io::BufReader::with_capacity(256 * 1024, std::fs::File::open(file.path())?);
        io::copy(&mut reader, &mut self.out)?;
        Ok(self.out)
    }
}
