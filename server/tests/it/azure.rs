//! Azure Storage mode against Azurite (started by scripts/test.sh): the same queue semantics
//! as the embedded queue, Shared Key signing, SAS download links, conditional job records,
//! a large streamed upload, start-up failures, and the whole server on Azure with separate web
//! and worker instances.

use crate::support::{orders, service_url, TestServer};
use app::jobs::{ExportFormat, Job};
use futures::StreamExt;
use serde_json::Value;
use server::azure::{self, AzureSettings};
use server::blobs::azure::AzureBlobStore;
use server::blobs::{BlobMeta, BlobStore, Download};
use server::config::Secret;
use server::jobs::azure::AzureJobStore;
use server::jobs::{JobStore, StoreError};
use server::queue::azure::AzureQueue;
use server::queue::Queue;
use std::sync::Arc;
use std::time::Duration;

fn connection_string() -> String {
    service_url("EXPORTAL_TEST_AZURE_CONNECTION_STRING")
}

/// Settings with names of their own, so tests never share a queue or container.
pub(crate) fn settings() -> AzureSettings {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
    AzureSettings {
        connection_string: Some(Secret(connection_string())),
        blob_url: None,
        queue_url: None,
        queue: format!("q{tag}"),
        files_container: format!("f{tag}"),
        jobs_container: format!("j{tag}"),
        ca_file: None,
    }
}

pub(crate) fn settings_args(s: &AzureSettings) -> Vec<String> {
    vec![
        "--storage".into(),
        "azure".into(),
        "--azure-connection-string".into(),
        s.connection_string.clone().unwrap().0,
        "--azure-queue".into(),
        s.queue.clone(),
        "--azure-files-container".into(),
        s.files_container.clone(),
        "--azure-jobs-container".into(),
        s.jobs_container.clone(),
    ]
}

async fn queue() -> Arc<dyn Queue> {
    queue_from(azure::clients(&settings()).unwrap()).await
}

pub(crate) async fn queue_from(c: azure::AzureClients) -> Arc<dyn Queue> {
    let q = AzureQueue::new(c.queue, c.poison);
    q.ensure().await.unwrap();
    Arc::new(q)
}

/// Fresh clients for one account and one set of names; each call is another "process", with
/// its own view of the ETags. The keyless tests run the same suites through their own.
pub(crate) type Connect<'a> = &'a (dyn Fn() -> azure::AzureClients + Sync);

pub(crate) async fn blob_store(connect: Connect<'_>) -> AzureBlobStore {
    let clients = connect();
    let store = AzureBlobStore::new(clients.files, clients.links);
    store.ensure().await.unwrap();
    store
}

async fn blobs() -> AzureBlobStore {
    let s = settings();
    blob_store(&|| azure::clients(&s).unwrap()).await
}

#[tokio::test]
async fn azure_queue_visibility_hides_and_redelivers() {
    crate::queue::visibility_hides_and_redelivers(queue().await).await;
}

#[tokio::test]
async fn azure_queue_heartbeat_extends_and_rotates_the_receipt() {
    crate::queue::heartbeat_extends_and_rotates_the_receipt(queue().await).await;
}

#[tokio::test]
async fn azure_queue_release_and_delayed_send() {
    crate::queue::release_and_delayed_send(queue().await).await;
}

#[tokio::test]
async fn azure_queue_dead_letter_moves_to_poison() {
    crate::queue::dead_letter_moves_to_poison(queue().await).await;
}

#[tokio::test]
async fn azure_queue_competing_receivers_split_the_messages() {
    crate::queue::competing_receivers_split_the_messages(queue().await).await;
}

#[tokio::test]
async fn a_wrong_account_key_fails_at_start_up_with_403() {
    let mut s = settings();
    let good = connection_string();
    let wrong_key = "AccountKey=".to_string() + &"A".repeat(86) + "==";
    let key_start = good.find("AccountKey=").unwrap();
    let key_end = good[key_start..].find(';').unwrap() + key_start;
    s.connection_string = Some(Secret(format!(
        "{}{}{}",
        &good[..key_start],
        wrong_key,
        &good[key_end..]
    )));
    let c = azure::clients(&s).unwrap();
    let q = AzureQueue::new(c.queue, c.poison);
    let e = q.ensure().await.unwrap_err();
    assert!(
        e.contains("403") && e.contains("AuthenticationFailed"),
        "{e}"
    );
    assert!(e.contains("check the account key"), "{e}");
}

#[tokio::test]
async fn a_wrong_endpoint_fails_at_start_up_quickly_and_clearly() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args: Vec<String> = settings_args(&settings())
        .into_iter()
        .map(|a| {
            if a.starts_with("DefaultEndpointsProtocol") {
                format!(
                    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint=http://127.0.0.1:{free}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:{free}/devstoreaccount1;",
                    server::azure::connection::DEV_KEY
                )
            } else {
                a
            }
        })
        .collect();
    let data = tempfile::tempdir().unwrap();
    let mut all = vec![
        "--addr".to_string(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.path().display().to_string(),
    ];
    all.extend(args);
    let settings = server::config::Settings::from_args(all).unwrap();
    let started = std::time::Instant::now();
    let leptos = leptos::config::LeptosOptions::builder()
        .output_name("exportal")
        .build();
    let Err(e) = server::start(settings, leptos).await else {
        panic!("started without storage")
    };
    let e = format!("{e:#}");
    assert!(
        e.contains("Azure Storage") && e.contains("cannot reach the storage endpoint"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "failed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn download_links_are_read_only_short_lived_and_for_one_blob() {
    download_links_suite(&blobs().await, &reqwest_rustls::Client::new()).await;
}

/// The answer to a refused link, as the storage service gave it (printed for the record).
async fn refusal(what: &str, res: reqwest_rustls::Response) -> u16 {
    let status = res.status().as_u16();
    let code = res
        .headers()
        .get("x-ms-error-code")
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    let body = res.text().await.unwrap_or_default();
    let message = body
        .split("<Message>")
        .nth(1)
        .and_then(|m| m.split("</Message>").next())
        .unwrap_or(&body);
    println!(
        "{what}: {status} {code}: {}",
        message.lines().next().unwrap_or_default()
    );
    status
}

/// Links open the right bytes with the right filename, and only for reading that one blob
/// until they expire. `http` trusts the storage endpoint's certificate.
pub(crate) async fn download_links_suite(store: &AzureBlobStore, http: &reqwest_rustls::Client) {
    let meta = BlobMeta {
        content_type: "text/csv".into(),
        filename: "orders-2026-11-27.csv".into(),
    };
    let body = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(
        b"id,name\r\n1,Zo\xc3\xab\r\n",
    ))])
    .boxed();
    store.put("a.csv", &meta, body).await.unwrap();
    let other = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"secret"))]).boxed();
    store.put("b.csv", &meta, other).await.unwrap();

    let Download::Redirect(url) = store
        .download("a.csv", &meta, Duration::from_secs(300))
        .await
        .unwrap()
    else {
        panic!("a key credential gives redirects")
    };
    assert!(url.contains("sp=r") && url.contains("sig="), "{url}");
    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"orders-2026-11-27.csv\"; filename*=UTF-8''orders-2026-11-27.csv"
    );
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        b"id,name\r\n1,Zo\xc3\xab\r\n"
    );

    let write = http
        .put(&url)
        .body("overwrite")
        .header("x-ms-blob-type", "BlockBlob")
        .send()
        .await
        .unwrap();
    assert_eq!(
        refusal("write with a read link", write).await,
        403,
        "a read link cannot write"
    );
    let delete = http.delete(&url).send().await.unwrap();
    assert_eq!(
        refusal("delete with a read link", delete).await,
        403,
        "a read link cannot delete"
    );
    let elsewhere = url.replacen("/a.csv?", "/b.csv?", 1);
    let other = http.get(&elsewhere).send().await.unwrap();
    assert_eq!(
        refusal("the link of a.csv used for b.csv", other).await,
        403,
        "a link is for one blob"
    );
    let widened = url.replacen("sp=r", "sp=rw", 1);
    let tampered = http.get(&widened).send().await.unwrap();
    assert_eq!(
        refusal("a link with sp=r widened to sp=rw", tampered).await,
        403,
        "a tampered link fails"
    );

    let Download::Redirect(short) = store
        .download("a.csv", &meta, Duration::from_secs(1))
        .await
        .unwrap()
    else {
        panic!()
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = http.get(&short).send().await.unwrap();
    assert_eq!(
        refusal("an expired link", expired).await,
        403,
        "an expired link fails"
    );
}

#[tokio::test]
async fn a_large_file_streams_up_in_blocks_without_growing_memory() {
    let store = blobs().await;
    const SIZE: usize = 200 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
            .unwrap_or(0)
            / 1024
    };
    let before = rss();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let p = peak.clone();
    let body = futures::stream::iter(0..SIZE / CHUNK)
        .map(move |i| {
            p.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
            Ok(bytes::Bytes::from(vec![(i % 251) as u8; CHUNK]))
        })
        .boxed();
    let meta = BlobMeta {
        content_type: "application/octet-stream".into(),
        filename: "big.bin".into(),
    };
    let written = store.put("big.bin", &meta, body).await.unwrap();
    assert_eq!(written as usize, SIZE);
    assert_eq!(store.size("big.bin").await.unwrap(), Some(SIZE as u64));
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed).max(rss());
    println!("200 MiB upload: RSS before {before} MiB, peak {peak} MiB");
    assert!(
        peak - before < 60,
        "memory grew by {} MiB for a 200 MiB file",
        peak - before
    );
}

/// Chunks that straddle block boundaries, one larger than two blocks, an empty one, and a
/// last block shorter than the others: the blob holds exactly the bytes sent, in order.
#[tokio::test]
async fn a_file_in_chunks_of_any_size_comes_back_byte_for_byte() {
    use server::blobs::azure::BLOCK_BYTES;
    let store = blobs().await;
    let sizes = [
        1,
        BLOCK_BYTES - 1,
        2,
        2 * BLOCK_BYTES + 12_345,
        0,
        BLOCK_BYTES - 12_346,
        256 * 1024,
        77,
    ];
    let mut sent = Vec::new();
    let mut chunks = Vec::new();
    for (n, size) in sizes.into_iter().enumerate() {
        let chunk: Vec<u8> = (0..size).map(|i| ((i * 31 + n * 7) % 253) as u8).collect();
        sent.extend_from_slice(&chunk);
        chunks.push(Ok(bytes::Bytes::from(chunk)));
    }
    let meta = BlobMeta {
        content_type: "application/octet-stream".into(),
        filename: "odd.bin".into(),
    };
    let written = store
        .put("odd.bin", &meta, futures::stream::iter(chunks).boxed())
        .await
        .unwrap();
    assert_eq!(written as usize, sent.len());
    let Download::Redirect(url) = store
        .download("odd.bin", &meta, Duration::from_secs(300))
        .await
        .unwrap()
    else {
        panic!("a key credential gives redirects")
    };
    let res = reqwest_rustls::Client::new()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = res.bytes().await.unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(
        got.as_ref() == sent.as_slice(),
        "the blob differs from the bytes sent"
    );

    // An empty file is an empty blob.
    let empty = futures::stream::iter(Vec::<std::io::Result<bytes::Bytes>>::new()).boxed();
    assert_eq!(store.put("empty.bin", &meta, empty).await.unwrap(), 0);
    assert_eq!(store.size("empty.bin").await.unwrap(), Some(0));
}

pub(crate) fn job(owner: &str) -> Job {
    Job::queued(
        uuid::Uuid::now_v7().simple().to_string(),
        owner,
        "orders",
        ExportFormat::Csv,
        vec!["id".into()],
    )
}

#[tokio::test]
async fn job_records_are_compare_and_set_so_concurrent_writers_never_overwrite() {
    let s = settings();
    job_records_suite(&|| azure::clients(&s).unwrap()).await;
}

pub(crate) async fn job_records_suite(connect: Connect<'_>) {
    let web = AzureJobStore::new(connect().jobs);
    web.ensure().await.unwrap();
    // A second store is another process: it has its own view of the ETags.
    let worker = AzureJobStore::new(connect().jobs);

    let (created, fresh) = web.create(&job("alice"), Some("key-1"), 10).await.unwrap();
    assert!(fresh);
    let (again, fresh) = web.create(&job("alice"), Some("key-1"), 10).await.unwrap();
    assert!(!fresh);
    assert_eq!(
        again.id, created.id,
        "the idempotency key returns the first job"
    );

    let mut cancel = worker.get(&created.id).await.unwrap().unwrap();
    let mut progress = web.get(&created.id).await.unwrap().unwrap();
    cancel.cancel_requested = true;
    progress.progress.rows = 42;
    let stored = worker.update(&cancel).await.unwrap();
    assert_eq!(stored.revision, 2);
    assert!(
        matches!(web.update(&progress).await, Err(StoreError::Conflict)),
        "the stale write must fail"
    );
    let now = web.get(&created.id).await.unwrap().unwrap();
    assert!(now.cancel_requested, "the cancel survived");
    assert_eq!(now.progress.rows, 0);

    let second = web.create(&job("alice"), None, 10).await.unwrap().0;
    web.create(&job("bob"), None, 10).await.unwrap();
    let list = web.list("alice", 10).await.unwrap();
    assert_eq!(
        list.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![second.id.clone(), created.id.clone()]
    );
    assert_eq!(web.active_count("alice").await.unwrap(), 2);
    assert_eq!(
        web.find_by_key("alice", "key-1").await.unwrap().unwrap().id,
        created.id
    );
    assert!(web.find_by_key("bob", "key-1").await.unwrap().is_none());
    assert!(web.get("../../etc").await.is_err() || web.get("../../etc").await.unwrap().is_none());
}

#[tokio::test]
async fn an_export_runs_end_to_end_on_azure_and_downloads_through_a_sas_redirect() {
    let s = settings();
    let args = settings_args(&s);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = TestServer::start(&args).await;
    let alice = server.user("alice");
    let job = alice.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    let done = alice
        .wait_for(id, &["succeeded", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects
        .get(server.url(&format!("/api/v1/exports/{id}/download")))
        .header("x-forwarded-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "downloads redirect to the storage");
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.contains(&s.files_container) && location.contains("sig="),
        "{location}"
    );
    let file = reqwest::get(&location).await.unwrap();
    assert!(file.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"orders-"));
    let bytes = file.bytes().await.unwrap();
    assert_eq!(
        csv::Reader::from_reader(&bytes[..]).records().count() as u64,
        crate::support::DEMO_ORDERS
    );
    let bob = server.user("bob").download(id).await;
    assert_eq!(bob.status(), 404, "the link is minted only for the owner");
    let status: Value = alice
        .post("/api/fn/status")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["storage"], "azure");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_web_instance_shows_live_progress_of_a_job_run_by_a_separate_worker() {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let s = settings();
    let mut web_args = settings_args(&s);
    web_args.extend([
        "--role".into(),
        "web".into(),
        "--demo-orders".into(),
        "100000".into(),
    ]);
    let web_args: Vec<&str> = web_args.iter().map(String::as_str).collect();
    let web = TestServer::start(&web_args).await;
    let mut worker_args = settings_args(&s);
    worker_args.extend([
        "--role".into(),
        "worker".into(),
        "--demo-orders".into(),
        "100000".into(),
    ]);
    let worker_args: Vec<&str> = worker_args.iter().map(String::as_str).collect();
    let worker = TestServer::start(&worker_args).await;

    let mut request = format!("ws://{}/ws", web.running.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-user", "alice".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let Some(Ok(Message::Text(first))) = ws.next().await else {
        panic!("no snapshot")
    };
    assert!(first.contains("\"snapshot\""));

    let job = web.user("alice").submit(orders("ndjson")).await;
    let id = job["id"].as_str().unwrap().to_string();
    let mut statuses = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await
        else {
            continue;
        };
        let m: Value = serde_json::from_str(&text).unwrap();
        if m["type"] == "job" && m["job"]["id"] == id.as_str() {
            let status = m["job"]["status"].as_str().unwrap().to_string();
            if statuses.last() != Some(&status) {
                statuses.push(status.clone());
            }
            if status == "succeeded" {
                break;
            }
        }
    }
    assert!(
        statuses.contains(&"running".to_string()),
        "the web page saw the worker's progress: {statuses:?}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("succeeded"),
        "{statuses:?}"
    );
    worker.running.shutdown().await.unwrap();
    web.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_active_job_limit_is_reserved_atomically_in_azure_records() {
    let s = settings();
    active_job_limit_suite(&|| azure::clients(&s).unwrap()).await;
}

pub(crate) async fn active_job_limit_suite(connect: Connect<'_>) {
    let first = AzureJobStore::new(connect().jobs);
    first.ensure().await.unwrap();
    // Four "instances", each with its own view of the ETags, submit three jobs each at once.
    let stores: Vec<Arc<AzureJobStore>> = (0..4)
        .map(|_| Arc::new(AzureJobStore::new(connect().jobs)))
        .collect();
    let creates = (0..12).map(|i| {
        let store = stores[i % 4].clone();
        async move { store.create(&job("alice"), None, 3).await }
    });
    let results = futures::future::join_all(creates).await;
    let accepted: Vec<Job> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(j, _)| j.clone()))
        .collect();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::LimitReached { .. })))
        .count();
    assert_eq!((accepted.len(), refused), (3, 9), "{results:?}");
    assert_eq!(first.active_count("alice").await.unwrap(), 3);
    assert_eq!(
        first.list("alice", 50).await.unwrap().len(),
        3,
        "refused jobs were never stored"
    );

    // A job that ends frees its slot; a retry needs one like a submit.
    let mut done = first.get(&accepted[0].id).await.unwrap().unwrap();
    done.give_up(
        app::jobs::JobError::new(app::jobs::JobErrorCode::QueryFailed, "x"),
        chrono::Utc::now(),
    )
    .unwrap();
    let done = first.update(&done).await.unwrap();
    assert_eq!(first.active_count("alice").await.unwrap(), 2);
    first.create(&job("alice"), None, 3).await.unwrap();
    let mut again = done.clone();
    again.reset_for_retry("t2".into()).unwrap();
    assert!(matches!(
        first.reactivate(&again, 3).await,
        Err(StoreError::LimitReached { active: 3 })
    ));
    assert_eq!(
        first.get(&done.id).await.unwrap().unwrap().status,
        app::jobs::JobStatus::Failed,
        "the refused retry wrote nothing"
    );
    assert!(
        first.create(&job("bob"), None, 3).await.is_ok(),
        "limits are per owner"
    );
}

#[tokio::test]
async fn the_job_stores_memory_of_records_is_bounded_and_forgetting_costs_only_a_read() {
    let s = settings();
    let store = AzureJobStore::new(azure::clients(&s).unwrap().jobs).with_cache_limit(4);
    store.ensure().await.unwrap();
    let other = AzureJobStore::new(azure::clients(&s).unwrap().jobs);
    let mut created = Vec::new();
    for _ in 0..10 {
        created.push(store.create(&job("alice"), None, 100).await.unwrap().0);
        assert!(store.cached() <= 4, "{} records remembered", store.cached());
    }
    // The first record was forgotten; reading and writing it still works, from a full read.
    let first = store.get(&created[0].id).await.unwrap().unwrap();
    assert_eq!(first, created[0]);
    let mut changed = first.clone();
    changed.progress.rows = 7;
    let stored = store.update(&changed).await.unwrap();
    assert_eq!((stored.revision, stored.progress.rows), (2, 7));
    // A write based on a version another process has since replaced is still refused.
    let mut stale = other.get(&created[1].id).await.unwrap().unwrap();
    let mut newer = stale.clone();
    newer.progress.rows = 1;
    store.update(&newer).await.unwrap();
    stale.progress.rows = 2;
    assert!(matches!(
        other.update(&stale).await,
        Err(StoreError::Conflict)
    ));
    assert!(store.cached() <= 4);
}
