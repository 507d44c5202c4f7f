//! Job records in an Azure Blob container, one JSON blob per job (`jobs/<id>.json`), written
//! with ETag conditions: a write based on an outdated read fails (412) and becomes a
//! `Conflict`, so a cancel from a web instance and a progress write from a worker never
//! overwrite each other. A user's jobs are found through empty index blobs
//! (`owners/<owner hash>/<id>`), idempotency keys through `keys/<owner hash>/<key hash>`; user
//! text never becomes part of a blob name.
//!
//! The per-user limit of active jobs is kept in one small record per owner
//! (`active/<owner hash>.json`: the ids of the owner's active jobs), changed only with ETag
//! conditions: a job is added to it before its record becomes active (submit, retry) and
//! removed once the record is final. Two submits that race both read the same version; only
//! one write of it succeeds, the other reads again and sees the new count. Each submit costs
//! a read and a write of that record, whatever the number of jobs; an entry left behind by a
//! process that died between the two writes is dropped when the record is full and the
//! entry's job turns out to be final or missing.
//!
//! Reads are conditional on the last ETag seen (If-None-Match): a web instance that follows
//! running jobs pays a 304 with no body for every record that did not change.
//!
//! ## Expiry and deletion cost what is due, not what was ever written
//! Two more kinds of empty index blobs, named so that the listing's name order is time order
//! (`<stamp>` is UTC `YYYYMMDDHHMMSSmmm`, fixed width):
//! - `expiry/<stamp of finished_at>/<id>`: one per final (succeeded, failed, cancelled) record.
//!   [`JobStore::finished_before`] lists this prefix only and stops at the first name at or past
//!   `before`, so a sweep with nothing due costs one listing request and no reads, however many
//!   jobs were ever run; it never lists `jobs/`.
//! - `purge/<stamp of the expiry>/<id>`: one per expired record, read the same way by
//!   [`JobStore::purge_expired`], which deletes the record with its key and owner index blobs.
//!
//! Every index write comes *before* the record write it describes, and every index entry is
//! checked against its record when it is due: an entry whose record is missing, in another
//! state or finished at another time (a retry that finished again has a newer entry) is
//! deleted. So a crash between the two writes leaves at worst an extra entry, which is cleaned
//! up, and never a final record without its entry, which no sweep would ever find. An entry
//! whose record is not (yet) in its state is only deleted once it is older than a couple of
//! minutes, so a write on its way is never undone. The entry a record leaves behind when it
//! expires is deleted after the expiry write, and by the sweep if that delete is lost. Index
//! writes are plain uploads of empty blobs (idempotent), deletes ignore 404, and record writes
//! are ETag-conditional: several instances sweeping at once only repeat each other's work.
//!
//! Records written before these indexes existed are found once, by [`JobStore::migrate`]: a
//! paged listing of `jobs/` (a budget of reads per call), after which the marker blob
//! `meta/expiry-index-v1` tells every instance that nothing is left to do. An old expired
//! record gets a purge entry stamped with the migration time: its grace starts then.
//!
//! ## What an export costs
//! Measured against Azurite with `exportal_storage_requests_total` (see the README, "Azure
//! Storage"): submit 9 transactions, run 12 (plus about 2 a second while it runs), a download
//! click 3, expiry 6, deletion 5; an idle worker 32 a minute (30 queue polls, 2 index
//! listings), whatever the history; `active_count` one read.

use super::{JobStore, StoreError};
use crate::azure::{explain, status_of, timed};
use app::jobs::{Job, JobStatus};
use async_trait::async_trait;
use azure_core::http::{Etag, RequestContent};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientUploadOptions, BlobContainerClientListBlobsOptions,
};
use azure_storage_blob::BlobContainerClient;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Records one admin search reads at most: the listing is cheap, reading every record is not.
const SEARCH_READS: usize = 2000;

/// The creation time of a job id (UUIDv7: milliseconds in its first 48 bits).
fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let ms = i64::from_str_radix(id.get(..12)?, 16).ok()?;
    DateTime::from_timestamp_millis(ms)
}

/// Marks that every record written before the expiry index existed has its entry.
const MIGRATION_MARKER: &str = "meta/expiry-index-v1";

/// A time in index names: fixed-width UTC down to the millisecond, so names sort as times do.
fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S%3f").to_string()
}

/// The expiry index entry a record needs: final (not yet expired) records have one.
fn expiry_name(job: &Job) -> Option<String> {
    match (job.status, job.finished_at) {
        (JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled, Some(at)) => {
            Some(format!("expiry/{}/{}", stamp(at), job.id))
        }
        _ => None,
    }
}

fn purge_name(expired_at: DateTime<Utc>, id: &str) -> String {
    format!("purge/{}/{id}", stamp(expired_at))
}

/// One entry of a time-ordered index (`<prefix><stamp>/<id>`).
#[derive(Debug)]
struct IndexEntry {
    name: String,
    id: String,
    modified: Option<time::OffsetDateTime>,
}

impl IndexEntry {
    /// Old enough that a record write that followed it has landed, if it ever will.
    fn settled(&self) -> bool {
        let cutoff =
            time::OffsetDateTime::now_utc() - time::Duration::seconds(STALE_AFTER.num_seconds());
        self.modified.is_none_or(|m| m < cutoff)
    }
}

/// How often a conditional write of an owner's active record is tried before giving up.
const RESERVE_TRIES: usize = 64;
/// An entry younger than this is never dropped as stale: its job record may still be on its
/// way.
const STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(120);

/// The owner's active jobs (`active/<owner hash>.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct ActiveRecord {
    jobs: Vec<ActiveEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActiveEntry {
    id: String,
    at: DateTime<Utc>,
}

/// A short random pause before trying a conditional write again, so racing writers spread out.
async fn backoff(try_no: usize) {
    let ms = (5 * (try_no as u64 + 1)).min(100);
    let jitter = rand::random::<u64>() % (ms + 1);
    tokio::time::sleep(Duration::from_millis(ms / 2 + jitter)).await;
}

pub struct AzureJobStore {
    container: BlobContainerClient,
    /// The last version seen of each record: its ETag and content. Only a saving (a read
    /// that finds it unchanged costs a 304 without a body), so it is bounded: see `remember`.
    seen: Mutex<HashMap<String, (Etag, Job)>>,
    /// The most records `seen` keeps.
    cache_limit: usize,
    /// Whether the migration of old records into the expiry index is done, and else where
    /// its listing of `jobs/` continues.
    migration: tokio::sync::Mutex<Migration>,
}

#[derive(Debug, Default)]
struct Migration {
    done: bool,
    marker: Option<String>,
}

/// Records a store remembers by default: far more than a web instance follows at once, and a
/// few megabytes at most.
pub const CACHE_LIMIT: usize = 10_000;

fn hashed(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

fn record_name(id: &str) -> Result<String, StoreError> {
    // Ids are made by the server, but they also arrive in URLs: refuse anything odd.
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StoreError::NotFound);
    }
    Ok(format!("jobs/{id}.json"))
}

fn unavailable(what: &str, e: azure_core::Error) -> StoreError {
    StoreError::Unavailable(explain(what, &e))
}

impl AzureJobStore {
    pub fn new(container: BlobContainerClient) -> Self {
        Self {
            container,
            seen: Mutex::new(HashMap::new()),
            cache_limit: CACHE_LIMIT,
            migration: Default::default(),
        }
    }

    /// The same store remembering at most `limit` records.
    pub fn with_cache_limit(mut self, limit: usize) -> Self {
        self.cache_limit = limit.max(1);
        self
    }

    /// Records remembered now.
    pub fn cached(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    /// Remembers the version of a record just read or written. Past the limit, finished jobs
    /// (which nobody follows) are forgotten first, then everything else but this one: a
    /// forgotten record costs one full read the next time, never a wrong answer, because
    /// every write is still conditional on the ETag of a fresh read.
    fn remember(&self, id: &str, etag: Etag, job: &Job) {
        let mut seen = self.seen.lock().expect("lock");
        seen.insert(id.to_string(), (etag, job.clone()));
        if seen.len() > self.cache_limit {
            seen.retain(|k, (_, j)| k == id || !j.status.is_final());
        }
        if seen.len() > self.cache_limit {
            seen.retain(|k, _| k == id);
        }
    }

    /// Creates the container if missing (an existing one is not an error).
    pub async fn ensure(&self) -> Result<(), String> {
        match timed("creating the jobs container", self.container.create(None)).await? {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e).0 == Some(409) => Ok(()),
            Err(e) => Err(explain("creating the jobs container", &e)),
        }
    }

    /// Writes a blob; `create_only` fails with `Conflict` if it exists, `if_match` if it changed.
    async fn put(
        &self,
        name: &str,
        body: Vec<u8>,
        create_only: bool,
        if_match: Option<Etag>,
    ) -> Result<Option<Etag>, StoreError> {
        let mut options = BlobClientUploadOptions {
            blob_content_type: Some("application/json".into()),
            if_match,
            ..Default::default()
        };
        if create_only {
            options = options.if_not_exists();
        }
        let result = timed(
            "writing a job record",
            self.container
                .blob_client(name)
                .upload(RequestContent::from(body), Some(options)),
        )
        .await
        .map_err(StoreError::Unavailable)?;
        match result {
            Ok(r) => Ok(r.etag),
            Err(e) if matches!(status_of(&e).0, Some(409 | 412)) => Err(StoreError::Conflict),
            Err(e) => Err(unavailable("writing a job record", e)),
        }
    }

    async fn read_text(&self, name: &str) -> Result<Option<(Vec<u8>, Option<Etag>)>, StoreError> {
        match timed(
            "reading a job record",
            self.container.blob_client(name).download(None),
        )
        .await
        .map_err(StoreError::Unavailable)?
        {
            Ok(d) => {
                let etag = d.properties.etag.clone();
                let body = d
                    .body
                    .collect()
                    .await
                    .map_err(|e| unavailable("reading a job record", e))?;
                Ok(Some((body.to_vec(), etag)))
            }
            Err(e) if status_of(&e).0 == Some(404) => Ok(None),
            Err(e) => Err(unavailable("reading a job record", e)),
        }
    }

    async fn names(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<time::OffsetDateTime>)>, StoreError> {
        let mut out = Vec::new();
        self.scan(prefix, |name, modified| {
            out.push((name, modified));
            true
        })
        .await?;
        Ok(out)
    }

    /// Lists the blobs under `prefix` in name order, page by page, while `visit` (given each
    /// name and its last-modified time) returns `true`: no page past the last one it wants is
    /// asked for.
    async fn scan(
        &self,
        prefix: &str,
        mut visit: impl FnMut(String, Option<time::OffsetDateTime>) -> bool,
    ) -> Result<(), StoreError> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(prefix.to_string()),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| unavailable("listing job records", e))?;
        loop {
            let next = timed("listing job records", pager.try_next())
                .await
                .map_err(StoreError::Unavailable)?;
            match next {
                Ok(Some(item)) => {
                    let modified = item.properties.as_ref().and_then(|p| p.last_modified);
                    if let Some(name) = item.name {
                        if !visit(name, modified) {
                            return Ok(());
                        }
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(unavailable("listing job records", e)),
            }
        }
    }

    /// Deletes a blob; one already gone is not an error.
    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match timed(
            "deleting a job record",
            self.container.blob_client(name).delete(None),
        )
        .await
        .map_err(StoreError::Unavailable)?
        {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e).0 == Some(404) => Ok(()),
            Err(e) => Err(unavailable("deleting a job record", e)),
        }
    }

    /// Deletes an index entry the sweep found wrong; a failure leaves it for the next sweep.
    async fn drop_entry(&self, entry: &IndexEntry) {
        if let Err(e) = self.delete(&entry.name).await {
            tracing::warn!(entry = %entry.name, "cannot delete an index entry: {e}");
        }
    }

    /// The entries of the index under `prefix` stamped before `before`, oldest first, at most
    /// `limit`: the listing stops at the first later name, so later entries cost nothing.
    async fn due(
        &self,
        prefix: &str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<IndexEntry>, StoreError> {
        let cut = stamp(before);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.scan(prefix, |name, modified| {
            let Some((at, id)) = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.split_once('/'))
            else {
                return true;
            };
            if at >= cut.as_str() {
                return false;
            }
            out.push(IndexEntry {
                id: id.to_string(),
                modified,
                name: name.clone(),
            });
            out.len() < limit
        })
        .await?;
        Ok(out)
    }

    /// The records of `entries`, read 16 at a time.
    async fn records_of(
        &self,
        entries: Vec<IndexEntry>,
    ) -> Result<Vec<(IndexEntry, Option<Job>)>, StoreError> {
        futures::stream::iter(entries)
            .map(|entry| async move {
                match self.get(&entry.id).await {
                    Ok(job) => Ok((entry, job)),
                    Err(StoreError::NotFound) => Ok((entry, None)),
                    Err(e) => Err(e),
                }
            })
            .buffered(16)
            .try_collect()
            .await
    }

    fn active_name(owner: &str) -> String {
        format!("active/{}.json", hashed(owner))
    }

    async fn read_active(&self, owner: &str) -> Result<(ActiveRecord, Option<Etag>), StoreError> {
        match self.read_text(&Self::active_name(owner)).await? {
            None => Ok((ActiveRecord::default(), None)),
            Some((body, etag)) => {
                let record = serde_json::from_slice(&body).map_err(|e| {
                    StoreError::Unavailable(format!("unreadable active-jobs record: {e}"))
                })?;
                Ok((record, etag))
            }
        }
    }

    /// Writes the record if it is still the version read (`etag`), or creates it if none was.
    async fn write_active(
        &self,
        owner: &str,
        record: &ActiveRecord,
        etag: Option<Etag>,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec(record).expect("records serialise");
        let create_only = etag.is_none();
        self.put(&Self::active_name(owner), body, create_only, etag)
            .await
            .map(|_| ())
    }

    /// Adds `id` to the owner's active jobs if there is room for it (or it is there already).
    async fn reserve(&self, owner: &str, id: &str, max_active: usize) -> Result<(), StoreError> {
        for try_no in 0..RESERVE_TRIES {
            let (mut record, etag) = self.read_active(owner).await?;
            if record.jobs.iter().any(|e| e.id == id) {
                return Ok(());
            }
            if record.jobs.len() >= max_active {
                self.drop_stale(&mut record).await?;
                if record.jobs.len() >= max_active {
                    return Err(StoreError::LimitReached {
                        active: record.jobs.len(),
                    });
                }
            }
            record.jobs.push(ActiveEntry {
                id: id.to_string(),
                at: Utc::now(),
            });
            match self.write_active(owner, &record, etag).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict) => backoff(try_no).await,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    /// Removes entries whose job is final or gone (left by a process that died between
    /// writing the job and the active record); only called on a full record, so it reads at
    /// most `max_active` job records.
    async fn drop_stale(&self, record: &mut ActiveRecord) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut kept = Vec::with_capacity(record.jobs.len());
        for entry in record.jobs.drain(..) {
            if now - entry.at < STALE_AFTER {
                kept.push(entry);
                continue;
            }
            match self.get(&entry.id).await {
                Ok(Some(job)) if !job.status.is_active() => {}
                Ok(None) | Err(StoreError::NotFound) => {}
                Ok(Some(_)) => kept.push(entry),
                Err(e) => return Err(e),
            }
        }
        record.jobs = kept;
        Ok(())
    }

    /// Removes `id` from the owner's active jobs.
    async fn release(&self, owner: &str, id: &str) -> Result<(), StoreError> {
        for try_no in 0..RESERVE_TRIES {
            let (mut record, etag) = self.read_active(owner).await?;
            let before = record.jobs.len();
            record.jobs.retain(|e| e.id != id);
            if record.jobs.len() == before {
                return Ok(());
            }
            match self.write_active(owner, &record, etag).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict) => backoff(try_no).await,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    /// Releases after a write that ended the job; a failure only leaves an entry that the
    /// next full reservation drops.
    async fn release_logged(&self, owner: &str, id: &str) {
        if let Err(e) = self.release(owner, id).await {
            tracing::warn!(job = %id, "cannot update the owner's active jobs: {e}");
        }
    }

    async fn get_many(&self, ids: Vec<String>) -> Result<Vec<Job>, StoreError> {
        let jobs: Vec<Result<Option<Job>, StoreError>> = futures::stream::iter(ids)
            .map(|id| async move { self.get(&id).await })
            .buffered(16)
            .collect()
            .await;
        let mut out = Vec::new();
        for j in jobs {
            out.extend(j?);
        }
        Ok(out)
    }
}

#[async_trait]
impl JobStore for AzureJobStore {
    async fn create(
        &self,
        job: &Job,
        idempotency_key: Option<&str>,
        max_active: usize,
    ) -> Result<(Job, bool), StoreError> {
        let owner = hashed(&job.owner);
        let name = record_name(&job.id)?;
        if let Some(key) = idempotency_key {
            // A repeated submit returns the first job even when the owner is at the limit.
            if let Some(existing) = self.find_by_key(&job.owner, key).await? {
                return Ok((existing, false));
            }
        }
        let limited = job.status.is_active() && max_active != usize::MAX;
        if limited {
            self.reserve(&job.owner, &job.id, max_active).await?;
        }
        let key_name = idempotency_key.map(|key| format!("keys/{owner}/{}", hashed(key)));
        let written: Result<Option<Etag>, StoreError> = async {
            if let Some(key_name) = &key_name {
                self.put(key_name, job.id.clone().into_bytes(), true, None)
                    .await?;
            }
            // A job stored final already needs its expiry entry, written first (module doc).
            if let Some(entry) = expiry_name(job) {
                self.put(&entry, Vec::new(), false, None).await?;
            }
            let mut record = job.clone();
            record.revision = 1;
            self.put(
                &name,
                serde_json::to_vec(&record).expect("jobs serialise"),
                true,
                None,
            )
            .await
        }
        .await;
        let etag = match written {
            Ok(etag) => etag,
            Err(e) => {
                if limited {
                    self.release_logged(&job.owner, &job.id).await;
                }
                if let (StoreError::Conflict, Some(key)) = (&e, idempotency_key) {
                    // The same key won a race with this submit: that job is the answer.
                    if let Some(existing) = self.find_by_key(&job.owner, key).await? {
                        return Ok((existing, false));
                    }
                }
                return Err(e);
            }
        };
        let mut job = job.clone();
        job.revision = 1;
        // The owner index entry names the key blob, so that a purge deletes that one too
        // (`-` for none: reading an empty blob costs a second request).
        self.put(
            &format!("owners/{owner}/{}", job.id),
            key_name.unwrap_or_else(|| "-".into()).into_bytes(),
            false,
            None,
        )
        .await?;
        if let Some(etag) = etag {
            self.remember(&job.id, etag, &job);
        }
        Ok((job, true))
    }

    async fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let name = record_name(id)?;
        let known = self.seen.lock().expect("lock").get(id).cloned();
        let options = BlobClientDownloadOptions {
            if_none_match: known.as_ref().map(|(e, _)| e.clone()),
            ..Default::default()
        };
        match timed(
            "reading a job record",
            self.container.blob_client(&name).download(Some(options)),
        )
        .await
        .map_err(StoreError::Unavailable)?
        {
            Ok(d) => {
                let etag = d.properties.etag.clone();
                let body = d
                    .body
                    .collect()
                    .await
                    .map_err(|e| unavailable("reading a job record", e))?;
                let job: Job = serde_json::from_slice(&body).map_err(|e| {
                    StoreError::Unavailable(format!("unreadable job record {id}: {e}"))
                })?;
                if let Some(etag) = etag {
                    self.remember(id, etag, &job);
                }
                Ok(Some(job))
            }
            Err(e) if status_of(&e).0 == Some(304) => Ok(known.map(|(_, job)| job)),
            Err(e) if status_of(&e).0 == Some(404) => {
                self.seen.lock().expect("lock").remove(id);
                Ok(None)
            }
            Err(e) => Err(unavailable("reading a job record", e)),
        }
    }

    async fn find_by_key(&self, owner: &str, key: &str) -> Result<Option<Job>, StoreError> {
        let name = format!("keys/{}/{}", hashed(owner), hashed(key));
        match self.read_text(&name).await? {
            Some((id, _)) => self.get(&String::from_utf8_lossy(&id)).await,
            None => Ok(None),
        }
    }

    async fn list(&self, owner: &str, limit: usize) -> Result<Vec<Job>, StoreError> {
        let ids = self.list_ids(owner, limit).await?;
        self.get_many(ids).await
    }

    async fn list_ids(&self, owner: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let prefix = format!("owners/{}/", hashed(owner));
        let mut ids: Vec<String> = self
            .names(&prefix)
            .await?
            .into_iter()
            .filter_map(|(name, _)| name.strip_prefix(&prefix).map(str::to_string))
            .collect();
        // Ids are time-ordered (UUIDv7): newest first is reverse name order.
        ids.sort_by(|a, b| b.cmp(a));
        ids.truncate(limit);
        Ok(ids)
    }

    async fn update(&self, job: &Job) -> Result<Job, StoreError> {
        let name = record_name(&job.id)?;
        let cached = self.seen.lock().expect("lock").get(&job.id).cloned();
        let (etag, prev) = match cached {
            Some((etag, stored)) if stored.revision == job.revision => (etag, stored),
            _ => {
                let current = self.get(&job.id).await?.ok_or(StoreError::NotFound)?;
                if current.revision != job.revision {
                    return Err(StoreError::Conflict);
                }
                let etag = self
                    .seen
                    .lock()
                    .expect("lock")
                    .get(&job.id)
                    .map(|(e, _)| e.clone())
                    .ok_or(StoreError::Conflict)?;
                (etag, current)
            }
        };
        let was_active = prev.status.is_active();
        let mut next = job.clone();
        next.revision = job.revision + 1;
        // Index entries go first, so that no final record is ever without its entry (see the
        // module doc); if the record write then fails, the sweep deletes the extra entry.
        let old_entry = expiry_name(&prev);
        if let Some(entry) = expiry_name(&next).filter(|e| Some(e) != old_entry.as_ref()) {
            self.put(&entry, Vec::new(), false, None).await?;
        }
        let expiring = next.status == JobStatus::Expired && prev.status != JobStatus::Expired;
        if expiring {
            self.put(&purge_name(Utc::now(), &next.id), Vec::new(), false, None)
                .await?;
        }
        let new_etag = self
            .put(
                &name,
                serde_json::to_vec(&next).expect("jobs serialise"),
                false,
                Some(etag),
            )
            .await?;
        if let Some(etag) = new_etag {
            self.remember(&job.id, etag, &next);
        }
        if was_active && !next.status.is_active() {
            self.release_logged(&next.owner, &next.id).await;
        }
        if let (true, Some(entry)) = (expiring, old_entry) {
            // Lost (a crash, an error): the sweep finds the record expired and deletes it.
            if let Err(e) = self.delete(&entry).await {
                tracing::warn!(job = %next.id, "cannot delete the expiry index entry: {e}");
            }
        }
        Ok(next)
    }

    async fn reactivate(&self, job: &Job, max_active: usize) -> Result<Job, StoreError> {
        let limited = job.status.is_active() && max_active != usize::MAX;
        if limited {
            self.reserve(&job.owner, &job.id, max_active).await?;
        }
        match self.update(job).await {
            Ok(stored) => Ok(stored),
            Err(e) => {
                // Keep the entry if a concurrent retry made the job active after all.
                let active_now =
                    matches!(self.get(&job.id).await, Ok(Some(j)) if j.status.is_active());
                if limited && !active_now {
                    self.release_logged(&job.owner, &job.id).await;
                }
                Err(e)
            }
        }
    }

    async fn active_count(&self, owner: &str) -> Result<usize, StoreError> {
        Ok(self.read_active(owner).await?.0.jobs.len())
    }

    async fn finished_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let entries = self.due("expiry/", before, limit).await?;
        let mut jobs = Vec::new();
        for (entry, job) in self.records_of(entries).await? {
            match job {
                // The entry this record needs: the job is due.
                Some(job) if expiry_name(&job).as_deref() == Some(entry.name.as_str()) => {
                    jobs.push(job)
                }
                // Still on its way to the state the entry was written for (or a crash left
                // it behind): only a settled entry is deleted.
                Some(job) if job.status.is_active() => {
                    if entry.settled() {
                        self.drop_entry(&entry).await;
                    }
                }
                // Gone, expired already, or finished again later (under a newer entry).
                _ => self.drop_entry(&entry).await,
            }
        }
        Ok(jobs)
    }

    async fn purge_expired(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let entries = self.due("purge/", before, limit).await?;
        let mut purged = 0;
        for (entry, job) in self.records_of(entries).await? {
            match job {
                Some(job) if job.status == JobStatus::Expired => {
                    // Everything that points to the record goes before it, the entry last: a
                    // crash on the way leaves the entry, and the next sweep finishes the work.
                    let owner_entry = format!("owners/{}/{}", hashed(&job.owner), job.id);
                    if let Some((key, _)) = self.read_text(&owner_entry).await? {
                        let key = String::from_utf8_lossy(&key).into_owned();
                        if key.starts_with("keys/") {
                            self.delete(&key).await?;
                        }
                    }
                    self.delete(&owner_entry).await?;
                    self.delete(&record_name(&job.id)?).await?;
                    self.seen.lock().expect("lock").remove(&job.id);
                    self.delete(&entry.name).await?;
                    purged += 1;
                }
                Some(_) => {
                    // Left by an expiry write that failed or never came.
                    if entry.settled() {
                        self.drop_entry(&entry).await;
                    }
                }
                None => self.drop_entry(&entry).await,
            }
        }
        Ok(purged)
    }

    async fn migrate(&self, budget: usize) -> Result<bool, StoreError> {
        let mut state = self.migration.lock().await;
        if state.done {
            return Ok(true);
        }
        if state.marker.is_none() && self.read_text(MIGRATION_MARKER).await?.is_some() {
            state.done = true;
            return Ok(true);
        }
        // One page of `jobs/` per call, continued from where the last call stopped.
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some("jobs/".to_string()),
            marker: state.marker.clone(),
            maxresults: Some(budget.clamp(1, 5000) as i32),
            ..Default::default()
        };
        let mut pages = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| unavailable("listing job records", e))?
            .into_pages();
        let page = match timed("listing job records", pages.try_next())
            .await
            .map_err(StoreError::Unavailable)?
        {
            Ok(Some(page)) => page
                .into_model()
                .map_err(|e| unavailable("listing job records", e))?,
            Ok(None) => Default::default(),
            Err(e) => return Err(unavailable("listing job records", e)),
        };
        let ids: Vec<String> = page
            .blob_items
            .into_iter()
            .filter_map(|item| {
                item.name?
                    .strip_prefix("jobs/")?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect();
        let now = Utc::now();
        for job in self.get_many(ids).await? {
            // An old expired record's expiry time is unknown: its grace starts now, so it is
            // never deleted earlier than it would have been.
            let entry = match job.status {
                JobStatus::Expired => Some(purge_name(now, &job.id)),
                _ => expiry_name(&job),
            };
            if let Some(entry) = entry {
                self.put(&entry, Vec::new(), false, None).await?;
            }
        }
        state.marker = page.next_marker.filter(|m| !m.is_empty());
        if state.marker.is_none() {
            // Not empty: reading an empty blob costs a second request.
            self.put(MIGRATION_MARKER, b"1".to_vec(), false, None)
                .await?;
            state.done = true;
        }
        Ok(state.done)
    }

    async fn search(
        &self,
        filter: &super::JobFilter,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        // An owner's jobs come from their index; anyone's from the listing of all records.
        let mut ids: Vec<String> = match &filter.owner {
            Some(owner) => {
                let prefix = format!("owners/{}/", hashed(owner));
                self.names(&prefix)
                    .await?
                    .into_iter()
                    .filter_map(|(n, _)| n.strip_prefix(&prefix).map(str::to_string))
                    .collect()
            }
            None => self
                .names("jobs/")
                .await?
                .into_iter()
                .filter_map(|(n, _)| {
                    n.strip_prefix("jobs/")
                        .and_then(|n| n.strip_suffix(".json"))
                        .map(str::to_string)
                })
                .collect(),
        };
        // The id tells the creation time: records older than `since` are never read.
        ids.retain(|id| {
            filter
                .since
                .is_none_or(|s| id_time(id).is_none_or(|t| t >= s - STALE_AFTER))
                && filter.cursor.as_ref().is_none_or(|c| {
                    if filter.oldest_first {
                        id > c
                    } else {
                        id < c
                    }
                })
        });
        ids.sort();
        if !filter.oldest_first {
            ids.reverse();
        }
        let mut out = Vec::new();
        for chunk in ids.chunks(64).take(SEARCH_READS / 64) {
            for job in self.get_many(chunk.to_vec()).await? {
                if filter.matches(&job) {
                    out.push(job);
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed(
            "reading the jobs container",
            self.container.get_properties(None),
        )
        .await
        .map_err(StoreError::Unavailable)?
        .map_err(|e| unavailable("reading the jobs container", e))?;
        Ok(())
    }
}
