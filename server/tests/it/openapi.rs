//! The OpenAPI document: served to anyone, complete, and true of what the API answers.

use crate::support::{orders, TestServer, User};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// The served document, fetched without any identity.
async fn document(server: &TestServer) -> Value {
    let res = reqwest::get(server.url("/api/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    res.json().await.unwrap()
}

/// (METHOD, path) of every operation the document describes.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let methods = ["get", "put", "post", "delete", "patch"];
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            methods
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

/// Checks `instance` against the document's schema `name`, its references resolved in the
/// document (OpenAPI 3.1 schemas are JSON Schema 2020-12), formats included.
fn assert_matches(doc: &Value, name: &str, instance: &Value) {
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("the schema {name} is not valid JSON Schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at `{}`)", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} does not match the document: {errors:#?}\n{instance:#}"
    );
}

async fn json_of(res: reqwest::Response, expected: u16) -> Value {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, expected, "{body}");
    body
}

#[tokio::test]
async fn the_document_needs_no_identity_while_every_route_it_lists_does() {
    let server = TestServer::start(&[]).await;
    let doc = document(&server).await;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "{version}");
    assert_eq!(doc["security"], json!([{"user": []}]));

    let http = reqwest::Client::new();
    for (method, path) in operations(&doc) {
        let url = server.url(&path.replace("{id}", "some-id"));
        let res = http
            .request(method.parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        let body = json_of(res, 401).await;
        assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        assert_matches(&doc, "ErrorBody", &body);
    }
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_document_lists_every_rest_route_and_nothing_else() {
    let server = TestServer::start(&[]).await;
    let routed: BTreeSet<(String, String)> = server::http::route_list()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(operations(&document(&server).await), routed);
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn datasets_previews_and_a_finished_job_match_the_documents_schemas() {
    let server = TestServer::start(&[]).await;
    let doc = document(&server).await;
    let alice = server.user("alice");

    let datasets = json_of(alice.get("/api/v1/datasets").send().await.unwrap(), 200).await;
    for dataset in datasets.as_array().unwrap() {
        assert_matches(&doc, "DatasetInfo", dataset);
    }
    // The document offers the smallest request for each dataset of this catalogue.
    let examples = &doc["paths"]["/api/v1/exports"]["post"]["requestBody"]["content"]
        ["application/json"]["examples"];
    assert_eq!(
        examples["orders"]["value"],
        json!({"dataset": "orders", "format": "csv"})
    );

    let preview = json_of(
        alice
            .post("/api/v1/preview")
            .json(&json!({"dataset": "orders", "format": "csv", "options": {"delimiter": "\t"}}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_matches(&doc, "Preview", &preview);

    let res = alice
        .post("/api/v1/exports")
        .json(&json!({"dataset": "orders", "format": "csv", "gzip": true,
            "options": {"delimiter": "\t", "time_zone": "Europe/Paris"}}))
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let queued = json_of(res, 202).await;
    assert_eq!(
        location,
        format!("/api/v1/exports/{}", queued["id"].as_str().unwrap())
    );
    assert_matches(&doc, "Job", &queued);

    let id = queued["id"].as_str().unwrap();
    let done = alice
        .wait_for(id, &["succeeded", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["file"].is_object() && done["finished_at"].is_string());
    assert_matches(&doc, "Job", &done);
    let list = json_of(alice.get("/api/v1/exports").send().await.unwrap(), 200).await;
    for job in list.as_array().unwrap() {
        assert_matches(&doc, "Job", job);
    }
    server.running.shutdown().await.unwrap();
}

async fn post(user: &User, path: &str) -> reqwest::Response {
    user.post(path).send().await.unwrap()
}

#[tokio::test]
async fn cancelled_and_retried_jobs_and_refusals_match_the_documents_schemas() {
    // No worker: the job stays queued until it is cancelled.
    let server = TestServer::start(&["--role", "web"]).await;
    let doc = document(&server).await;
    let alice = server.user("alice");
    let id = alice.submit(orders("ndjson")).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let cancelled = json_of(
        post(&alice, &format!("/api/v1/exports/{id}/cancel")).await,
        200,
    )
    .await;
    assert_eq!(cancelled["error"]["code"], "cancelled");
    assert_matches(&doc, "Job", &cancelled);
    let conflict = json_of(alice.download(&id).await, 409).await;
    assert_matches(&doc, "ErrorBody", &conflict);
    let retried = json_of(
        post(&alice, &format!("/api/v1/exports/{id}/retry")).await,
        202,
    )
    .await;
    assert_matches(&doc, "Job", &retried);

    let refusals = [
        (alice.get("/api/v1/exports/nope").send().await.unwrap(), 404),
        (
            alice
                .post("/api/v1/exports")
                .json(&json!({"dataset": "orders", "format": "csv", "colour": 1}))
                .send()
                .await
                .unwrap(),
            400,
        ),
        (
            alice
                .post("/api/v1/preview")
                .body(r#"{"dataset": "orders", "format": "csv"}"#)
                .send()
                .await
                .unwrap(),
            415,
        ),
        (
            reqwest::Client::new()
                .put(server.url("/api/v1/openapi.json"))
                .send()
                .await
                .unwrap(),
            405,
        ),
    ];
    for (res, status) in refusals {
        let body = json_of(res, status).await;
        assert_matches(&doc, "ErrorBody", &body);
    }
    server.running.shutdown().await.unwrap();
}
