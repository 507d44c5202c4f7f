//! Files in an Azure Blob container, uploaded as staged blocks (4 MiB, up to 4 in flight) and
//! committed only when the stream ended cleanly: an aborted export never becomes a blob (its
//! uncommitted blocks are discarded by the service). Downloads are redirects to a read-only SAS
//! for that one blob, valid for minutes and minted per click.

use super::{BlobError, BlobMeta, BlobStore, ByteStream, Download};
use crate::azure::{explain, sas, status_of, timed, Links};
use async_trait::async_trait;
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, BlockBlobClientCommitBlockListOptions, BlockLookupList,
};
use azure_storage_blob::BlobContainerClient;
use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::Mutex;

/// The size of every block but the last. With [`BLOCKS_IN_FLIGHT`] uploading and one filling,
/// an upload holds at most 5 blocks (20 MiB) of the file, allocated once per write and reused;
/// 4 MiB × Azure's 50,000 blocks a blob limits a file to 195 GiB.
pub const BLOCK_BYTES: usize = 4 * 1024 * 1024;
pub const BLOCKS_IN_FLIGHT: usize = 4;
/// Azure's limit of committed blocks in one blob.
const MAX_BLOCKS: usize = 50_000;

pub struct AzureBlobStore {
    container: BlobContainerClient,
    links: Links,
    /// A user-delegation key and its expiry, reused until near expiry.
    delegation: Mutex<
        Option<(
            azure_storage_common::models::UserDelegationKey,
            chrono::DateTime<chrono::Utc>,
        )>,
    >,
}

fn io(what: &str, e: azure_core::Error) -> BlobError {
    if status_of(&e).0 == Some(404) {
        BlobError::NotFound
    } else {
        BlobError::Io(explain(what, &e))
    }
}

/// Block ids must all have the same length within a blob. Each write has a random prefix of
/// its own, so two writers of one name (which the worker never lets happen) still could not
/// commit each other's blocks.
fn block_id(write: &str, n: usize) -> Vec<u8> {
    format!("{write}-{n:010}").into_bytes()
}

impl AzureBlobStore {
    pub fn new(container: BlobContainerClient, links: Links) -> Self {
        Self {
            container,
            links,
            delegation: Mutex::new(None),
        }
    }

    /// Creates the container if missing (an existing one is not an error). Without a key,
    /// also obtains the user delegation key: an identity that may write blobs but not sign
    /// links would otherwise start, run exports, and fail at the first download.
    pub async fn ensure(&self) -> Result<(), String> {
        match timed("creating the files container", self.container.create(None)).await? {
            Ok(_) => {}
            Err(e) if status_of(&e).0 == Some(409) => {}
            Err(e) => return Err(explain("creating the files container", &e)),
        }
        if let Links::Delegation { service, .. } = &self.links {
            self.delegation_key(service).await.map_err(|e| match e {
                BlobError::Io(message) => message,
                other => other.to_string(),
            })?;
        }
        Ok(())
    }

    /// The cached user delegation key, asked for again when less than 30 minutes are left.
    async fn delegation_key(
        &self,
        service: &azure_storage_blob::BlobServiceClient,
    ) -> Result<azure_storage_common::models::UserDelegationKey, BlobError> {
        use azure_core::time::{Duration as AzDuration, OffsetDateTime};
        let now = chrono::Utc::now();
        let mut cached = self.delegation.lock().await;
        if let Some((key, expiry)) = cached.as_ref() {
            if *expiry > now + chrono::Duration::minutes(30) {
                return Ok(key.clone());
            }
        }
        let start = OffsetDateTime::now_utc();
        let info = azure_storage_blob::models::KeyInfo {
            start: Some(start),
            expiry: Some(start + AzDuration::hours(6)),
            ..Default::default()
        };
        let content = info
            .try_into()
            .map_err(|e| io("asking for a user delegation key", e))?;
        let key = timed(
            "asking for a user delegation key",
            service.get_user_delegation_key(content, None),
        )
        .await
        .map_err(BlobError::Io)?
        .map_err(|e| io("asking for a user delegation key", e))?
        .into_model()
        .map_err(|e| io("reading the user delegation key", e))?;
        *cached = Some((key.clone(), now + chrono::Duration::hours(6)));
        Ok(key)
    }

    async fn delegation_sas(
        &self,
        account: &str,
        service: &azure_storage_blob::BlobServiceClient,
        name: &str,
        meta: &BlobMeta,
        ttl: Duration,
    ) -> Result<String, BlobError> {
        use azure_core::time::{Duration as AzDuration, OffsetDateTime};
        let key = self.delegation_key(service).await?;
        let expiry = OffsetDateTime::now_utc() + AzDuration::seconds(ttl.as_secs() as i64);
        let builder = azure_storage_sas::SasBuilder::new(account, &key, expiry)
            .map_err(|e| io("signing a download link", e))?;
        Ok(builder
            .blob(
                self.container
                    .url()
                    .path_segments()
                    .and_then(|mut s| s.next_back())
                    .unwrap_or_default(),
                name,
            )
            .read()
            .content_disposition(crate::http::content_disposition(&meta.filename))
            .build())
    }
}

#[async_trait]
impl BlobStore for AzureBlobStore {
    async fn put(
        &self,
        name: &str,
        meta: &BlobMeta,
        mut body: ByteStream,
    ) -> Result<u64, BlobError> {
        let blob = self.container.blob_client(name).block_blob_client();
        let write = uuid::Uuid::new_v4().simple().to_string();
        let mut ids: Vec<Vec<u8>> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        // Blocks are exactly BLOCK_BYTES (the last one shorter), filled in buffers allocated at
        // that size, never grown; a buffer whose upload finished is filled again. Growing a
        // buffer past its capacity would double it (and copy), and a fresh allocation per block
        // leaves the freed ones resident until the allocator purges them.
        let mut spare: Vec<BytesMut> = Vec::new();
        let mut buffer = BytesMut::with_capacity(BLOCK_BYTES);
        let mut total = 0u64;
        let mut ended = false;
        while !ended {
            let mut chunk = match body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    return Err(BlobError::Io(format!("the file was not completed: {e}")))
                }
                None => {
                    ended = true;
                    Bytes::new()
                }
            };
            total += chunk.len() as u64;
            loop {
                let take = chunk.len().min(BLOCK_BYTES - buffer.len());
                buffer.extend_from_slice(&chunk.split_to(take));
                // A full block goes up; so does the last, shorter one, once the stream ended.
                let full = buffer.len() == BLOCK_BYTES;
                let last = ended && !buffer.is_empty();
                if !(full || last) {
                    break;
                }
                if ids.len() == MAX_BLOCKS {
                    return Err(BlobError::Io(format!(
                        "the file is larger than Azure's limit of {MAX_BLOCKS} blocks of {} MiB",
                        BLOCK_BYTES >> 20
                    )));
                }
                let next = spare
                    .pop()
                    .unwrap_or_else(|| BytesMut::with_capacity(BLOCK_BYTES));
                let block = std::mem::replace(&mut buffer, next).freeze();
                let id = block_id(&write, ids.len());
                ids.push(id.clone());
                let blob = &blob;
                in_flight.push(async move {
                    let len = block.len() as u64;
                    timed(
                        "uploading a block",
                        blob.stage_block(&id, len, block.clone().into(), None),
                    )
                    .await
                    .map_err(BlobError::Io)?
                    .map_err(|e| io("uploading a block", e))?;
                    // The request (and the SDK's copy of the body kept for retries) is gone:
                    // the buffer is ours again unless the transport still holds it.
                    Ok::<_, BlobError>(block)
                });
                if in_flight.len() >= BLOCKS_IN_FLIGHT {
                    if let Some(done) = in_flight.next().await {
                        if let Ok(mut reused) = done?.try_into_mut() {
                            reused.clear();
                            spare.push(reused);
                        }
                    }
                }
                if chunk.is_empty() {
                    break;
                }
            }
        }
        while let Some(done) = in_flight.next().await {
            done?;
        }
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let content = list.try_into().map_err(|e| io("committing the file", e))?;
        let options = BlockBlobClientCommitBlockListOptions {
            blob_content_type: Some(meta.content_type.clone()),
            blob_content_disposition: Some(crate::http::content_disposition(&meta.filename)),
            ..Default::default()
        };
        timed(
            "committing the file",
            blob.commit_block_list(content, Some(options)),
        )
        .await
        .map_err(BlobError::Io)?
        .map_err(|e| io("committing the file", e))?;
        Ok(total)
    }

    async fn delete(&self, name: &str) -> Result<(), BlobError> {
        match timed(
            "deleting a file",
            self.container.blob_client(name).delete(None),
        )
        .await
        .map_err(BlobError::Io)?
        {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e).0 == Some(404) => Ok(()),
            Err(e) => Err(io("deleting a file", e)),
        }
    }

    async fn size(&self, name: &str) -> Result<Option<u64>, BlobError> {
        match timed(
            "reading a file's size",
            self.container.blob_client(name).get_properties(None),
        )
        .await
        .map_err(BlobError::Io)?
        {
            Ok(p) => Ok(p
                .content_length()
                .map_err(|e| io("reading a file's size", e))?),
            Err(e) if status_of(&e).0 == Some(404) => Ok(None),
            Err(e) => Err(io("reading a file's size", e)),
        }
    }

    async fn download(
        &self,
        name: &str,
        meta: &BlobMeta,
        ttl: Duration,
    ) -> Result<Download, BlobError> {
        if self.size(name).await?.is_none() {
            return Err(BlobError::NotFound);
        }
        let mut url = self.container.blob_client(name).url().clone();
        match &self.links {
            Links::Key {
                account,
                key,
                https_only,
            } => {
                let container = self
                    .container
                    .url()
                    .path_segments()
                    .and_then(|mut s| s.next_back())
                    .unwrap_or_default()
                    .to_string();
                let query = sas::blob_read_sas(
                    key,
                    &sas::BlobSas {
                        account,
                        container: &container,
                        blob: name,
                        expiry: chrono::Utc::now()
                            + chrono::Duration::seconds(ttl.as_secs() as i64),
                        https_only: *https_only,
                        content_disposition: &crate::http::content_disposition(&meta.filename),
                    },
                );
                url.set_query(Some(&query));
                Ok(Download::Redirect(url.to_string()))
            }
            Links::Delegation { account, service } => {
                let query = self
                    .delegation_sas(account, service, name, meta, ttl)
                    .await?;
                url.set_query(Some(&query));
                Ok(Download::Redirect(url.to_string()))
            }
            Links::Proxy => {
                let response = timed(
                    "downloading a file",
                    self.container.blob_client(name).download(None),
                )
                .await
                .map_err(BlobError::Io)?
                .map_err(|e| io("downloading a file", e))?;
                let length = response.properties.content_length.unwrap_or_default();
                let body = response
                    .body
                    .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())))
                    .boxed();
                Ok(Download::Stream { body, length })
            }
        }
    }

    async fn ping(&self) -> Result<(), BlobError> {
        timed(
            "reading the files container",
            self.container.get_properties(None),
        )
        .await
        .map_err(BlobError::Io)?
        .map_err(|e| io("reading the files container", e))?;
        Ok(())
    }
}
