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
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(prefix.to_string()),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| unavailable("listing job records", e))?;
        let mut out = Vec::new();
        loop {
            let next = timed("listing job records", pager.try_next())
                .await
                .map_err(StoreError::Unavailable)?;
            match next {
                Ok(Some(item)) => {
                    let modified = item.properties.as_ref().and_then(|p| p.last_modified);
                    if let Some(name) = item.name {
                        out.push((name, modified));
                    }
                }
                Ok(None) => return Ok(out),
                Err(e) => return Err(unavailable("listing job records", e)),
            }
        }
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
        let written: Result<Option<Etag>, StoreError> = async {
            if let Some(key) = idempotency_key {
                let key_name = format!("keys/{owner}/{}", hashed(key));
                self.put(&key_name, job.id.clone().into_bytes(), true, None)
                    .await?;
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
        self.put(
            &format!("owners/{owner}/{}", job.id),
            Vec::new(),
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
        self.get_many(ids).await
    }

    async fn update(&self, job: &Job) -> Result<Job, StoreError> {
        let name = record_name(&job.id)?;
        let cached = self.seen.lock().expect("lock").get(&job.id).cloned();
        let (etag, was_active) = match cached {
            Some((etag, stored)) if stored.revision == job.revision => {
                (etag, stored.status.is_active())
            }
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
                (etag, current.status.is_active())
            }
        };
        let mut next = job.clone();
        next.revision = job.revision + 1;
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
        // A final record is not written after its job finished, so the listing's last-modified
        // time rules out every recent record without reading it.
        let cutoff = time::OffsetDateTime::from_unix_timestamp(before.timestamp())
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let ids: Vec<String> = self
            .names("jobs/")
            .await?
            .into_iter()
            .filter(|(_, modified)| modified.is_none_or(|m| m < cutoff))
            .filter_map(|(name, _)| {
                name.strip_prefix("jobs/")
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect();
        let mut jobs: Vec<Job> = self
            .get_many(ids)
            .await?
            .into_iter()
            .filter(|j| {
                matches!(
                    j.status,
                    JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
                ) && j.finished_at.is_some_and(|f| f < before)
            })
            .collect();
        jobs.sort_by_key(|j| j.finished_at);
        jobs.truncate(limit);
        Ok(jobs)
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
