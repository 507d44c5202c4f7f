//! A crash in the middle of an export: the server process is killed with SIGKILL while it
//! writes the file, then started again on the same data directory. The job must complete
//! exactly once, with one correct file and no partial file left behind.

use crate::process::Server;
use serde_json::{json, Value};
use std::time::Duration;

const ORDERS: u64 = 400_000;

fn start(data: &std::path::Path) -> Server {
    let args = format!(
        "--data-dir {} --auth header --demo-orders {ORDERS} --visibility-timeout 2s --poll-max 200ms",
        data.display()
    );
    Server::start(&args.split(' ').map(String::from).collect::<Vec<_>>())
}

async fn wait_healthy(base: &str) {
    for _ in 0..600 {
        if let Ok(res) = reqwest::get(format!("{base}/healthz")).await {
            if res.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not come up at {base}");
}

fn partials(data: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(data.join("files").join(".partial"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn finished_files(data: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(data.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != ".partial")
        .collect()
}

#[tokio::test]
async fn a_killed_server_finishes_the_export_exactly_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = reqwest::Client::new();

    let first = start(&data);
    let base = first.base();
    wait_healthy(&base).await;
    let job: Value = http
        .post(format!("{base}/api/v1/exports"))
        .header("x-forwarded-user", "alice")
        .json(&json!({"dataset": "orders", "format": "csv"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();

    // Kill as soon as the file is being written.
    let mut seen = false;
    for _ in 0..2000 {
        if !partials(&data).is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(seen, "the export never started writing");
    drop(first);
    assert_eq!(
        partials(&data).len(),
        1,
        "the killed process left its partial file"
    );
    assert!(finished_files(&data).is_empty(), "nothing was committed");

    // Restarted on the same data directory (on a new port: only the data matters).
    let second = start(&data);
    let base = second.base();
    wait_healthy(&base).await;
    let done = loop {
        let job: Value = http
            .get(format!("{base}/api/v1/exports/{id}"))
            .header("x-forwarded-user", "alice")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap()) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "one interrupted attempt, one complete");
    assert_eq!(done["file"]["rows"], ORDERS);
    let blob = done["file"]["blob"].as_str().unwrap().to_string();
    assert!(blob.starts_with(&id) && blob.ends_with(".csv"), "{blob}");
    assert_eq!(
        finished_files(&data),
        [blob],
        "exactly one file, the one the record names"
    );
    assert!(partials(&data).is_empty(), "no partial file is left");

    let csv = http
        .get(format!("{base}/api/v1/exports/{id}/download"))
        .header("x-forwarded-user", "alice")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(&csv[..]);
    let ids: Vec<u64> = reader
        .records()
        .map(|r| r.unwrap()[0].parse().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, ORDERS);
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "every row once, in order"
    );
    let list: Value = http
        .get(format!("{base}/api/v1/exports"))
        .header("x-forwarded-user", "alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}
