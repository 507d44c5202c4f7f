//! The server functions behind the export page. They check nothing themselves: the server's
//! service layer, shared with the REST API, does every check for the calling user.

use crate::catalog::DatasetInfo;
use crate::error::ApiError;
use crate::jobs::{ExportRequest, Job, Preview};
use leptos::prelude::*;

#[server(prefix = "/api/fn", endpoint = "datasets", input = leptos::server_fn::codec::Json)]
pub async fn list_datasets() -> Result<Vec<DatasetInfo>, ApiError> {
    crate::backend::current_user()?;
    Ok(crate::backend::use_backend()?.datasets())
}

#[server(prefix = "/api/fn", endpoint = "preview", input = leptos::server_fn::codec::Json)]
pub async fn preview_export(request: ExportRequest) -> Result<Preview, ApiError> {
    let user = crate::backend::current_user()?;
    crate::backend::use_backend()?.preview(user, request).await
}

#[server(prefix = "/api/fn", endpoint = "submit", input = leptos::server_fn::codec::Json)]
pub async fn submit_export(request: ExportRequest) -> Result<Job, ApiError> {
    let user = crate::backend::current_user()?;
    let address = crate::backend::current_address();
    crate::backend::use_backend()?
        .submit(user, address, request)
        .await
}

#[server(prefix = "/api/fn", endpoint = "exports", input = leptos::server_fn::codec::Json)]
pub async fn list_exports() -> Result<Vec<Job>, ApiError> {
    let user = crate::backend::current_user()?;
    crate::backend::use_backend()?.list(user).await
}

#[server(prefix = "/api/fn", endpoint = "cancel", input = leptos::server_fn::codec::Json)]
pub async fn cancel_export(id: String) -> Result<Job, ApiError> {
    let user = crate::backend::current_user()?;
    let address = crate::backend::current_address();
    crate::backend::use_backend()?
        .cancel(user, address, id)
        .await
}

#[server(prefix = "/api/fn", endpoint = "retry", input = leptos::server_fn::codec::Json)]
pub async fn retry_export(id: String) -> Result<Job, ApiError> {
    let user = crate::backend::current_user()?;
    let address = crate::backend::current_address();
    crate::backend::use_backend()?
        .retry(user, address, id)
        .await
}
