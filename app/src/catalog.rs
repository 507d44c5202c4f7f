//! What the page and the API show of the operator's datasets: enough to build a form and a
//! column picker, never the SQL or the connection.

use crate::jobs::{ExportFormat, FileOptions};
use serde::{Deserialize, Serialize};

/// The type of a dataset parameter; decides the form input and how a value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub enum ParamType {
    String,
    Integer,
    Number,
    Date,
    Datetime,
    Boolean,
    Enum,
}

/// The type of an output column, as far as the source could tell. It is shown in the column
/// picker and the API as one word (`uuid`, `json`, `interval`) or `array<element>`, so it says
/// what the values are even where every format writes them as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ColumnType {
    Text,
    Integer,
    Number,
    Decimal,
    Boolean,
    Date,
    Datetime,
    /// A time of day (PostgreSQL `time`/`timetz`); MySQL's `TIME`, which is a duration, is
    /// an [`ColumnType::Interval`].
    Time,
    Interval,
    Uuid,
    Json,
    /// A value from a fixed list (PostgreSQL enums, MySQL `ENUM` and `SET`).
    Enum,
    /// Network addresses: `inet`, `cidr`, `macaddr`, MariaDB's `INET4`/`INET6`.
    Network,
    Money,
    /// Spatial values, written as WKT (MySQL) or as the database prints them (PostGIS).
    Geometry,
    Bytes,
    /// One-dimensional (or nested) arrays of the element type.
    Array(Box<ColumnType>),
    /// The source could not tell before running the query (e.g. an SQLite expression).
    Unknown,
}

impl ColumnType {
    /// The word the API and the page show.
    pub fn name(&self) -> String {
        let word = match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Number => "number",
            ColumnType::Decimal => "decimal",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Datetime => "datetime",
            ColumnType::Time => "time",
            ColumnType::Interval => "interval",
            ColumnType::Uuid => "uuid",
            ColumnType::Json => "json",
            ColumnType::Enum => "enum",
            ColumnType::Network => "network",
            ColumnType::Money => "money",
            ColumnType::Geometry => "geometry",
            ColumnType::Bytes => "bytes",
            ColumnType::Unknown => "unknown",
            ColumnType::Array(element) => return format!("array<{}>", element.name()),
        };
        word.to_string()
    }

    /// The type a name from [`ColumnType::name`] stands for.
    pub fn parse(name: &str) -> Option<ColumnType> {
        if let Some(element) = name
            .strip_prefix("array<")
            .and_then(|rest| rest.strip_suffix('>'))
        {
            return ColumnType::parse(element).map(|e| ColumnType::Array(Box::new(e)));
        }
        Some(match name {
            "text" => ColumnType::Text,
            "integer" => ColumnType::Integer,
            "number" => ColumnType::Number,
            "decimal" => ColumnType::Decimal,
            "boolean" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "datetime" => ColumnType::Datetime,
            "time" => ColumnType::Time,
            "interval" => ColumnType::Interval,
            "uuid" => ColumnType::Uuid,
            "json" => ColumnType::Json,
            "enum" => ColumnType::Enum,
            "network" => ColumnType::Network,
            "money" => ColumnType::Money,
            "geometry" => ColumnType::Geometry,
            "bytes" => ColumnType::Bytes,
            "unknown" => ColumnType::Unknown,
            _ => return None,
        })
    }
}

impl From<ColumnType> for String {
    fn from(t: ColumnType) -> String {
        t.name()
    }
}

impl TryFrom<String> for ColumnType {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        ColumnType::parse(&name).ok_or_else(|| format!("unknown column type `{name}`"))
    }
}

/// The one-word names of [`ColumnType`]; an array is `array<` one of them (or an array) `>`.
pub const COLUMN_TYPE_WORDS: [&str; 17] = [
    "text", "integer", "number", "decimal", "boolean", "date", "datetime", "time", "interval",
    "uuid", "json", "enum", "network", "money", "geometry", "bytes", "unknown",
];

/// The wire form is a string, not the enum's variants: the schema says so.
#[cfg(feature = "ssr")]
impl utoipa::PartialSchema for ColumnType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{schema::Type, ObjectBuilder};
        let words = COLUMN_TYPE_WORDS.join("|");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The type of an output column: one word, or `array<…>` of a type (arrays nest).",
            ))
            .pattern(Some(format!("^(array<)*({words})>*$")))
            .examples(["text", "datetime", "array<text>"])
            .into()
    }
}

#[cfg(feature = "ssr")]
impl utoipa::ToSchema for ColumnType {}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ParamInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct DatasetInfo {
    pub id: String,
    pub title: String,
    pub description: String,
    pub columns: Vec<ColumnInfo>,
    pub params: Vec<ParamInfo>,
    pub formats: Vec<ExportFormat>,
    /// Display names of columns, by column name, for headers when an export asks for them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The file options an export of this dataset gets unless it asks otherwise.
    #[serde(default, skip_serializing_if = "FileOptions::is_empty")]
    pub defaults: FileOptions,
}

#[cfg(test)]
mod tests {
    use super::ColumnType;

    #[test]
    fn column_types_are_one_word_or_an_array_of_one() {
        let nested = ColumnType::Array(Box::new(ColumnType::Array(Box::new(ColumnType::Uuid))));
        for t in [
            ColumnType::Json,
            ColumnType::Interval,
            ColumnType::Array(Box::new(ColumnType::Text)),
            nested.clone(),
        ] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<ColumnType>(&json).unwrap(), t);
        }
        assert_eq!(nested.to_string(), "array<array<uuid>>");
        assert_eq!(
            serde_json::to_string(&ColumnType::Array(Box::new(ColumnType::Text))).unwrap(),
            r#""array<text>""#
        );
        assert!(serde_json::from_str::<ColumnType>(r#""array<nope>""#).is_err());
    }

    #[test]
    fn the_listed_words_are_every_scalar_column_type() {
        for word in super::COLUMN_TYPE_WORDS {
            assert_eq!(
                ColumnType::parse(word).map(|t| t.name()).as_deref(),
                Some(word)
            );
        }
        // Each scalar variant once: a new variant must be added to the list (and so the schema).
        let distinct: std::collections::BTreeSet<_> = super::COLUMN_TYPE_WORDS.iter().collect();
        assert_eq!(distinct.len(), super::COLUMN_TYPE_WORDS.len());
    }
}
