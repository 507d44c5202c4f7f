//! Faults on the distributed engine: one web and two worker processes sharing an Azurite of
//! this test's own (so it can stop it). A worker killed with SIGKILL mid-export loses its job
//! to the other worker after the visibility timeout, and the job completes exactly once;
//! storage that disappears for 20 s crashes nothing, loses no job, and work resumes by itself.

use crate::process::Server;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ORDERS: &str = "300000";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// A graceful stop (SIGTERM), waiting for the process to exit: Azurite saves its state on
    /// the way out, as a storage service that is taken down for maintenance would.
    fn stop(mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn azurite(dir: &Path, blob: u16, queue: u16) -> Proc {
    let bin =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../end2end/node_modules/.bin/azurite");
    let child = Command::new(bin)
        .args(["--silent", "--location", &dir.display().to_string()])
        .args([
            "--blobHost",
            "127.0.0.1",
            "--queueHost",
            "127.0.0.1",
            "--tableHost",
            "127.0.0.1",
        ])
        .args([
            "--blobPort",
            &blob.to_string(),
            "--queuePort",
            &queue.to_string(),
            "--tablePort",
            &free_port().to_string(),
        ])
        .args(["--disableTelemetry"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("azurite starts (npm install in end2end/)");
    Proc(child)
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

fn exportal(role: &str, data: &Path, blob: u16, queue: u16) -> Server {
    let cs = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:{queue}/devstoreaccount1;",
        server::azure::connection::DEV_KEY
    );
    let args = [
        "--role",
        role,
        "--data-dir",
        &data.display().to_string(),
        "--demo-orders",
        ORDERS,
        "--auth",
        "header",
        "--storage",
        "azure",
        "--azure-connection-string",
        &cs,
        "--visibility-timeout",
        "3s",
        "--poll-max",
        "300ms",
        "--retry-base",
        "1s",
    ];
    Server::start(&args.map(String::from))
}

async fn healthy(port: u16) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    for _ in 0..600 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("instance on {port} did not come up");
}

struct Web {
    base: String,
    http: reqwest::Client,
}

impl Web {
    async fn submit(&self) -> String {
        let job: Value = self
            .http
            .post(format!("{}/api/v1/exports", self.base))
            .header("x-forwarded-user", "alice")
            .json(&json!({"dataset": "orders", "format": "csv"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        job["id"].as_str().unwrap().to_string()
    }

    async fn job(&self, id: &str) -> Option<Value> {
        let res = self
            .http
            .get(format!("{}/api/v1/exports/{id}", self.base))
            .header("x-forwarded-user", "alice")
            .send()
            .await
            .ok()?;
        res.json().await.ok()
    }

    async fn wait(&self, id: &str, statuses: &[&str], timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(job) = self.job(id).await {
                if statuses.contains(&job["status"].as_str().unwrap_or_default()) {
                    return job;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never reached {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn killed_workers_and_a_storage_outage_lose_no_job_and_finish_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, queue) = (free_port(), free_port());
    let mut storage = azurite(&dir.path().join("azurite"), blob, queue);
    wait_port(blob).await;
    wait_port(queue).await;

    let mut web = exportal("web", &dir.path().join("web"), blob, queue);
    healthy(web.port).await;
    let worker_a = exportal("worker", &dir.path().join("a"), blob, queue);
    healthy(worker_a.port).await;
    let client = Web {
        base: web.base(),
        http: reqwest::Client::new(),
    };

    // 1. SIGKILL the worker running a job; the other takes it over after the visibility timeout.
    let first = client.submit().await;
    client
        .wait(&first, &["running"], Duration::from_secs(60))
        .await;
    let mut worker_b = exportal("worker", &dir.path().join("b"), blob, queue);
    healthy(worker_b.port).await;
    drop(worker_a);
    let done = client
        .wait(&first, &["succeeded", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["attempts"], 2,
        "the killed attempt and the completing one"
    );
    assert_eq!(done["file"]["rows"].to_string(), ORDERS);

    // 2. Storage gone for 20 s in the middle of a run.
    let second = client.submit().await;
    client
        .wait(&second, &["running"], Duration::from_secs(60))
        .await;
    storage.stop();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        web.alive() && worker_b.alive(),
        "nothing crashed while storage was away"
    );
    storage = azurite(&dir.path().join("azurite"), blob, queue);
    wait_port(blob).await;
    let done = client
        .wait(&second, &["succeeded", "failed"], Duration::from_secs(180))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["file"]["rows"].to_string(), ORDERS);
    assert!(web.alive() && worker_b.alive());

    // Exactly once: both jobs listed once, each downloadable, the queue drained.
    let list: Value = client
        .http
        .get(format!("{}/api/v1/exports", client.base))
        .header("x-forwarded-user", "alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    for id in [&first, &second] {
        let res = client
            .http
            .get(format!("{}/api/v1/exports/{id}/download", client.base))
            .header("x-forwarded-user", "alice")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "the redirect leads to the file");
        let body = res.bytes().await.unwrap();
        assert_eq!(
            csv::Reader::from_reader(&body[..])
                .records()
                .count()
                .to_string(),
            ORDERS
        );
    }
    drop(storage);
}
