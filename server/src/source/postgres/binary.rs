//! PostgreSQL's binary format: how each supported type's bytes become a [`Value`], read
//! directly (the driver's typed getters check the column type again for every cell, which was a
//! fifth of the reading time).

use super::super::Value;
use app::catalog::ColumnType;

/// How a PostgreSQL type is read.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Numeric,
    Text,
    Date,
    Timestamp,
    TimestampTz,
    Bytes,
    Unsupported,
}

pub(super) fn kind(type_name: &str) -> Kind {
    match type_name {
        "BOOL" => Kind::Bool,
        "INT2" => Kind::I16,
        "INT4" => Kind::I32,
        "INT8" => Kind::I64,
        "FLOAT4" => Kind::F32,
        "FLOAT8" => Kind::F64,
        "NUMERIC" => Kind::Numeric,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => Kind::Text,
        "DATE" => Kind::Date,
        "TIMESTAMP" => Kind::Timestamp,
        "TIMESTAMPTZ" => Kind::TimestampTz,
        "BYTEA" => Kind::Bytes,
        _ => Kind::Unsupported,
    }
}

pub(super) fn column_type(k: Kind) -> ColumnType {
    match k {
        Kind::Bool => ColumnType::Boolean,
        Kind::I16 | Kind::I32 | Kind::I64 => ColumnType::Integer,
        Kind::F32 | Kind::F64 => ColumnType::Number,
        Kind::Numeric => ColumnType::Decimal,
        Kind::Text => ColumnType::Text,
        Kind::Date => ColumnType::Date,
        Kind::Timestamp | Kind::TimestampTz => ColumnType::Datetime,
        Kind::Bytes => ColumnType::Bytes,
        Kind::Unsupported => ColumnType::Unknown,
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
            Value::Timestamp(at.and_utc())
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
        Kind::Bytes => Value::Bytes(b.to_vec()),
        Kind::Unsupported => return None,
    })
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
            Some(Value::Timestamp(noon.and_utc()))
        );
        assert_eq!(
            decode_binary(Kind::TimestampTz, &i64::MIN.to_be_bytes()),
            Some(Value::Text("-infinity".into()))
        );
        // Too short for the type: the caller reports it.
        assert_eq!(decode_binary(Kind::I64, &[0, 1]), None);
        assert_eq!(decode_binary(Kind::Unsupported, &[0]), None);
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
