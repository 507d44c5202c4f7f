//! `:name` placeholders in the operator's SQL, turned into each driver's bound parameters.
//!
//! The SQL is the operator's; users only ever supply values, and every value is bound (for
//! PostgreSQL's `COPY`, which takes no parameters, through `set_config` in the same
//! transaction: see `source::postgres::copy`). This scanner is the second lock: it reads the
//! SQL the way the database will, per [`Dialect`], so that a `:name` inside a literal, a quoted
//! identifier or a comment is never taken for a placeholder, and one outside them is never
//! missed. What it cannot read (an unterminated literal or comment, a positional parameter the
//! operator wrote) is an error at start-up, and the catalogue also checks that the database
//! counts as many parameters in the rewritten statement as the scanner wrote.

/// How a driver writes its positional parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamStyle {
    /// `?` (SQLite, MySQL/MariaDB): one per occurrence.
    Question,
    /// `$1`, `$2` … (PostgreSQL): one per distinct name, reused.
    Dollar,
}

/// The SQL lexical rules of one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `'…'` with `''` only, `"…"`, `` `…` `` and `[…]` identifiers, non-nested comments.
    Sqlite,
    /// Standard strings (`''` only, as under `standard_conforming_strings = on`), `E'…'`
    /// escape strings, `U&`/`B`/`X` strings, `"…"` identifiers, dollar quotes with any tag,
    /// nested `/* */` comments, `::` casts.
    Postgres,
    /// `'…'` and `"…"` strings with backslash escapes (unless the server's `sql_mode` has
    /// `NO_BACKSLASH_ESCAPES`; with `ANSI_QUOTES`, `"…"` is an identifier), backtick
    /// identifiers, `#` and `-- ` comments, non-nested `/* */`, and executable comments
    /// `/*! … */` / `/*M! … */` whose content is code.
    MySql {
        backslash_escapes: bool,
        ansi_quotes: bool,
    },
}

impl Dialect {
    /// MySQL/MariaDB with the server's default `sql_mode`.
    pub const MYSQL: Dialect = Dialect::MySql {
        backslash_escapes: true,
        ansi_quotes: false,
    };

    pub fn style(self) -> ParamStyle {
        match self {
            Dialect::Postgres => ParamStyle::Dollar,
            Dialect::Sqlite | Dialect::MySql { .. } => ParamStyle::Question,
        }
    }
}

/// SQL the scanner cannot read as the database would, with where the problem starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (at line {line}, column {column})")]
pub struct SqlError {
    pub what: String,
    /// 1-based, counted in characters.
    pub line: usize,
    pub column: usize,
}

impl SqlError {
    fn at(sql: &str, offset: usize, what: impl Into<String>) -> Self {
        let before = &sql[..floor_char_boundary(sql, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        Self {
            what: what.into(),
            line,
            column,
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// SQL rewritten for one driver, with the names to bind in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSql {
    pub sql: String,
    /// The parameter name for each positional slot.
    pub slots: Vec<String>,
}

/// Every placeholder name in order of first appearance.
pub fn placeholder_names(sql: &str, dialect: Dialect) -> Result<Vec<String>, SqlError> {
    let mut names: Vec<String> = Vec::new();
    scan(sql, dialect, |piece| {
        if let Piece::Param(name) = piece {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        Ok(())
    })?;
    Ok(names)
}

/// Rewrites `:name` placeholders in the dialect's parameter style. Positional parameters the
/// operator wrote (`?`, or PostgreSQL's `$1`) are refused: they would take a user's value meant
/// for another slot.
pub fn bind(sql: &str, dialect: Dialect) -> Result<BoundSql, SqlError> {
    let mut out = String::with_capacity(sql.len());
    let mut slots: Vec<String> = Vec::new();
    scan(sql, dialect, |piece| {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Positional(p, at) => {
                return Err(SqlError::at(
                    sql,
                    at,
                    format!("the SQL has a positional parameter `{p}`: write parameters as :name"),
                ))
            }
            Piece::Param(name) => match dialect.style() {
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
                    out.push_str(itoa::Buffer::new().format(index + 1));
                }
            },
        }
        Ok(())
    })?;
    Ok(BoundSql { sql: out, slots })
}

/// Replaces PostgreSQL's `$1`, `$2` … (outside literals and comments) with `values[0]`,
/// `values[1]` …; a number without a value is left as it is. The values are SQL text the
/// caller built from constants only, never from user input.
pub fn replace_positional(sql: &str, values: &[String]) -> Result<String, SqlError> {
    let mut out = String::with_capacity(sql.len());
    scan(sql, Dialect::Postgres, |piece| {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Param(name) => {
                out.push(':');
                out.push_str(name);
            }
            Piece::Positional(p, _) => {
                let value = p[1..]
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| values.get(n.checked_sub(1)?));
                out.push_str(value.map_or(p, String::as_str));
            }
        }
        Ok(())
    })?;
    Ok(out)
}

#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    /// A `:name` placeholder (the name, without the colon).
    Param(&'a str),
    /// A positional parameter as written (`$1`, `?`), and its byte offset.
    Positional(&'a str, usize),
}

/// Starts an unquoted identifier or keyword: PostgreSQL, MySQL and SQLite all take any
/// non-ASCII character as a letter.
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Continues an unquoted identifier (all three take `$` after the first character) or a number.
fn is_ident_cont(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// A placeholder's name: what the catalogue allows for parameter names.
fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where a quoted token ends, and how it is read.
#[derive(Clone, Copy)]
struct Quote {
    close: u8,
    /// A backslash takes the next character literally.
    backslash: bool,
    what: &'static str,
}

/// The end of the quoted token whose opening quote is at `open` (the offset after its closing
/// quote); a doubled closing quote stands for itself in every dialect.
fn skip_quoted(sql: &str, open: usize, q: Quote) -> Result<usize, SqlError> {
    let bytes = sql.as_bytes();
    let mut i = open + 1;
    loop {
        match bytes.get(i) {
            None => {
                return Err(SqlError::at(
                    sql,
                    open,
                    format!("an unterminated {}", q.what),
                ))
            }
            Some(b'\\') if q.backslash => i += 2,
            Some(&b) if b == q.close => {
                if q.close != b']' && bytes.get(i + 1) == Some(&q.close) {
                    i += 2;
                } else {
                    return Ok(i + 1);
                }
            }
            Some(_) => i += 1,
        }
    }
}

/// The end of the `/* … */` comment at `open`, nested or not.
fn skip_block_comment(sql: &str, open: usize, nested: bool) -> Result<usize, SqlError> {
    let bytes = sql.as_bytes();
    let mut depth = 1usize;
    let mut i = open + 2;
    while i < bytes.len() {
        if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Ok(i);
            }
        } else if nested && bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    Err(SqlError::at(sql, open, "an unterminated /* comment"))
}

/// The end of the line comment at `i` (the line break stays code).
fn skip_line(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
        i += 1;
    }
    i
}

/// Reads `sql` token by token and hands `emit` the text between placeholders, the placeholders
/// and the positional parameters, in order; `emit`'s pieces joined are `sql` again (a
/// placeholder without its colon).
fn scan<'a>(
    sql: &'a str,
    dialect: Dialect,
    mut emit: impl FnMut(Piece<'a>) -> Result<(), SqlError>,
) -> Result<(), SqlError> {
    let bytes = sql.as_bytes();
    let pg = dialect == Dialect::Postgres;
    let (my_backslash, my_ansi) = match dialect {
        Dialect::MySql {
            backslash_escapes,
            ansi_quotes,
        } => (Some(backslash_escapes), ansi_quotes),
        _ => (None, false),
    };
    let mysql = my_backslash.is_some();
    let backslash = my_backslash.unwrap_or(false);
    let string = Quote {
        close: b'\'',
        backslash,
        what: "string literal",
    };
    let identifier = |close| Quote {
        close,
        backslash: false,
        what: "quoted identifier",
    };
    // Inside a MySQL executable comment (`/*! … */`), whose `*/` closes it.
    let mut executable = false;
    let mut i = 0;
    let mut text_start = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        i = match b {
            b'\'' => skip_quoted(sql, i, string)?,
            b'"' if mysql && !my_ansi => skip_quoted(
                sql,
                i,
                Quote {
                    close: b'"',
                    ..string
                },
            )?,
            b'"' => skip_quoted(sql, i, identifier(b'"'))?,
            b'`' if !pg => skip_quoted(sql, i, identifier(b'`'))?,
            b'[' if dialect == Dialect::Sqlite => skip_quoted(sql, i, identifier(b']'))?,
            b'-' if next == Some(b'-') => {
                // MySQL: `--` starts a comment only before whitespace, a control character or
                // the end; otherwise `1--1` is one minus minus one.
                let third = bytes.get(i + 2).copied();
                if mysql && third.is_some_and(|c| c > b' ') {
                    i + 1
                } else {
                    skip_line(bytes, i)
                }
            }
            b'#' if mysql => skip_line(bytes, i),
            b'/' if next == Some(b'*') => {
                let marker = &bytes[i + 2..];
                if mysql && (marker.starts_with(b"!") || marker.starts_with(b"M!")) && !executable {
                    // Code the server runs (for a version at least the digits that follow).
                    executable = true;
                    let mut j = i + 2 + if marker[0] == b'!' { 1 } else { 2 };
                    while j < bytes.len() && bytes[j].is_ascii_digit() {
                        j += 1;
                    }
                    j
                } else {
                    skip_block_comment(sql, i, pg)?
                }
            }
            b'*' if executable && next == Some(b'/') => {
                executable = false;
                i + 2
            }
            b'$' if pg => match dollar(sql, i) {
                Dollar::Positional(end) => {
                    emit(Piece::Text(&sql[text_start..i]))?;
                    emit(Piece::Positional(&sql[i..end], i))?;
                    text_start = end;
                    end
                }
                Dollar::Quote(tag_end) => {
                    let tag = &sql[i..tag_end];
                    match sql[tag_end..].find(tag) {
                        Some(at) => tag_end + at + tag.len(),
                        None => {
                            return Err(SqlError::at(
                                sql,
                                i,
                                format!("an unterminated dollar-quoted string {tag}"),
                            ))
                        }
                    }
                }
                Dollar::Other => i + 1,
            },
            b'?' if !pg => {
                // SQLite's `?NNN` is one parameter.
                let mut end = i + 1;
                while dialect == Dialect::Sqlite && end < bytes.len() && bytes[end].is_ascii_digit()
                {
                    end += 1;
                }
                emit(Piece::Text(&sql[text_start..i]))?;
                emit(Piece::Positional(&sql[i..end], i))?;
                text_start = end;
                end
            }
            b':' if next == Some(b':') => i + 2,
            b':' if next.is_some_and(is_ident_start)
                && (i == 0 || !is_ident_cont(bytes[i - 1])) =>
            {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && is_ident_cont(bytes[end]) {
                    end += 1;
                }
                let name = &sql[start..end];
                if !name.bytes().all(is_name) || name.as_bytes()[0].is_ascii_digit() {
                    return Err(SqlError::at(
                        sql,
                        i,
                        format!(
                            "`:{name}` is not a placeholder name (letters, digits and `_` only)"
                        ),
                    ));
                }
                // `:a:b` is no SQL, and once `:a` were a `?`, `:b` would read as a second
                // placeholder.
                if bytes.get(end) == Some(&b':') && bytes.get(end + 1) != Some(&b':') {
                    return Err(SqlError::at(
                        sql,
                        end,
                        format!("the placeholder `:{name}` is directly followed by `:`"),
                    ));
                }
                emit(Piece::Text(&sql[text_start..i]))?;
                emit(Piece::Param(name))?;
                text_start = end;
                end
            }
            // `E'…'`: PostgreSQL's escape string, read with backslash escapes.
            b'E' | b'e' if pg && next == Some(b'\'') => skip_quoted(
                sql,
                i + 1,
                Quote {
                    backslash: true,
                    ..string
                },
            )?,
            // A word or a number is skipped whole, so a `:` or `$` inside one (`a:b`, `a$b`)
            // is not read as a placeholder or a dollar quote, and `xE'…'` is no escape string.
            b if is_ident_cont(b) => {
                let mut end = i + 1;
                while end < bytes.len() && is_ident_cont(bytes[end]) {
                    end += 1;
                }
                end
            }
            _ => i + 1,
        };
    }
    if executable {
        return Err(SqlError::at(
            sql,
            sql.len(),
            "an unterminated /*! executable comment",
        ));
    }
    if text_start < sql.len() {
        emit(Piece::Text(&sql[text_start..]))?;
    }
    Ok(())
}

enum Dollar {
    /// `$` digits, ending at the offset given.
    Positional(usize),
    /// An opening `$tag$`, ending at the offset given.
    Quote(usize),
    /// A lone `$` (an operator character, or an error the server reports).
    Other,
}

/// What the `$` at `i` (not inside a word: words are skipped whole) starts, by PostgreSQL's
/// lexer: `$digits` is a parameter; `$` + a tag of letters (any non-ASCII character counts as
/// one), digits and `_`, not starting with a digit, + `$` opens a dollar quote.
fn dollar(sql: &str, i: usize) -> Dollar {
    let bytes = sql.as_bytes();
    let mut end = i + 1;
    if bytes.get(end).is_some_and(u8::is_ascii_digit) {
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        return Dollar::Positional(end);
    }
    while end < bytes.len() && is_ident_cont(bytes[end]) && bytes[end] != b'$' {
        end += 1;
    }
    if bytes.get(end) == Some(&b'$') {
        Dollar::Quote(end + 1)
    } else {
        Dollar::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQL: &str = "SELECT id FROM orders WHERE created_at >= :from AND created_at < :to AND (owner = :user OR :user = 'admin')";
    const PG: Dialect = Dialect::Postgres;
    const MY: Dialect = Dialect::MYSQL;
    const LITE: Dialect = Dialect::Sqlite;

    fn names(sql: &str, d: Dialect) -> Vec<String> {
        placeholder_names(sql, d).unwrap_or_else(|e| panic!("{sql:?}: {e}"))
    }

    fn error(sql: &str, d: Dialect) -> String {
        placeholder_names(sql, d).expect_err(sql).to_string()
    }

    #[test]
    fn question_style_repeats_a_slot_per_occurrence() {
        let b = bind(SQL, MY).unwrap();
        assert_eq!(
            b.sql,
            "SELECT id FROM orders WHERE created_at >= ? AND created_at < ? AND (owner = ? OR ? = 'admin')"
        );
        assert_eq!(b.slots, ["from", "to", "user", "user"]);
        assert_eq!(bind(SQL, LITE).unwrap(), b);
    }

    #[test]
    fn dollar_style_reuses_the_number_of_a_repeated_name() {
        let b = bind(SQL, PG).unwrap();
        assert_eq!(
            b.sql,
            "SELECT id FROM orders WHERE created_at >= $1 AND created_at < $2 AND (owner = $3 OR $3 = 'admin')"
        );
        assert_eq!(b.slots, ["from", "to", "user"]);
        assert_eq!(names(SQL, PG), ["from", "to", "user"]);
    }

    #[test]
    fn literals_comments_casts_and_times_are_not_placeholders() {
        let sql = "SELECT ':no', \"a:b\", x::text, '10:30' -- :nope\n/* :nor */ FROM t WHERE a = :yes AND b = 'it''s :x'";
        for d in [PG, MY, LITE] {
            assert_eq!(names(sql, d), ["yes"], "{d:?}");
        }
        let b = bind(sql, PG).unwrap();
        assert!(
            b.sql.contains("x::text") && b.sql.contains("a = $1"),
            "{}",
            b.sql
        );
    }

    #[test]
    fn postgres_comments_nest() {
        let sql = "SELECT 1 WHERE a = :status /* was: /* v1 */ AND note <> :note */ AND b = :b";
        assert_eq!(names(sql, PG), ["status", "b"]);
        // MySQL and SQLite end the comment at the first `*/`.
        assert_eq!(names(sql, LITE), ["status", "note", "b"]);
        assert!(error("SELECT /* a /* b */ :x", PG).contains("unterminated /* comment"));
    }

    #[test]
    fn postgres_standard_strings_take_no_backslash_escapes_but_e_strings_do() {
        // `'a\'` is a whole literal: the `:x` after it is code.
        assert_eq!(names(r"SELECT 'a\' || :x", PG), ["x"]);
        assert_eq!(names(r"SELECT E'a\' || :x' || :y", PG), ["y"]);
        assert_eq!(names(r"SELECT e'\\' || :x", PG), ["x"]);
        // `xE'…'` is an identifier and a standard string; U&, B and X strings are standard.
        assert_eq!(names(r"SELECT typE'a\' || :x", PG), ["x"]);
        assert_eq!(
            names(
                r"SELECT U&'d\0061t\' || :a, B'1' || :b, X'1F', U&'\' :c",
                PG
            ),
            ["a", "b", "c"]
        );
        assert_eq!(names(r#"SELECT "a"":b" || :c"#, PG), ["c"]);
    }

    #[test]
    fn postgres_dollar_quotes_take_any_tag() {
        let sql = "SELECT $$:no$$, $body$ it's :not $x$ $body$, a$b, $é$ :nor $é$, $_1$:n$_1$ FROM t WHERE c = :yes";
        assert_eq!(names(sql, PG), ["yes"]);
        assert!(bind(sql, PG)
            .unwrap()
            .sql
            .ends_with("a$b, $é$ :nor $é$, $_1$:n$_1$ FROM t WHERE c = $1"));
        assert!(error("SELECT $q$ :x", PG).contains("unterminated dollar-quoted string $q$"));
        // `$1` is a parameter, not a tag.
        assert!(bind("SELECT $1 || :a", PG)
            .unwrap_err()
            .to_string()
            .contains("positional parameter `$1`"));
    }

    #[test]
    fn mysql_comments_and_backslash_escapes() {
        assert_eq!(names("SELECT 1 # :no\n, :a", MY), ["a"]);
        assert_eq!(names("SELECT 1 -- :no\n, :a, 1--:b", MY), ["a", "b"]);
        assert_eq!(names("SELECT 1 --\t:no\n, :a", MY), ["a"]);
        assert_eq!(names(r"SELECT 'a\' :no', :a, 'b\\', :b", MY), ["a", "b"]);
        assert_eq!(names(r#"SELECT "a\" :no", `c``:no`, :a"#, MY), ["a"]);
        // Executable comments are code; plain ones do not nest.
        assert_eq!(
            names("SELECT /*! :a, */ /*M!100000 :b */ /* :no */ :c", MY),
            ["a", "b", "c"]
        );
        assert_eq!(names("SELECT /* /* */ :a", MY), ["a"]);
        // In SQLite and PostgreSQL, `#` is no comment and a backslash no escape.
        assert_eq!(names(r"SELECT 'a\', :a # :b", LITE), ["a", "b"]);
        let no_escapes = Dialect::MySql {
            backslash_escapes: false,
            ansi_quotes: true,
        };
        assert_eq!(names(r#"SELECT 'a\', "x\" :a"#, no_escapes), ["a"]);
    }

    #[test]
    fn sqlite_brackets_are_identifiers() {
        assert_eq!(names("SELECT [a:b], `c:d`, :x", LITE), ["x"]);
        assert_eq!(names("SELECT arr[1] FROM t WHERE a = :x", PG), ["x"]);
    }

    #[test]
    fn unterminated_literals_and_comments_are_errors_with_a_position() {
        assert_eq!(
            error("SELECT 1\nWHERE a = 'x :y", PG),
            "an unterminated string literal (at line 2, column 11)"
        );
        for d in [PG, MY, LITE] {
            assert!(error("SELECT \"a", d).contains("unterminated"), "{d:?}");
            assert!(
                error("SELECT /* a", d).contains("unterminated /* comment"),
                "{d:?}"
            );
        }
        assert!(error("SELECT `a", MY).contains("quoted identifier"));
        assert!(error("SELECT [a", LITE).contains("quoted identifier"));
        assert!(error(r"SELECT 'a\'", MY).contains("string literal"));
        assert!(error(r"SELECT E'a\'", PG).contains("string literal"));
        assert!(error("SELECT /*! 1", MY).contains("executable comment"));
    }

    #[test]
    fn positional_parameters_the_operator_wrote_are_refused() {
        for d in [MY, LITE] {
            let e = bind("SELECT ? , :a", d).unwrap_err().to_string();
            assert!(e.contains("positional parameter `?`"), "{e}");
        }
        // Not in PostgreSQL, where `?` is a jsonb operator.
        assert_eq!(
            bind("SELECT j ? 'k' FROM t WHERE a = :a", PG)
                .unwrap()
                .slots,
            ["a"]
        );
    }

    #[test]
    fn positional_parameters_are_replaced_outside_literals_only() {
        let b = bind(SQL, PG).unwrap();
        let sql = format!("{} AND note <> '$1' AND d = $$ $2 $$ AND x$1 = 0", b.sql);
        let replaced = replace_positional(&sql, &["'a'".into(), "'b'".into()]).unwrap();
        assert_eq!(
            replaced,
            "SELECT id FROM orders WHERE created_at >= 'a' AND created_at < 'b' AND (owner = $3 OR $3 = 'admin') \
             AND note <> '$1' AND d = $$ $2 $$ AND x$1 = 0"
        );
    }

    #[test]
    fn a_colon_inside_a_word_is_not_a_placeholder() {
        assert!(names("SELECT a:b FROM t", PG).is_empty());
        assert_eq!(names(":first, :second_2", PG), ["first", "second_2"]);
        assert!(error("SELECT :naïve", PG).contains("not a placeholder name"));
        assert!(error("SELECT :a:b", MY).contains("directly followed by `:`"));
        assert_eq!(names("SELECT :a::text", PG), ["a"]);
    }
}
