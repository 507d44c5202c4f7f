//! The export pipeline: source rows → format writer → blob store, all streamed.
//!
//! Three stages run at once, so a 2-core machine keeps both cores busy and memory stays flat:
//! the async task passes on the batches of rows the source reads; a blocking thread formats
//! them (and gzips, and hashes); the blob store's `put` writes the bytes. Bounded channels
//! between them pass back-pressure from a slow disk or network all the way to the database
//! cursor.
//! A file is committed only when every stage finished cleanly: a failure or cancellation in any
//! stage aborts the write, and the blob store leaves nothing behind.

use crate::blobs::{BlobMeta, BlobStore};
use crate::catalog::{Catalog, Shape};
use crate::format::{self, FormatOptions};
use crate::source::{SourceErrorKind, Value};
use app::jobs::{Delimiter, ExportFormat, Job};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Bytes per chunk from the formatter to the blob store.
const CHUNK_BYTES: usize = 256 * 1024;

/// What the pipeline needs besides the job.
pub struct ExportContext {
    pub catalog: Arc<Catalog>,
    pub blobs: Arc<dyn BlobStore>,
    pub temp_dir: PathBuf,
    /// The most rows one export may have.
    pub row_cap: u64,
    pub csv_crlf: bool,
}

/// Live counters of a running export, read by the progress publisher.
#[derive(Debug, Default)]
pub struct Counters {
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
}

/// A finished file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOutput {
    /// The blob the file was written to.
    pub blob: String,
    pub bytes: u64,
    pub rows: u64,
    pub sha256: String,
}

/// Why an export stopped without a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportFailure {
    #[error("cancelled")]
    Cancelled,
    /// Worth another attempt (database or storage unavailable).
    #[error("{message}")]
    Transient { code: &'static str, message: String },
    /// Another attempt would fail the same way.
    #[error("{message}")]
    Permanent { code: &'static str, message: String },
}

impl ExportFailure {
    fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        Self::Permanent {
            code,
            message: message.into(),
        }
    }
}

/// The blob name of a job's file, made only of the job id and the attempt's lease token (both
/// made by the server), so user text never becomes a path. The name recorded in the file
/// facts wins: it is the name the attempt that succeeded wrote. A running attempt writes
/// under a name of its own, so two attempts that overlap (one lost its lease) never write the
/// same blob or the same blocks, and the record always points at the winner's bytes. Records
/// from before attempts had names use the job id alone.
pub fn blob_name(job: &Job) -> String {
    if let Some(blob) = job.file.as_ref().and_then(|f| f.blob.clone()) {
        return blob;
    }
    let ext = job.format.extension();
    let gz = if job.gzip && job.format.can_gzip() {
        ".gz"
    } else {
        ""
    };
    match job.lease.as_deref().filter(|t| valid_token(t)) {
        Some(token) => format!("{}.{token}.{ext}{gz}", job.id),
        None => format!("{}.{ext}{gz}", job.id),
    }
}

/// Lease tokens are made by the worker (hex); anything else never reaches a blob name.
fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 64 && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The name offered to the browser: dataset and date, never anything the user typed.
pub fn download_name(job: &Job) -> String {
    let ext = job.format.extension();
    let date = job.created_at.format("%Y-%m-%d");
    let gz = if job.gzip && job.format.can_gzip() {
        ".gz"
    } else {
        ""
    };
    format!("{}-{date}.{ext}{gz}", job.dataset)
}

pub fn content_type(job: &Job) -> &'static str {
    if job.gzip && job.format.can_gzip() {
        "application/gzip"
    } else {
        job.format.content_type()
    }
}

enum RowMsg {
    Batch(Vec<Vec<Value>>),
    /// Every row was sent: the formatter may close the file. Without it, a closed channel
    /// means the export was abandoned and the write must be aborted.
    End,
}

/// Runs one export to completion, cancellation or failure.
#[tracing::instrument(skip_all, fields(job = %job.id, dataset = %job.dataset, format = %job.format))]
pub async fn run(
    ctx: &ExportContext,
    job: &Job,
    cancel: &CancellationToken,
    counters: Arc<Counters>,
) -> Result<ExportOutput, ExportFailure> {
    let dataset = ctx.catalog.get(&job.dataset).ok_or_else(|| {
        ExportFailure::permanent(
            "dataset_gone",
            format!("The dataset `{}` no longer exists.", job.dataset),
        )
    })?;
    let checked = dataset
        .check_with_options(&job.params, Some(&job.columns), &job.options, &job.owner)
        .map_err(|errors| {
            let text: Vec<String> = errors.into_iter().map(|e| e.message).collect();
            ExportFailure::permanent(
                "dataset_changed",
                format!(
                    "The dataset changed since the export was requested: {}",
                    text.join("; ")
                ),
            )
        })?;
    let positions = checked.column_positions.clone();
    let all_in_order = positions.iter().copied().eq(0..dataset.info.columns.len());

    let options = FormatOptions {
        csv_crlf: ctx.csv_crlf,
        csv_delimiter: checked.options.delimiter.unwrap_or(Delimiter::Comma).byte(),
        csv_bom: checked.options.bom == Some(true),
        csv_raw_columns: checked
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| dataset.csv_raw_columns.contains(c))
            .map(|(i, _)| i)
            .collect(),
        temp_dir: ctx.temp_dir.clone(),
        ..FormatOptions::default()
    };

    let (row_tx, row_rx) = mpsc::channel::<RowMsg>(8);
    let (byte_tx, byte_rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let file = FileShape {
        format: job.format,
        gzip: job.gzip && job.format.can_gzip(),
        headers: checked.headers.clone(),
        options,
        shape: checked.shape.clone(),
    };
    let formatter_counters = counters.clone();
    let formatter = tokio::task::spawn_blocking(move || {
        let errors = byte_tx.clone();
        let result = format_rows(&file, row_rx, byte_tx, formatter_counters);
        if let Err(e) = &result {
            let _ = errors.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        result
    });

    let meta = BlobMeta {
        content_type: content_type(job).to_string(),
        filename: download_name(job),
    };
    let name = blob_name(job);
    let written_name = name.clone();
    let blobs = ctx.blobs.clone();
    let upload_cancel = cancel.clone();
    let upload = tokio::spawn(async move {
        let body = byte_stream(byte_rx, upload_cancel);
        blobs.put(&name, &meta, body).await
    });

    let read = read_rows(
        ctx,
        &dataset,
        &checked.params,
        &positions,
        all_in_order,
        cancel,
        &counters,
        row_tx,
    )
    .await;

    let formatted = formatter.await;
    let uploaded = upload.await;
    read?;
    if cancel.is_cancelled() {
        return Err(ExportFailure::Cancelled);
    }
    let storage_failed = |detail: String| ExportFailure::Transient {
        code: "storage_failed",
        message: format!("The file could not be stored: {detail}"),
    };
    let upload_error = match uploaded {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    let (bytes, sha256) = match formatted {
        Ok(Ok(done)) => done,
        // The formatter stopped because the store stopped taking bytes: the store's error is the cause.
        Ok(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            return Err(storage_failed(
                upload_error.unwrap_or_else(|| e.to_string()),
            ))
        }
        Ok(Err(e)) => {
            return Err(ExportFailure::permanent(
                "format_failed",
                format!("The file could not be written: {e}"),
            ))
        }
        Err(e) => {
            return Err(ExportFailure::permanent(
                "format_failed",
                format!("The file writer stopped: {e}"),
            ))
        }
    };
    if let Some(e) = upload_error {
        return Err(storage_failed(e));
    }
    Ok(ExportOutput {
        blob: written_name,
        bytes,
        rows: counters.rows.load(Ordering::Relaxed),
        sha256,
    })
}

/// The failure of an export whose source returns rows of another width than it described.
pub fn width_changed(dataset: &str, described: usize, got: usize) -> ExportFailure {
    ExportFailure::permanent(
        "dataset_changed",
        format!(
            "The database returned rows with {got} columns, but the dataset `{dataset}` has {described}: \
             its table or query changed since Exportal started. Ask the operator to restart Exportal."
        ),
    )
}

#[allow(clippy::too_many_arguments)]
async fn read_rows(
    ctx: &ExportContext,
    dataset: &crate::catalog::Dataset,
    params: &[crate::source::Param],
    positions: &[usize],
    all_in_order: bool,
    cancel: &CancellationToken,
    counters: &Counters,
    row_tx: mpsc::Sender<RowMsg>,
) -> Result<(), ExportFailure> {
    // `complete` turns a stream that stops without the source's end marker into an error, so
    // a reader that died never passes for a finished export.
    let mut batches = crate::source::complete(dataset.source.batches(&dataset.bound.sql, params));
    let width = dataset.info.columns.len();
    let mut total = 0u64;
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(ExportFailure::Cancelled),
            next = batches.next() => next,
        };
        let Some(batch) = next else { break };
        // The driver's full text (`detail`) was logged where the error arose, on this span.
        let batch = batch.map_err(|e| match e.kind {
            SourceErrorKind::Unavailable => ExportFailure::Transient {
                code: "source_unavailable",
                message: e.message,
            },
            SourceErrorKind::Query => ExportFailure::Permanent {
                code: "query_failed",
                message: e.message,
            },
        })?;
        // The positions below index the columns described at start-up; a schema that changed
        // since must fail the job, not panic on a short row or shift values between columns.
        if let Some(row) = batch.iter().find(|row| row.len() != width) {
            return Err(width_changed(&dataset.info.id, width, row.len()));
        }
        total += batch.len() as u64;
        if total > ctx.row_cap {
            return Err(ExportFailure::permanent(
                "row_cap",
                format!("The export has more than {} rows, the most one export may have. Narrow the filters and try again.", ctx.row_cap),
            ));
        }
        let batch = if all_in_order {
            batch
        } else {
            batch
                .into_iter()
                .map(|row| positions.iter().map(|&i| row[i].clone()).collect())
                .collect()
        };
        counters
            .rows
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if row_tx.send(RowMsg::Batch(batch)).await.is_err() {
            // The formatter stopped: its error is reported by the caller.
            return Ok(());
        }
    }
    if cancel.is_cancelled() {
        return Err(ExportFailure::Cancelled);
    }
    let _ = row_tx.send(RowMsg::End).await;
    Ok(())
}

/// The formatter's chunks as the blob store's input. A cancel turns into an error item, which
/// makes the store abort the write (and remove what it wrote) even after the last row was read.
fn byte_stream(
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cancel: CancellationToken,
) -> crate::blobs::ByteStream {
    futures::stream::unfold(Some((rx, cancel)), |state| async move {
        let (mut rx, cancel) = state?;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Some((Err(io::Error::new(io::ErrorKind::Interrupted, "export cancelled")), None)),
            item = rx.recv() => item.map(|i| (i, Some((rx, cancel)))),
        }
    })
    .boxed()
}

/// Everything that decides the bytes of a file besides its rows.
struct FileShape {
    format: ExportFormat,
    gzip: bool,
    headers: Vec<String>,
    options: FormatOptions,
    shape: Shape,
}

fn format_rows(
    file: &FileShape,
    mut rows: mpsc::Receiver<RowMsg>,
    bytes: mpsc::Sender<io::Result<Bytes>>,
    counters: Arc<Counters>,
) -> io::Result<(u64, String)> {
    let sink = ChunkSink {
        tx: bytes,
        buf: BytesMut::with_capacity(CHUNK_BYTES),
        hasher: Sha256::new(),
        written: 0,
        counters,
    };
    let FileShape {
        format,
        gzip,
        headers,
        options,
        shape,
    } = file;
    let out = if *gzip {
        Output::Gzip(Box::new(flate2::write::GzEncoder::new(
            sink,
            flate2::Compression::fast(),
        )))
    } else {
        Output::Plain(sink)
    };
    let mut writer = format::open(*format, headers, options, out)?;
    loop {
        match rows.blocking_recv() {
            Some(RowMsg::Batch(batch)) if shape.is_identity() => {
                for row in &batch {
                    writer.write_row(row)?;
                }
            }
            Some(RowMsg::Batch(batch)) => {
                for mut row in batch {
                    shape.apply(&mut row);
                    writer.write_row(&row)?;
                }
            }
            Some(RowMsg::End) => break,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "export abandoned",
                ))
            }
        }
    }
    writer.finish()?.finish()?.close()
}

/// Either the plain sink or gzip in front of it.
enum Output {
    Plain(ChunkSink),
    Gzip(Box<flate2::write::GzEncoder<ChunkSink>>),
}

impl Output {
    fn finish(self) -> io::Result<ChunkSink> {
        match self {
            Output::Plain(s) => Ok(s),
            Output::Gzip(g) => (*g).finish(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Plain(s) => s.write(buf),
            Output::Gzip(g) => g.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Plain(s) => s.flush(),
            Output::Gzip(g) => g.flush(),
        }
    }
}

/// Collects bytes into chunks for the blob store, hashing and counting them on the way.
struct ChunkSink {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    hasher: Sha256,
    written: u64,
    counters: Arc<Counters>,
}

impl ChunkSink {
    fn send_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.counters
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the file store stopped accepting data",
            )
        })
    }

    fn close(mut self) -> io::Result<(u64, String)> {
        self.send_chunk()?;
        Ok((self.written, hex::encode(self.hasher.finalize())))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.written += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
