//! The placeholder scanner against the databases' own parsers, and on its own.
//!
//! Generated queries `SELECT <item>, <item>, …` mix placeholders with string literals in every
//! form each database has, comments (nested in PostgreSQL), dollar quotes, quoted identifiers
//! and executable comments, all with contents full of quotes, backslashes, comment markers and
//! `:names`. For each, the server's described parameter count must equal the scanner's slots,
//! and running it with bound values must return exactly the expected row: each literal's
//! decoded text and each placeholder's value. Then the scanner alone, seeded from the corpus
//! in `server/tests/corpus/sql`: it never panics and what it rewrites holds no placeholder.

use crate::support::service_url;
use futures::TryStreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use server::catalog::sql::{bind, placeholder_names, replace_positional, Dialect};
use server::source::{Param, Source, SourceOptions, Value};
use std::sync::Arc;

/// Pieces of text that mean something to some SQL lexer.
const PIECES: &[&str] = &[
    "a", "é", "日本", " ", "'", "''", "\"", "\\", "\\'", ":x", ":p0", "::", "$", "$$", "$a$", "?",
    "--", "#", "/", "*", "\n", ";", "`", "[", "]", "E'", "%", "_", "1", "!",
];

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..8).prop_map(|p| p.concat())
}

/// Comment text: no terminator (and no opener: nesting is generated on its own).
fn comment_text() -> impl Strategy<Value = String> {
    text().prop_map(|t| t.replace("*/", "* /").replace("/*", "/ *"))
}

#[derive(Debug, Clone)]
enum Gap {
    None,
    /// `/* a */`, or in PostgreSQL `/* a /* b */ a */`.
    Block(String, Option<String>),
    /// `-- a` (or MySQL's `# a`) to the end of the line.
    Line(String),
}

#[derive(Debug, Clone)]
enum Item {
    /// `:pN`, written with a cast in PostgreSQL when `cast`.
    Param { name: usize, cast: bool },
    /// A string literal; `form` picks one of the dialect's ways of writing it.
    Literal { text: String, form: u8 },
}

#[derive(Debug, Clone)]
struct Part {
    gap: Gap,
    item: Item,
    alias: Option<String>,
    /// MySQL: inside an executable comment `/*! … */`.
    executable: bool,
}

#[derive(Debug, Clone)]
struct Shape {
    parts: Vec<Part>,
    values: Vec<String>,
}

fn shape() -> impl Strategy<Value = Shape> {
    let gap = prop_oneof![
        Just(Gap::None),
        (comment_text(), prop::option::of(comment_text())).prop_map(|(a, b)| Gap::Block(a, b)),
        comment_text().prop_map(|t| Gap::Line(t.replace(['\n', '\r'], " "))),
    ];
    let item = prop_oneof![
        (0..3usize, any::<bool>()).prop_map(|(name, cast)| Item::Param { name, cast }),
        (text(), 0..4u8).prop_map(|(text, form)| Item::Literal { text, form }),
    ];
    let part = (gap, item, prop::option::of(text()), any::<bool>()).prop_map(
        |(gap, item, alias, executable)| Part {
            gap,
            item,
            alias,
            executable,
        },
    );
    (
        prop::collection::vec(part, 1..7),
        prop::collection::vec(text(), 3),
    )
        .prop_map(|(parts, values)| Shape { parts, values })
}

/// One generated query in one dialect: its SQL, the names in order of first use, and the row
/// it must return.
struct Case {
    sql: String,
    names: Vec<String>,
    row: Vec<String>,
}

fn quote(text: &str, q: char, doubled: &str, escape_backslash: bool) -> String {
    let mut out = String::from(q);
    for c in text.chars() {
        match c {
            '\\' if escape_backslash => out.push_str("\\\\"),
            c if c == q => out.push_str(doubled),
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

fn literal(d: Dialect, text: &str, form: u8) -> String {
    match d {
        Dialect::Postgres => match form {
            0 => quote(text, '\'', "''", false),
            1 => format!("E{}", quote(text, '\'', "\\'", true)),
            2 => {
                // The first tag whose closing delimiter does not occur early.
                for tag in ["", "a", "é", "_1", "t日"] {
                    let close = format!("${tag}$");
                    if format!("{text}{close}").find(&close) == Some(text.len()) {
                        return format!("{close}{text}{close}");
                    }
                }
                quote(text, '\'', "''", false)
            }
            _ => format!("U&{}", quote(text, '\'', "''", true)),
        },
        Dialect::MySql { .. } => match form {
            0 => quote(text, '\'', "\\'", true),
            1 => quote(text, '\'', "''", true),
            2 => quote(text, '"', "\\\"", true),
            _ => quote(text, '"', "\"\"", true),
        },
        Dialect::Sqlite => quote(text, '\'', "''", false),
    }
}

fn alias(d: Dialect, text: &str) -> String {
    // Never empty; no NUL or line break (identifiers are names, not text).
    let text = format!("c{}", text.replace(['\n', '\r'], " "));
    match d {
        Dialect::Postgres => {
            // PostgreSQL truncates names to 63 bytes.
            let cut: String = text.chars().take(20).collect();
            quote(&cut, '"', "\"\"", false)
        }
        Dialect::MySql { .. } => quote(text.trim_end(), '`', "``", false),
        Dialect::Sqlite => format!("[{}]", text.replace(']', ")")),
    }
}

fn render(shape: &Shape, d: Dialect) -> Case {
    let mysql = matches!(d, Dialect::MySql { .. });
    let mut sql = String::from("SELECT ");
    let mut names: Vec<String> = Vec::new();
    let mut row = Vec::new();
    for (i, part) in shape.parts.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        match &part.gap {
            Gap::None => {}
            Gap::Block(a, nested) => {
                sql.push_str("/* ");
                sql.push_str(a);
                if let (Dialect::Postgres, Some(b)) = (d, nested) {
                    sql.push_str(" /* ");
                    sql.push_str(b);
                    sql.push_str(" */ ");
                    sql.push_str(a);
                }
                sql.push_str(" */ ");
            }
            Gap::Line(t) => {
                sql.push_str(if mysql && t.len() % 2 == 0 {
                    "# "
                } else {
                    "-- "
                });
                sql.push_str(t);
                sql.push('\n');
            }
        }
        let mut item = match &part.item {
            Item::Param { name, cast } => {
                let name = format!("p{name}");
                row.push(shape.values[name[1..].parse::<usize>().unwrap()].clone());
                let written = if *cast && d == Dialect::Postgres {
                    format!(":{name}::text")
                } else {
                    format!(":{name}")
                };
                if !names.contains(&name) {
                    names.push(name);
                }
                written
            }
            Item::Literal { text, form } => {
                row.push(text.clone());
                literal(d, text, *form)
            }
        };
        if let Some(a) = &part.alias {
            item = format!("{item} AS {}", alias(d, a));
        }
        if mysql && part.executable {
            item = format!("/*{} {item} */", if i % 2 == 0 { "!" } else { "M!" });
        }
        sql.push_str(&item);
    }
    Case { sql, names, row }
}

/// Checks one generated query against the server: same parameter count, exactly the row.
async fn check(source: &dyn Source, shape: &Shape) -> Result<(), TestCaseError> {
    let d = source.dialect();
    let case = render(shape, d);
    let names = placeholder_names(&case.sql, d)
        .map_err(|e| TestCaseError::fail(format!("{e}: {}", case.sql)))?;
    prop_assert_eq!(&names, &case.names, "{}", case.sql);
    let bound =
        bind(&case.sql, d).map_err(|e| TestCaseError::fail(format!("{e}: {}", case.sql)))?;
    let described = source
        .describe(&bound.sql)
        .await
        .map_err(|e| TestCaseError::fail(format!("{}: {}", e.full(), bound.sql)))?;
    prop_assert_eq!(
        described.parameters,
        bound.slots.len(),
        "the server counts the parameters of {:?} differently",
        bound.sql
    );
    let params: Vec<Param> = bound
        .slots
        .iter()
        .map(|s| Param::Text(shape.values[s[1..].parse::<usize>().unwrap()].clone()))
        .collect();
    let rows = server::source::complete(source.batches(&bound.sql, &params))
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| TestCaseError::fail(format!("{}: {}", e.full(), bound.sql)))?
        .concat();
    let want: Vec<Value> = case.row.iter().cloned().map(Value::Text).collect();
    prop_assert_eq!(rows, vec![want], "{}", case.sql);
    Ok(())
}

fn against(
    source: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Arc<dyn Source>>>>,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source = rt.block_on(source());
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&shape(), |shape| {
            rt.block_on(check(source.as_ref(), &shape))
        })
        .unwrap();
}

fn options() -> SourceOptions {
    SourceOptions {
        max_connections: 2,
        connect_timeout: std::time::Duration::from_secs(5),
        statement_timeout: std::time::Duration::from_secs(30),
    }
}

#[test]
fn postgres_reads_generated_sql_as_the_scanner_does() {
    let url = service_url("EXPORTAL_TEST_POSTGRES_URL");
    against(|| {
        Box::pin(async move {
            server::source::connect("pg", &url, &options())
                .await
                .unwrap()
        })
    });
}

#[test]
fn mariadb_reads_generated_sql_as_the_scanner_does() {
    let url = service_url("EXPORTAL_TEST_MYSQL_URL");
    against(|| {
        Box::pin(async move {
            server::source::connect("maria", &url, &options())
                .await
                .unwrap()
        })
    });
}

#[test]
fn sqlite_reads_generated_sql_as_the_scanner_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("empty.db");
    std::fs::File::create(&db).unwrap();
    let url = format!("sqlite://{}", db.display());
    against(|| {
        Box::pin(async move {
            server::source::connect("lite", &url, &options())
                .await
                .unwrap()
        })
    });
}

const DIALECTS: [Dialect; 4] = [
    Dialect::Postgres,
    Dialect::MYSQL,
    Dialect::MySql {
        backslash_escapes: false,
        ansi_quotes: true,
    },
    Dialect::Sqlite,
];

fn corpus() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/sql");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is in {}", dir.display());
    files
}

/// What must hold for any text in any dialect: no panic; an error points inside the text; a
/// rewrite holds no placeholder any more, has one slot per placeholder, and (PostgreSQL) turns
/// back into the original when each `$n` is replaced by its name.
fn scanner_laws(sql: &str) -> Result<(), TestCaseError> {
    for d in DIALECTS {
        let names = placeholder_names(sql, d);
        match bind(sql, d) {
            Ok(bound) => {
                let names = names.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut distinct = bound.slots.clone();
                distinct.sort();
                distinct.dedup();
                let mut sorted = names.clone();
                sorted.sort();
                prop_assert_eq!(&distinct, &sorted, "{:?} {:?}", d, sql);
                prop_assert_eq!(
                    placeholder_names(&bound.sql, d)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                    Vec::<String>::new(),
                    "{:?} rewrote {:?} into {:?}",
                    d,
                    sql,
                    bound.sql
                );
                match d {
                    Dialect::Postgres => {
                        let back: Vec<String> =
                            bound.slots.iter().map(|s| format!(":{s}")).collect();
                        prop_assert_eq!(
                            replace_positional(&bound.sql, &back).unwrap(),
                            sql,
                            "{:?}",
                            bound.sql
                        );
                    }
                    _ => {
                        let removed: usize = bound.slots.iter().map(|s| s.len()).sum();
                        prop_assert_eq!(bound.sql.len() + removed, sql.len(), "{:?}", bound.sql);
                    }
                }
            }
            Err(e) => {
                prop_assert!(
                    e.line >= 1 && e.line <= sql.split('\n').count().max(1),
                    "{e}"
                );
                prop_assert!(e.column >= 1, "{e}");
            }
        }
    }
    Ok(())
}

#[test]
fn the_corpus_reads_as_expected() {
    let files = corpus();
    let get = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .unwrap()
    };
    let names = |name: &str, d: Dialect| placeholder_names(get(name), d);
    assert_eq!(
        names("pg_nested_comment.sql", Dialect::Postgres).unwrap(),
        ["user", "status"]
    );
    assert_eq!(
        names("pg_nested_comment.sql", Dialect::MYSQL).unwrap(),
        ["user", "status", "note"]
    );
    assert_eq!(
        names("pg_escape_strings.sql", Dialect::Postgres).unwrap(),
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        names("pg_dollar_tags.sql", Dialect::Postgres).unwrap(),
        ["yes"]
    );
    assert_eq!(
        names("pg_quoted_identifiers.sql", Dialect::Postgres).unwrap(),
        ["yes"]
    );
    assert!(bind(get("pg_positional.sql"), Dialect::Postgres).is_err());
    assert_eq!(
        names("mysql_comments.sql", Dialect::MYSQL).unwrap(),
        ["a", "b", "c", "d", "e", "f"]
    );
    assert_eq!(names("mysql_strings.sql", Dialect::MYSQL).unwrap(), ["yes"]);
    assert_eq!(
        names("sqlite_identifiers.sql", Dialect::Sqlite).unwrap(),
        ["yes"]
    );
    assert!(
        bind(get("sqlite_identifiers.sql"), Dialect::Sqlite).is_err(),
        "?7 is refused"
    );
    for bad in [
        "unterminated_string.sql",
        "unterminated_comment.sql",
        "unterminated_dollar.sql",
    ] {
        let e = names(bad, Dialect::Postgres).unwrap_err();
        assert!(e.what.contains("unterminated"), "{bad}: {e}");
    }
    assert!(names("casts_and_times.sql", Dialect::Postgres)
        .unwrap_err()
        .what
        .contains(":naïve"));
    for (_, text) in &files {
        scanner_laws(text).unwrap();
    }
}

/// A corpus file with pieces spliced in at random places, or cut short.
fn mutated(files: Vec<String>) -> impl Strategy<Value = String> {
    let edits = prop::collection::vec(
        (any::<prop::sample::Index>(), prop::sample::select(PIECES)),
        0..6,
    );
    (
        prop::sample::select(files),
        edits,
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(mut sql, edits, cut, truncate)| {
            for (at, piece) in edits {
                let mut i = at.index(sql.len() + 1);
                while !sql.is_char_boundary(i) {
                    i -= 1;
                }
                sql.insert_str(i, piece);
            }
            if truncate {
                let mut i = cut.index(sql.len() + 1);
                while !sql.is_char_boundary(i) {
                    i -= 1;
                }
                sql.truncate(i);
            }
            sql
        })
}

proptest! {
    #![proptest_config(Config { cases: 512, failure_persistence: None, ..Config::default() })]

    #[test]
    fn the_scanner_keeps_its_laws_on_mutated_corpus_sql(
        sql in mutated(corpus().into_iter().map(|(_, t)| t).collect())
    ) {
        scanner_laws(&sql)?;
    }

    #[test]
    fn the_scanner_keeps_its_laws_on_any_text(sql in text()) {
        scanner_laws(&sql)?;
    }
}
