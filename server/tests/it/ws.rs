//! The live channel's fan-out: what a fast and a slow page are sent, whose changes reach
//! which sockets, and how a `web` instance follows the store for its users.

use crate::support::{orders, TestServer};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Long enough for anything here; reaching it means the test is stuck.
const HANG_GUARD: Duration = Duration::from_secs(60);

async fn connect(server: &TestServer, user: &str) -> Ws {
    let mut request = format!("ws://{}/ws", server.running.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-user", user.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::connect_async(request))
        .await
        .expect("hang guard")
        .expect("ws connects");
    let first = next_message(&mut ws).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    ws
}

async fn next_message(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("hang guard")
            .expect("the socket stays open")
            .expect("no error");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The next job message: (status, revision, rows).
async fn next_job(ws: &mut Ws) -> (String, u64, u64) {
    let m = next_message(ws).await;
    assert_eq!(m["type"], "job", "{m}");
    let job = &m["job"];
    (
        job["status"].as_str().unwrap().to_string(),
        job["revision"].as_u64().unwrap(),
        job["progress"]["rows"].as_u64().unwrap(),
    )
}

fn statuses_in_order(seen: &[(String, u64, u64)]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for (status, _, _) in seen {
        if out.last() != Some(&status.as_str()) {
            out.push(status);
        }
    }
    out
}

#[tokio::test]
async fn a_slow_reader_gets_the_latest_states_while_a_fast_reader_gets_every_change() {
    // A `web` instance runs no jobs: the test writes the job's every change itself. The send
    // timeout outlasts the test, so the slow reader is kept, not dropped.
    let server = TestServer::start(&["--role", "web", "--ws-send-timeout", "10m"]).await;
    let jobs = server.running.service.as_ref().unwrap().jobs.clone();
    let mut fast = connect(&server, "alice").await;
    let mut slow = connect(&server, "alice").await;
    let mut bob = connect(&server, "bob").await;

    let submitted = server.user("alice").submit(orders("csv")).await;
    let id = submitted["id"].as_str().unwrap();
    let mut fast_seen = vec![next_job(&mut fast).await];
    let mut job = jobs.get(id).await.unwrap().unwrap();
    assert_eq!(fast_seen[0].1, job.revision);

    // Every message carries 64 KiB, so the slow reader's socket buffers (a few MiB at most in
    // the kernel) are full long before the last of these changes: from then on its changes
    // wait on the server, where newer progress replaces older.
    const UPDATES: u64 = 200;
    job.status = app::jobs::JobStatus::Running;
    job.worker = Some("w".repeat(64 * 1024));
    for rows in 0..=UPDATES {
        job.progress.rows = rows;
        if rows == UPDATES {
            job.status = app::jobs::JobStatus::Succeeded;
        }
        job = jobs.update(&job).await.unwrap();
        // The fast reader takes each change before the next is written.
        let got = next_job(&mut fast).await;
        assert_eq!((got.1, got.2), (job.revision, rows));
        fast_seen.push(got);
    }
    let last = job.revision;
    assert_eq!(
        statuses_in_order(&fast_seen),
        ["queued", "running", "succeeded"]
    );
    assert_eq!(fast_seen.len() as u64, UPDATES + 2, "every stored change");

    let mut slow_seen = Vec::new();
    while slow_seen
        .last()
        .is_none_or(|(_, revision, _)| *revision < last)
    {
        slow_seen.push(next_job(&mut slow).await);
    }
    assert!(
        slow_seen.windows(2).all(|w| w[0].1 < w[1].1),
        "never a step back: {slow_seen:?}"
    );
    assert_eq!(
        statuses_in_order(&slow_seen),
        ["queued", "running", "succeeded"],
        "no change of status is lost"
    );
    assert_eq!(
        slow_seen.last().unwrap(),
        &("succeeded".to_string(), last, UPDATES)
    );
    assert!(
        (slow_seen.len() as u64) < UPDATES / 2,
        "the slow reader's progress was coalesced, not queued: {} messages",
        slow_seen.len()
    );

    // None of alice's changes reached bob: the first thing his socket is sent is his own job.
    let his = server.user("bob").submit(orders("csv")).await;
    let m = next_message(&mut bob).await;
    assert_eq!(m["job"]["id"], his["id"], "{m}");
    assert_eq!(m["job"]["owner"], "bob");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_web_instance_follows_the_store_once_per_user_for_all_of_their_sockets() {
    // A web instance and a worker instance on one data directory: the web instance learns of
    // the worker's changes only by reading the store.
    let shared = tempfile::tempdir().unwrap();
    let data = shared.path().join("data").display().to_string();
    let web = TestServer::start(&["--role", "web", "--data-dir", &data]).await;
    let worker = TestServer::start(&["--role", "worker", "--data-dir", &data]).await;
    let hub = web.running.service.as_ref().unwrap().jobs.hub.clone();
    let wait_for_followers = |n: usize| {
        let hub = hub.clone();
        async move {
            tokio::time::timeout(HANG_GUARD, async {
                while hub.followers() != n {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{} followers, expected {n}", hub.followers()));
        }
    };

    let mut first = connect(&web, "alice").await;
    let mut second = connect(&web, "alice").await;
    let mut bob = connect(&web, "bob").await;
    assert_eq!(hub.followers(), 2, "one per user, not per socket");

    let job = web.user("alice").submit(orders("csv")).await;
    for ws in [&mut first, &mut second] {
        let mut seen = Vec::new();
        while seen
            .last()
            .is_none_or(|(status, _, _)| status != "succeeded")
        {
            seen.push(next_job(ws).await);
        }
        assert_eq!(
            statuses_in_order(&seen).first(),
            Some(&"queued"),
            "the submit on this instance is sent at once: {seen:?}"
        );
    }
    let done = web.user("alice").job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded");

    // Alice's follower lives while either of her sockets is open, and stops with the last.
    first.send(Message::Close(None)).await.unwrap();
    drop(first);
    bob.send(Message::Close(None)).await.unwrap();
    drop(bob);
    wait_for_followers(1).await;
    assert_eq!(hub.watched_owners(), 1);
    second.send(Message::Close(None)).await.unwrap();
    drop(second);
    wait_for_followers(0).await;
    assert_eq!(hub.watched_owners(), 0);

    worker.running.shutdown().await.unwrap();
    web.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_submitted_through_another_web_instance_reaches_this_ones_sockets_from_the_store() {
    // Two web instances and a worker on one data directory. Alice's page is on `here`; her
    // export is submitted through `there`, so `here` can learn of it only from the listing of
    // her job ids that its follower reads now and then, and then follows it to the end.
    let shared = tempfile::tempdir().unwrap();
    let data = shared.path().join("data").display().to_string();
    let here = TestServer::start(&["--role", "web", "--data-dir", &data]).await;
    let there = TestServer::start(&["--role", "web", "--data-dir", &data]).await;
    let worker = TestServer::start(&["--role", "worker", "--data-dir", &data]).await;

    let mut page = connect(&here, "alice").await;
    let job = there.user("alice").submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    // The ids are listed every 10 s; every record is re-read only every 60 s, which this
    // bound leaves out, so only the listing can bring the job here in time.
    let finished = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            let m = next_message(&mut page).await;
            if m["type"] == "job" && m["job"]["id"] == id && m["job"]["status"] == "succeeded" {
                return m;
            }
        }
    })
    .await
    .expect("the job submitted elsewhere reached the page");
    assert_eq!(finished["job"]["owner"], "alice");

    worker.running.shutdown().await.unwrap();
    there.running.shutdown().await.unwrap();
    here.running.shutdown().await.unwrap();
}
