//! The webhook outbox in the jobs container: one JSON blob per delivery owed
//! (`webhooks/<event id>.json`), with its `next_at` also in the blob's metadata (`due`, unix
//! milliseconds), so one listing tells which entries are due without reading them.
//!
//! A claim is an ETag-conditional write that moves `next_at` to the end of the claim: of two
//! instances that saw the same due entry, only one write succeeds (the other gets 412 and
//! leaves it). The claim is the ETag that write returned; the rescheduling write is
//! conditional on it, so an instance whose claim ran out and was taken over writes nothing.
//!
//! Each poll lists at most [`SCAN_LIMIT`] entries (oldest event ids first): with more entries
//! than that waiting for their back-off, newer ones wait until older ones are delivered or
//! abandoned.

use super::{Delivery, Outbox, OutboxError};
use crate::azure::{explain, status_of, timed};
use async_trait::async_trait;
use azure_core::http::{Etag, RequestContent};
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientUploadOptions, BlobContainerClientListBlobsOptions,
    ListBlobsIncludeItem,
};
use azure_storage_blob::BlobContainerClient;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use std::collections::HashMap;
use std::time::Duration;

const PREFIX: &str = "webhooks/";
/// The most entries one poll lists.
pub const SCAN_LIMIT: usize = 1000;
const DUE_KEY: &str = "due";

pub struct AzureOutbox {
    container: BlobContainerClient,
}

fn unavailable(what: &str, e: azure_core::Error) -> OutboxError {
    OutboxError::Unavailable(explain(what, &e))
}

fn blob_name(id: &str) -> Result<String, OutboxError> {
    // Event ids are `<job id>-<revision>`, made by the server; anything else is refused
    // rather than turned into a blob name.
    if id.is_empty()
        || id.len() > 100
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(OutboxError::Unavailable(format!("invalid event id `{id}`")));
    }
    Ok(format!("{PREFIX}{id}.json"))
}

impl AzureOutbox {
    /// Uses the jobs container, which the job store creates.
    pub fn new(container: BlobContainerClient) -> Self {
        Self { container }
    }

    /// Writes the entry: `create_only` fails with `Lost` if it exists, `if_match` if it changed.
    async fn put(
        &self,
        d: &Delivery,
        create_only: bool,
        if_match: Option<Etag>,
    ) -> Result<Option<Etag>, OutboxError> {
        let body = serde_json::to_vec(d).expect("deliveries serialise");
        let mut options = BlobClientUploadOptions {
            blob_content_type: Some("application/json".into()),
            metadata: Some(HashMap::from([(
                DUE_KEY.to_string(),
                d.next_at.timestamp_millis().to_string(),
            )])),
            if_match,
            ..Default::default()
        };
        if create_only {
            options = options.if_not_exists();
        }
        let result = timed(
            "writing a webhook delivery",
            self.container
                .blob_client(&blob_name(&d.id)?)
                .upload(RequestContent::from(body), Some(options)),
        )
        .await
        .map_err(OutboxError::Unavailable)?;
        match result {
            Ok(r) => Ok(r.etag),
            Err(e) if matches!(status_of(&e).0, Some(404 | 409 | 412)) => Err(OutboxError::Lost),
            Err(e) => Err(unavailable("writing a webhook delivery", e)),
        }
    }

    /// The names of the entries whose `due` metadata has come, oldest event first.
    async fn due_names(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, OutboxError> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(PREFIX.to_string()),
            include: Some(vec![ListBlobsIncludeItem::Metadata]),
            maxresults: Some(SCAN_LIMIT as i32),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| unavailable("listing webhook deliveries", e))?;
        let now = now.timestamp_millis();
        let (mut due, mut seen) = (Vec::new(), 0);
        while seen < SCAN_LIMIT && due.len() < limit {
            let next = timed("listing webhook deliveries", pager.try_next())
                .await
                .map_err(OutboxError::Unavailable)?
                .map_err(|e| unavailable("listing webhook deliveries", e))?;
            let Some(item) = next else { break };
            seen += 1;
            let at = item
                .metadata
                .as_ref()
                .and_then(|m| m.values.as_ref())
                .and_then(|v| v.get(DUE_KEY))
                .and_then(|v| v.parse::<i64>().ok());
            // An entry without the metadata is read and judged by its body.
            if at.is_none_or(|at| at <= now) {
                due.extend(item.name);
            }
        }
        Ok(due)
    }

    async fn read(&self, name: &str) -> Result<Option<(Delivery, Etag)>, OutboxError> {
        let what = "reading a webhook delivery";
        match timed(what, self.container.blob_client(name).download(None))
            .await
            .map_err(OutboxError::Unavailable)?
        {
            Ok(d) => {
                let etag = d.properties.etag.clone();
                let body = d.body.collect().await.map_err(|e| unavailable(what, e))?;
                let delivery: Delivery = serde_json::from_slice(&body).map_err(|e| {
                    OutboxError::Unavailable(format!("unreadable webhook delivery {name}: {e}"))
                })?;
                Ok(etag.map(|etag| (delivery, etag)))
            }
            Err(e) if status_of(&e).0 == Some(404) => Ok(None),
            Err(e) => Err(unavailable(what, e)),
        }
    }
}

#[async_trait]
impl Outbox for AzureOutbox {
    async fn add(&self, d: &Delivery) -> Result<(), OutboxError> {
        match self.put(d, true, None).await {
            Ok(_) | Err(OutboxError::Lost) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        claim: Duration,
    ) -> Result<Vec<Delivery>, OutboxError> {
        let until = now + chrono::Duration::from_std(claim).unwrap_or(chrono::Duration::MAX);
        let mut claimed = Vec::new();
        for name in self.due_names(now, limit).await? {
            let Some((mut d, etag)) = self.read(&name).await? else {
                continue;
            };
            if d.next_at > now {
                continue;
            }
            let due_at = d.next_at;
            d.next_at = until;
            match self.put(&d, false, Some(etag)).await {
                Ok(Some(etag)) => {
                    d.next_at = due_at;
                    d.claim = Some(etag.to_string());
                    claimed.push(d);
                }
                // Another instance claimed it first, or it was delivered meanwhile.
                Ok(None) | Err(OutboxError::Lost) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(claimed)
    }

    async fn reschedule(&self, d: &Delivery) -> Result<(), OutboxError> {
        let etag = d.claim.clone().map(Etag::from).ok_or(OutboxError::Lost)?;
        self.put(d, false, Some(etag)).await.map(|_| ())
    }

    async fn remove(&self, d: &Delivery) -> Result<(), OutboxError> {
        let what = "removing a webhook delivery";
        match timed(
            what,
            self.container
                .blob_client(&blob_name(&d.id)?)
                .delete(None::<BlobClientDeleteOptions>),
        )
        .await
        .map_err(OutboxError::Unavailable)?
        {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e).0 == Some(404) => Ok(()),
            Err(e) => Err(unavailable(what, e)),
        }
    }
}
