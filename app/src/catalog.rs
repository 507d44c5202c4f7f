//! What the page and the API show of the operator's datasets: enough to build a form and a
//! column picker, never the SQL or the connection.

use crate::jobs::ExportFormat;
use serde::{Deserialize, Serialize};

/// The type of a dataset parameter; decides the form input and how a value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Date,
    Datetime,
    Boolean,
    Enum,
}

/// The type of an output column, as far as the source could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    Integer,
    Number,
    Decimal,
    Boolean,
    Date,
    Datetime,
    Bytes,
    /// The source could not tell before running the query (e.g. an SQLite expression).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
pub struct DatasetInfo {
    pub id: String,
    pub title: String,
    pub description: String,
    pub columns: Vec<ColumnInfo>,
    pub params: Vec<ParamInfo>,
    pub formats: Vec<ExportFormat>,
}
