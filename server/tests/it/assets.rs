//! The site's static files: the precompressed copy the browser accepts, identity for a client
//! that accepts none, a year of caching for content-hashed names and revalidation for
//! everything else; the page and JSON compressed on the fly, downloads never.

use crate::support::{orders, TestServer};
use leptos::config::LeptosOptions;
use reqwest::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, VARY};
use std::time::Duration;

const WASM: &[u8] = b"\0asm the module itself";
const WASM_BR: &[u8] = b"brotli copy";
const WASM_GZ: &[u8] = b"gzip copy";

/// A site root as `cargo leptos build --release --precompress` leaves it, with hashed names.
fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("exportal.0f1e2d3c.wasm"), WASM).unwrap();
    std::fs::write(pkg.join("exportal.0f1e2d3c.wasm.br"), WASM_BR).unwrap();
    std::fs::write(pkg.join("exportal.0f1e2d3c.wasm.gz"), WASM_GZ).unwrap();
    std::fs::write(dir.path().join("favicon.svg"), "<svg/>").unwrap();
    // cargo-leptos writes the hashes beside the server binary; an absolute name finds them here.
    std::fs::write(
        dir.path().join("hash.txt"),
        "js: 0f1e2d3c\nwasm: 0f1e2d3c\ncss: 0f1e2d3c\n",
    )
    .unwrap();
    dir
}

async fn server(site: &tempfile::TempDir, hashed: bool) -> TestServer {
    let leptos = LeptosOptions::builder()
        .output_name("exportal")
        .site_root(site.path().display().to_string())
        .hash_files(hashed)
        .hash_file(site.path().join("hash.txt").display().to_string().into())
        .build();
    TestServer::start_with(&[], leptos).await
}

fn header(res: &reqwest::Response, name: reqwest::header::HeaderName) -> &str {
    res.headers()
        .get(&name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn static_files_come_precompressed_as_the_browser_accepts_and_hashed_ones_are_cached_for_a_year(
) {
    let site = site();
    let server = server(&site, true).await;
    // reqwest without its decompression features: bodies arrive exactly as sent.
    let user = server.user("alice");
    let path = "/pkg/exportal.0f1e2d3c.wasm";
    for (accept, encoding, body) in [
        ("br, gzip", "br", WASM_BR),
        ("gzip, deflate", "gzip", WASM_GZ),
        ("", "", WASM),
        ("identity", "", WASM),
    ] {
        let mut req = user.get(path);
        if !accept.is_empty() {
            req = req.header(ACCEPT_ENCODING, accept);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200, "{accept}");
        assert_eq!(header(&res, CONTENT_ENCODING), encoding, "{accept}");
        assert_eq!(
            header(&res, CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        if !encoding.is_empty() {
            assert!(header(&res, VARY).contains("accept-encoding"), "{accept}");
        }
        assert_eq!(&res.bytes().await.unwrap()[..], body, "{accept}");
    }
    // Not hashed: kept, but asked about again.
    let res = user.get("/favicon.svg").send().await.unwrap();
    assert_eq!(
        (res.status().as_u16(), header(&res, CACHE_CONTROL)),
        (200, "no-cache")
    );
    // A missing file is the page's 404, not cached for long either.
    let res = user
        .get("/pkg/exportal.00000000.wasm")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (res.status().as_u16(), header(&res, CACHE_CONTROL)),
        (404, "no-cache")
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_hashed_names_nothing_is_cached_without_asking() {
    let site = site();
    let server = server(&site, false).await;
    let res = server
        .user("alice")
        .get("/pkg/exportal.0f1e2d3c.wasm")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&res, CACHE_CONTROL), "no-cache");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_page_and_json_are_compressed_on_the_fly_but_downloads_never() {
    let site = site();
    let server = server(&site, true).await;
    let alice = server.user("alice");
    let page = alice
        .get("/")
        .header(ACCEPT_ENCODING, "br")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            header(&page, CONTENT_ENCODING),
            header(&page, CACHE_CONTROL)
        ),
        ("br", "no-cache"),
        "HTML is compressed and revalidated"
    );
    let plain = alice.get("/").send().await.unwrap();
    assert_eq!(header(&plain, CONTENT_ENCODING), "");
    let html = plain.text().await.unwrap();
    assert!(html.contains("<!DOCTYPE html>"));
    // The page names the hashed files, so a new release is fetched at once.
    assert!(html.contains("/pkg/exportal.0f1e2d3c.css"), "{html}");
    assert!(html.contains("/pkg/exportal.0f1e2d3c.wasm"), "{html}");
    let list = alice
        .get("/api/v1/datasets")
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&list, CONTENT_ENCODING), "gzip");

    let job = alice.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    alice
        .wait_for(id, &["succeeded"], Duration::from_secs(30))
        .await;
    let file = alice
        .get(&format!("/api/v1/exports/{id}/download"))
        .header(ACCEPT_ENCODING, "br, gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(
        header(&file, CONTENT_ENCODING),
        "",
        "a file is sent as it is stored"
    );
    assert_eq!(header(&file, CACHE_CONTROL), "private, no-store");
    let length: usize = header(&file, reqwest::header::CONTENT_LENGTH)
        .parse()
        .unwrap();
    assert_eq!(file.bytes().await.unwrap().len(), length);
    server.running.shutdown().await.unwrap();
}
