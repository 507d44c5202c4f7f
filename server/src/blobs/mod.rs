//! Blob storage for finished files: a file is written from a stream (never whole in memory)
//! and appears under its name only when complete; a failed or cancelled write leaves nothing.

pub mod azure;
pub mod local;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::io;
use std::time::Duration;

/// A stream of file contents; an `Err` item aborts the write.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// How a file is offered for download.
#[derive(Debug, Clone)]
pub struct BlobMeta {
    pub content_type: String,
    /// The name the browser saves it as.
    pub filename: String,
}

/// What a download request gets.
pub enum Download {
    /// A short-lived link straight to the storage.
    Redirect(String),
    /// The bytes, served by this process.
    Stream { body: ByteStream, length: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("file not found")]
    NotFound,
    #[error("blob storage failed: {0}")]
    Io(String),
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Writes `body` under `name`, replacing any earlier file; returns the bytes written.
    async fn put(&self, name: &str, meta: &BlobMeta, body: ByteStream) -> Result<u64, BlobError>;
    /// Removes `name`; a missing file is not an error.
    async fn delete(&self, name: &str) -> Result<(), BlobError>;
    async fn size(&self, name: &str) -> Result<Option<u64>, BlobError>;
    async fn download(
        &self,
        name: &str,
        meta: &BlobMeta,
        ttl: Duration,
    ) -> Result<Download, BlobError>;
    async fn ping(&self) -> Result<(), BlobError>;
}
