//! Files in a local directory. A write goes to `.partial/<name>.<pid>.<random>` and is renamed
//! into place after an fsync, so readers only ever see complete files. Partial files left by a
//! process that died (its pid is gone) are removed at start-up.

use super::{BlobError, BlobMeta, BlobStore, ByteStream, Download};
use async_trait::async_trait;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub struct LocalBlobStore {
    root: PathBuf,
    partial: PathBuf,
}

fn io_err(e: std::io::Error) -> BlobError {
    BlobError::Io(e.to_string())
}

/// Names are made by the server from job ids; anything else is refused rather than resolved.
fn check_name(name: &str) -> Result<(), BlobError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(BlobError::Io(format!("invalid blob name {name:?}")))
    }
}

impl LocalBlobStore {
    pub async fn open(root: &Path) -> Result<Self, BlobError> {
        let partial = root.join(".partial");
        tokio::fs::create_dir_all(&partial).await.map_err(io_err)?;
        let store = Self {
            root: root.to_path_buf(),
            partial,
        };
        store.remove_orphaned_partials().await;
        Ok(store)
    }

    fn path(&self, name: &str) -> Result<PathBuf, BlobError> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    /// Removes partial files whose writer process no longer exists.
    async fn remove_orphaned_partials(&self) {
        let Ok(mut dir) = tokio::fs::read_dir(&self.partial).await else {
            return;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().to_string();
            let pid = name.rsplit('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| {
                p == std::process::id() || Path::new(&format!("/proc/{p}")).exists()
            });
            if !alive {
                tracing::info!(file = %name, "removing a partial file left by a stopped process");
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(
        &self,
        name: &str,
        _meta: &BlobMeta,
        mut body: ByteStream,
    ) -> Result<u64, BlobError> {
        let target = self.path(name)?;
        let tmp = self.partial.join(format!(
            "{name}.{}.{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let result: Result<u64, BlobError> = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err)?;
            let mut written = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(io_err)?;
                file.write_all(&chunk).await.map_err(io_err)?;
                written += chunk.len() as u64;
            }
            file.flush().await.map_err(io_err)?;
            file.sync_all().await.map_err(io_err)?;
            drop(file);
            tokio::fs::rename(&tmp, &target).await.map_err(io_err)?;
            Ok(written)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn delete(&self, name: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(name)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn size(&self, name: &str) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.path(name)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn download(
        &self,
        name: &str,
        _meta: &BlobMeta,
        _ttl: Duration,
    ) -> Result<Download, BlobError> {
        let file = match tokio::fs::File::open(self.path(name)?).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::NotFound),
            Err(e) => return Err(io_err(e)),
        };
        let length = file.metadata().await.map_err(io_err)?.len();
        let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).boxed();
        Ok(Download::Stream { body, length })
    }

    async fn ping(&self) -> Result<(), BlobError> {
        let probe = self.partial.join(format!(".ping.{}", std::process::id()));
        tokio::fs::write(&probe, b"ok").await.map_err(io_err)?;
        let _ = tokio::fs::remove_file(&probe).await;
        Ok(())
    }
}
