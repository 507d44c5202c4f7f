//! The browser entry point. It stays tiny on purpose: everything the page does lives in
//! the `app` crate so that the server renders exactly what the browser hydrates.

// Release builds (without `erase_components`) compute the layout of the page's full view type,
// which nests deeper than the default limit.
#![recursion_limit = "512"]

/// Called by the JS glue cargo-leptos generates once the wasm module has loaded.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
