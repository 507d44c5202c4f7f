//! The catalogue of datasets an operator declares (`EXPORTAL_DATASETS`, a TOML file), checked
//! once at start-up, and the checking of what a user asks of a dataset.
//!
//! Users never write SQL: they pick a dataset, give values for its declared parameters (always
//! bound, never written into SQL text: see `catalog::sql`) and choose among the
//! columns the query was found to return.

pub mod demo;
pub mod sql;

use crate::source::{self, Param, Source, SourceOptions};
use app::catalog::{ColumnInfo, ColumnType, DatasetInfo, ParamInfo, ParamType};
use app::jobs::{ExportFormat, FileOptions, MAX_TIME_ZONE_CHARS};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::Deserialize;
use sql::BoundSql;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The placeholder bound to the caller's identity.
pub const USER_PLACEHOLDER: &str = "user";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    sources: BTreeMap<String, SourceSpec>,
    #[serde(default)]
    datasets: Vec<DatasetSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSpec {
    url: String,
    max_connections: Option<u32>,
    connect_timeout_secs: Option<u64>,
    statement_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetSpec {
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    source: String,
    sql: String,
    formats: Option<Vec<String>>,
    #[serde(default)]
    params: Vec<ParamSpec>,
    /// Columns exempt from CSV formula protection (known-safe, e.g. signed numbers stored as text).
    #[serde(default)]
    csv_raw_columns: Vec<String>,
    /// Text columns that hold JSON documents (SQLite has no JSON type; some schemas keep JSON
    /// in plain text columns): the JSON formats embed their values.
    #[serde(default)]
    json_columns: Vec<String>,
    /// Display names for headers, by column name (`[datasets.labels]`).
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// The file options exports get unless they ask otherwise (`[datasets.defaults]`).
    #[serde(default)]
    defaults: FileOptions,
    /// Where this dataset's finished exports are announced, instead of EXPORTAL_WEBHOOK_URL.
    webhook: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamSpec {
    name: String,
    #[serde(rename = "type")]
    kind: ParamType,
    #[serde(default)]
    required: bool,
    default: Option<toml::Value>,
    values: Option<Vec<String>>,
    label: Option<String>,
}

/// A dataset ready to be exported.
pub struct Dataset {
    pub info: DatasetInfo,
    pub source_name: String,
    pub source: Arc<dyn Source>,
    /// The SQL in the source's parameter style.
    pub bound: BoundSql,
    /// `SELECT COUNT(*)` around it, same parameters.
    pub count: BoundSql,
    pub csv_raw_columns: Vec<String>,
    /// Positions (in the query's columns) of the columns declared to hold JSON.
    pub json_columns: Vec<usize>,
    /// The dataset's own webhook URL (checked: http or https, no user info).
    pub webhook: Option<String>,
}

/// All datasets, by id.
pub struct Catalog {
    datasets: Vec<Arc<Dataset>>,
    sources: Vec<(String, Arc<dyn Source>)>,
}

/// A problem in the datasets file, naming where it is.
#[derive(Debug, thiserror::Error)]
#[error("datasets file {file}: {problem}")]
pub struct CatalogError {
    pub file: String,
    pub problem: String,
}

/// One wrong parameter or column in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl Catalog {
    /// Reads, validates and connects the catalogue in `path`.
    pub async fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let file = path.display().to_string();
        let err = |problem: String| CatalogError {
            file: file.clone(),
            problem,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot be read: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base).await.map_err(err)
    }

    /// Builds the catalogue from TOML text; relative SQLite paths are resolved against `base`.
    pub async fn from_toml(text: &str, base: &Path) -> Result<Catalog, String> {
        Self::from_toml_with_sources(text, base, HashMap::new()).await
    }

    /// Like `from_toml`, with sources made by the caller (embedding programs and tests bring
    /// their own `Source`) beside those the TOML declares; datasets name either kind.
    pub async fn from_toml_with_sources(
        text: &str,
        base: &Path,
        provided: HashMap<String, Arc<dyn Source>>,
    ) -> Result<Catalog, String> {
        let spec: FileSpec =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        if spec.datasets.is_empty() {
            return Err("declares no datasets (add at least one [[datasets]] table)".into());
        }
        let mut sources: HashMap<String, Arc<dyn Source>> = provided;
        for (name, s) in &spec.sources {
            let options = SourceOptions {
                max_connections: s.max_connections.unwrap_or(4).max(1),
                connect_timeout: Duration::from_secs(s.connect_timeout_secs.unwrap_or(10)),
                statement_timeout: Duration::from_secs(s.statement_timeout_secs.unwrap_or(3600)),
            };
            let url = resolve_sqlite_path(&s.url, base);
            let src = source::connect(name, &url, &options)
                .await
                .map_err(|e| format!("source `{name}`: {e}"))?;
            sources.insert(name.clone(), src);
        }
        let mut datasets: Vec<Arc<Dataset>> = Vec::new();
        for d in spec.datasets {
            if datasets.iter().any(|x| x.info.id == d.id) {
                return Err(format!("dataset `{}` is declared twice", d.id));
            }
            let id = d.id.clone();
            datasets.push(Arc::new(
                build_dataset(d, &sources)
                    .await
                    .map_err(|e| format!("dataset `{id}`: {e}"))?,
            ));
        }
        let mut sources: Vec<(String, Arc<dyn Source>)> = sources.into_iter().collect();
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Catalog { datasets, sources })
    }

    pub fn get(&self, id: &str) -> Option<Arc<Dataset>> {
        self.datasets.iter().find(|d| d.info.id == id).cloned()
    }

    pub fn infos(&self) -> Vec<DatasetInfo> {
        self.datasets.iter().map(|d| d.info.clone()).collect()
    }

    /// The datasets that name a webhook of their own, with it.
    pub fn webhooks(&self) -> impl Iterator<Item = (&str, &str)> {
        self.datasets
            .iter()
            .filter_map(|d| Some((d.info.id.as_str(), d.webhook.as_deref()?)))
    }

    /// The sources, for readiness checks.
    pub fn sources(&self) -> &[(String, Arc<dyn Source>)] {
        &self.sources
    }
}

fn resolve_sqlite_path(url: &str, base: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_string();
    };
    if rest.starts_with('/') || rest.starts_with(":memory:") {
        return url.to_string();
    }
    format!("sqlite://{}", base.join(rest).display())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

async fn build_dataset(
    d: DatasetSpec,
    sources: &HashMap<String, Arc<dyn Source>>,
) -> Result<Dataset, String> {
    if !valid_id(&d.id) {
        return Err("key `id`: use only a-z, 0-9, `_` and `-`".into());
    }
    if d.title.trim().is_empty() {
        return Err("key `title`: must not be empty".into());
    }
    let source = sources.get(&d.source).ok_or_else(|| {
        let mut known: Vec<&str> = sources.keys().map(String::as_str).collect();
        known.sort();
        format!(
            "key `source`: no source named `{}` (declared: {})",
            d.source,
            known.join(", ")
        )
    })?;
    let formats = match &d.formats {
        None => ExportFormat::ALL.to_vec(),
        Some(list) if list.is_empty() => return Err("key `formats`: must not be empty".into()),
        Some(list) => list
            .iter()
            .map(|f| {
                ExportFormat::parse(f).ok_or_else(|| {
                    format!("key `formats`: unknown format `{f}` (use csv, ndjson, json, xlsx)")
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut params = Vec::new();
    for p in &d.params {
        if p.name == USER_PLACEHOLDER {
            return Err(format!("params: `{USER_PLACEHOLDER}` is reserved for the caller's identity; use :{USER_PLACEHOLDER} in the SQL without declaring it"));
        }
        if !p
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || p.name.is_empty()
        {
            return Err(format!(
                "params: invalid name `{}` (letters, digits and `_`)",
                p.name
            ));
        }
        if params.iter().any(|x: &ParamInfo| x.name == p.name) {
            return Err(format!("params: `{}` is declared twice", p.name));
        }
        let values = match (p.kind, &p.values) {
            (ParamType::Enum, None) => {
                return Err(format!(
                    "param `{}`: an enum needs `values = [...]`",
                    p.name
                ))
            }
            (ParamType::Enum, Some(v)) if v.is_empty() => {
                return Err(format!("param `{}`: `values` must not be empty", p.name))
            }
            (ParamType::Enum, Some(v)) => Some(v.clone()),
            (_, Some(_)) => {
                return Err(format!(
                    "param `{}`: `values` is only for enum parameters",
                    p.name
                ))
            }
            (_, None) => None,
        };
        let mut info = ParamInfo {
            name: p.name.clone(),
            kind: p.kind,
            required: p.required,
            default: None,
            values,
            label: p.label.clone(),
        };
        if let Some(default) = &p.default {
            let json = toml_to_json(default);
            check_value(&info, &json)
                .map_err(|m| format!("param `{}`: key `default`: {m}", p.name))?;
            info.default = Some(json);
        }
        params.push(info);
    }
    let dialect = source.dialect();
    let names = sql::placeholder_names(&d.sql, dialect).map_err(|e| format!("key `sql`: {e}"))?;
    for n in &names {
        if n != USER_PLACEHOLDER && !params.iter().any(|p| &p.name == n) {
            return Err(format!(
                "key `sql`: placeholder :{n} is not a declared parameter"
            ));
        }
    }
    for p in &params {
        if !names.contains(&p.name) {
            return Err(format!(
                "params: `{}` is declared but the SQL never uses :{}",
                p.name, p.name
            ));
        }
    }
    let bound = sql::bind(&d.sql, dialect).map_err(|e| format!("key `sql`: {e}"))?;
    let count =
        sql::bind(&source::count_sql(&d.sql), dialect).map_err(|e| format!("key `sql`: {e}"))?;
    let described = source
        .describe(&bound.sql)
        .await
        .map_err(|e| format!("key `sql`: {}", e.full()))?;
    // The second lock: had the scanner read a literal or a comment differently from the
    // database, the two would count the parameters differently, and a value could land where
    // the operator did not mean it to.
    if described.parameters != bound.slots.len() {
        return Err(format!(
            "key `sql`: the database counts {} parameter(s) in the query but Exportal's reading of \
             the SQL found {} placeholder slot(s); check the quotes and comments around the \
             placeholders",
            described.parameters,
            bound.slots.len()
        ));
    }
    let columns = described.columns;
    if columns.is_empty() {
        return Err("key `sql`: the query returns no columns".into());
    }
    let position = |key: &str, c: &str| {
        columns
            .iter()
            .position(|x| x.name == c)
            .ok_or_else(|| format!("key `{key}`: the query has no column `{c}`"))
    };
    for c in &d.csv_raw_columns {
        position("csv_raw_columns", c)?;
    }
    let json_columns = d
        .json_columns
        .iter()
        .map(|c| position("json_columns", c))
        .collect::<Result<Vec<usize>, String>>()?;
    for (c, label) in &d.labels {
        position("labels", c)?;
        if label.trim().is_empty() || label.chars().count() > 200 {
            return Err(format!(
                "key `labels.{c}`: a display name has 1 to 200 characters"
            ));
        }
    }
    let mut columns = columns;
    for &i in &json_columns {
        columns[i].kind = ColumnType::Json;
    }
    if let Some(zone) = &d.defaults.time_zone {
        time_zone(zone).map_err(|e| format!("key `defaults.time_zone`: {e}"))?;
    }
    // The allowed hosts (EXPORTAL_WEBHOOK_HOSTS) are checked at start-up, with the settings.
    let webhook = d
        .webhook
        .as_deref()
        .map(|u| crate::webhooks::check_url(u, &[]))
        .transpose()
        .map_err(|e| format!("key `webhook`: {e}"))?;
    Ok(Dataset {
        info: DatasetInfo {
            id: d.id,
            title: d.title,
            description: d.description,
            columns: columns
                .into_iter()
                .map(|c| ColumnInfo {
                    name: c.name,
                    kind: c.kind,
                })
                .collect(),
            params,
            formats,
            labels: d.labels,
            defaults: d.defaults,
        },
        source_name: d.source,
        source: source.clone(),
        bound,
        count,
        csv_raw_columns: d.csv_raw_columns,
        json_columns,
        webhook,
    })
}

/// An IANA time zone by name; UTC itself is `None` (nothing to convert).
pub fn time_zone(name: &str) -> Result<Option<chrono_tz::Tz>, String> {
    if name.chars().count() > MAX_TIME_ZONE_CHARS {
        return Err("a time zone name is at most 64 characters".into());
    }
    let zone: chrono_tz::Tz = name.parse().map_err(|_| {
        format!(
            "unknown time zone `{}`: use an IANA name such as Europe/Paris or UTC",
            quote(name)
        )
    })?;
    Ok((zone != chrono_tz::UTC).then_some(zone))
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        other => serde_json::Value::String(other.to_string()),
    }
}

/// Checks one value against its parameter and converts it for binding.
pub fn check_value(p: &ParamInfo, v: &serde_json::Value) -> Result<Param, String> {
    use serde_json::Value as J;
    let text = match v {
        J::String(s) => Some(s.trim()),
        _ => None,
    };
    match (p.kind, v) {
        (_, J::Null) => Ok(Param::Null),
        (ParamType::String, J::String(s)) => Ok(Param::Text(s.clone())),
        (ParamType::Integer, J::Number(n)) if n.is_i64() => {
            Ok(Param::Int(n.as_i64().unwrap_or_default()))
        }
        (ParamType::Integer, J::String(_)) => text
            .and_then(|t| t.parse::<i64>().ok())
            .map(Param::Int)
            .ok_or_else(|| "expected a whole number".into()),
        (ParamType::Number, J::Number(n)) => n
            .as_f64()
            .map(Param::Float)
            .ok_or_else(|| "expected a number".into()),
        (ParamType::Number, J::String(_)) => text
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|f| f.is_finite())
            .map(Param::Float)
            .ok_or_else(|| "expected a number".into()),
        (ParamType::Boolean, J::Bool(b)) => Ok(Param::Bool(*b)),
        (ParamType::Boolean, J::String(_)) => match text {
            Some("true") => Ok(Param::Bool(true)),
            Some("false") => Ok(Param::Bool(false)),
            _ => Err("expected true or false".into()),
        },
        (ParamType::Date, J::String(_)) => {
            NaiveDate::parse_from_str(text.unwrap_or_default(), "%Y-%m-%d")
                .map(Param::Date)
                .map_err(|_| "expected a date as YYYY-MM-DD".into())
        }
        (ParamType::Datetime, J::String(_)) => parse_datetime(text.unwrap_or_default())
            .map(Param::DateTime)
            .ok_or_else(|| {
                "expected a date and time as YYYY-MM-DDTHH:MM[:SS] (UTC) or RFC 3339".into()
            }),
        (ParamType::Enum, J::String(s)) => {
            let values = p.values.as_deref().unwrap_or_default();
            if values.iter().any(|x| x == s) {
                Ok(Param::Text(s.clone()))
            } else {
                Err(format!("expected one of: {}", values.join(", ")))
            }
        }
        (kind, _) => Err(format!(
            "expected a {}",
            serde_json::to_value(kind)
                .unwrap_or_default()
                .as_str()
                .unwrap_or("value")
        )),
    }
}

fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    if let Ok(ts) = DateTime::parse_from_rfc3339(s) {
        return Some(ts.naive_utc());
    }
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

/// A request checked against its dataset: values to bind and column positions to write.
#[derive(Debug, Clone)]
pub struct Checked {
    /// One value per slot of the dataset's SQL.
    pub params: Vec<Param>,
    /// The values as stored on the job (defaults filled in).
    pub params_json: BTreeMap<String, serde_json::Value>,
    /// Positions in the query's columns, in output order.
    pub column_positions: Vec<usize>,
    pub columns: Vec<String>,
    /// The file options, the dataset's defaults filled in.
    pub options: FileOptions,
    /// The header of each output column: its display name when the options ask for them.
    pub headers: Vec<String>,
    /// What is done to each output row before it is written.
    pub shape: Shape,
}

/// What turns a row as the source reads it into the row a file (or a preview) shows: values
/// of declared JSON columns become JSON, and timestamps move to the export's time zone.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Output positions of the columns that hold JSON text.
    pub json: Vec<usize>,
    pub zone: Option<chrono_tz::Tz>,
}

impl Shape {
    pub fn is_identity(&self) -> bool {
        self.json.is_empty() && self.zone.is_none()
    }

    pub fn apply(&self, row: &mut [crate::source::Value]) {
        use crate::source::Value;
        for &i in &self.json {
            if let Some(cell) = row.get_mut(i) {
                if let Value::Text(text) = cell {
                    *cell = Value::Json(std::mem::take(text));
                }
            }
        }
        if let Some(zone) = self.zone {
            for cell in row.iter_mut() {
                in_zone(cell, zone);
            }
        }
    }
}

fn in_zone(cell: &mut crate::source::Value, zone: chrono_tz::Tz) {
    use crate::source::Value;
    match cell {
        Value::Timestamp(ts) => *ts = ts.with_timezone(&zone).fixed_offset(),
        Value::Array(items) => items.iter_mut().for_each(|i| in_zone(i, zone)),
        _ => {}
    }
}

/// The most problems one answer lists: a request with thousands of wrong fields gets a short
/// answer, not one that grows with the request.
pub const MAX_ERRORS: usize = 20;

/// The longest piece of user text quoted back in a message.
const QUOTE_CHARS: usize = 64;

/// `text` as quoted in a message: at most [`QUOTE_CHARS`] characters.
pub fn quote(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(QUOTE_CHARS) {
        None => text.into(),
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
    }
}

/// A whole message that may quote user text (a parser's, say), cut to 300 characters.
pub fn quote_long(text: &str) -> String {
    match text.char_indices().nth(300) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Names for a message, cut short when the list is long (operators may declare many).
fn name_list<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    const BUDGET: usize = 400;
    let total = names.len();
    let mut out = String::new();
    for (i, n) in names.enumerate() {
        if out.len() + n.len() > BUDGET {
            out.push_str(&format!(", … ({total} in all)"));
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(n);
    }
    out
}

/// The problems found in a request, at most [`MAX_ERRORS`] of them kept. Hints (what the
/// dataset accepts) are said once, after the problems, and always kept.
#[derive(Default)]
struct Problems {
    list: Vec<FieldError>,
    dropped: usize,
    hints: Vec<FieldError>,
}

impl Problems {
    fn push(&mut self, field: impl FnOnce() -> String, message: impl FnOnce() -> String) {
        if self.list.len() < MAX_ERRORS {
            self.list.push(FieldError {
                field: field(),
                message: message(),
            });
        } else {
            self.dropped += 1;
        }
    }

    fn hint(&mut self, field: &str, message: String) {
        self.hints.push(FieldError {
            field: field.into(),
            message,
        });
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// At most [`MAX_ERRORS`] in all: when some problems do not fit, the last kept one says
    /// how many more there are.
    fn finish(mut self) -> Vec<FieldError> {
        let budget = MAX_ERRORS - self.hints.len();
        let total = self.list.len() + self.dropped;
        if total > budget {
            self.list.truncate(budget - 1);
            self.list.push(FieldError {
                field: "request".into(),
                message: format!("and {} more problems", total - (budget - 1)),
            });
        }
        self.list.append(&mut self.hints);
        self.list
    }
}

impl Dataset {
    /// Checks user parameters and columns; every problem is reported (up to [`MAX_ERRORS`]),
    /// not just the first. The cost is linear in the size of the request.
    pub fn check(
        &self,
        params: &BTreeMap<String, serde_json::Value>,
        columns: Option<&[String]>,
        user: &str,
    ) -> Result<Checked, Vec<FieldError>> {
        self.check_with_options(params, columns, &FileOptions::default(), user)
    }

    /// Like [`Dataset::check`], with the file options asked for (the dataset's defaults fill
    /// in what they leave out).
    pub fn check_with_options(
        &self,
        params: &BTreeMap<String, serde_json::Value>,
        columns: Option<&[String]>,
        options: &FileOptions,
        user: &str,
    ) -> Result<Checked, Vec<FieldError>> {
        let mut errors = Problems::default();
        let options = options.or(&self.info.defaults);
        let zone = match options.time_zone.as_deref().map(time_zone) {
            None => None,
            Some(Ok(zone)) => zone,
            Some(Err(m)) => {
                errors.push(|| "options.time_zone".into(), || m);
                None
            }
        };
        let declared: HashMap<&str, &ParamInfo> = self
            .info
            .params
            .iter()
            .map(|p| (p.name.as_str(), p))
            .collect();
        let mut unknown_params = false;
        for name in params.keys() {
            if !declared.contains_key(name.as_str()) {
                unknown_params = true;
                errors.push(
                    || format!("params.{}", quote(name)),
                    || format!("unknown parameter `{}`", quote(name)),
                );
            }
        }
        if unknown_params {
            // The list of what is accepted is said once, not in every error.
            let known = &self.info.params;
            errors.hint(
                "params",
                if known.is_empty() {
                    "this dataset takes no parameters".into()
                } else {
                    format!(
                        "this dataset takes: {}",
                        name_list(known.iter().map(|p| p.name.as_str()))
                    )
                },
            );
        }
        let mut values: HashMap<&str, Param> = HashMap::new();
        let mut params_json = BTreeMap::new();
        for p in &self.info.params {
            let given = params
                .get(&p.name)
                .filter(|v| !v.is_null() && v.as_str() != Some(""));
            let value = given.or(p.default.as_ref());
            let label = p.label.as_deref().unwrap_or(&p.name);
            match value {
                None if p.required => errors.push(
                    || format!("params.{}", p.name),
                    || format!("`{label}` is required"),
                ),
                None => {
                    values.insert(&p.name, Param::Null);
                }
                Some(v) => match check_value(p, v) {
                    Ok(param) => {
                        values.insert(&p.name, param);
                        params_json.insert(p.name.clone(), v.clone());
                    }
                    Err(m) => errors.push(
                        || format!("params.{}", p.name),
                        || format!("`{label}`: {m}"),
                    ),
                },
            }
        }
        values.insert(USER_PLACEHOLDER, Param::Text(user.to_string()));

        let all: Vec<&str> = self.info.columns.iter().map(|c| c.name.as_str()).collect();
        let mut positions = Vec::new();
        match columns {
            None => positions.extend(0..all.len()),
            Some([]) => errors.push(|| "columns".into(), || "choose at least one column".into()),
            // Refused before looking at any name: a longer list must repeat or invent names.
            Some(list) if list.len() > all.len() => errors.push(
                || "columns".into(),
                || {
                    format!(
                        "{} columns chosen, but this dataset has only {}",
                        list.len(),
                        all.len()
                    )
                },
            ),
            Some(list) => {
                let index: HashMap<&str, usize> =
                    all.iter().enumerate().map(|(i, a)| (*a, i)).collect();
                // Per column: 0 not chosen, 1 chosen, 2 chosen again (and said so once).
                let mut chosen = vec![0u8; all.len()];
                let mut unknown_columns = false;
                for c in list {
                    match index.get(c.as_str()) {
                        Some(&i) if chosen[i] == 2 => {}
                        Some(&i) if chosen[i] == 1 => {
                            chosen[i] = 2;
                            errors.push(
                                || "columns".into(),
                                || format!("column `{c}` is chosen twice"),
                            )
                        }
                        Some(&i) => {
                            chosen[i] = 1;
                            positions.push(i);
                        }
                        None => {
                            unknown_columns = true;
                            errors.push(
                                || "columns".into(),
                                || format!("unknown column `{}`", quote(c)),
                            )
                        }
                    }
                }
                if unknown_columns {
                    errors.hint(
                        "columns",
                        format!("the columns are: {}", name_list(all.iter().copied())),
                    );
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors.finish());
        }
        let slots = self
            .bound
            .slots
            .iter()
            .map(|s| values.get(s.as_str()).cloned().unwrap_or(Param::Null))
            .collect();
        let labels = options.labels == Some(true);
        let headers = positions
            .iter()
            .map(|&i| match self.info.labels.get(all[i]) {
                Some(label) if labels => label.clone(),
                _ => all[i].to_string(),
            })
            .collect();
        let shape = Shape {
            json: positions
                .iter()
                .enumerate()
                .filter(|(_, p)| self.json_columns.contains(p))
                .map(|(out, _)| out)
                .collect(),
            zone,
        };
        Ok(Checked {
            params: slots,
            params_json,
            columns: positions.iter().map(|&i| all[i].to_string()).collect(),
            column_positions: positions,
            options,
            headers,
            shape,
        })
    }
}
