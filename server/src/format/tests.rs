//! Every format's output is parsed back with an independent reader and compared with the rows.

use super::*;
use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::{json, Value as Json};

fn columns() -> Vec<String> {
    [
        "id", "name", "note", "total", "ratio", "paid", "day", "at", "at_utc", "blob",
    ]
    .map(String::from)
    .to_vec()
}

fn rows() -> Vec<Vec<Value>> {
    let day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let at = day.and_hms_micro_opt(23, 59, 58, 250_000).unwrap();
    let utc = Utc.with_ymd_and_hms(2024, 3, 1, 8, 0, 0).unwrap();
    vec![
        vec![
            Value::Int(1),
            Value::Text("Zoë \"Z\" O'Brien, Jr.".into()),
            Value::Text("line one\nline two\r\nthree".into()),
            Value::Decimal("12345678901234567.89".into()),
            Value::Float(0.1),
            Value::Bool(true),
            Value::Date(day),
            Value::DateTime(at),
            Value::Timestamp(utc.fixed_offset()),
            Value::Bytes(vec![0, 159, 255]),
        ],
        vec![
            Value::Int(-2),
            Value::Text("=HYPERLINK(\"http://evil\")".into()),
            Value::Text("@SUM(A1)".into()),
            Value::Decimal("-0.50".into()),
            Value::Float(f64::NAN),
            Value::Bool(false),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ],
        vec![
            Value::Int(i64::MAX),
            Value::Text("日本語 🚀".into()),
            Value::Text("+1 555\t-3".into()),
            Value::Null,
            Value::Float(-1.5e300),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Text("".into()),
        ],
    ]
}

fn write(format: ExportFormat, options: &FormatOptions) -> Vec<u8> {
    let mut w = open(format, &columns(), options, Vec::new()).unwrap();
    for row in rows() {
        w.write_row(&row).unwrap();
    }
    w.finish().unwrap()
}

fn expected_json() -> Vec<Json> {
    vec![
        json!({"id": 1, "name": "Zoë \"Z\" O'Brien, Jr.", "note": "line one\nline two\r\nthree",
               "total": "12345678901234567.89", "ratio": 0.1, "paid": true, "day": "2024-02-29",
               "at": "2024-02-29T23:59:58.250", "at_utc": "2024-03-01T08:00:00Z", "blob": "AJ//"}),
        json!({"id": -2, "name": "=HYPERLINK(\"http://evil\")", "note": "@SUM(A1)", "total": "-0.50",
               "ratio": null, "paid": false, "day": null, "at": null, "at_utc": null, "blob": null}),
        json!({"id": i64::MAX, "name": "日本語 🚀", "note": "+1 555\t-3", "total": null,
               "ratio": -1.5e300, "paid": null, "day": null, "at": null, "at_utc": null, "blob": ""}),
    ]
}

#[test]
fn ndjson_has_one_object_per_line_in_column_order() {
    let out = String::from_utf8(write(ExportFormat::Ndjson, &FormatOptions::default())).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].starts_with("{\"id\":1,\"name\":"),
        "keys keep column order: {}",
        lines[0]
    );
    let parsed: Vec<Json> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, expected_json());
}

#[test]
fn json_is_one_array_and_empty_exports_are_valid() {
    let out = write(ExportFormat::Json, &FormatOptions::default());
    let parsed: Vec<Json> = serde_json::from_slice(&out).unwrap();
    assert_eq!(parsed, expected_json());

    let empty = open(
        ExportFormat::Json,
        &columns(),
        &FormatOptions::default(),
        Vec::new(),
    )
    .unwrap()
    .finish()
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<Vec<Json>>(&empty).unwrap(),
        Vec::<Json>::new()
    );
}

fn read_csv(bytes: &[u8]) -> Vec<Vec<String>> {
    ::csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes)
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect()
}

#[test]
fn csv_round_trips_quotes_commas_newlines_and_unicode_with_crlf_records() {
    let out = write(ExportFormat::Csv, &FormatOptions::default());
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.starts_with("id,name,note,total,ratio,paid,day,at,at_utc,blob\r\n"),
        "{text}"
    );
    let records = read_csv(&out);
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[1],
        [
            "1",
            "Zoë \"Z\" O'Brien, Jr.",
            "line one\nline two\r\nthree",
            "12345678901234567.89",
            "0.1",
            "true",
            "2024-02-29",
            "2024-02-29T23:59:58.250",
            "2024-03-01T08:00:00Z",
            "AJ//"
        ]
    );
    assert_eq!(records[3][0], i64::MAX.to_string());
    assert_eq!(records[3][1], "日本語 🚀");
    assert_eq!(records[3][3], "", "NULL is an empty field");
}

#[test]
fn csv_neutralises_formula_cells_but_not_typed_numbers() {
    let out = write(ExportFormat::Csv, &FormatOptions::default());
    let records = read_csv(&out);
    assert_eq!(
        records[2][0], "-2",
        "a negative integer is data, not a formula"
    );
    assert_eq!(records[2][3], "-0.50");
    assert_eq!(records[2][1], "'=HYPERLINK(\"http://evil\")");
    assert_eq!(records[2][2], "'@SUM(A1)");
    assert_eq!(records[3][2], "'+1 555\t-3");
}

#[test]
fn csv_formula_protection_can_be_lifted_per_column_or_entirely() {
    let options = FormatOptions {
        csv_raw_columns: vec![2],
        ..FormatOptions::default()
    };
    let records = read_csv(&write(ExportFormat::Csv, &options));
    assert_eq!(records[2][1], "'=HYPERLINK(\"http://evil\")");
    assert_eq!(records[2][2], "@SUM(A1)");

    let options = FormatOptions {
        csv_formula_protection: false,
        ..FormatOptions::default()
    };
    let records = read_csv(&write(ExportFormat::Csv, &options));
    assert_eq!(records[2][1], "=HYPERLINK(\"http://evil\")");
}

#[test]
fn csv_can_use_lf_line_endings() {
    let options = FormatOptions {
        csv_crlf: false,
        ..FormatOptions::default()
    };
    let text = String::from_utf8(write(ExportFormat::Csv, &options)).unwrap();
    assert!(text.starts_with("id,name,note,total,ratio,paid,day,at,at_utc,blob\n1,"));
    assert!(!text.replace("line two\r\nthree", "").contains('\r'));
}

#[test]
fn xlsx_cells_are_typed_and_read_back() {
    use calamine::{Data, Reader, Xlsx};
    let dir = tempfile::tempdir().unwrap();
    let options = FormatOptions {
        temp_dir: dir.path().to_path_buf(),
        ..FormatOptions::default()
    };
    let bytes = write(ExportFormat::Xlsx, &options);
    let mut book = Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(book.sheet_names(), vec!["Data".to_string()]);
    let range = book.worksheet_range("Data").unwrap();
    let rows: Vec<&[Data]> = range.rows().collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0][1], Data::String("name".into()));
    assert_eq!(rows[1][0], Data::Float(1.0));
    assert_eq!(rows[1][1], Data::String("Zoë \"Z\" O'Brien, Jr.".into()));
    assert_eq!(
        rows[1][2],
        Data::String("line one\nline two\r\nthree".into())
    );
    // 19 significant digits: more than a double (and Excel) keeps, so it is text, exact.
    assert_eq!(rows[1][3], Data::String("12345678901234567.89".into()));
    // -0.50 has 1: a number.
    assert_eq!(rows[2][3], Data::Float(-0.5));
    assert_eq!(rows[1][5], Data::Bool(true));
    let Data::DateTime(day) = &rows[1][6] else {
        panic!("date cell: {:?}", rows[1][6])
    };
    assert_eq!(
        day.as_datetime().unwrap().date(),
        NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
    );
    let Data::DateTime(at) = &rows[1][8] else {
        panic!("datetime cell: {:?}", rows[1][8])
    };
    assert_eq!(at.as_datetime().unwrap().to_string(), "2024-03-01 08:00:00");
    assert_eq!(
        rows[2][1],
        Data::String("=HYPERLINK(\"http://evil\")".into()),
        "text stays text"
    );
    assert_eq!(rows[2][3], Data::Float(-0.5));
    assert_eq!(rows[2][6], Data::Empty, "NULL is an empty cell");
    assert_eq!(rows[3][1], Data::String("日本語 🚀".into()));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "temporary files are removed"
    );
}

#[test]
fn xlsx_starts_a_new_sheet_with_a_header_when_one_is_full() {
    use calamine::{Data, Reader, Xlsx};
    let options = FormatOptions {
        xlsx_rows_per_sheet: 2,
        ..FormatOptions::default()
    };
    let bytes = write(ExportFormat::Xlsx, &options);
    let mut book = Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(
        book.sheet_names(),
        vec!["Data".to_string(), "Data 2".to_string()]
    );
    let second = book.worksheet_range("Data 2").unwrap();
    let rows: Vec<&[Data]> = second.rows().collect();
    assert_eq!(rows.len(), 2, "header + the third row");
    assert_eq!(rows[0][0], Data::String("id".into()));
    assert_eq!(rows[1][1], Data::String("日本語 🚀".into()));
}

/// One row of the kinds that only some sources produce, under `names`.
fn write_one(
    format: ExportFormat,
    names: &[&str],
    row: Vec<Value>,
    options: &FormatOptions,
) -> Vec<u8> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut w = open(format, &names, options, Vec::new()).unwrap();
    w.write_row(&row).unwrap();
    w.finish().unwrap()
}

#[test]
fn a_bom_and_another_delimiter_keep_quoting_correct() {
    let options = FormatOptions {
        csv_delimiter: b';',
        csv_bom: true,
        ..FormatOptions::default()
    };
    let bytes = write(ExportFormat::Csv, &options);
    assert!(bytes.starts_with("\u{feff}id;name;".as_bytes()));
    let text = std::str::from_utf8(&bytes[3..]).unwrap();
    // A comma needs no quotes with `;`; the quotes in the name still do.
    assert!(text.contains(";\"Zoë \"\"Z\"\" O'Brien, Jr.\";"), "{text}");
    let rows: Vec<Vec<String>> = ::csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_reader(&bytes[3..])
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(
        rows,
        read_csv(&write(ExportFormat::Csv, &FormatOptions::default()))[1..]
    );
    let semicolon = write_one(
        ExportFormat::Csv,
        &["a"],
        vec![Value::Text("x;y".into())],
        &options,
    );
    assert_eq!(semicolon, "\u{feff}a\r\n\"x;y\"\r\n".as_bytes());
    // Without the option, no BOM.
    assert!(write(ExportFormat::Csv, &FormatOptions::default()).starts_with(b"id,"));
}

#[test]
fn json_documents_are_embedded_on_one_line_and_text_that_is_not_json_stays_a_string() {
    let row = vec![
        Value::Json("{\"b\": [1, 2.50],\n \"a\": \"x\\ny\"}".into()),
        Value::Json("not json".into()),
        Value::Array(vec![
            Value::Json("{\"k\": 1}".into()),
            Value::Null,
            Value::Text("t".into()),
            Value::Int(-1),
        ]),
        Value::UInt(u64::MAX),
        Value::Time(chrono::NaiveTime::from_hms_micro_opt(12, 30, 45, 250_000).unwrap()),
    ];
    let names = ["doc", "bad", "list", "big", "at"];
    let ndjson = write_one(
        ExportFormat::Ndjson,
        &names,
        row.clone(),
        &FormatOptions::default(),
    );
    let text = std::str::from_utf8(&ndjson).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"big\":18446744073709551615"), "{text}");
    let parsed: Json = serde_json::from_str(text).unwrap();
    assert_eq!(
        parsed,
        json!({"doc": {"b": [1, 2.50], "a": "x\ny"}, "bad": "not json", "list": [{"k": 1}, null, "t", -1],
               "big": 18446744073709551615u64, "at": "12:30:45.250"})
    );
    // The preview maps cells the same way.
    let preview: Vec<Json> = row.iter().map(to_json).collect();
    assert_eq!(
        Json::Array(preview),
        Json::Array(names.iter().map(|n| parsed[n].clone()).collect())
    );

    let csv = write_one(ExportFormat::Csv, &names, row, &FormatOptions::default());
    let cells = &read_csv(&csv)[1];
    assert_eq!(cells[0], "{\"b\": [1, 2.50],\n \"a\": \"x\\ny\"}");
    assert_eq!(cells[2], "{\"{\\\"k\\\": 1}\",NULL,t,-1}");
    assert_eq!(cells[3], "18446744073709551615");
}

#[test]
fn xlsx_keeps_every_digit_of_ids_past_two_to_the_53rd() {
    use calamine::{Data, Reader, Xlsx};
    let row = vec![
        Value::Int(1_234_567_890_123_456_789),
        Value::Int(9_007_199_254_740_993),
        Value::Int(9_007_199_254_740_992),
        Value::Int(-9_007_199_254_740_993),
        Value::UInt(u64::MAX),
        Value::Decimal("123456789012345.6".into()),
        Value::Decimal("12345678901234.5".into()),
        Value::Decimal("0.000000000000000012".into()),
        Value::Decimal("NaN".into()),
        Value::Time(chrono::NaiveTime::from_hms_opt(6, 30, 0).unwrap()),
        Value::Array(vec![Value::Int(1), Value::Int(2)]),
    ];
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"];
    let bytes = write_one(ExportFormat::Xlsx, &names, row, &FormatOptions::default());
    let mut book = Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    let range = book.worksheet_range("Data").unwrap();
    let cells: Vec<Data> = range.rows().nth(1).unwrap().to_vec();
    assert_eq!(cells[0], Data::String("1234567890123456789".into()));
    assert_eq!(cells[1], Data::String("9007199254740993".into()));
    assert_eq!(cells[2], Data::Float(9_007_199_254_740_992.0));
    assert_eq!(cells[3], Data::String("-9007199254740993".into()));
    assert_eq!(cells[4], Data::String("18446744073709551615".into()));
    assert_eq!(cells[5], Data::String("123456789012345.6".into()));
    assert_eq!(cells[6], Data::Float(12_345_678_901_234.5));
    assert_eq!(cells[7], Data::Float(0.000000000000000012));
    assert_eq!(cells[8], Data::String("NaN".into()));
    let Data::DateTime(at) = &cells[9] else {
        panic!("time cell: {:?}", cells[9])
    };
    assert!((at.as_f64() - 0.2708333333).abs() < 1e-9, "{}", at.as_f64());
    assert_eq!(cells[10], Data::String("{1,2}".into()));
}

#[test]
fn timestamps_move_to_the_export_time_zone_with_the_offset_of_each_instant() {
    let zone = crate::catalog::time_zone("Europe/Paris").unwrap();
    let shape = crate::catalog::Shape {
        json: vec![1],
        zone,
    };
    // Paris moves from +01:00 to +02:00 at 01:00 UTC on 2024-03-31.
    let at = |h, m| {
        Value::Timestamp(
            Utc.with_ymd_and_hms(2024, 3, 31, h, m, 0)
                .unwrap()
                .fixed_offset(),
        )
    };
    let mut row = vec![
        at(0, 30),
        Value::Text("{\"a\": 1}".into()),
        Value::Array(vec![at(1, 30)]),
        Value::DateTime(
            NaiveDate::from_ymd_opt(2024, 3, 31)
                .unwrap()
                .and_hms_opt(2, 30, 0)
                .unwrap(),
        ),
    ];
    shape.apply(&mut row);
    let plain: Vec<String> = row
        .iter()
        .map(|v| {
            let mut s = String::new();
            v.write_plain(&mut s);
            s
        })
        .collect();
    assert_eq!(
        plain,
        [
            "2024-03-31T01:30:00+01:00",
            "{\"a\": 1}",
            "{2024-03-31T03:30:00+02:00}",
            // Without a time zone of its own, a timestamp is left as it is.
            "2024-03-31T02:30:00",
        ]
    );
    assert_eq!(row[1], Value::Json("{\"a\": 1}".into()));
    // UTC is no conversion at all.
    assert_eq!(crate::catalog::time_zone("UTC").unwrap(), None);
    assert!(crate::catalog::time_zone("Mars/Olympus")
        .unwrap_err()
        .contains("unknown time zone `Mars/Olympus`"));
}
