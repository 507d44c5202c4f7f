//! Dates and times as text, by hand: they are on nearly every exported row, and chrono's
//! format strings are parsed again for every value, which cost more than the rest of a CSV row.
//! The output is exactly chrono's `%Y-%m-%d` / `%Y-%m-%dT%H:%M:%S%.f` (tested against it);
//! years outside 0..=9999 fall back to chrono.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use std::fmt::Write as _;

fn push_digits(out: &mut String, value: u32, width: usize) {
    let mut buf = [b'0'; 9];
    let mut v = value;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend(buf[..width].iter().map(|&d| char::from(d)));
}

/// `YYYY-MM-DD`.
pub fn write_date(out: &mut String, d: NaiveDate) {
    let year = d.year();
    if !(0..=9999).contains(&year) {
        let _ = write!(out, "{}", d.format("%Y-%m-%d"));
        return;
    }
    push_digits(out, year as u32, 4);
    out.push('-');
    push_digits(out, d.month(), 2);
    out.push('-');
    push_digits(out, d.day(), 2);
}

/// `HH:MM:SS` and, when not zero, the fraction in 3, 6 or 9 digits (chrono's `%.f`).
pub fn write_time(out: &mut String, t: NaiveTime) {
    let nano = t.nanosecond();
    // chrono keeps a leap second as nanoseconds past 1e9 and prints it as second 60.
    let (leap, nano) = (nano / 1_000_000_000, nano % 1_000_000_000);
    push_digits(out, t.hour(), 2);
    out.push(':');
    push_digits(out, t.minute(), 2);
    out.push(':');
    push_digits(out, t.second() + leap, 2);
    if nano == 0 {
        return;
    }
    out.push('.');
    if nano % 1_000_000 == 0 {
        push_digits(out, nano / 1_000_000, 3);
    } else if nano % 1_000 == 0 {
        push_digits(out, nano / 1_000, 6);
    } else {
        push_digits(out, nano, 9);
    }
}

/// An offset as RFC 3339 writes it: `Z` for UTC, `+05:30` otherwise.
pub fn write_offset(out: &mut String, seconds_east: i32) {
    if seconds_east == 0 {
        out.push('Z');
        return;
    }
    out.push(if seconds_east < 0 { '-' } else { '+' });
    let minutes = seconds_east.unsigned_abs() / 60;
    push_digits(out, minutes / 60, 2);
    out.push(':');
    push_digits(out, minutes % 60, 2);
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]`.
pub fn write_datetime(out: &mut String, dt: NaiveDateTime) {
    write_date(out, dt.date());
    out.push('T');
    write_time(out, dt.time());
}

fn number(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// `YYYY-MM-DD`, strictly.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(
        number(&b[0..4])? as i32,
        number(&b[5..7])?,
        number(&b[8..10])?,
    )
}

/// `YYYY-MM-DD HH:MM[:SS[.f…]]` with a space or `T` between date and time, no time zone:
/// the forms SQLite's own date functions write. Anything else is `None` (the caller tries the
/// slower, more lenient parsers).
pub fn parse_naive_datetime(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() < 16 || !matches!(b[10], b' ' | b'T') || b[13] != b':' {
        return None;
    }
    let date = parse_date(&s[..10])?;
    let (hour, minute) = (number(&b[11..13])?, number(&b[14..16])?);
    let rest = &b[16..];
    let (second, nano) = match rest {
        [] => (0, 0),
        [b':', s1, s2, tail @ ..] => {
            let second = number(&[*s1, *s2])?;
            let nano = match tail {
                [] => 0,
                [b'.', digits @ ..] if !digits.is_empty() && digits.len() <= 9 => {
                    number(digits)? * 10u32.pow(9 - digits.len() as u32)
                }
                _ => return None,
            };
            (second, nano)
        }
        _ => return None,
    };
    date.and_hms_nano_opt(hour, minute, second, nano)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_print_exactly_as_chrono_does() {
        let base = NaiveDate::from_ymd_opt(1, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let nanos = [0, 1, 500, 1_000, 26_490_000, 999_999_999, 120_000, 7];
        // Steps of a prime number of seconds walk through every field's range.
        for i in 0..20_000i64 {
            let dt = base
                + chrono::Duration::seconds(i * 15_790_321)
                + chrono::Duration::nanoseconds(nanos[i as usize % nanos.len()]);
            let mut fast = String::new();
            write_datetime(&mut fast, dt);
            assert_eq!(fast, dt.format("%Y-%m-%dT%H:%M:%S%.f").to_string());
            let mut day = String::new();
            write_date(&mut day, dt.date());
            assert_eq!(day, dt.format("%Y-%m-%d").to_string());
        }
        let far = NaiveDate::from_ymd_opt(12_345, 6, 7).unwrap();
        let mut s = String::new();
        write_date(&mut s, far);
        assert_eq!(s, far.format("%Y-%m-%d").to_string());
    }

    #[test]
    fn sqlite_text_timestamps_parse_and_odd_ones_are_left_to_the_lenient_parser() {
        let at = |h, m, s, n| {
            NaiveDate::from_ymd_opt(2024, 2, 29)
                .unwrap()
                .and_hms_nano_opt(h, m, s, n)
                .unwrap()
        };
        assert_eq!(
            parse_naive_datetime("2024-02-29 13:45:07"),
            Some(at(13, 45, 7, 0))
        );
        assert_eq!(
            parse_naive_datetime("2024-02-29T13:45"),
            Some(at(13, 45, 0, 0))
        );
        assert_eq!(
            parse_naive_datetime("2024-02-29 13:45:07.25"),
            Some(at(13, 45, 7, 250_000_000))
        );
        for odd in [
            "2024-02-30 00:00:00",
            "2024-02-29 25:00:00",
            "2024-02-29 13:45:07Z",
            "2024-02-29 13:45:07.",
            "2024-02-29",
            "2024-02-29 13:45:7",
            "24-02-29 13:45:07",
            "2024-02-29 13:45:07.1234567890",
        ] {
            assert_eq!(parse_naive_datetime(odd), None, "{odd}");
        }
        assert_eq!(
            parse_date("2024-02-29"),
            NaiveDate::from_ymd_opt(2024, 2, 29)
        );
        assert_eq!(parse_date("2024-2-29"), None);
    }
}
