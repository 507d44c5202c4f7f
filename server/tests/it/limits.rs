//! The per-user limit of active exports under concurrency: the store reserves the slot in the
//! same atomic step that stores the job, so a crowd of submits can never pass it together.

use crate::support::{orders, TestServer};
use serde_json::Value;

#[tokio::test]
async fn twelve_concurrent_submits_with_a_limit_of_three_give_exactly_three_202s() {
    // A worker-less web instance keeps the accepted jobs active.
    let server = TestServer::start(&["--role", "web", "--max-active-jobs", "3"]).await;
    let alice = server.user("alice");
    let sends = (0..12).map(|_| {
        let request = alice.post("/api/v1/exports").json(&orders("csv"));
        async move { request.send().await.unwrap() }
    });
    let responses = futures::future::join_all(sends).await;
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [[202; 3].as_slice(), &[429; 9]].concat());
    for res in responses {
        if res.status() == 429 {
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "too_many_requests", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("the limit is 3"),
                "{body}"
            );
        }
    }
    let list: Value = alice
        .get("/api/v1/exports")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        3,
        "only the accepted were stored"
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_retry_needs_a_free_slot_like_a_submit() {
    let server = TestServer::start(&["--role", "web", "--max-active-jobs", "2"]).await;
    let alice = server.user("alice");
    let first = alice.submit(orders("csv")).await;
    let id = first["id"].as_str().unwrap();
    alice.submit(orders("csv")).await;
    let cancelled = alice
        .post(&format!("/api/v1/exports/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    alice.submit(orders("csv")).await;

    // Two active again: the cancelled export cannot come back, concurrently or not.
    let retries = (0..4).map(|_| {
        let request = alice.post(&format!("/api/v1/exports/{id}/retry"));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(retries).await;
    assert_eq!(statuses, [429; 4]);
    assert_eq!(alice.job(id).await["status"], "cancelled");
    server.running.shutdown().await.unwrap();
}
