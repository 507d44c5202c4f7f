//! The HTTP edge under hostile or careless callers: requests that try to cost the server a
//! lot, identities that try to name someone else, and live sockets that misbehave. Every
//! answer must be a small, clear 4xx; no assertion here is on elapsed time (the timeouts are
//! hang guards only).

use crate::support::TestServer;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

/// Generous: only a hang fails on it.
const HANG_GUARD: Duration = Duration::from_secs(60);
/// An error body that does not grow with the request.
const SMALL: usize = 4096;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(HANG_GUARD)
        .build()
        .unwrap()
}

async fn answer(res: reqwest::Response) -> (u16, Value, usize) {
    let status = res.status().as_u16();
    let bytes = res.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, json, bytes.len())
}

#[tokio::test]
async fn a_150000_entry_column_list_is_answered_4xx_with_a_small_body() {
    // Big enough a body limit for the list to reach the check itself.
    let server = TestServer::start(&["--max-body", "4194304"]).await;
    let columns: Vec<&str> = std::iter::repeat_n("id", 150_000).collect();
    let body = json!({"dataset": "orders", "format": "csv", "columns": columns});
    for path in ["/api/v1/preview", "/api/v1/exports"] {
        let res = client()
            .post(server.url(path))
            .header("x-forwarded-user", "alice")
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, json, size) = answer(res).await;
        assert_eq!(status, 400, "{path}: {json}");
        assert!(size < SMALL, "{path}: {size} bytes");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("150000 columns chosen, but this dataset has only 9"),
            "{message}"
        );
    }

    // Repeats within the dataset's width are each named once.
    let res = client()
        .post(server.url("/api/v1/preview"))
        .header("x-forwarded-user", "alice")
        .json(&json!({"dataset": "orders", "format": "csv",
            "columns": ["id", "id", "id", "status", "status", "note", "x", "y"]}))
        .send()
        .await
        .unwrap();
    let (status, json, _) = answer(res).await;
    assert_eq!(status, 400);
    let message = json["error"]["message"].as_str().unwrap();
    assert_eq!(
        message.matches("`id` is chosen twice").count(),
        1,
        "{message}"
    );
    assert_eq!(message.matches("`status` is chosen twice").count(), 1);
    assert!(message.contains("unknown column `x`") && message.contains("unknown column `y`"));
    assert_eq!(message.matches("the columns are: id, customer").count(), 1);
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn sixty_thousand_unknown_parameters_get_at_most_twenty_short_errors() {
    let server = TestServer::start(&["--max-body", "4194304"]).await;
    let params: Map<String, Value> = (0..60_000)
        .map(|i| (format!("unknown_parameter_{i}"), json!(i)))
        .collect();
    let res = client()
        .post(server.url("/api/v1/preview"))
        .header("x-forwarded-user", "alice")
        .json(&json!({"dataset": "orders", "format": "csv", "params": params}))
        .send()
        .await
        .unwrap();
    let (status, json, size) = answer(res).await;
    assert_eq!(status, 400, "{json}");
    assert!(size < SMALL, "{size} bytes");
    let message = json["error"]["message"].as_str().unwrap();
    // 18 named, one line for the rest, and once what the dataset takes: 20 in all.
    assert_eq!(
        message.matches("unknown parameter").count(),
        18,
        "{message}"
    );
    assert!(message.contains("and 59982 more problems"), "{message}");
    assert_eq!(
        message.matches("this dataset takes: ").count(),
        1,
        "{message}"
    );

    // A long name is quoted in part only.
    let long = "n".repeat(50_000);
    let res = client()
        .post(server.url("/api/v1/exports"))
        .header("x-forwarded-user", "alice")
        .json(&json!({"dataset": long, "format": "csv", "params": {long.clone(): 1}}))
        .send()
        .await
        .unwrap();
    let (status, json, size) = answer(res).await;
    assert_eq!(status, 400, "{json}");
    assert!(size < SMALL, "{size} bytes");
    // And a parser's message that would quote it.
    let res = client()
        .post(server.url("/api/v1/exports"))
        .header("x-forwarded-user", "alice")
        .json(&json!({"dataset": "orders", "format": long}))
        .send()
        .await
        .unwrap();
    let (status, json, size) = answer(res).await;
    assert_eq!(status, 400, "{json}");
    assert!(size < SMALL, "{size} bytes");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn bodies_over_the_route_limit_get_413_in_the_api_error_shape() {
    let server = TestServer::start(&[]).await;
    let alice = server.user("alice");
    let columns: Vec<String> = (0..20_000).map(|i| format!("c{i}")).collect();
    let big = json!({"dataset": "orders", "format": "csv", "columns": columns});
    for path in ["/api/v1/preview", "/api/v1/exports", "/api/fn/preview"] {
        let (status, json, size) = answer(alice.post(path).json(&big).send().await.unwrap()).await;
        assert_eq!(status, 413, "{path}: {json}");
        assert_eq!(json["error"]["code"], "payload_too_large");
        assert!(size < SMALL);
    }

    // A body without Content-Length (chunked) is cut off at the limit too.
    let chunks = futures::stream::iter(
        (0..100).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
    );
    let res = alice
        .post("/api/v1/preview")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (status, json, _) = answer(res).await;
    assert_eq!(status, 413, "{json}");

    // Cancel and retry take no body: a few KiB is already too much.
    let job = alice.submit(crate::support::orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    for action in ["cancel", "retry"] {
        let res = alice
            .post(&format!("/api/v1/exports/{id}/{action}"))
            .body(vec![b'x'; 4096])
            .send()
            .await
            .unwrap();
        let (status, json, _) = answer(res).await;
        assert_eq!(status, 413, "{action}: {json}");
    }
    // Within the limit, the same routes answer as before.
    let res = alice
        .post(&format!("/api/v1/exports/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert!(
        res.status() == 200 || res.status() == 409,
        "{}",
        res.status()
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn previews_and_submits_beyond_the_rate_get_429_with_retry_after() {
    let server = TestServer::start(&["--rate-burst", "2", "--rate-per-minute", "1"]).await;
    let alice = server.user("alice");
    let preview = json!({"dataset": "orders", "format": "csv"});
    for _ in 0..2 {
        let res = alice
            .post("/api/v1/preview")
            .json(&preview)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    for path in ["/api/v1/preview", "/api/v1/exports"] {
        let res = alice.post(path).json(&preview).send().await.unwrap();
        assert_eq!(res.status(), 429, "{path}");
        let retry_after: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        let (_, json, _) = answer(res).await;
        assert_eq!(json["error"]["code"], "too_many_requests");
        assert!(json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again in"));
    }
    // The page's server function shares the budget.
    let res = alice
        .post("/api/fn/preview")
        .json(&json!({"request": preview}))
        .send()
        .await
        .unwrap();
    let (status, json, _) = answer(res).await;
    assert!(
        json.to_string().contains("too_many_requests"),
        "{status}: {json}"
    );
    // Another identity has its own bucket; cheap reads are not limited.
    let bob = server.user("bob");
    let res = bob
        .post("/api/v1/preview")
        .json(&preview)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        alice.get("/api/v1/exports").send().await.unwrap().status(),
        200
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn in_cookie_mode_dropping_the_cookie_does_not_escape_the_rate_limit() {
    let server = TestServer::start(&[
        "--auth",
        "cookie",
        "--rate-burst",
        "2",
        "--rate-per-minute",
        "1",
    ])
    .await;
    let preview = json!({"dataset": "orders", "format": "csv"});
    // A caller that never keeps its cookie is a new identity on every request: it is charged
    // by its address instead.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let res = client()
            .post(server.url("/api/v1/preview"))
            .json(&preview)
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            assert!(res.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [200, 200, 429, 429]);

    // A browser that keeps its cookie (from its first page view, a GET, never charged) has
    // its own budget.
    let first = client()
        .get(server.url("/api/v1/exports"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let cookie = set_cookies(&first)[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let res = client()
        .post(server.url("/api/v1/preview"))
        .header("cookie", &cookie)
        .json(&preview)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_identity_headers_are_refused_with_401() {
    let server = TestServer::start(&[]).await;
    let http = client();
    let res = http
        .get(server.url("/api/v1/exports"))
        .header("x-forwarded-user", "alice")
        .header("x-forwarded-user", "mallory")
        .send()
        .await
        .unwrap();
    let (status, json, _) = answer(res).await;
    assert_eq!(status, 401, "{json}");
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("more than one"));
    // A proxy that joins them into one header says the same thing.
    let res = http
        .get(server.url("/api/v1/exports"))
        .header("x-forwarded-user", "alice, mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http
        .get(server.url("/api/v1/exports"))
        .header("x-forwarded-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_missing_or_wrong_proxy_secret_is_refused_with_401() {
    let secret = "the-proxy-and-only-the-proxy";
    let server = TestServer::start(&["--proxy-secret", secret]).await;
    let http = client();
    let get = |secret: Option<&str>| {
        let mut req = http
            .get(server.url("/api/v1/exports"))
            .header("x-forwarded-user", "alice");
        if let Some(s) = secret {
            req = req.header("x-exportal-proxy-secret", s);
        }
        req.send()
    };
    let (status, json, _) = answer(get(None).await.unwrap()).await;
    assert_eq!(status, 401, "{json}");
    assert!(!json.to_string().contains(secret));
    assert_eq!(
        get(Some("the-proxy-and-only-the-prox"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(get(Some("")).await.unwrap().status(), 401);
    assert_eq!(get(Some(secret)).await.unwrap().status(), 200);
    // The probes stay open to the orchestrator.
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_peer_that_is_not_a_trusted_proxy_is_refused_with_401() {
    // The tests connect from 127.0.0.1.
    let server = TestServer::start(&["--trusted-proxies", "10.0.0.0/8,192.0.2.1"]).await;
    let (status, json, _) = answer(
        server
            .user("alice")
            .get("/api/v1/exports")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{json}");
    server.running.shutdown().await.unwrap();

    let server = TestServer::start(&["--trusted-proxies", "10.0.0.0/8,127.0.0.1"]).await;
    let res = server
        .user("alice")
        .get("/api/v1/exports")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.running.shutdown().await.unwrap();
}

fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn cookies_are_host_prefixed_and_secure_over_https_only() {
    let http = client();
    // Behind a TLS proxy announced by the public URL.
    let server = TestServer::start(&[
        "--auth",
        "cookie",
        "--public-url",
        "https://exports.example.com",
    ])
    .await;
    let res = http
        .get(server.url("/api/v1/exports"))
        .send()
        .await
        .unwrap();
    let cookies = set_cookies(&res);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let cookie = &cookies[0];
    assert!(cookie.starts_with("__Host-exportal_id="), "{cookie}");
    for attribute in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Lax"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    let value = cookie.split(';').next().unwrap().to_string();
    // The browser sends it back: known, so not set again.
    let res = http
        .get(server.url("/api/v1/exports"))
        .header("cookie", &value)
        .send()
        .await
        .unwrap();
    assert!(set_cookies(&res).is_empty());

    // A browser with the cookie of an older version keeps its identity under the new name.
    let legacy = value.replacen("__Host-exportal_id=", "exportal_id=", 1);
    let res = http
        .get(server.url("/api/v1/exports"))
        .header("cookie", &legacy)
        .send()
        .await
        .unwrap();
    let cookies = set_cookies(&res);
    assert!(
        cookies.iter().any(|c| c.starts_with(&format!("{value};"))),
        "{cookies:?}"
    );
    assert!(cookies
        .iter()
        .any(|c| c.starts_with("exportal_id=;") && c.contains("Max-Age=0")));
    server.running.shutdown().await.unwrap();

    // Plain http: the prefix would make browsers drop the cookie, so neither is used.
    let server = TestServer::start(&["--auth", "cookie"]).await;
    let res = http
        .get(server.url("/api/v1/exports"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookies(&res).remove(0);
    assert!(
        cookie.starts_with("exportal_id=") && !cookie.contains("Secure"),
        "{cookie}"
    );
    server.running.shutdown().await.unwrap();

    // X-Forwarded-Proto counts only from a trusted proxy once proxies are configured.
    let server = TestServer::start(&["--auth", "cookie", "--trusted-proxies", "10.0.0.0/8"]).await;
    let res = http
        .get(server.url("/api/v1/exports"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let cookie = set_cookies(&res).remove(0);
    assert!(!cookie.contains("Secure"), "{cookie}");
    server.running.shutdown().await.unwrap();
    let server = TestServer::start(&["--auth", "cookie", "--trusted-proxies", "127.0.0.1"]).await;
    let res = http
        .get(server.url("/api/v1/exports"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let cookie = set_cookies(&res).remove(0);
    assert!(
        cookie.starts_with("__Host-") && cookie.contains("; Secure"),
        "{cookie}"
    );
    server.running.shutdown().await.unwrap();
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(
    server: &TestServer,
    user: &str,
    origin: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{}/ws", server.running.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-user", user.parse().unwrap());
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::connect_async(request))
        .await
        .expect("hang guard")?;
    Ok(ws)
}

fn refused_status(result: Result<Ws, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the socket was accepted"),
    }
}

async fn first_message(ws: &mut Ws) -> Value {
    let msg = tokio::time::timeout(HANG_GUARD, ws.next())
        .await
        .expect("hang guard")
        .expect("a message")
        .expect("no error");
    let Message::Text(text) = msg else {
        panic!("expected text, got {msg:?}")
    };
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_live_channel_refuses_foreign_origins_before_the_upgrade() {
    let server = TestServer::start(&["--ws-origins", "https://app.example.com"]).await;
    let own = format!("http://{}", server.running.addr);
    assert_eq!(
        refused_status(ws_connect(&server, "alice", Some("https://evil.example.net")).await),
        403
    );
    assert_eq!(
        refused_status(ws_connect(&server, "alice", Some("null")).await),
        403
    );
    // With a configured list, only the list (the Host's own origin is not implied).
    assert_eq!(
        refused_status(ws_connect(&server, "alice", Some(&own)).await),
        403
    );
    let mut ws = ws_connect(&server, "alice", Some("https://APP.example.com"))
        .await
        .unwrap();
    assert_eq!(first_message(&mut ws).await["type"], "snapshot");
    // Programs send no Origin: they have no ambient credentials to abuse.
    let mut ws = ws_connect(&server, "alice", None).await.unwrap();
    assert_eq!(first_message(&mut ws).await["type"], "snapshot");
    server.running.shutdown().await.unwrap();

    // By default: the page's own origin only.
    let server = TestServer::start(&[]).await;
    let own = format!("http://{}", server.running.addr);
    let mut ws = ws_connect(&server, "alice", Some(&own)).await.unwrap();
    assert_eq!(first_message(&mut ws).await["type"], "snapshot");
    assert_eq!(
        refused_status(ws_connect(&server, "alice", Some("http://127.0.0.1:1")).await),
        403
    );
    server.running.shutdown().await.unwrap();
}

/// Reads until the server ends the connection (close frame, error or end of stream);
/// returns how many data messages came first.
async fn read_to_end(ws: &mut Ws) -> usize {
    tokio::time::timeout(HANG_GUARD, async {
        let mut n = 0;
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return n,
                Some(Ok(Message::Text(_))) => n += 1,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the server never closed the socket")
}

#[tokio::test]
async fn an_oversized_inbound_frame_closes_the_socket() {
    let server = TestServer::start(&[]).await;
    let mut ws = ws_connect(&server, "alice", None).await.unwrap();
    first_message(&mut ws).await;
    // Small frames are fine.
    ws.send(Message::Text("hello".into())).await.unwrap();
    ws.send(Message::Text("x".repeat(64 * 1024).into()))
        .await
        .unwrap();
    read_to_end(&mut ws).await;
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_user_holds_at_most_the_configured_number_of_sockets() {
    let server = TestServer::start(&["--ws-per-user", "2"]).await;
    let mut a = ws_connect(&server, "alice", None).await.unwrap();
    let mut b = ws_connect(&server, "alice", None).await.unwrap();
    first_message(&mut a).await;
    first_message(&mut b).await;
    assert_eq!(
        refused_status(ws_connect(&server, "alice", None).await),
        429
    );
    // Others are not affected.
    let mut bob = ws_connect(&server, "bob", None).await.unwrap();
    first_message(&mut bob).await;
    // A closed socket frees its place.
    a.close(None).await.unwrap();
    read_to_end(&mut a).await;
    let reopened = tokio::time::timeout(HANG_GUARD, async {
        loop {
            match ws_connect(&server, "alice", None).await {
                Ok(ws) => break ws,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the place was never freed");
    drop(reopened);
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_live_client_that_never_reads_is_dropped_instead_of_buffered_for() {
    // One socket per user: a second one can only open once the server let go of the first.
    let server = TestServer::start(&["--ws-per-user", "1", "--ws-send-timeout", "300ms"]).await;
    let mut slow = ws_connect(&server, "alice", None).await.unwrap();
    first_message(&mut slow).await;
    assert_eq!(
        refused_status(ws_connect(&server, "alice", None).await),
        429
    );

    // Updates of ~16 KiB each, far more in all than the socket buffers between us hold.
    let service = server.running.service.clone().unwrap();
    let columns: Vec<String> = (0..256).map(|i| format!("{i:0>60}")).collect();
    let job = app::jobs::Job::queued(
        "0".repeat(32),
        "alice",
        "orders",
        app::jobs::ExportFormat::Csv,
        columns,
    );
    let mut published = 0usize;
    let second = tokio::time::timeout(HANG_GUARD, async {
        loop {
            for _ in 0..50 {
                service.jobs.hub.publish(&job);
                published += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Ok(ws) = ws_connect(&server, "alice", None).await {
                break ws;
            }
        }
    })
    .await
    .expect("the server kept the slow socket open");
    drop(second);

    // What the slow client finds when it finally reads: what was in flight, then the end.
    let received = read_to_end(&mut slow).await;
    assert!(
        received < published,
        "received {received} of {published}: nothing was dropped"
    );
    server.running.shutdown().await.unwrap();
}

/// A short fuzz run of the request parsers: the JSON of an `ExportRequest` and
/// `Dataset::check`, seeded by `server/tests/corpus/requests`. Whatever the input, the parse
/// and the check never panic, and a refusal lists at least one and at most `MAX_ERRORS` short
/// problems.
mod request_parsers {
    use app::jobs::ExportRequest;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::Value;
    use server::catalog::{Catalog, MAX_ERRORS};
    use std::collections::BTreeMap;

    fn corpus() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/requests");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        assert!(
            files.len() >= 10,
            "the seed corpus is missing: {}",
            dir.display()
        );
        files.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    fn demo_catalog(dir: &std::path::Path) -> Catalog {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let db = dir.join("demo.db");
            server::catalog::demo::ensure_database(&db, 50)
                .await
                .unwrap();
            Catalog::from_toml(&server::catalog::demo::catalog_toml(&db, 50), dir)
                .await
                .unwrap()
        })
    }

    /// Parses and checks one body, asserting the bounds; true when it reached the check.
    fn parse_and_check(catalog: &Catalog, body: &[u8]) -> bool {
        let Ok(req) = serde_json::from_slice::<ExportRequest>(body) else {
            return false;
        };
        let Some(dataset) = catalog.get(&req.dataset) else {
            return false;
        };
        match dataset.check(&req.params, req.columns.as_deref(), "alice") {
            Ok(checked) => {
                assert!(checked.columns.len() <= dataset.info.columns.len());
                assert_eq!(checked.columns.len(), checked.column_positions.len());
                assert_eq!(checked.params.len(), dataset.bound.slots.len());
            }
            Err(errors) => {
                assert!(
                    (1..=MAX_ERRORS).contains(&errors.len()),
                    "{} errors",
                    errors.len()
                );
                for e in &errors {
                    assert!(e.message.chars().count() <= 600, "{}", e.message);
                    assert!(e.field.chars().count() <= 80, "{}", e.field);
                }
            }
        }
        true
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,24}".prop_map(Value::String),
            "[0-9]{1,4}-[0-9]{1,2}-[0-9]{1,2}(T[0-9]{2}:[0-9]{2})?".prop_map(Value::String),
            prop::sample::select(vec!["pending", "paid", "shipped", "true", "12.5", ""])
                .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn name(known: Vec<String>) -> impl Strategy<Value = String> {
        prop_oneof![3 => prop::sample::select(known), 1 => ".{0,16}"]
    }

    #[test]
    fn request_parsing_and_checking_never_panic_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = demo_catalog(dir.path());
        let orders = catalog.get("orders").unwrap();
        let columns: Vec<String> = orders.info.columns.iter().map(|c| c.name.clone()).collect();
        let params: Vec<String> = orders.info.params.iter().map(|p| p.name.clone()).collect();
        let seeds = corpus();
        let checked = seeds
            .iter()
            .filter(|s| parse_and_check(&catalog, s))
            .count();
        assert!(checked >= 6, "most seeds must reach the check ({checked})");

        let config = || Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        };

        // 1. The seeds with bytes replaced, inserted and removed.
        let edits = prop::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 0..8);
        TestRunner::new(config())
            .run(&(0..seeds.len(), edits), |(seed, edits)| {
                let mut body = seeds[seed].clone();
                for (at, byte, op) in edits {
                    let at = at % (body.len() + 1);
                    match op {
                        0 if at < body.len() => body[at] = byte,
                        1 => body.insert(at, byte),
                        _ if at < body.len() => {
                            body.remove(at);
                        }
                        _ => {}
                    }
                }
                parse_and_check(&catalog, &body);
                Ok(())
            })
            .unwrap();

        // 2. Well-formed requests with any mix of known and unknown names and any values.
        let request = (
            prop::collection::btree_map(name(params.clone()), json_value(), 0..40),
            prop::option::of(prop::collection::vec(name(columns.clone()), 0..24)),
            prop::sample::select(vec!["csv", "ndjson", "json", "xlsx"]),
        );
        TestRunner::new(config())
            .run(&request, |(params, columns, format)| {
                let body = serde_json::json!({
                    "dataset": "orders", "format": format, "params": params, "columns": columns,
                });
                prop_assert!(parse_and_check(
                    &catalog,
                    &serde_json::to_vec(&body).unwrap()
                ));
                Ok(())
            })
            .unwrap();

        // 3. Long lists: repeats and unknown names by the thousand still give a short answer.
        let long = (
            prop::collection::vec(name(columns.clone()), 0..20_000),
            prop::collection::btree_map(name(params.clone()), Just(Value::Null), 0..2_000),
        );
        TestRunner::new(Config {
            cases: 16,
            ..config()
        })
        .run(&long, |(columns, params)| {
            let params: BTreeMap<String, Value> = params;
            let result = orders.check(&params, Some(&columns), "alice");
            if columns.len() > orders.info.columns.len() {
                prop_assert!(result.is_err());
            }
            if let Err(errors) = result {
                prop_assert!(errors.len() <= MAX_ERRORS);
            }
            Ok(())
        })
        .unwrap();
    }
}
