//! The Azure job store's housekeeping against Azurite: expiry through the time-ordered index
//! (never a listing of every record), deletion after the grace period, the migration of
//! records written before the index existed, and what these cost in storage requests, counted
//! by the clients' own pipeline (`exportal_storage_requests_total`).

use crate::azure::{blob_store, job, settings};
use app::jobs::{Job, JobStatus};
use azure_core::http::RequestContent;
use chrono::{Duration as TimeDelta, Utc};
use futures::StreamExt;
use server::azure::{self, AzureSettings};
use server::blobs::{BlobMeta, BlobStore};
use server::jobs::azure::AzureJobStore;
use server::jobs::{JobStore, Jobs};
use server::live::Hub;
use server::metrics::storage_requests;
use server::sweep::{SweepConfig, Sweeper};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const METHODS: [&str; 5] = ["GET", "HEAD", "PUT", "POST", "DELETE"];

/// Every storage request counted so far in this process, by (service, method).
pub(crate) fn requests() -> BTreeMap<(&'static str, &'static str), u64> {
    let mut out = BTreeMap::new();
    for service in ["blob", "queue"] {
        for method in METHODS {
            out.insert((service, method), storage_requests(service, method));
        }
    }
    out
}

/// The requests made since `before`, without the zeros: `blob GET=2 PUT=1`.
pub(crate) fn since(before: &BTreeMap<(&'static str, &'static str), u64>) -> String {
    let now = requests();
    let parts: Vec<String> = now
        .iter()
        .filter_map(|(k, n)| {
            let d = n - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{} {}={d}", k.0, k.1))
        })
        .collect();
    parts.join(" ")
}

/// `job` stored final with `status`, as having finished at `at` (written the way a worker
/// writes it: an update of the queued record).
async fn finished(
    store: &AzureJobStore,
    owner: &str,
    status: JobStatus,
    at: chrono::DateTime<Utc>,
    key: Option<&str>,
) -> Job {
    let (mut j, _) = store.create(&job(owner), key, 100).await.unwrap();
    j.status = status;
    j.finished_at = Some(at);
    store.update(&j).await.unwrap()
}

struct Fixture {
    settings: AzureSettings,
    store: Arc<AzureJobStore>,
    sweeper: Sweeper,
    files: Arc<dyn BlobStore>,
}

async fn fixture() -> Fixture {
    let s = settings();
    let store = Arc::new(AzureJobStore::new(azure::clients(&s).unwrap().jobs));
    store.ensure().await.unwrap();
    let files: Arc<dyn BlobStore> = Arc::new(blob_store(&|| azure::clients(&s).unwrap()).await);
    let sweeper = Sweeper {
        jobs: Jobs::new(store.clone(), Hub::new()),
        blobs: files.clone(),
        config: SweepConfig {
            retention: Duration::from_secs(7 * 86_400),
            grace: Duration::from_secs(30 * 86_400),
            ..SweepConfig::default()
        },
    };
    Fixture {
        settings: s,
        store,
        sweeper,
        files,
    }
}

/// The names of the blobs in the jobs container under `prefix`.
async fn names(s: &AzureSettings, prefix: &str) -> Vec<String> {
    let container = azure::clients(s).unwrap().jobs;
    let options = azure_storage_blob::models::BlobContainerClientListBlobsOptions {
        prefix: Some(prefix.to_string()),
        ..Default::default()
    };
    let mut pager = container.list_blobs(Some(options)).unwrap();
    let mut out = Vec::new();
    while let Some(item) = pager.next().await {
        out.extend(item.unwrap().name);
    }
    out
}

/// Writes `job` as a bare record, the way a version without the indexes left it.
async fn legacy_record(s: &AzureSettings, job: &Job) {
    let container = azure::clients(s).unwrap().jobs;
    container
        .blob_client(&format!("jobs/{}.json", job.id))
        .upload(RequestContent::from(serde_json::to_vec(job).unwrap()), None)
        .await
        .unwrap();
}

fn legacy_job(status: JobStatus, finished_days_ago: i64) -> Job {
    let mut j = job("old");
    j.revision = 3;
    j.status = status;
    j.finished_at = Some(Utc::now() - TimeDelta::days(finished_days_ago));
    j
}

#[tokio::test]
async fn azure_expiry_reads_only_due_index_entries_and_an_idle_tick_costs_two_listings() {
    let f = fixture().await;
    // Nothing to migrate: the marker is written at once.
    assert!(f.store.migrate(100).await.unwrap());
    let old = finished(
        &f.store,
        "alice",
        JobStatus::Succeeded,
        Utc::now() - TimeDelta::days(8),
        None,
    )
    .await;
    let meta = BlobMeta {
        content_type: "text/csv".into(),
        filename: "orders.csv".into(),
    };
    let file = server::export::blob_name(&old);
    let body = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"id\r\n1\r\n"))]).boxed();
    f.files.put(&file, &meta, body).await.unwrap();
    let recent = finished(
        &f.store,
        "alice",
        JobStatus::Failed,
        Utc::now() - TimeDelta::days(1),
        None,
    )
    .await;
    // A decoy: an old final record without an index entry (the migration already ran). A
    // sweep that listed `jobs/` would read and expire it.
    let decoy = legacy_job(JobStatus::Failed, 30);
    legacy_record(&f.settings, &decoy).await;

    let before = requests();
    let tick = f.sweeper.tick(Utc::now()).await;
    println!("a tick that expires one job: {}", since(&before));
    assert_eq!((tick.expired, tick.purged, tick.more), (1, 0, false));
    assert_eq!(
        f.store.get(&old.id).await.unwrap().unwrap().status,
        JobStatus::Expired
    );
    assert_eq!(
        f.files.size(&file).await.unwrap(),
        None,
        "the file is removed"
    );
    assert_eq!(
        f.store.get(&recent.id).await.unwrap().unwrap().status,
        JobStatus::Failed,
        "a recent job is untouched"
    );
    assert_eq!(
        f.store.get(&decoy.id).await.unwrap().unwrap().status,
        JobStatus::Failed,
        "the sweep never read records outside its index"
    );
    // The expired job left the expiry index and entered the purge index.
    let expiry = names(&f.settings, "expiry/").await;
    assert_eq!(expiry.len(), 1, "{expiry:?}");
    assert!(expiry[0].ends_with(&recent.id));
    let purge = names(&f.settings, "purge/").await;
    assert_eq!(purge.len(), 1);
    assert!(purge[0].ends_with(&old.id));

    // Nothing due: one listing of each index, no record read, nothing written.
    let before = requests();
    let tick = f.sweeper.tick(Utc::now()).await;
    assert_eq!((tick.expired, tick.purged, tick.more), (0, 0, false));
    assert_eq!(
        since(&before),
        "blob GET=2",
        "an idle tick costs two listings"
    );
    let before = requests();
    assert!(f
        .store
        .finished_before(Utc::now() - TimeDelta::days(7), 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(since(&before), "blob GET=1", "one listing, no read");
}

#[tokio::test]
async fn azure_active_count_is_one_read_whatever_the_history() {
    let f = fixture().await;
    for _ in 0..5 {
        finished(
            &f.store,
            "alice",
            JobStatus::Succeeded,
            Utc::now() - TimeDelta::days(1),
            None,
        )
        .await;
    }
    f.store.create(&job("alice"), None, 100).await.unwrap();
    let before = requests();
    assert_eq!(f.store.active_count("alice").await.unwrap(), 1);
    assert_eq!(
        since(&before),
        "blob GET=1",
        "one read of the active record, no listing"
    );
}

#[tokio::test]
async fn azure_expired_records_are_deleted_after_the_grace_period_with_their_key_and_index() {
    let f = fixture().await;
    f.store.migrate(100).await.unwrap();
    let gone = finished(
        &f.store,
        "alice",
        JobStatus::Cancelled,
        Utc::now() - TimeDelta::days(8),
        Some("key-1"),
    )
    .await;
    let kept = finished(
        &f.store,
        "alice",
        JobStatus::Succeeded,
        Utc::now() - TimeDelta::days(1),
        None,
    )
    .await;
    let tick = f.sweeper.tick(Utc::now()).await;
    assert_eq!((tick.expired, tick.purged), (1, 0));
    // Within the grace period the record is kept, shown as expired.
    assert_eq!(
        f.store
            .purge_expired(Utc::now() - TimeDelta::days(1), 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.store.get(&gone.id).await.unwrap().unwrap().status,
        JobStatus::Expired
    );

    let later = Utc::now() + TimeDelta::days(31);
    let before = requests();
    let purged = f.store.purge_expired(later, 100).await.unwrap();
    println!("purging one record: {}", since(&before));
    assert_eq!(purged, 1);
    assert_eq!(f.store.get(&gone.id).await.unwrap(), None, "unknown now");
    let listed: Vec<String> = f
        .store
        .list("alice", 50)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![kept.id.clone()], "the owner's list forgets it");
    assert!(f
        .store
        .find_by_key("alice", "key-1")
        .await
        .unwrap()
        .is_none());
    for prefix in ["purge/", "owners/", "keys/", "expiry/"] {
        let left: Vec<String> = names(&f.settings, prefix)
            .await
            .into_iter()
            .filter(|n| n.contains(&gone.id) || (prefix == "keys/"))
            .collect();
        assert!(left.is_empty(), "{prefix}: {left:?}");
    }
    // The key may be used again.
    let (again, fresh) = f
        .store
        .create(&job("alice"), Some("key-1"), 100)
        .await
        .unwrap();
    assert!(fresh && again.id != gone.id);
    // Purging again is harmless: nothing is due.
    assert_eq!(f.store.purge_expired(later, 100).await.unwrap(), 0);
}

#[tokio::test]
async fn azure_stale_index_entries_are_dropped_and_a_retried_job_expires_once() {
    let f = fixture().await;
    f.store.migrate(100).await.unwrap();
    // Failed long ago, then retried and finished again recently: its first entry is stale.
    let mut j = finished(
        &f.store,
        "alice",
        JobStatus::Failed,
        Utc::now() - TimeDelta::days(9),
        None,
    )
    .await;
    j.status = JobStatus::Queued;
    j.finished_at = None;
    let j = f.store.update(&j).await.unwrap();
    let mut again = j.clone();
    again.status = JobStatus::Succeeded;
    again.finished_at = Some(Utc::now() - TimeDelta::days(1));
    f.store.update(&again).await.unwrap();
    assert_eq!(names(&f.settings, "expiry/").await.len(), 2);
    let due = f
        .store
        .finished_before(Utc::now() - TimeDelta::days(7), 100)
        .await
        .unwrap();
    assert!(due.is_empty(), "finished again since: not due");
    let left = names(&f.settings, "expiry/").await;
    assert_eq!(left.len(), 1, "the stale entry was dropped: {left:?}");
    // An entry whose record is missing is dropped too.
    let container = azure::clients(&f.settings).unwrap().jobs;
    let orphan = format!("expiry/20200101000000000/{}", job("x").id);
    container
        .blob_client(&orphan)
        .upload(RequestContent::from(Vec::new()), None)
        .await
        .unwrap();
    assert!(f
        .store
        .finished_before(Utc::now(), 100)
        .await
        .unwrap()
        .iter()
        .all(|j| j.id == again.id));
    assert!(!names(&f.settings, "expiry/").await.contains(&orphan));
}

#[tokio::test]
async fn azure_records_from_before_the_index_are_migrated_once_in_budgeted_steps() {
    let f = fixture().await;
    let old_done = legacy_job(JobStatus::Succeeded, 10);
    let old_failed = legacy_job(JobStatus::Failed, 9);
    let old_expired = legacy_job(JobStatus::Expired, 40);
    let mut running = legacy_job(JobStatus::Running, 0);
    running.finished_at = None;
    let mut queued = legacy_job(JobStatus::Queued, 0);
    queued.finished_at = None;
    for j in [&old_done, &old_failed, &old_expired, &running, &queued] {
        legacy_record(&f.settings, j).await;
    }
    // Two records per step: two steps with more to do, then done.
    let mut steps = 0;
    while !f.store.migrate(2).await.unwrap() {
        steps += 1;
        assert!(steps < 10);
    }
    assert_eq!(steps, 2, "five records, two per step");
    assert_eq!(
        names(&f.settings, "meta/").await,
        vec!["meta/expiry-index-v1"]
    );
    assert_eq!(names(&f.settings, "expiry/").await.len(), 2);
    assert_eq!(names(&f.settings, "purge/").await.len(), 1);

    // Another instance sees the marker: one read, nothing listed.
    let other = AzureJobStore::new(azure::clients(&f.settings).unwrap().jobs);
    let before = requests();
    assert!(other.migrate(2).await.unwrap());
    assert_eq!(since(&before), "blob GET=1");

    let tick = f.sweeper.tick(Utc::now()).await;
    assert_eq!(tick.expired, 2);
    assert!(tick.migrated);
    for j in [&old_done, &old_failed] {
        assert_eq!(
            f.store.get(&j.id).await.unwrap().unwrap().status,
            JobStatus::Expired
        );
    }
    assert_eq!(
        f.store.get(&running.id).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    // An old expired record's grace counts from the migration.
    assert_eq!(
        f.store
            .purge_expired(Utc::now() + TimeDelta::days(31), 100)
            .await
            .unwrap(),
        3
    );
    assert_eq!(f.store.get(&old_expired.id).await.unwrap(), None);
}

#[tokio::test]
async fn a_tick_that_uses_its_whole_budget_is_followed_by_another() {
    let mut f = fixture().await;
    f.sweeper.config.budget = 2;
    for _ in 0..3 {
        finished(
            &f.store,
            "alice",
            JobStatus::Failed,
            Utc::now() - TimeDelta::days(8),
            None,
        )
        .await;
    }
    let first = f.sweeper.tick(Utc::now()).await;
    assert_eq!((first.expired, first.more), (2, true));
    let second = f.sweeper.tick(Utc::now()).await;
    assert_eq!((second.expired, second.more), (1, false));
}

/// Measures the storage requests of one export's life through the real code path: a web
/// instance and a worker instance on Azurite, then the sweep. Printed for the README; the
/// blob side is exact, the queue side includes the worker's idle polls (queue GET).
#[tokio::test]
async fn the_storage_requests_of_one_exports_life_are_measured() {
    use crate::support::{orders, TestServer};
    let s = settings();
    // EXPORTAL_TEST_MEASURE_ROWS=400000 makes the run long enough to show progress writes.
    let rows = std::env::var("EXPORTAL_TEST_MEASURE_ROWS").unwrap_or_else(|_| "3000".into());
    let mut web_args = crate::azure::settings_args(&s);
    web_args.extend([
        "--role".into(),
        "web".into(),
        "--demo-orders".into(),
        rows.clone(),
    ]);
    let web_args: Vec<&str> = web_args.iter().map(String::as_str).collect();
    let web = TestServer::start(&web_args).await;
    let mut worker_args = crate::azure::settings_args(&s);
    // The default idle poll of a worker (EXPORTAL_POLL_MAX), not the tests' quick one.
    worker_args.extend([
        "--role".into(),
        "worker".into(),
        "--poll-max".into(),
        "2s".into(),
        "--demo-orders".into(),
        rows,
    ]);
    let worker_args: Vec<&str> = worker_args.iter().map(String::as_str).collect();
    let worker = TestServer::start(&worker_args).await;
    // Start-up settles: the first sweep tick (migration marker) and the back-off of polls.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let idle = requests();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cost = since(&idle);
    println!("idle, 10 s, one worker and one web instance: {idle_cost}");

    let alice = web.user("alice");
    let before = requests();
    let job = alice.submit(orders("csv")).await;
    println!("submit: {}", since(&before));
    let id = job["id"].as_str().unwrap().to_string();

    let before = requests();
    alice.job(&id).await;
    let one_read = since(&before);
    println!("one status read (GET /api/v1/exports/<id>): {one_read}");

    let before = requests();
    let started = std::time::Instant::now();
    let mut polls = 0;
    loop {
        polls += 1;
        if alice.job(&id).await["status"] == "succeeded" {
            break;
        }
        assert!(polls < 600, "the export never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "run (queue pick-up to succeeded, {:.1} s), with {polls} status reads of the test: {}",
        started.elapsed().as_secs_f64(),
        since(&before)
    );

    let before = requests();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects
        .get(web.url(&format!("/api/v1/exports/{id}/download")))
        .header("x-forwarded-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    println!("download link: {}", since(&before));
    worker.running.shutdown().await.unwrap();
    web.running.shutdown().await.unwrap();

    let f = {
        let store = Arc::new(AzureJobStore::new(azure::clients(&s).unwrap().jobs));
        let files: Arc<dyn BlobStore> = Arc::new(blob_store(&|| azure::clients(&s).unwrap()).await);
        Sweeper {
            jobs: Jobs::new(store, Hub::new()),
            blobs: files,
            config: SweepConfig::default(),
        }
    };
    let before = requests();
    let tick = f.tick(Utc::now() + TimeDelta::days(8)).await;
    assert_eq!(tick.expired, 1);
    println!("sweep tick that expires it: {}", since(&before));
    let before = requests();
    let tick = f.tick(Utc::now() + TimeDelta::days(40)).await;
    assert_eq!(tick.purged, 1);
    println!("sweep tick that deletes it: {}", since(&before));
    let before = requests();
    f.tick(Utc::now() + TimeDelta::days(40)).await;
    println!("idle sweep tick: {}", since(&before));
}
