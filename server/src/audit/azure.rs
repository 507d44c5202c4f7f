//! The audit trail in Azure Blob Storage: append blobs in the jobs container, one series per
//! UTC day (`audit/<yyyy-mm-dd>/<nnnn>.ndjson`, one JSON entry per line). Appending is one
//! request and never rewrites what is there; an append blob holds at most 50,000 appends, so
//! a busy day continues in the next numbered blob. Retention deletes whole days.

use super::{AuditError, AuditFilter, AuditLog};
use crate::azure::{explain, status_of, timed};
use app::admin::AuditEntry;
use async_trait::async_trait;
use azure_core::http::RequestContent;
use azure_storage_blob::models::{
    AppendBlobClientCreateOptions, BlobContainerClientListBlobsOptions,
};
use azure_storage_blob::BlobContainerClient;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use std::sync::Mutex;

const PREFIX: &str = "audit/";
/// Blobs one listing call reads at most; a page that needs more ends early with a cursor.
const BLOBS_PER_LIST: usize = 32;

pub struct AzureAuditLog {
    container: BlobContainerClient,
    /// The blob of the day being appended to: (day, sequence number).
    current: Mutex<Option<(String, u32)>>,
}

fn unavailable(what: &str, e: azure_core::Error) -> AuditError {
    AuditError(explain(what, &e))
}

/// The day of a blob name (`audit/2026-12-04/0000.ndjson`).
fn day_of(name: &str) -> Option<NaiveDate> {
    let day = name.strip_prefix(PREFIX)?.split('/').next()?;
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

/// The time an entry id was made (UUIDv7: milliseconds in the first 48 bits).
fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let ms = i64::from_str_radix(id.get(..12)?, 16).ok()?;
    DateTime::from_timestamp_millis(ms)
}

impl AzureAuditLog {
    pub fn new(container: BlobContainerClient) -> Self {
        Self {
            container,
            current: Mutex::new(None),
        }
    }

    async fn names(&self) -> Result<Vec<String>, AuditError> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(PREFIX.to_string()),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| unavailable("listing the audit trail", e))?;
        let mut out = Vec::new();
        loop {
            match timed("listing the audit trail", pager.try_next())
                .await
                .map_err(AuditError)?
            {
                Ok(Some(item)) => out.extend(item.name),
                Ok(None) => return Ok(out),
                Err(e) => return Err(unavailable("listing the audit trail", e)),
            }
        }
    }

    async fn read(&self, name: &str) -> Result<Vec<AuditEntry>, AuditError> {
        let what = "reading the audit trail";
        let body = match timed(what, self.container.blob_client(name).download(None))
            .await
            .map_err(AuditError)?
        {
            Ok(d) => d.body.collect().await.map_err(|e| unavailable(what, e))?,
            Err(e) if status_of(&e).0 == Some(404) => return Ok(vec![]),
            Err(e) => return Err(unavailable(what, e)),
        };
        Ok(body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            // A line that does not parse (a torn write cannot happen with appends, but a
            // newer version's entry might) is skipped, not fatal.
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect())
    }
}

#[async_trait]
impl AuditLog for AzureAuditLog {
    async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let what = "appending to the audit trail";
        let day = entry.at.format("%Y-%m-%d").to_string();
        let mut line = serde_json::to_vec(entry).expect("entries serialise");
        line.push(b'\n');
        let mut seq = match &*self.current.lock().expect("lock") {
            Some((d, n)) if *d == day => *n,
            _ => 0,
        };
        for _ in 0..64 {
            let blob = self
                .container
                .blob_client(&format!("{PREFIX}{day}/{seq:04}.ndjson"))
                .append_blob_client();
            let appended = timed(
                what,
                blob.append_block(RequestContent::from(line.clone()), line.len() as u64, None),
            )
            .await
            .map_err(AuditError)?;
            match appended {
                Ok(_) => {
                    *self.current.lock().expect("lock") = Some((day, seq));
                    return Ok(());
                }
                Err(e) if status_of(&e).0 == Some(404) => {
                    let created = timed(
                        what,
                        blob.create(Some(
                            AppendBlobClientCreateOptions {
                                blob_content_type: Some("application/x-ndjson".into()),
                                ..Default::default()
                            }
                            .if_not_exists(),
                        )),
                    )
                    .await
                    .map_err(AuditError)?;
                    match created {
                        Ok(_) => {}
                        Err(e) if matches!(status_of(&e).0, Some(409 | 412)) => {}
                        Err(e) => return Err(unavailable(what, e)),
                    }
                }
                // The blob is full (50,000 appends) or sealed: the day goes on in the next.
                Err(e) if status_of(&e).0 == Some(409) => seq += 1,
                Err(e) => return Err(unavailable(what, e)),
            }
        }
        Err(AuditError(
            "appending to the audit trail: no writable blob for today".into(),
        ))
    }

    async fn list(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        let newest_day = filter
            .before
            .as_deref()
            .and_then(id_time)
            .map(|t| t.date_naive());
        let oldest_day = filter.since.map(|t| t.date_naive());
        let mut names: Vec<String> = self
            .names()
            .await?
            .into_iter()
            .filter(|n| {
                day_of(n).is_some_and(|d| {
                    newest_day.is_none_or(|n| d <= n) && oldest_day.is_none_or(|o| d >= o)
                })
            })
            .collect();
        names.sort_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        for name in names.iter().take(BLOBS_PER_LIST) {
            let mut entries: Vec<AuditEntry> = self
                .read(name)
                .await?
                .into_iter()
                .filter(|e| filter.matches(e))
                .collect();
            entries.sort_by(|a, b| b.id.cmp(&a.id));
            out.extend(entries);
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, AuditError> {
        // Whole days only: a day is deleted once all of it is older than `before`.
        let cutoff = before.date_naive();
        let mut removed = 0;
        for name in self.names().await? {
            if day_of(&name).is_some_and(|d| d < cutoff) {
                let what = "deleting old audit entries";
                match timed(what, self.container.blob_client(&name).delete(None))
                    .await
                    .map_err(AuditError)?
                {
                    Ok(_) => removed += 1,
                    Err(e) if status_of(&e).0 == Some(404) => {}
                    Err(e) => return Err(unavailable(what, e)),
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_carry_their_day_and_ids_their_time() {
        assert_eq!(
            day_of("audit/2026-12-04/0003.ndjson"),
            NaiveDate::from_ymd_opt(2026, 12, 4)
        );
        assert_eq!(day_of("jobs/abc.json"), None);
        let id = super::super::new_id();
        let t = id_time(&id).unwrap();
        assert!((Utc::now() - t).num_seconds().abs() < 5);
    }
}
