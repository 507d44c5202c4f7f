//! PostgreSQL's binary format: how each supported type's bytes become a [`Value`], read
//! directly (the driver's typed getters check the column type again for every cell, which was a
//! fifth of the reading time).

use super::super::Value;
use app::catalog::ColumnType;
use sqlx::postgres::{PgTypeInfo, PgTypeKind};
use sqlx::TypeInfo;

/// How a PostgreSQL type is read from the binary `COPY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Numeric,
    /// Text, and every type whose binary form is its text (enums, `citext`, and the columns
    /// that `COPY` casts to `text`).
    Text,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Uuid,
    Json,
    /// `jsonb`: a version byte, then the text.
    Jsonb,
    Oid,
    /// `"char"`: one byte.
    Char,
    Bytes,
}

/// How a column gets out of the `COPY`: read in its own binary form, or first turned into
/// text by PostgreSQL's own output function, for the types Exportal has no decoder for: what
/// comes out is exactly what `psql` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Read {
    Native(Kind),
    /// An array whose elements are read as `Kind` (any number of dimensions).
    Array(Kind),
    /// Selected as text: `col::text`, which is the output function for every type but
    /// `inet`, whose cast to text always adds the netmask (`abbrev` is its output function).
    AsText {
        inet: bool,
    },
    /// An array of an undecoded element type, selected as `col::text` (the array's output
    /// function calls each element's) and read back from PostgreSQL's array syntax, whose
    /// element delimiter is `,` for every type but `box` (`;`).
    AsTextArray {
        delimiter: char,
    },
}

/// One column of a query: how it is read and the type the catalogue shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub read: Read,
    pub shown: ColumnType,
}

impl Plan {
    /// The kind of the values that arrive in the `COPY` (after any cast).
    /// How the `COPY` selects `column` (an expression naming it), when not as it is.
    pub(super) fn select(&self, column: &str) -> Option<String> {
        match self.read {
            Read::AsText { inet: true } => Some(format!("abbrev({column})")),
            Read::AsText { inet: false } | Read::AsTextArray { .. } => {
                Some(format!("{column}::text"))
            }
            Read::Native(_) | Read::Array(_) => None,
        }
    }

    /// The value of one cell's bytes in the `COPY`.
    #[inline]
    pub(super) fn decode(&self, b: &[u8]) -> Option<Value> {
        match self.read {
            Read::Native(kind) => decode_binary(kind, b),
            Read::Array(kind) => decode_array(kind, b),
            Read::AsText { .. } => decode_binary(Kind::Text, b),
            Read::AsTextArray { delimiter } => {
                parse_array_text(std::str::from_utf8(b).ok()?, delimiter)
            }
        }
    }
}

/// Domains are read as their base type, however deep.
fn base(t: &PgTypeInfo) -> &PgTypeInfo {
    let mut t = t;
    // A domain cannot be its own base; the bound only guards against a driver surprise.
    for _ in 0..32 {
        match t.kind() {
            PgTypeKind::Domain(inner) => t = inner,
            _ => break,
        }
    }
    t
}

/// The decoder and the shown type of a scalar (non-array) type, `None` when Exportal reads it
/// through its text form.
fn scalar(t: &PgTypeInfo) -> Option<(Kind, ColumnType)> {
    if let PgTypeKind::Enum(_) = t.kind() {
        return Some((Kind::Text, ColumnType::Enum));
    }
    Some(match t.name() {
        "BOOL" => (Kind::Bool, ColumnType::Boolean),
        "INT2" => (Kind::I16, ColumnType::Integer),
        "INT4" => (Kind::I32, ColumnType::Integer),
        "INT8" => (Kind::I64, ColumnType::Integer),
        "OID" => (Kind::Oid, ColumnType::Integer),
        "FLOAT4" => (Kind::F32, ColumnType::Number),
        "FLOAT8" => (Kind::F64, ColumnType::Number),
        "NUMERIC" => (Kind::Numeric, ColumnType::Decimal),
        "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" => (Kind::Text, ColumnType::Text),
        "\"CHAR\"" => (Kind::Char, ColumnType::Text),
        "DATE" => (Kind::Date, ColumnType::Date),
        "TIMESTAMP" => (Kind::Timestamp, ColumnType::Datetime),
        "TIMESTAMPTZ" => (Kind::TimestampTz, ColumnType::Datetime),
        "TIME" => (Kind::Time, ColumnType::Time),
        "UUID" => (Kind::Uuid, ColumnType::Uuid),
        "JSON" => (Kind::Json, ColumnType::Json),
        "JSONB" => (Kind::Jsonb, ColumnType::Json),
        "BYTEA" => (Kind::Bytes, ColumnType::Bytes),
        _ => return None,
    })
}

/// What the catalogue shows for a type read through its text form: a word for the types a
/// person knows by name, `text` for the rest (ranges, geometry, `xml`, `bit`, composites,
/// extension types), which is what they export as.
fn shown_as_text(t: &PgTypeInfo) -> ColumnType {
    match t.name() {
        "TIMETZ" => ColumnType::Time,
        "INTERVAL" => ColumnType::Interval,
        "INET" | "CIDR" | "MACADDR" | "MACADDR8" => ColumnType::Network,
        "MONEY" => ColumnType::Money,
        "POINT" | "LINE" | "LSEG" | "BOX" | "PATH" | "POLYGON" | "CIRCLE" | "geometry"
        | "geography" => ColumnType::Geometry,
        _ => ColumnType::Text,
    }
}

/// How a column of type `t` is read and shown: no type is refused.
pub(super) fn plan(t: &PgTypeInfo) -> Plan {
    let t = base(t);
    if let PgTypeKind::Array(element) = t.kind() {
        let element = base(element);
        return match scalar(element) {
            Some((kind, shown)) => Plan {
                read: Read::Array(kind),
                shown: ColumnType::Array(Box::new(shown)),
            },
            None => Plan {
                read: Read::AsTextArray {
                    delimiter: if element.name() == "BOX" { ';' } else { ',' },
                },
                shown: ColumnType::Array(Box::new(shown_as_text(element))),
            },
        };
    }
    match scalar(t) {
        Some((kind, shown)) => Plan {
            read: Read::Native(kind),
            shown,
        },
        None => Plan {
            read: Read::AsText {
                inet: t.name() == "INET",
            },
            shown: shown_as_text(t),
        },
    }
}

/// A value from PostgreSQL's binary format; `None` when the type is not supported or the bytes
/// are not what the type promises.
pub(super) fn decode_binary(kind: Kind, b: &[u8]) -> Option<Value> {
    // Dates count days, and timestamps microseconds, from 2000-01-01.
    const EPOCH_DAYS_FROM_CE: i32 = 730_120;
    let epoch = || chrono::NaiveDate::from_ymd_opt(2000, 1, 1)?.and_hms_opt(0, 0, 0);
    // ±infinity are stored as the extreme values and have no calendar date: they are written
    // as the words PostgreSQL prints for them.
    let infinity =
        |positive: bool| Value::Text(if positive { "infinity" } else { "-infinity" }.into());
    let micros = |b: &[u8], tz: bool| -> Option<Value> {
        let us = i64::from_be_bytes(b.try_into().ok()?);
        if us == i64::MAX || us == i64::MIN {
            return Some(infinity(us == i64::MAX));
        }
        let at = epoch()?.checked_add_signed(chrono::Duration::microseconds(us))?;
        Some(if tz {
            Value::Timestamp(at.and_utc().fixed_offset())
        } else {
            Value::DateTime(at)
        })
    };
    Some(match kind {
        Kind::Bool => Value::Bool(*b.first()? != 0),
        Kind::I16 => Value::Int(i16::from_be_bytes(b.try_into().ok()?).into()),
        Kind::I32 => Value::Int(i32::from_be_bytes(b.try_into().ok()?).into()),
        Kind::I64 => Value::Int(i64::from_be_bytes(b.try_into().ok()?)),
        Kind::F32 => Value::Float(f32::from_be_bytes(b.try_into().ok()?).into()),
        Kind::F64 => Value::Float(f64::from_be_bytes(b.try_into().ok()?)),
        Kind::Numeric => Value::Decimal(numeric_text(b)?),
        Kind::Text => Value::Text(std::str::from_utf8(b).ok()?.to_owned()),
        Kind::Date => match i32::from_be_bytes(b.try_into().ok()?) {
            days @ (i32::MAX | i32::MIN) => infinity(days == i32::MAX),
            days => Value::Date(chrono::NaiveDate::from_num_days_from_ce_opt(
                EPOCH_DAYS_FROM_CE.checked_add(days)?,
            )?),
        },
        Kind::Timestamp => micros(b, false)?,
        Kind::TimestampTz => micros(b, true)?,
        Kind::Time => {
            let us = i64::from_be_bytes(b.try_into().ok()?);
            let secs = u32::try_from(us.div_euclid(1_000_000)).ok()?;
            let nanos = (us.rem_euclid(1_000_000) * 1000) as u32;
            // 24:00:00 is a valid PostgreSQL time but no NaiveTime: written as PostgreSQL
            // writes it.
            if secs == 86_400 && nanos == 0 {
                Value::Text("24:00:00".into())
            } else {
                Value::Time(chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                    secs, nanos,
                )?)
            }
        }
        Kind::Uuid => Value::Text(uuid::Uuid::from_slice(b).ok()?.hyphenated().to_string()),
        Kind::Json => Value::Json(std::str::from_utf8(b).ok()?.to_owned()),
        Kind::Jsonb => match b.split_first() {
            Some((1, text)) => Value::Json(std::str::from_utf8(text).ok()?.to_owned()),
            _ => return None,
        },
        Kind::Oid => Value::Int(u32::from_be_bytes(b.try_into().ok()?).into()),
        Kind::Char => {
            // PostgreSQL's `"char"` holds one byte; a high byte prints as an octal escape.
            let [c] = b else { return None };
            Value::Text(if *c == 0 {
                String::new()
            } else if c.is_ascii() {
                char::from(*c).to_string()
            } else {
                format!("\\{c:03o}")
            })
        }
        Kind::Bytes => Value::Bytes(b.to_vec()),
    })
}

/// PostgreSQL's own limit on array dimensions (MAXDIM).
const MAX_DIMENSIONS: usize = 6;

/// An array in PostgreSQL's binary format (dimensions, a null flag, the element type, then
/// each dimension's length and lower bound, then the elements), read as nested arrays; the
/// lower bounds are not kept.
pub(super) fn decode_array(kind: Kind, b: &[u8]) -> Option<Value> {
    let int = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let ndim = usize::try_from(int(0)?).ok()?;
    if ndim == 0 {
        return Some(Value::Array(Vec::new()));
    }
    if ndim > MAX_DIMENSIONS {
        return None;
    }
    let mut dims = Vec::with_capacity(ndim);
    for d in 0..ndim {
        dims.push(usize::try_from(int(12 + 8 * d)?).ok()?);
    }
    let mut at = 12 + 8 * ndim;
    // Every element takes at least its 4-byte length.
    let total = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    if total > (b.len().saturating_sub(at)) / 4 {
        return None;
    }
    let mut elements = Vec::with_capacity(total);
    for _ in 0..total {
        let len = int(at)?;
        at += 4;
        if len < 0 {
            elements.push(Value::Null);
            continue;
        }
        let bytes = b.get(at..at + len as usize)?;
        at += len as usize;
        elements.push(decode_binary(kind, bytes)?);
    }
    if at != b.len() {
        return None;
    }
    Some(nest(&mut elements.into_iter(), &dims))
}

/// An array in PostgreSQL's text syntax (`{a,"b c",NULL,{1,2}}`, after an optional
/// `[1:2]=` of lower bounds, which are not kept), as nested arrays of text; `None` when it is
/// not well formed.
pub(super) fn parse_array_text(text: &str, delimiter: char) -> Option<Value> {
    let text = match text.strip_prefix('[') {
        Some(_) => &text[text.find('=')? + 1..],
        None => text,
    };
    let mut chars = text.chars().peekable();
    let value = parse_array(&mut chars, delimiter, 0)?;
    chars.next().is_none().then_some(value)
}

fn parse_array(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    delimiter: char,
    depth: usize,
) -> Option<Value> {
    if depth >= MAX_DIMENSIONS || chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(Value::Array(items));
    }
    loop {
        match *chars.peek()? {
            '{' => items.push(parse_array(chars, delimiter, depth + 1)?),
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '\\' => s.push(chars.next()?),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                items.push(Value::Text(s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c == delimiter || c == '}' {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                items.push(if s == "NULL" {
                    Value::Null
                } else {
                    Value::Text(s)
                });
            }
        }
        match chars.next()? {
            '}' => return Some(Value::Array(items)),
            c if c == delimiter => {}
            _ => return None,
        }
    }
}

/// Groups the flat elements into the array's dimensions, outermost first.
fn nest(elements: &mut impl Iterator<Item = Value>, dims: &[usize]) -> Value {
    match dims {
        [] | [_] => Value::Array(elements.take(dims.first().copied().unwrap_or(0)).collect()),
        [outer, inner @ ..] => Value::Array((0..*outer).map(|_| nest(elements, inner)).collect()),
    }
}

/// The exact text of a NUMERIC in PostgreSQL's binary format, with its display scale
/// (`12.50` stays `12.50`), which the driver's decimal conversions do not keep.
fn numeric_text(b: &[u8]) -> Option<String> {
    let word = |i: usize| b.get(i..i + 2).map(|w| u16::from_be_bytes([w[0], w[1]]));
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    if b.len() < 8 + 2 * ndigits {
        return None;
    }
    // Base-10000 digits; `i` counts from the most significant one, at `weight`.
    let digit = |i: i32| -> u16 {
        if i >= 0 && (i as usize) < ndigits {
            word(8 + 2 * i as usize).unwrap_or(0)
        } else {
            0
        }
    };
    let four = |d: u16| -> [u8; 4] {
        let d = d.min(9999);
        [
            b'0' + (d / 1000) as u8,
            b'0' + (d / 100 % 10) as u8,
            b'0' + (d / 10 % 10) as u8,
            b'0' + (d % 10) as u8,
        ]
    };
    let mut s = String::with_capacity(8 + 4 * ndigits + dscale);
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        s.push_str(itoa::Buffer::new().format(digit(0)));
        for i in 1..=weight {
            s.extend(four(digit(i)).map(char::from));
        }
    }
    if dscale > 0 {
        s.push('.');
        let (mut left, mut i) = (dscale, weight + 1);
        while left > 0 {
            let take = left.min(4);
            s.extend(four(digit(i))[..take].iter().map(|&d| char::from(d)));
            left -= take;
            i += 1;
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::{decode_binary, numeric_text, Kind, Value};
    use chrono::NaiveDate;

    #[test]
    fn binary_cells_decode_without_the_driver() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(decode_binary(Kind::Bool, &[1]), Some(Value::Bool(true)));
        assert_eq!(
            decode_binary(Kind::I16, &(-2i16).to_be_bytes()),
            Some(Value::Int(-2))
        );
        assert_eq!(
            decode_binary(Kind::I32, &7i32.to_be_bytes()),
            Some(Value::Int(7))
        );
        assert_eq!(
            decode_binary(Kind::I64, &i64::MIN.to_be_bytes()),
            Some(Value::Int(i64::MIN))
        );
        assert_eq!(
            decode_binary(Kind::F32, &0.5f32.to_be_bytes()),
            Some(Value::Float(0.5))
        );
        assert_eq!(
            decode_binary(Kind::F64, &(-1.25f64).to_be_bytes()),
            Some(Value::Float(-1.25))
        );
        assert_eq!(
            decode_binary(Kind::Text, "Zoë".as_bytes()),
            Some(Value::Text("Zoë".into()))
        );
        assert_eq!(decode_binary(Kind::Text, &[0xff, 0xfe]), None);
        assert_eq!(
            decode_binary(Kind::Date, &0i32.to_be_bytes()),
            Some(Value::Date(day(2000, 1, 1)))
        );
        assert_eq!(
            decode_binary(Kind::Date, &8825i32.to_be_bytes()),
            Some(Value::Date(day(2024, 2, 29)))
        );
        assert_eq!(
            decode_binary(Kind::Date, &(-1i32).to_be_bytes()),
            Some(Value::Date(day(1999, 12, 31)))
        );
        assert_eq!(
            decode_binary(Kind::Date, &i32::MAX.to_be_bytes()),
            Some(Value::Text("infinity".into()))
        );
        let noon = day(2024, 2, 29)
            .and_hms_micro_opt(12, 30, 45, 250_000)
            .unwrap();
        let us = (noon - day(2000, 1, 1).and_hms_opt(0, 0, 0).unwrap())
            .num_microseconds()
            .unwrap();
        assert_eq!(
            decode_binary(Kind::Timestamp, &us.to_be_bytes()),
            Some(Value::DateTime(noon))
        );
        assert_eq!(
            decode_binary(Kind::TimestampTz, &us.to_be_bytes()),
            Some(Value::Timestamp(noon.and_utc().fixed_offset()))
        );
        assert_eq!(
            decode_binary(Kind::TimestampTz, &i64::MIN.to_be_bytes()),
            Some(Value::Text("-infinity".into()))
        );
        // Too short for the type: the caller reports it.
        assert_eq!(decode_binary(Kind::I64, &[0, 1]), None);
    }

    #[test]
    fn array_text_reads_as_postgresql_writes_it() {
        use super::parse_array_text;
        let t = |s: &str| Value::Text(s.into());
        assert_eq!(
            parse_array_text(r#"{a,"b c","\"q\" \\",NULL,"NULL",""}"#, ','),
            Some(Value::Array(vec![
                t("a"),
                t("b c"),
                t("\"q\" \\"),
                Value::Null,
                t("NULL"),
                t("")
            ]))
        );
        assert_eq!(
            parse_array_text("[0:1][1:1]={{1},{2}}", ','),
            Some(Value::Array(vec![
                Value::Array(vec![t("1")]),
                Value::Array(vec![t("2")])
            ]))
        );
        assert_eq!(
            parse_array_text("{(1,1),(0,0);(2,2),(1,1)}", ';'),
            Some(Value::Array(vec![t("(1,1),(0,0)"), t("(2,2),(1,1)")]))
        );
        assert_eq!(parse_array_text("{}", ','), Some(Value::Array(vec![])));
        for broken in ["", "{", "{a", "{\"a}", "{a}x", "[1:2", "{{{{{{{1}}}}}}}"] {
            assert_eq!(parse_array_text(broken, ','), None, "{broken}");
        }
    }

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale]
            .into_iter()
            .chain(digits.iter().copied())
        {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_keep_their_display_scale() {
        assert_eq!(
            numeric_text(&numeric(2, 1, 0, 2, &[1, 2345])).unwrap(),
            "12345.00"
        );
        assert_eq!(
            numeric_text(&numeric(3, 1, 0, 2, &[1, 2345, 6700])).unwrap(),
            "12345.67"
        );
        assert_eq!(
            numeric_text(&numeric(1, -1, 0x4000, 2, &[5000])).unwrap(),
            "-0.50"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0, 2, &[])).unwrap(), "0.00");
        assert_eq!(
            numeric_text(&numeric(1, -2, 0, 6, &[12])).unwrap(),
            "0.000000"
        );
        assert_eq!(
            numeric_text(&numeric(1, -2, 0, 8, &[12])).unwrap(),
            "0.00000012"
        );
        assert_eq!(
            numeric_text(&numeric(1, 2, 0, 0, &[7])).unwrap(),
            "700000000"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert_eq!(numeric_text(&[0, 1]), None);
    }
}
