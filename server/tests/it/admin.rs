//! Operators: admins see and act on everyone's exports through `/api/v1/admin`, everyone else
//! finds no such routes; a failed or poisoned job is redriven to success on both storages;
//! per-dataset figures and the audit trail count what happened.

use crate::support::{orders, TestServer, User};
use serde_json::{json, Value};
use server::queue::{JobMessage, Queue};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A SQLite database of five rows and a datasets file that exports it as `flaky` (beside the
/// demo's orders), so a test can take the database away and bring it back.
struct Flaky {
    dir: tempfile::TempDir,
}

impl Flaky {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("flaky.db");
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db.display()))
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO t (name) VALUES ('a'), ('b'), ('c'), ('d'), ('e');",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let catalog = format!(
            "[sources.f]\nurl = \"sqlite://{}\"\n\n[[datasets]]\nid = \"flaky\"\ntitle = \"Flaky\"\nsource = \"f\"\nsql = \"SELECT id, name FROM t\"\n\n[[datasets]]\nid = \"names\"\ntitle = \"Names\"\nsource = \"f\"\nsql = \"SELECT name FROM t\"\n",
            db.display()
        );
        std::fs::write(dir.path().join("datasets.toml"), catalog).unwrap();
        Flaky { dir }
    }

    fn datasets(&self) -> String {
        self.dir.path().join("datasets.toml").display().to_string()
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("flaky.db")
    }

    fn take_away(&self) {
        std::fs::rename(self.db(), self.db().with_extension("away")).unwrap();
    }

    fn bring_back(&self) {
        std::fs::rename(self.db().with_extension("away"), self.db()).unwrap();
    }

    /// Server options: this catalogue, `root` as the admin, two attempts per export.
    fn args(&self, extra: &[String]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--datasets",
            &self.datasets(),
            "--admins",
            "root, auditor",
            "--max-attempts",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        args
    }
}

async fn start(args: &[String]) -> TestServer {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestServer::start(&args).await
}

async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn get(user: &User, path: &str) -> (u16, Value) {
    json_of(user.get(path).send().await.unwrap()).await
}

async fn post(user: &User, path: &str) -> (u16, Value) {
    json_of(user.post(path).send().await.unwrap()).await
}

/// Submits `dataset` as csv and waits for it to end.
async fn export(user: &User, dataset: &str) -> Value {
    let job = user
        .submit(json!({"dataset": dataset, "format": "csv"}))
        .await;
    let id = job["id"].as_str().unwrap();
    user.wait_for(id, &["succeeded", "failed", "cancelled"], WAIT)
        .await
}

#[tokio::test]
async fn admin_routes_do_not_exist_for_anyone_but_admins() {
    let server = TestServer::start(&[
        "--admins",
        "root",
        "--admin-group-header",
        "x-groups",
        "--admin-group",
        "ops",
    ])
    .await;
    let alice = server.user("alice");
    let job = alice.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    let (_, unknown) = get(&alice, "/api/v1/admin/nothing-here").await;
    let routes = [
        ("GET", "/api/v1/admin/jobs".to_string()),
        ("GET", "/api/v1/admin/jobs?status=bogus".to_string()),
        ("GET", "/api/v1/admin/queue".to_string()),
        ("GET", "/api/v1/admin/stats".to_string()),
        ("GET", "/api/v1/admin/audit".to_string()),
        ("POST", format!("/api/v1/admin/jobs/{id}/cancel")),
        ("POST", format!("/api/v1/admin/jobs/{id}/redrive")),
        // A wrong method is not a clue either.
        ("DELETE", "/api/v1/admin/queue".to_string()),
    ];
    for (method, path) in &routes {
        let req = |user: &User| match *method {
            "GET" => user.get(path),
            "POST" => user.post(path),
            _ => user
                .http
                .delete(format!("{}{path}", user.base))
                .header("x-forwarded-user", &user.name),
        };
        let (status, body) = json_of(req(&alice).send().await.unwrap()).await;
        assert_eq!((status, &body), (404, &unknown), "{method} {path}");
        // A user in another group is no admin; one in the admin group is.
        let staff = req(&alice).header("x-groups", "staff, audit");
        assert_eq!(staff.send().await.unwrap().status(), 404, "{method} {path}");
    }
    let (status, _) = get(&server.user("root"), "/api/v1/admin/queue").await;
    assert_eq!(status, 200);
    let carol = server.user("carol");
    let res = carol
        .get("/api/v1/admin/queue")
        .header("x-groups", "staff, ops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a member of the admin group is an admin");
    // The job was not touched by the refused cancel and redrive.
    let (_, after) = get(&alice, &format!("/api/v1/exports/{id}")).await;
    assert_ne!(after["status"], "cancelled");
    // An admin is an ordinary user on the user routes: root sees no one else's jobs there.
    let (_, mine) = get(&server.user("root"), "/api/v1/exports").await;
    assert_eq!(mine, json!([]));
    // The admin page itself is "not found" for everyone else, with a 404 status.
    let page = alice.get("/admin").send().await.unwrap();
    assert_eq!(page.status(), 404);
    assert!(page.text().await.unwrap().contains("Page not found"));
    let page = server.user("root").get("/admin").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Operations"));
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn admins_list_everyone_s_jobs_newest_first_filtered_and_paged() {
    let flaky = Flaky::new().await;
    let server = start(&flaky.args(&[])).await;
    let (alice, bob, root) = (
        server.user("alice"),
        server.user("bob"),
        server.user("root"),
    );
    let mut alices = Vec::new();
    for _ in 0..3 {
        alices.push(
            export(&alice, "flaky").await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let bobs = export(&bob, "names").await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (status, all) = get(&root, "/api/v1/admin/jobs").await;
    assert_eq!(status, 200, "{all}");
    let ids: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&bobs, &alices[2], &alices[1], &alices[0]]);
    assert!(all.get("next_cursor").is_none(), "one page: {all}");

    let (_, first) = get(&root, "/api/v1/admin/jobs?owner=alice&limit=2").await;
    assert_eq!(first["jobs"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    assert_eq!(cursor, alices[1]);
    let (_, second) = get(
        &root,
        &format!("/api/v1/admin/jobs?owner=alice&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(second["jobs"][0]["id"], alices[0].as_str());
    assert_eq!(second["jobs"].as_array().unwrap().len(), 1);

    let (_, names) = get(&root, "/api/v1/admin/jobs?dataset=names&status=succeeded").await;
    assert_eq!(names["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(names["jobs"][0]["owner"], "bob");
    let (_, none) = get(&root, "/api/v1/admin/jobs?status=failed").await;
    assert_eq!(none["jobs"], json!([]));

    for (query, says) in [
        ("status=done", "`status` must be one of"),
        ("limit=0", "`limit` must be from 1 to 200"),
        ("limit=201", "`limit` must be from 1 to 200"),
        ("limit=many", "limit"),
        ("cursor=..%2F..%2Fetc", "`cursor` is not a cursor"),
        ("owner=", "`owner` must be 1 to 256"),
        ("colour=blue", "colour"),
    ] {
        let (status, body) = get(&root, &format!("/api/v1/admin/jobs?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_queue_shows_running_jobs_with_their_worker_and_heartbeat_and_admins_cancel_them() {
    // The demo's orders, enough of them to be caught running.
    let server = TestServer::start(&[
        "--admins",
        "root",
        "--instance",
        "worker-7",
        "--demo-orders",
        "300000",
    ])
    .await;
    let (alice, root) = (server.user("alice"), server.user("root"));
    let (_, idle) = get(&root, "/api/v1/admin/queue").await;
    assert_eq!(
        (&idle["depth"], &idle["poison_depth"], &idle["running"]),
        (&json!(0), &json!(0), &json!([]))
    );
    assert_eq!(idle["approximate"], false);
    assert!(idle.get("oldest_queued_secs").is_none());

    let job = alice.submit(orders("xlsx")).await;
    let id = job["id"].as_str().unwrap();
    alice.wait_for(id, &["running"], WAIT).await;
    let (_, busy) = get(&root, "/api/v1/admin/queue").await;
    let running = &busy["running"][0];
    assert_eq!(running["job"]["id"], id, "{busy}");
    assert_eq!(running["worker"], "worker-7");
    let beat: chrono::DateTime<chrono::Utc> =
        running["heartbeat_at"].as_str().unwrap().parse().unwrap();
    assert!((chrono::Utc::now() - beat).num_seconds() < 30, "{beat}");
    assert_eq!(
        busy["depth"], 1,
        "the running job's message is held, not gone"
    );

    let (status, cancelled) = post(&root, &format!("/api/v1/admin/jobs/{id}/cancel")).await;
    assert_eq!(status, 200, "{cancelled}");
    let done = alice.wait_for(id, &["cancelled"], WAIT).await;
    assert_eq!(done["owner"], "alice");
    let (status, missing) = post(
        &root,
        "/api/v1/admin/jobs/0123456789abcdef0123456789abcdef/cancel",
    )
    .await;
    assert_eq!(
        (status, &missing["error"]["code"]),
        (404, &json!("not_found"))
    );

    let (_, audit) = get(
        &root,
        &format!("/api/v1/admin/audit?job={id}&action=admin_cancel"),
    )
    .await;
    let entry = &audit["entries"][0];
    assert_eq!(
        (&entry["actor"], &entry["owner"], &entry["dataset"]),
        (&json!("root"), &json!("alice"), &json!("orders"))
    );
    server.running.shutdown().await.unwrap();
}

/// Puts a message for `job` on the local poison queue, as a worker that gave up on it would.
async fn poison_locally(db: PathBuf, job: String) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO queue_messages (queue, body, visible_at, inserted_at) VALUES ('poison', ?, 0, 0)",
    )
    .bind(JobMessage::new(&job).encode())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// A job that failed for good (its database was away) and was poisoned is redriven by an
/// admin once the database is back: the poison message goes, the job runs again from its
/// first attempt and succeeds; another job's poison message stays.
async fn redrive_from_poison(
    flaky: &Flaky,
    server: &TestServer,
    poison: impl Fn(String) -> futures::future::BoxFuture<'static, ()>,
) {
    let (alice, root) = (server.user("alice"), server.user("root"));
    flaky.take_away();
    let failed = export(&alice, "flaky").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["error"]["code"], "source_unavailable");
    let id = failed["id"].as_str().unwrap().to_string();
    poison(id.clone()).await;
    poison("0123456789abcdef0123456789abcdef".into()).await;
    let (_, queue) = get(&root, "/api/v1/admin/queue").await;
    assert_eq!(queue["poison_depth"], 2, "{queue}");
    let (_, failures) = get(&root, "/api/v1/admin/jobs?status=failed").await;
    assert_eq!(failures["jobs"][0]["id"], id.as_str());

    // Not while the job is running or has succeeded: only failed or cancelled jobs go back.
    let (status, body) = post(
        &root,
        "/api/v1/admin/jobs/0123456789abcdef0123456789abcdef/redrive",
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));

    flaky.bring_back();
    let (status, redriven) = post(&root, &format!("/api/v1/admin/jobs/{id}/redrive")).await;
    assert_eq!(status, 202, "{redriven}");
    assert_eq!(
        (&redriven["status"], &redriven["attempts"]),
        (&json!("queued"), &json!(0))
    );
    let done = alice.wait_for(&id, &["succeeded", "failed"], WAIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        (&done["attempts"], &done["file"]["rows"]),
        (&json!(1), &json!(5))
    );
    let (_, queue) = get(&root, "/api/v1/admin/queue").await;
    assert_eq!(
        queue["poison_depth"], 1,
        "only the redriven job's message went: {queue}"
    );

    let (status, again) = post(&root, &format!("/api/v1/admin/jobs/{id}/redrive")).await;
    assert_eq!(
        (status, &again["error"]["code"]),
        (409, &json!("conflict")),
        "a succeeded job is not redriven"
    );
    let (_, audit) = get(
        &root,
        &format!("/api/v1/admin/audit?job={id}&action=admin_redrive"),
    )
    .await;
    assert_eq!(audit["entries"][0]["actor"], "root");
    assert_eq!(
        audit["entries"].as_array().unwrap().len(),
        1,
        "the refused one is not recorded"
    );
}

#[tokio::test]
async fn a_poisoned_job_is_redriven_to_success_on_the_local_queue() {
    let flaky = Flaky::new().await;
    let server = start(&flaky.args(&[])).await;
    let db = server.data.path().join("data").join("exportal.db");
    redrive_from_poison(&flaky, &server, |job| {
        Box::pin(poison_locally(db.clone(), job))
    })
    .await;
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_poisoned_job_is_redriven_to_success_on_azure_storage() {
    let flaky = Flaky::new().await;
    let s = crate::azure::settings();
    let server = start(&flaky.args(&crate::azure::settings_args(&s))).await;
    let clients = server::azure::clients(&s).unwrap();
    // The poison queue as a queue of its own: `send` puts a message on it.
    let poison: Arc<dyn Queue> = Arc::new(server::queue::azure::AzureQueue::new(
        clients.poison,
        clients.queue,
    ));
    redrive_from_poison(&flaky, &server, |job| {
        let poison = poison.clone();
        let body = JobMessage::new(&job).encode();
        Box::pin(async move { poison.send(&body, Duration::ZERO).await.unwrap() })
    })
    .await;
    let (_, audit) = get(&server.user("root"), "/api/v1/admin/audit?action=submit").await;
    assert_eq!(
        audit["entries"][0]["owner"], "alice",
        "the audit trail is kept on Azure too"
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn stats_count_exports_rows_bytes_failures_and_durations_per_dataset() {
    let flaky = Flaky::new().await;
    let server = start(&flaky.args(&[])).await;
    let (alice, root) = (server.user("alice"), server.user("root"));
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let a = export(&alice, "flaky").await;
    let b = export(&alice, "flaky").await;
    let n = export(&alice, "names").await;
    flaky.take_away();
    let failed = export(&alice, "names").await;
    assert_eq!(failed["status"], "failed");
    flaky.bring_back();

    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, stats) = get(&root, &format!("/api/v1/admin/stats?since={since}")).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        (&stats["jobs"], &stats["truncated"]),
        (&json!(4), &json!(false))
    );
    let of = |id: &str| {
        stats["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dataset"] == id)
            .unwrap()
            .clone()
    };
    let bytes = |j: &Value| j["file"]["bytes"].as_u64().unwrap();
    let f = of("flaky");
    assert_eq!(
        (&f["exports"], &f["succeeded"], &f["failed"], &f["rows"]),
        (&json!(2), &json!(2), &json!(0), &json!(10))
    );
    assert_eq!(f["bytes"], bytes(&a) + bytes(&b));
    assert!(f["p50_secs"].as_f64().unwrap() <= f["p95_secs"].as_f64().unwrap());
    let names = of("names");
    assert_eq!(
        (
            &names["exports"],
            &names["succeeded"],
            &names["failed"],
            &names["bytes"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(bytes(&n)))
    );
    // A period after everything: nothing.
    let (_, later) = get(&root, "/api/v1/admin/stats?since=2999-01-01T00:00:00Z").await;
    assert_eq!(
        (&later["jobs"], &later["datasets"]),
        (&json!(0), &json!([]))
    );
    let (status, bad) = get(&root, "/api/v1/admin/stats?since=yesterday").await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("RFC 3339"));
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_audit_trail_records_who_did_what_to_which_export_from_where() {
    let flaky = Flaky::new().await;
    let server = start(&flaky.args(&["--retry-base".into(), "30s".into()])).await;
    let (alice, root) = (server.user("alice"), server.user("root"));
    let done = alice
        .submit(json!({"dataset": "flaky", "format": "csv", "columns": ["name"], "gzip": true}))
        .await;
    let id = done["id"].as_str().unwrap().to_string();
    alice.wait_for(&id, &["succeeded"], WAIT).await;
    assert_eq!(alice.download(&id).await.status(), 200);
    // A second job: cancelled while it waits out its back-off, then retried by its owner.
    flaky.take_away();
    let other = alice
        .submit(json!({"dataset": "names", "format": "json"}))
        .await;
    let other = other["id"].as_str().unwrap().to_string();
    alice.wait_for(&other, &["retrying"], WAIT).await;
    let (status, _) = post(&alice, &format!("/api/v1/exports/{other}/cancel")).await;
    assert_eq!(status, 200);
    flaky.bring_back();
    let (status, _) = post(&alice, &format!("/api/v1/exports/{other}/retry")).await;
    assert_eq!(status, 202);
    // Refused actions leave no trace: someone else's job, and an export that is not there.
    assert_eq!(server.user("mallory").download(&id).await.status(), 404);

    let (status, page) = get(&root, "/api/v1/admin/audit").await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["job"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("retry", other.as_str()),
            ("cancel", other.as_str()),
            ("submit", other.as_str()),
            ("download", id.as_str()),
            ("submit", id.as_str()),
        ],
        "newest first, one entry per action"
    );
    let download = &entries[3];
    assert_eq!(
        (
            &download["actor"],
            &download["owner"],
            &download["dataset"],
            &download["format"]
        ),
        (
            &json!("alice"),
            &json!("alice"),
            &json!("flaky"),
            &json!("csv")
        )
    );
    assert_eq!(download["address"], "127.0.0.1");
    assert_eq!(download["parameters"]["columns"], json!(["name"]));
    assert_eq!(download["parameters"]["gzip"], true);
    assert!(chrono::DateTime::parse_from_rfc3339(download["at"].as_str().unwrap()).is_ok());

    // Filters and pages.
    let (_, downloads) = get(&root, "/api/v1/admin/audit?action=download&actor=alice").await;
    assert_eq!(downloads["entries"].as_array().unwrap().len(), 1);
    let (_, first) = get(&root, "/api/v1/admin/audit?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = get(
        &root,
        &format!("/api/v1/admin/audit?limit=10&cursor={cursor}"),
    )
    .await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 3);
    assert_eq!(rest["entries"][0]["action"], "submit");
    let (status, bad) = get(&root, "/api/v1/admin/audit?action=delete").await;
    assert_eq!(status, 400, "{bad}");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn start_up_refuses_an_admin_group_without_header_mode_or_without_its_name() {
    use server::config::Settings;
    let e = Settings::from_args(["--admin-group-header", "x-groups", "--admin-group", "ops"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("EXPORTAL_AUTH=header"), "{e}");
    let e = Settings::from_args(["--auth", "header", "--admin-group-header", "x-groups"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("set both"), "{e}");
    let e = Settings::from_args([
        "--auth",
        "header",
        "--admin-group-header",
        "x-groups",
        "--admin-group",
        "a,b",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("without commas"), "{e}");
    let ok = Settings::from_args(["--admins", "root, ops-lead ,"]).unwrap();
    assert_eq!(ok.admins.users, ["root", "ops-lead"]);
}
