//! The server's own status, as the page shows it: which version answers, in which role and on
//! which storage. It is also the page's proof that server functions work end to end.

use crate::error::ApiError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// What the server says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub version: String,
    /// `all`, `web` or `worker`.
    pub role: String,
    /// `local` or `azure`.
    pub storage: String,
    pub uptime_secs: u64,
}

/// Reports the answering server's status.
#[server(prefix = "/api/fn", endpoint = "status", input = leptos::server_fn::codec::Json)]
pub async fn fetch_status() -> Result<ServerStatus, ApiError> {
    let backend = crate::backend::use_backend()?;
    Ok(backend.status())
}
