//! MySQL / MariaDB values decoded from the raw bytes of the binary protocol.
//!
//! The sqlx MySQL driver's typed getters refuse or mangle some values a table can hold: zero
//! and partial-zero dates (`0000-00-00`, `2024-00-15`), TIME outside one day (negative, or
//! past 24 hours), BIT(n), GEOMETRY. So those cells are read as raw bytes of the binary
//! protocol and decoded here, into the text the server itself prints for them
//! (`CAST(col AS CHAR)`, `ST_AsText(col)`).
//!
//! Every function returns `None` for bytes that are not a well-formed value; none panics, and
//! none trusts a count read from the bytes before checking it against the bytes present.

use std::fmt::Write as _;

/// A DATE / DATETIME / TIMESTAMP as the binary protocol sends it. Zero parts are allowed (the
/// zero date and partial zero dates are valid MySQL values); out-of-range clock parts are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateParts {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub micros: u32,
}

/// Decodes a binary-protocol DATE / DATETIME / TIMESTAMP (`ProtocolBinary::MYSQL_TYPE_DATE`
/// etc.): length 0 is the zero date; 4 is year (u16 LE), month, day; 7 adds hour, minute,
/// second; 11 adds microseconds (u32 LE). The server sends the shortest form that holds the
/// value, so a DATETIME at midnight comes as 4 bytes.
pub(crate) fn date_parts(b: &[u8]) -> Option<DateParts> {
    let parts = match *b {
        [] => DateParts {
            year: 0,
            month: 0,
            day: 0,
            hour: 0,
            minute: 0,
            second: 0,
            micros: 0,
        },
        [y0, y1, month, day, ref clock @ ..] => {
            let (hour, minute, second, micros) = match *clock {
                [] => (0, 0, 0, 0),
                [h, m, s] => (h, m, s, 0),
                [h, m, s, u0, u1, u2, u3] => (h, m, s, u32::from_le_bytes([u0, u1, u2, u3])),
                _ => return None,
            };
            DateParts {
                year: u16::from_le_bytes([y0, y1]),
                month,
                day,
                hour,
                minute,
                second,
                micros,
            }
        }
        _ => return None,
    };
    let valid = parts.month <= 12
        && parts.day <= 31
        && parts.hour <= 23
        && parts.minute <= 59
        && parts.second <= 59
        && parts.micros <= 999_999;
    valid.then_some(parts)
}

impl DateParts {
    /// Whether this is a real day of the proleptic Gregorian calendar (not the zero date, not a
    /// partial zero date, not 31 April).
    pub(crate) fn is_calendar_date(&self) -> bool {
        let leap = (self.year.is_multiple_of(4) && !self.year.is_multiple_of(100))
            || self.year.is_multiple_of(400);
        let days_in_month = match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return false,
        };
        self.year >= 1 && self.day >= 1 && self.day <= days_in_month
    }

    /// MySQL's own text form: `YYYY-MM-DD`, with `with_time` ` HH:MM:SS`, and then `.ffffff`
    /// only when there are microseconds (the server pads to the column's declared fraction
    /// digits instead, which the value alone does not carry).
    pub(crate) fn text(&self, with_time: bool) -> String {
        let mut s = format!("{:04}-{:02}-{:02}", self.year, self.month, self.day);
        if with_time {
            let _ = write!(s, " {:02}:{:02}:{:02}", self.hour, self.minute, self.second);
            if self.micros != 0 {
                let _ = write!(s, ".{:06}", self.micros);
            }
        }
        s
    }
}

/// Decodes a binary-protocol TIME into MySQL's text form: length 0 is `00:00:00`; 8 is
/// is_negative (0 or 1), days (u32 LE), hour, minute, second; 12 adds microseconds (u32 LE).
/// Hours are days * 24 + hour, at least two digits (`-838:59:59`, `100:00:00`, `05:04:03`);
/// `.ffffff` only when there are microseconds.
pub(crate) fn time_text(b: &[u8]) -> Option<String> {
    let (negative, days, hour, minute, second, micros) = match *b {
        [] => return Some("00:00:00".to_owned()),
        [neg, d0, d1, d2, d3, h, m, s] => (neg, [d0, d1, d2, d3], h, m, s, 0),
        [neg, d0, d1, d2, d3, h, m, s, u0, u1, u2, u3] => (
            neg,
            [d0, d1, d2, d3],
            h,
            m,
            s,
            u32::from_le_bytes([u0, u1, u2, u3]),
        ),
        _ => return None,
    };
    if negative > 1 || hour > 23 || minute > 59 || second > 59 || micros > 999_999 {
        return None;
    }
    let hours = u64::from(u32::from_le_bytes(days)) * 24 + u64::from(hour);
    let sign = if negative == 1 { "-" } else { "" };
    let mut s = format!("{sign}{hours:02}:{minute:02}:{second:02}");
    if micros != 0 {
        let _ = write!(s, ".{micros:06}");
    }
    Some(s)
}

/// Decodes a BIT(n) value: 1 to 8 bytes, big-endian, unsigned.
pub(crate) fn bit_value(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 8 {
        return None;
    }
    Some(
        b.iter()
            .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte)),
    )
}

/// How deep GEOMETRYCOLLECTIONs may nest. MariaDB itself goes on until its thread stack runs
/// out (it printed 1000 levels); real data never comes near this.
const MAX_DEPTH: u32 = 64;

/// Converts MySQL / MariaDB's internal GEOMETRY value (a 4-byte little-endian SRID, then WKB)
/// to WKT exactly as MariaDB's `ST_AsText()` prints it. The SRID is not part of the text.
///
/// The format, as MariaDB 10.11 prints it (checked against the server, see the tests):
/// - no space between a type name and its `(`; items separated by `,` with no space; `x y`
///   separated by one space: `POINT(1 2)`, `MULTIPOINT(1 2,3 4)`,
///   `POLYGON((0 0,10 0,10 10,0 0),(2 2,3 2,3 3,2 2))`, `MULTIPOLYGON(((..)),((..),(..)))`,
///   `GEOMETRYCOLLECTION(POINT(1 2),LINESTRING(0 0,1 1))`;
/// - an empty collection is `GEOMETRYCOLLECTION EMPTY`; any other empty list loses its `(`
///   (MariaDB drops the last character written, meant to be a trailing `,`), so an empty
///   MULTIPOINT prints `MULTIPOINT)` and a polygon with one empty ring `POLYGON())`. Such
///   values can be stored (ST_GeomFromWKB accepts an empty MULTIPOINT), so they are printed
///   the same way here; a LINESTRING with no points (alone or in a collection) has no text
///   (NULL) there and `None` here;
/// - numbers are `my_gcvt`'s: the shortest digits that read back as the same double (Rust's
///   `{}` digits, but an exact tie goes to the even digit), written plainly (`100000000000000`, `0.000000000000001`, `0.30000000000000004`)
///   when the decimal exponent is in range, else as `d.ddde[-]N` with no `+` and no padding
///   (`1e15`, `1.234567890123456e15`, `1e-16`, `1.7976931348623157e308`, `5e-324`): see
///   [`push_number`]. `-0` prints as `0`, and NaN / infinities as `0`.
///
/// Stricter than MariaDB (which prints something, or garbage, for these): bytes left over after
/// the geometry, a member of the wrong type in a MULTI* (MariaDB reads a LINESTRING in a
/// MULTIPOINT as points), a byte-order flag other than 0 / 1, 3D / measured types, and
/// collections nested deeper than [`MAX_DEPTH`] are all `None`. Both byte orders are read,
/// per geometry (MariaDB only stores little-endian).
pub(crate) fn geometry_wkt(b: &[u8]) -> Option<String> {
    let wkb = b.get(4..)?;
    let mut reader = Reader { b: wkb, pos: 0 };
    let mut out = String::new();
    write_geometry(&mut reader, &mut out, 0)?;
    (reader.pos == wkb.len()).then_some(out)
}

/// WKB's geometry type codes (2D only).
const POINT: u32 = 1;
const LINESTRING: u32 = 2;
const POLYGON: u32 = 3;
const MULTIPOINT: u32 = 4;
const MULTILINESTRING: u32 = 5;
const MULTIPOLYGON: u32 = 6;
const GEOMETRYCOLLECTION: u32 = 7;

/// The fewest bytes one item can take: a coordinate pair; a count (ring, linestring body,
/// polygon body); a geometry header (byte order + type) with the smallest body.
const POINT_BYTES: usize = 16;
const COUNT_BYTES: usize = 4;
const HEADER_BYTES: usize = 5;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let bytes: [u8; N] = self.b.get(self.pos..end)?.try_into().ok()?;
        self.pos = end;
        Some(bytes)
    }

    fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }

    fn u32(&mut self, big_endian: bool) -> Option<u32> {
        let bytes = self.take::<4>()?;
        Some(if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }

    fn f64(&mut self, big_endian: bool) -> Option<f64> {
        let bytes = self.take::<8>()?;
        Some(if big_endian {
            f64::from_be_bytes(bytes)
        } else {
            f64::from_le_bytes(bytes)
        })
    }

    /// A geometry's header: (big-endian?, type code).
    fn header(&mut self) -> Option<(bool, u32)> {
        let big_endian = match self.take::<1>()? {
            [0] => true,
            [1] => false,
            _ => return None,
        };
        Some((big_endian, self.u32(big_endian)?))
    }

    /// A count of items each at least `min_item` bytes long, refused unless that many could fit
    /// in what is left (so a hostile count costs nothing).
    fn count(&mut self, big_endian: bool, min_item: usize) -> Option<u32> {
        let n = self.u32(big_endian)?;
        let needed = usize::try_from(n).ok()?.checked_mul(min_item)?;
        (needed <= self.remaining()).then_some(n)
    }
}

/// A whole geometry (header included), as `NAME(...)`.
fn write_geometry(r: &mut Reader<'_>, out: &mut String, depth: u32) -> Option<()> {
    let (be, kind) = r.header()?;
    match kind {
        POINT => {
            out.push_str("POINT(");
            write_point(r, out, be)?;
            out.push(')');
        }
        LINESTRING => {
            out.push_str("LINESTRING");
            let n = r.count(be, POINT_BYTES)?;
            if n == 0 {
                return None;
            }
            write_list(r, out, n, |r, out| write_point(r, out, be))?;
        }
        POLYGON => {
            out.push_str("POLYGON");
            write_polygon_body(r, out, be)?;
        }
        MULTIPOINT => {
            out.push_str("MULTIPOINT");
            let n = r.count(be, HEADER_BYTES + POINT_BYTES)?;
            write_list(r, out, n, |r, out| {
                let be = member_header(r, POINT)?;
                write_point(r, out, be)
            })?;
        }
        MULTILINESTRING => {
            out.push_str("MULTILINESTRING");
            let n = r.count(be, HEADER_BYTES + COUNT_BYTES)?;
            write_list(r, out, n, |r, out| {
                let be = member_header(r, LINESTRING)?;
                write_points(r, out, be)
            })?;
        }
        MULTIPOLYGON => {
            out.push_str("MULTIPOLYGON");
            let n = r.count(be, HEADER_BYTES + COUNT_BYTES)?;
            write_list(r, out, n, |r, out| {
                let be = member_header(r, POLYGON)?;
                write_polygon_body(r, out, be)
            })?;
        }
        GEOMETRYCOLLECTION => {
            if depth >= MAX_DEPTH {
                return None;
            }
            out.push_str("GEOMETRYCOLLECTION");
            let n = r.count(be, HEADER_BYTES + COUNT_BYTES)?;
            if n == 0 {
                out.push_str(" EMPTY");
            } else {
                write_list(r, out, n, |r, out| write_geometry(r, out, depth + 1))?;
            }
        }
        _ => return None,
    }
    Some(())
}

/// A MULTI*'s member header, which must name the expected type; its byte order.
fn member_header(r: &mut Reader<'_>, expected: u32) -> Option<bool> {
    let (be, kind) = r.header()?;
    (kind == expected).then_some(be)
}

/// `n` items as `(a,b,c)`; with none, MariaDB's `)` (see [`geometry_wkt`]).
fn write_list<F>(r: &mut Reader<'_>, out: &mut String, n: u32, mut item: F) -> Option<()>
where
    F: FnMut(&mut Reader<'_>, &mut String) -> Option<()>,
{
    if n > 0 {
        out.push('(');
    }
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        item(r, out)?;
    }
    out.push(')');
    Some(())
}

/// A point count and that many points, as `(x y,x y)`.
fn write_points(r: &mut Reader<'_>, out: &mut String, be: bool) -> Option<()> {
    let n = r.count(be, POINT_BYTES)?;
    write_list(r, out, n, |r, out| write_point(r, out, be))
}

/// A ring count and that many rings, as `((x y,..),(..))`.
fn write_polygon_body(r: &mut Reader<'_>, out: &mut String, be: bool) -> Option<()> {
    let n = r.count(be, COUNT_BYTES)?;
    write_list(r, out, n, |r, out| write_points(r, out, be))
}

/// One coordinate pair, as `x y`.
fn write_point(r: &mut Reader<'_>, out: &mut String, be: bool) -> Option<()> {
    let x = r.f64(be)?;
    let y = r.f64(be)?;
    push_number(out, x);
    out.push(' ');
    push_number(out, y);
    Some(())
}

/// A double as MariaDB's `String::qs_append(double)` writes it: `my_gcvt(x, DOUBLE, ~340)`.
///
/// With that width the digits are always the shortest that read back as the same double (dtoa
/// mode 4 with more digits allowed than a double has), which are Rust's `{:e}` digits except
/// at an exact tie (see [`shortest_digits`]). Let `decpt` be the position of the decimal point
/// relative to the first digit (`1e15` has digits `1`, decpt 16; `0.001` has decpt -2). The
/// plain form is used when `-14 <= decpt` and either `decpt <= 15` or there are more digits
/// than `decpt` (a fraction is left); `MAX_DECPT_FOR_F_FORMAT` is DBL_DIG = 15. Otherwise
/// `d[.ddd]e[-]N`. Zero of either sign is `0`; NaN and infinities are `0` too (dtoa's
/// overflow answer).
fn push_number(out: &mut String, x: f64) {
    if !x.is_finite() || x == 0.0 {
        out.push('0');
        return;
    }
    let (digits, decpt) = shortest_digits(x.abs());
    let len = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if x < 0.0 {
        out.push('-');
    }
    if decpt >= -14 && (decpt <= 15 || len > decpt) {
        if decpt <= 0 {
            out.push_str("0.");
            for _ in decpt..0 {
                out.push('0');
            }
            out.push_str(&digits);
        } else if decpt < len {
            // decpt is in 1..len here, so a valid index into the ASCII digits.
            let (int, frac) = digits.split_at(usize::try_from(decpt).unwrap_or(0));
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        } else {
            out.push_str(&digits);
            for _ in len..decpt {
                out.push('0');
            }
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let _ = write!(out, "e{}", decpt - 1);
    }
}

/// The shortest decimal digits that read back as `x` (finite, positive) and the decimal point's
/// position, as David Gay's dtoa (MariaDB's) gives them.
///
/// Rust's `{:e}` gives the same digits, except when `x` lies exactly halfway between the two
/// nearest shortest candidates (e.g. 2^-25 = 2.98023223876953125e-8 with 17 digits): Rust
/// rounds the tie up (`...313`), dtoa to the even digit (`...312`). Such a tie needs `x`'s
/// exact decimal expansion to be those digits plus a `5`, which is checked in integers.
fn shortest_digits(x: f64) -> (String, i32) {
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let decpt = exponent.parse::<i32>().unwrap_or(0) + 1;
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let last = digits.bytes().last().unwrap_or(b'0');
    if last % 2 == 1 {
        // Rust's last digit is odd (an ASCII digit has its digit's parity): is `x`
        // exactly halfway to the even one below?
        let n = i32::try_from(digits.len()).unwrap_or(i32::MAX);
        let below: Option<u64> = digits.parse::<u64>().ok().and_then(|d| d.checked_sub(1));
        let midpoint = below.and_then(|d| d.checked_mul(10)?.checked_add(5));
        if let Some(midpoint) = midpoint {
            if is_exactly(x, midpoint, decpt - n - 1) {
                let mut lower = digits.clone();
                lower.pop();
                lower.push(char::from(last - 1));
                // Just past a power of two the gap below is half the gap above, so the lower
                // digits may not read back as `x`; dtoa keeps the upper ones then.
                let reads_back = format!("0.{lower}e{decpt}").parse::<f64>().ok() == Some(x);
                if reads_back {
                    while lower.len() > 1 && lower.ends_with('0') {
                        lower.pop();
                    }
                    digits = lower;
                }
            }
        }
    }
    (digits, decpt)
}

/// Whether `x` (finite, positive) is exactly `n * 10^k`, for an odd `n`.
fn is_exactly(x: f64, n: u64, k: i32) -> bool {
    // x = m * 2^e with m odd.
    let bits = x.to_bits();
    let biased = i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let fraction = bits & ((1 << 52) - 1);
    let (mut m, mut e) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    if m == 0 {
        return false;
    }
    let zeros = m.trailing_zeros();
    m >>= zeros;
    e += i32::try_from(zeros).unwrap_or(0);
    // n * 2^k * 5^k with n and m odd: the powers of two must match, and the odd parts.
    if e != k {
        return false;
    }
    let Some(five) = 5u128.checked_pow(k.unsigned_abs()) else {
        return false;
    };
    if k >= 0 {
        u128::from(n).checked_mul(five) == Some(u128::from(m))
    } else {
        u128::from(m).checked_mul(five) == Some(u128::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn wkt(hex_value: &str) -> Option<String> {
        geometry_wkt(&hex(hex_value))
    }

    // ---- dates ----
    //
    // Expected texts are the server's (MariaDB 10.11, sql_mode='', `CAST(col AS CHAR)` on a
    // temporary table); bytes are built from the protocol's layout for the same value. The
    // server pads fractions to the column's declared digits (DATETIME(6) zero date:
    // `0000-00-00 00:00:00.000000`); the binary value does not carry that, so the fraction
    // here is written only when non-zero.

    fn date_bytes(y: u16, mo: u8, d: u8) -> Vec<u8> {
        let mut b = y.to_le_bytes().to_vec();
        b.extend([mo, d]);
        b
    }

    fn datetime_bytes(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: Option<u32>) -> Vec<u8> {
        let mut b = date_bytes(y, mo, d);
        b.extend([h, mi, s]);
        if let Some(us) = us {
            b.extend(us.to_le_bytes());
        }
        b
    }

    #[test]
    fn zero_date() {
        let p = date_parts(&[]).unwrap();
        assert_eq!(p.text(false), "0000-00-00");
        assert_eq!(p.text(true), "0000-00-00 00:00:00");
        assert!(!p.is_calendar_date());
        // Written out in full, as a client could also send it.
        let p = date_parts(&datetime_bytes(0, 0, 0, 0, 0, 0, Some(0))).unwrap();
        assert_eq!(p.text(true), "0000-00-00 00:00:00");
    }

    #[test]
    fn dates_match_server_text() {
        let cases: &[(Vec<u8>, bool, &str)] = &[
            (date_bytes(2024, 0, 15), false, "2024-00-15"),
            (date_bytes(2024, 2, 29), false, "2024-02-29"),
            (date_bytes(1, 1, 1), false, "0001-01-01"),
            (
                datetime_bytes(2024, 0, 15, 10, 20, 30, None),
                true,
                "2024-00-15 10:20:30",
            ),
            (
                datetime_bytes(2024, 0, 15, 10, 20, 30, Some(1)),
                true,
                "2024-00-15 10:20:30.000001",
            ),
            (
                datetime_bytes(2024, 2, 29, 23, 59, 59, None),
                true,
                "2024-02-29 23:59:59",
            ),
            (
                datetime_bytes(2024, 2, 29, 23, 59, 59, Some(999_999)),
                true,
                "2024-02-29 23:59:59.999999",
            ),
            (
                datetime_bytes(2024, 2, 29, 23, 59, 59, Some(500_000)),
                true,
                "2024-02-29 23:59:59.500000",
            ),
            (date_bytes(1000, 1, 1), true, "1000-01-01 00:00:00"),
            (
                datetime_bytes(9999, 12, 31, 23, 59, 59, Some(123_456)),
                true,
                "9999-12-31 23:59:59.123456",
            ),
            (
                datetime_bytes(1970, 1, 1, 0, 0, 1, None),
                true,
                "1970-01-01 00:00:01",
            ),
            (
                datetime_bytes(2023, 0, 0, 1, 2, 3, None),
                true,
                "2023-00-00 01:02:03",
            ),
        ];
        for (bytes, with_time, expected) in cases {
            let p = date_parts(bytes).unwrap();
            assert_eq!(p.text(*with_time), *expected, "{bytes:?}");
        }
    }

    #[test]
    fn date_fields_decoded() {
        let p = date_parts(&datetime_bytes(2024, 2, 29, 23, 59, 58, Some(123_456))).unwrap();
        assert_eq!(
            p,
            DateParts {
                year: 2024,
                month: 2,
                day: 29,
                hour: 23,
                minute: 59,
                second: 58,
                micros: 123_456
            }
        );
        let p = date_parts(&date_bytes(2024, 2, 29)).unwrap();
        assert_eq!((p.hour, p.minute, p.second, p.micros), (0, 0, 0, 0));
    }

    #[test]
    fn calendar_dates() {
        let ok = |y, m, d| date_parts(&date_bytes(y, m, d)).unwrap().is_calendar_date();
        assert!(ok(2024, 2, 29));
        assert!(ok(2000, 2, 29));
        assert!(!ok(1900, 2, 29));
        assert!(!ok(2023, 2, 29));
        assert!(ok(2023, 2, 28));
        assert!(ok(1, 1, 1));
        assert!(ok(9999, 12, 31));
        assert!(!ok(0, 1, 1));
        assert!(!ok(2024, 0, 15));
        assert!(!ok(2024, 1, 0));
        assert!(!ok(2024, 4, 31));
        assert!(ok(2024, 4, 30));
        assert!(ok(2024, 1, 31));
    }

    #[test]
    fn malformed_dates() {
        for len in [1, 2, 3, 5, 6, 8, 9, 10, 12, 13, 100] {
            assert_eq!(date_parts(&vec![1; len]), None, "length {len}");
        }
        assert_eq!(date_parts(&date_bytes(2024, 13, 1)), None);
        assert_eq!(date_parts(&date_bytes(2024, 1, 32)), None);
        assert_eq!(
            date_parts(&datetime_bytes(2024, 1, 1, 24, 0, 0, None)),
            None
        );
        assert_eq!(
            date_parts(&datetime_bytes(2024, 1, 1, 0, 60, 0, None)),
            None
        );
        assert_eq!(
            date_parts(&datetime_bytes(2024, 1, 1, 0, 0, 60, None)),
            None
        );
        assert_eq!(
            date_parts(&datetime_bytes(2024, 1, 1, 0, 0, 0, Some(1_000_000))),
            None
        );
    }

    // ---- TIME ----
    //
    // The server's texts (TIME(6) columns, fraction padded to the column's 6 digits there;
    // written only when non-zero here): '-838:59:59', '838:59:59', '-00:00:01.500000',
    // '100:00:00', '05:04:03', '34:56:07.000001'; '-00:00:00' is stored as '00:00:00'.

    fn time_bytes(neg: bool, days: u32, h: u8, m: u8, s: u8, us: Option<u32>) -> Vec<u8> {
        let mut b = vec![u8::from(neg)];
        b.extend(days.to_le_bytes());
        b.extend([h, m, s]);
        if let Some(us) = us {
            b.extend(us.to_le_bytes());
        }
        b
    }

    #[test]
    fn times_match_server_text() {
        let cases: &[(Vec<u8>, &str)] = &[
            (vec![], "00:00:00"),
            (time_bytes(true, 34, 22, 59, 59, None), "-838:59:59"),
            (time_bytes(false, 34, 22, 59, 59, None), "838:59:59"),
            (
                time_bytes(true, 0, 0, 0, 1, Some(500_000)),
                "-00:00:01.500000",
            ),
            (time_bytes(false, 4, 4, 0, 0, None), "100:00:00"),
            (time_bytes(false, 0, 5, 4, 3, None), "05:04:03"),
            (time_bytes(false, 1, 10, 56, 7, Some(1)), "34:56:07.000001"),
            (time_bytes(false, 0, 0, 0, 0, Some(0)), "00:00:00"),
            (time_bytes(false, 0, 0, 0, 0, None), "00:00:00"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(time_text(bytes).as_deref(), Some(*expected), "{bytes:?}");
        }
    }

    #[test]
    fn time_extremes() {
        // No overflow with the largest day count.
        assert_eq!(
            time_text(&time_bytes(true, u32::MAX, 23, 59, 59, Some(999_999))).as_deref(),
            Some("-103079215103:59:59.999999")
        );
    }

    #[test]
    fn malformed_times() {
        for len in [1, 4, 7, 9, 11, 13, 20] {
            assert_eq!(time_text(&vec![0; len]), None, "length {len}");
        }
        let mut b = time_bytes(false, 0, 1, 2, 3, None);
        b[0] = 2;
        assert_eq!(time_text(&b), None);
        assert_eq!(time_text(&time_bytes(false, 0, 24, 0, 0, None)), None);
        assert_eq!(time_text(&time_bytes(false, 0, 0, 60, 0, None)), None);
        assert_eq!(time_text(&time_bytes(false, 0, 0, 0, 60, None)), None);
        assert_eq!(
            time_text(&time_bytes(false, 0, 0, 0, 0, Some(1_000_000))),
            None
        );
    }

    // ---- BIT ----

    #[test]
    fn bits_match_server() {
        // From the server: BIT(1) b'1' -> 01, BIT(8) b'10100101' -> a5 (165),
        // BIT(64) all ones -> ffffffffffffffff (18446744073709551615), BIT(10) b'1000000001'
        // -> 0201 (513).
        assert_eq!(bit_value(&[0x01]), Some(1));
        assert_eq!(bit_value(&[0xa5]), Some(165));
        assert_eq!(bit_value(&[0xff; 8]), Some(u64::MAX));
        assert_eq!(bit_value(&[0x02, 0x01]), Some(513));
        assert_eq!(bit_value(&[0x00]), Some(0));
        assert_eq!(
            bit_value(&[1, 2, 3, 4, 5, 6, 7, 8]),
            Some(0x0102_0304_0506_0708)
        );
        assert_eq!(bit_value(&[]), None);
        assert_eq!(bit_value(&[0; 9]), None);
    }

    // ---- GEOMETRY ----
    //
    // Every (bytes, text) pair below is from MariaDB 10.11: the bytes are the column value
    // (`SELECT ST_GeomFromText(...)` / `ST_GeomFromWKB(...)`, read raw), the text is
    // `ST_AsText()` of the same value.

    #[test]
    fn geometry_from_server() {
        let cases = [
            ("000000000101000000000000000000f03f0000000000000040", "POINT(1 2)"),
            ("e61000000101000000000000000000f03f0000000000000040", "POINT(1 2)"), // SRID 4326
            ("0000000001010000009a9999999999b93f00000000000004c0", "POINT(0.1 -2.5)"),
            ("000000000101000000408cb5781daf15442342920ca19cc7bb", "POINT(1e20 -1e-20)"),
            (
                "000000000101000000b6f37d54346f9d418dedb5a0f7c6b03e",
                "POINT(123456789.123 0.000001)",
            ),
            ("00000000010100000000003426f56b0c430080e03779c34143", "POINT(1e15 1e16)"),
            (
                "00000000010100000000a0d88557347643350f63bab4697b43",
                "POINT(1e17 1.2345678901234568e17)",
            ),
            ("0000000001010000002d431cebe2361a3ff168e388b5f8e43e", "POINT(0.0001 0.00001)"),
            ("00000000010100000076830df4f521843e355800662deb517e", "POINT(0.00000015 3e300)"),
            ("00000000010100000000000000000000800000000000000000", "POINT(0 0)"), // -0
            (
                "000000000101000000343333333333d33f010000000000f03f",
                "POINT(0.30000000000000004 1.0000000000000002)",
            ),
            (
                "000000000101000000d7533ce6d61cc8402d431cebe236fa3e",
                "POINT(12345.678901234567 0.000025)",
            ),
            (
                "0000000001020000000300000000000000000000000000000000000000000000000000f03f\
                 000000000000f03f00000000000000400000000000000440",
                "LINESTRING(0 0,1 1,2 2.5)",
            ),
            (
                "0000000001030000000200000005000000000000000000000000000000000000000000000000\
                 0024400000000000000000000000000000244000000000000024400000000000000000000000\
                 0000002440000000000000000000000000000000000500000000000000000000400000000000\
                 0000400000000000000840000000000000004000000000000008400000000000000840000000\
                 0000000040000000000000084000000000000000400000000000000040",
                "POLYGON((0 0,10 0,10 10,0 10,0 0),(2 2,3 2,3 3,2 3,2 2))",
            ),
            (
                "000000000104000000020000000101000000000000000000f03f000000000000004001010000\
                 0000000000000008400000000000001040",
                "MULTIPOINT(1 2,3 4)",
            ),
            (
                "0000000001050000000200000001020000000200000000000000000000000000000000000000\
                 000000000000f03f000000000000f03f01020000000300000000000000000000400000000000\
                 0000400000000000000840000000000000084000000000000010400000000000001040",
                "MULTILINESTRING((0 0,1 1),(2 2,3 3,4 4))",
            ),
            (
                "0000000001060000000200000001030000000100000004000000000000000000000000000000\
                 00000000000000000000f03f0000000000000000000000000000f03f000000000000f03f0000\
                 000000000000000000000000000001030000000200000004000000000000000000144000000000\
                 00001440000000000000184000000000000014400000000000001840000000000000184000000\
                 0000000144000000000000014400400000066666666666614406666666666661440cdcccccccc\
                 cc14406666666666661440cdcccccccccc1440cdcccccccccc14406666666666661440666666\
                 6666661440",
                "MULTIPOLYGON(((0 0,1 0,1 1,0 0)),((5 5,6 5,6 6,5 5),(5.1 5.1,5.2 5.1,5.2 5.2,5.1 5.1)))",
            ),
            (
                "000000000107000000020000000101000000000000000000f03f000000000000004001020000\
                 000200000000000000000000000000000000000000000000000000f03f000000000000f03f",
                "GEOMETRYCOLLECTION(POINT(1 2),LINESTRING(0 0,1 1))",
            ),
            (
                "000000000107000000020000000101000000000000000000f03f000000000000004001070000\
                 000200000001010000000000000000000840000000000000104001040000000200000001010000\
                 000000000000001440000000000000184001010000000000000000001c400000000000002040",
                "GEOMETRYCOLLECTION(POINT(1 2),GEOMETRYCOLLECTION(POINT(3 4),MULTIPOINT(5 6,7 8)))",
            ),
            ("00000000010700000000000000", "GEOMETRYCOLLECTION EMPTY"),
            (
                "00000000010700000001000000010700000000000000",
                "GEOMETRYCOLLECTION(GEOMETRYCOLLECTION EMPTY)",
            ),
            (
                "00000000010200000001000000000000000000f03f0000000000000040",
                "LINESTRING(1 2)",
            ),
            (
                "000000000103000000010000000100000000000000000000000000000000000000",
                "POLYGON((0 0))",
            ),
            // MariaDB's quirk for empty lists (values it stores and prints like this).
            ("00000000010400000000000000", "MULTIPOINT)"),
            ("00000000010500000000000000", "MULTILINESTRING)"),
            ("00000000010600000000000000", "MULTIPOLYGON)"),
            ("00000000010300000000000000", "POLYGON)"),
            ("0000000001030000000100000000000000", "POLYGON())"),
            (
                "000000000103000000020000000300000000000000000000000000000000000000000000000000\
                 f03f000000000000f03f0000000000000000000000000000000000000000",
                "POLYGON((0 0,1 1,0 0),))",
            ),
            ("00000000010500000001000000010200000000000000", "MULTILINESTRING())"),
            ("00000000010600000001000000010300000000000000", "MULTIPOLYGON())"),
            (
                "00000000010700000001000000010400000000000000",
                "GEOMETRYCOLLECTION(MULTIPOINT))",
            ),
            (
                "000000000107000000020000000104000000000000000101000000000000000000f03f00000000\
                 00000040",
                "GEOMETRYCOLLECTION(MULTIPOINT),POINT(1 2))",
            ),
            // NaN and -infinity print as 0.
            ("000000000101000000000000000000f87f000000000000f0ff", "POINT(0 0)"),
            ("000000000101000000000000000000f07f000000000000f03f", "POINT(0 1)"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(wkt(bytes).as_deref(), Some(expected), "{bytes}");
        }
    }

    #[test]
    fn numbers_from_server() {
        // ST_AsText(POINT(x 0)) on MariaDB 10.11, x given as its little-endian double bytes.
        let cases = [
            ("0000901ec4bcd642", "100000000000000"),
            ("40de77832112dc42", "123456789012345"),
            ("00003426f56b0c43", "1e15"),
            ("f8ff3326f56b0c43", "999999999999999"),
            ("00eb2af2548b1143", "1.234567890123456e15"),
            ("03eb2af2548b1143", "1234567890123456.8"),
            ("c4a5b52e2aee4543", "1.2345678901234568e16"),
            ("0080e03779c34143", "1e16"),
            ("00a0d88557347643", "1e17"),
            ("408cb5781daf1544", "1e20"),
            ("6da0101f9b24ba44", "1.2345678901234569e23"),
            ("50efe2d6e41a4b44", "1e21"),
            ("92d54d06cff08044", "1e22"),
            ("7dc39425ad49b254", "1e100"),
            ("ffffffffffffef7f", "1.7976931348623157e308"),
            ("408cb5781daf15c4", "-1e20"),
            ("2342920ca19cc7bb", "-1e-20"),
            ("9b2ba1869b84063d", "0.00000000000001"),
            ("1656e79eaf03d23c", "0.000000000000001"),
            ("20015b6e8705db3c", "0.0000000000000015"),
            ("bc89d897b2d29c3c", "1e-16"),
            ("8ce2590fd23ad63c", "0.000000000000001234"),
            ("70e8470ca8c8a13c", "1.234e-16"),
            ("0100000000000000", "5e-324"),
            ("0000000000001000", "2.2250738585072014e-308"),
            ("0000000000000080", "0"),
            ("9a9999999999b93f", "0.1"),
            ("77be9f1a2fdd5ec0", "-123.456"),
            ("0000000000005940", "100"),
            ("0000000080842e41", "1000000"),
            // Exact ties between two shortest candidates: dtoa takes the even digit.
            ("000000000000603e", "0.000000029802322387695312"),
            ("c8760d00114dd9c2", "-111275153569243.12"),
            ("2057af10c436a342", "10562969294763.562"),
            ("556e5967b4021443", "1408118346374037.2"),
            // ...but not when the lower one would not read back (2^-24: the gap below a power
            // of two is half the gap above).
            ("000000000000703e", "0.00000005960464477539063"),
        ];
        for (x, expected) in cases {
            let bytes = format!("000000000101000000{x}0000000000000000");
            assert_eq!(
                wkt(&bytes).as_deref(),
                Some(format!("POINT({expected} 0)").as_str()),
                "{x}"
            );
        }
    }

    /// Builds WKB by hand, in either byte order.
    struct Wkb {
        be: bool,
        bytes: Vec<u8>,
    }

    impl Wkb {
        fn new(be: bool) -> Self {
            Wkb {
                be,
                bytes: vec![0, 0, 0, 0],
            }
        }
        fn header(&mut self, kind: u32) -> &mut Self {
            self.bytes.push(u8::from(!self.be));
            self.u32(kind)
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            let b = if self.be {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            self.bytes.extend(b);
            self
        }
        fn xy(&mut self, x: f64, y: f64) -> &mut Self {
            for v in [x, y] {
                let b = if self.be {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                self.bytes.extend(b);
            }
            self
        }
        fn be(&mut self, be: bool) -> &mut Self {
            self.be = be;
            self
        }
    }

    #[test]
    fn big_endian_and_mixed_byte_orders() {
        // MariaDB (which converts to little-endian on input) prints the same text:
        // ST_AsText(ST_GeomFromWKB(<these WKB bytes>)).
        let mut w = Wkb::new(true);
        w.header(POINT).xy(1.5, -2.0);
        assert_eq!(geometry_wkt(&w.bytes).as_deref(), Some("POINT(1.5 -2)"));

        let mut w = Wkb::new(true);
        w.header(GEOMETRYCOLLECTION).u32(2);
        w.be(false).header(POINT).xy(1.0, 2.0);
        w.be(true).header(POINT).xy(3.0, 4.0);
        assert_eq!(
            geometry_wkt(&w.bytes).as_deref(),
            Some("GEOMETRYCOLLECTION(POINT(1 2),POINT(3 4))")
        );

        let mut w = Wkb::new(false);
        w.header(MULTIPOLYGON).u32(1);
        w.be(true).header(POLYGON).u32(1).u32(3);
        w.xy(0.0, 0.0).xy(1.0, 0.0).xy(0.0, 0.0);
        assert_eq!(
            geometry_wkt(&w.bytes).as_deref(),
            Some("MULTIPOLYGON(((0 0,1 0,0 0)))")
        );
    }

    #[test]
    fn nesting_is_capped() {
        let nested = |levels: u32| {
            let mut w = Wkb::new(false);
            for _ in 0..levels {
                w.header(GEOMETRYCOLLECTION).u32(1);
            }
            w.header(POINT).xy(1.0, 2.0);
            geometry_wkt(&w.bytes)
        };
        let ok = nested(MAX_DEPTH).unwrap();
        assert!(ok.starts_with("GEOMETRYCOLLECTION(GEOMETRYCOLLECTION("));
        assert!(ok.contains("(POINT(1 2))"));
        assert_eq!(nested(MAX_DEPTH + 1), None);
        assert_eq!(nested(100_000), None);
    }

    #[test]
    fn malformed_geometry() {
        let none = |s: &str| assert_eq!(wkt(s), None, "{s}");
        // No SRID, a short SRID, an SRID alone, a header cut short, a point cut short.
        none("");
        none("000000");
        none("00000000");
        none("0000000001");
        none("000000000101000000000000000000f03f00000000000000");
        // Bytes after the geometry (MariaDB ignores them and prints `POINT(1 2)`).
        none("000000000101000000000000000000f03f000000000000004000");
        // Byte-order flag 2 (MariaDB does not look at it in a stored value: `POINT(1 2)`).
        none("000000000201000000000000000000f03f0000000000000040");
        // Type 0, type 8, EWKB's Z flag on type 0, ISO type 1001 (POINT Z): NULL in MariaDB.
        none("000000000100000000");
        none("00000000010800000000000000");
        none("000000000100000080000000000000f03f0000000000000040");
        none("0000000001e9030000000000000000f03f00000000000000400000000000000840");
        // A LINESTRING with no points, alone or in a collection: NULL in MariaDB too.
        none("00000000010200000000000000");
        none("00000000010700000001000000010200000000000000");
        // A LINESTRING inside a MULTIPOINT (MariaDB misreads it as points:
        // `MULTIPOINT(1e-323 5.299808824e-315)`).
        none(
            "00000000010400000001000000010200000002000000000000000000f03f00000000000000400000\
             0000000008400000000000001040",
        );
        // Hostile counts: refused before any work.
        none("000000000102000000ffffffff");
        none("000000000103000000ffffffff");
        none("000000000104000000ffffffff");
        none("000000000105000000ffffffff");
        none("000000000106000000ffffffff");
        none("000000000107000000ffffffff");
        none("000000000103000000010000000fffffff");
        // A count that fits the bytes only if items were smaller than they can be.
        none("00000000010200000002000000000000000000f03f0000000000000040");
    }

    #[test]
    fn hostile_counts_are_fast() {
        let start = std::time::Instant::now();
        for kind in 2u8..=7 {
            let mut b = vec![0, 0, 0, 0, 1, kind, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
            b.extend([0u8; 64]);
            assert_eq!(geometry_wkt(&b), None);
        }
        assert!(start.elapsed() < std::time::Duration::from_millis(100));
    }

    #[test]
    fn number_format_matches_rust_shortest_digits() {
        // The plain form agrees with Rust's `{}` inside the plain range.
        for x in [
            0.1,
            -2.5,
            1.0,
            123.456,
            1e14,
            1e-14,
            0.30000000000000004,
            1234567890123456.8,
        ] {
            let mut s = String::new();
            push_number(&mut s, x);
            assert_eq!(s, format!("{x}"));
        }
    }

    /// A small xorshift generator, so the fuzz loops need no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, max_len: usize) -> Vec<u8> {
            let len = usize::try_from(self.next() % (max_len as u64 + 1)).unwrap();
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let b = rng.bytes(40);
            let _ = date_parts(&b).map(|p| (p.text(true), p.is_calendar_date()));
            let _ = time_text(&b);
            let _ = bit_value(&b);
            let _ = geometry_wkt(&b);
        }
    }

    #[test]
    fn mutated_geometries_never_panic() {
        // Valid values with random bytes changed, cut short or extended: reaches deep paths
        // that purely random bytes rarely do.
        let mut collection = Wkb::new(false);
        collection.header(GEOMETRYCOLLECTION).u32(3);
        collection.header(POINT).xy(1.0, 2.0);
        collection
            .header(MULTIPOLYGON)
            .u32(1)
            .header(POLYGON)
            .u32(2);
        collection.u32(3).xy(0.0, 0.0).xy(1.0, 0.0).xy(0.0, 0.0);
        collection.u32(2).xy(0.5, 0.5).xy(0.5, 0.5);
        collection.header(GEOMETRYCOLLECTION).u32(2);
        collection
            .header(MULTILINESTRING)
            .u32(1)
            .header(LINESTRING)
            .u32(1)
            .xy(3.0, 4.0);
        collection
            .header(MULTIPOINT)
            .u32(1)
            .header(POINT)
            .xy(5.0, 6.0);
        let seeds = [
            collection.bytes,
            hex(
                "000000000107000000020000000101000000000000000000f03f000000000000004001070000\
                 000200000001010000000000000000000840000000000000104001040000000200000001010000\
                 000000000000001440000000000000184001010000000000000000001c400000000000002040",
            ),
        ];
        assert!(geometry_wkt(&seeds[0]).is_some());
        assert!(geometry_wkt(&seeds[1]).is_some());
        let mut rng = Rng(42);
        for _ in 0..100_000 {
            let mut b = seeds[usize::try_from(rng.next() % 2).unwrap()].clone();
            for _ in 0..(rng.next() % 4) {
                let i = usize::try_from(rng.next() % b.len() as u64).unwrap();
                b[i] = rng.next() as u8;
            }
            match rng.next() % 3 {
                0 => b.truncate(usize::try_from(rng.next() % (b.len() as u64 + 1)).unwrap()),
                1 => b.extend(rng.bytes(20)),
                _ => {}
            }
            let _ = geometry_wkt(&b);
        }
    }

    #[test]
    fn random_doubles_format_without_panic() {
        let mut rng = Rng(7);
        for _ in 0..100_000 {
            let x = f64::from_bits(rng.next());
            let mut s = String::new();
            push_number(&mut s, x);
            if x.is_finite() {
                // Whatever the form, it reads back as the same number (-0 reads as 0).
                let back: f64 = s.parse().unwrap();
                assert!(back == x, "{x:e} -> {s}");
            }
        }
    }
}
