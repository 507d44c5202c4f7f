//! `:name` placeholders in the operator's SQL, turned into each driver's bound parameters.
//!
//! The SQL is the operator's; users only ever supply values, which are bound (or, for
//! PostgreSQL's `COPY`, which takes no parameters, written in as escaped literals through
//! [`replace_positional`]). The scanner skips string literals, dollar-quoted strings, quoted
//! identifiers and comments, and leaves PostgreSQL's `::type` casts alone, so `':x'` or
//! `a::text` are not mistaken for placeholders.

/// How a driver writes its positional parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamStyle {
    /// `?` (SQLite, MySQL/MariaDB): one per occurrence.
    Question,
    /// `$1`, `$2` … (PostgreSQL): one per distinct name, reused.
    Dollar,
}

/// SQL rewritten for one driver, with the names to bind in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSql {
    pub sql: String,
    /// The parameter name for each positional slot.
    pub slots: Vec<String>,
}

/// Every placeholder name in order of first appearance.
pub fn placeholder_names(sql: &str) -> Vec<String> {
    let mut names = Vec::new();
    scan(sql, |piece| {
        if let Piece::Param(name) = piece {
            if !names.iter().any(|n: &String| n == name) {
                names.push(name.to_string());
            }
        }
    });
    names
}

/// Rewrites `:name` placeholders in the driver's style.
pub fn bind(sql: &str, style: ParamStyle) -> BoundSql {
    let mut out = String::with_capacity(sql.len());
    let mut slots: Vec<String> = Vec::new();
    scan(sql, |piece| match piece {
        Piece::Text(t) | Piece::Positional(t) => out.push_str(t),
        Piece::Param(name) => match style {
            ParamStyle::Question => {
                slots.push(name.to_string());
                out.push('?');
            }
            ParamStyle::Dollar => {
                let index = match slots.iter().position(|s| s == name) {
                    Some(i) => i,
                    None => {
                        slots.push(name.to_string());
                        slots.len() - 1
                    }
                };
                out.push('$');
                out.push_str(&(index + 1).to_string());
            }
        },
    });
    BoundSql { sql: out, slots }
}

/// Replaces PostgreSQL's `$1`, `$2` … with `values[0]`, `values[1]` …; a number without a
/// value is left as it is.
pub fn replace_positional(sql: &str, values: &[String]) -> String {
    let mut out = String::with_capacity(sql.len());
    scan(sql, |piece| match piece {
        Piece::Text(t) | Piece::Param(t) => out.push_str(t),
        Piece::Positional(p) => {
            let value = p[1..]
                .parse::<usize>()
                .ok()
                .and_then(|n| values.get(n.checked_sub(1)?));
            out.push_str(value.map_or(p, String::as_str));
        }
    });
    out
}

enum Piece<'a> {
    Text(&'a str),
    /// A `:name` placeholder (the name, without the colon).
    Param(&'a str),
    /// A `$1`-style parameter, as written.
    Positional(&'a str),
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn scan<'a>(sql: &'a str, mut emit: impl FnMut(Piece<'a>)) {
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                // A doubled quote inside a literal is an escaped quote: the loop just
                // continues past it as a new literal.
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' && quote == b'\'' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            // `$tag$ … $tag$` (PostgreSQL's dollar quoting), unless the `$` is part of a word.
            b'$' if i == 0 || !is_ident(bytes[i - 1]) => {
                let start = i;
                let mut end = i + 1;
                while end < bytes.len() && is_ident(bytes[end]) {
                    end += 1;
                }
                if end > i + 1 && bytes[i + 1].is_ascii_digit() {
                    if sql[i + 1..end].bytes().all(|b| b.is_ascii_digit()) {
                        emit(Piece::Text(&sql[text_start..start]));
                        emit(Piece::Positional(&sql[start..end]));
                        text_start = end;
                    }
                    i = end;
                } else if bytes.get(end) == Some(&b'$') {
                    let tag = &sql[start..=end];
                    i = match sql[end + 1..].find(tag) {
                        Some(at) => end + 1 + at + tag.len(),
                        None => bytes.len(),
                    };
                } else {
                    i = end;
                }
            }
            b':' if bytes.get(i + 1) == Some(&b':') => i += 2,
            b':' if bytes.get(i + 1).copied().is_some_and(is_ident_start)
                && (i == 0 || !is_ident(bytes[i - 1])) =>
            {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && is_ident(bytes[end]) {
                    end += 1;
                }
                emit(Piece::Text(&sql[text_start..i]));
                emit(Piece::Param(&sql[start..end]));
                i = end;
                text_start = end;
            }
            _ => i += 1,
        }
    }
    if text_start < sql.len() {
        emit(Piece::Text(&sql[text_start.min(sql.len())..]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQL: &str = "SELECT id FROM orders WHERE created_at >= :from AND created_at < :to AND (owner = :user OR :user = 'admin')";

    #[test]
    fn question_style_repeats_a_slot_per_occurrence() {
        let b = bind(SQL, ParamStyle::Question);
        assert_eq!(
            b.sql,
            "SELECT id FROM orders WHERE created_at >= ? AND created_at < ? AND (owner = ? OR ? = 'admin')"
        );
        assert_eq!(b.slots, ["from", "to", "user", "user"]);
    }

    #[test]
    fn dollar_style_reuses_the_number_of_a_repeated_name() {
        let b = bind(SQL, ParamStyle::Dollar);
        assert_eq!(
            b.sql,
            "SELECT id FROM orders WHERE created_at >= $1 AND created_at < $2 AND (owner = $3 OR $3 = 'admin')"
        );
        assert_eq!(b.slots, ["from", "to", "user"]);
        assert_eq!(placeholder_names(SQL), ["from", "to", "user"]);
    }

    #[test]
    fn literals_comments_casts_and_times_are_not_placeholders() {
        let sql = "SELECT ':no', \"a:b\", `c:d`, x::text, '10:30' -- :nope\n/* :nor */ FROM t WHERE a = :yes AND b = 'it''s :x' AND c = 'x\\':y'";
        assert_eq!(placeholder_names(sql), ["yes"]);
        let b = bind(sql, ParamStyle::Dollar);
        assert!(
            b.sql.contains("x::text") && b.sql.contains("a = $1"),
            "{}",
            b.sql
        );
        assert!(b.sql.ends_with("'x\\':y'"), "{}", b.sql);
    }

    #[test]
    fn dollar_quoted_strings_are_not_scanned() {
        let sql = "SELECT $$:no$$, $body$ it's :not $x$ $body$, a$b FROM t WHERE c = :yes";
        assert_eq!(placeholder_names(sql), ["yes"]);
        assert!(bind(sql, ParamStyle::Dollar)
            .sql
            .ends_with("$body$ it's :not $x$ $body$, a$b FROM t WHERE c = $1"));
    }

    #[test]
    fn positional_parameters_are_replaced_outside_literals_only() {
        let b = bind(SQL, ParamStyle::Dollar);
        let sql = format!("{} AND note <> '$1' AND d = $$ $2 $$ AND x$1 = 0", b.sql);
        let replaced = replace_positional(&sql, &["'a'".into(), "'b'".into()]);
        assert_eq!(
            replaced,
            "SELECT id FROM orders WHERE created_at >= 'a' AND created_at < 'b' AND (owner = $3 OR $3 = 'admin') \
             AND note <> '$1' AND d = $$ $2 $$ AND x$1 = 0"
        );
    }

    #[test]
    fn a_colon_inside_a_word_is_not_a_placeholder() {
        assert!(placeholder_names("SELECT a:b FROM t").is_empty());
        assert_eq!(
            placeholder_names(":first, :second_2"),
            ["first", "second_2"]
        );
    }
}
