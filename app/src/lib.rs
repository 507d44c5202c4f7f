//! Exportal's user interface and the types shared by the server and the browser.
//!
//! The same crate is compiled twice: with `ssr` into the server, which renders the page and
//! runs the server functions, and with `hydrate` into the wasm module, which takes the rendered
//! page over in the browser. Everything both sides must agree on (errors, messages on the
//! WebSocket, server-function signatures) lives here so that it cannot drift apart.

pub mod admin;
pub mod backend;
pub mod catalog;
mod components;
pub mod error;
pub mod exports;
pub mod jobs;
pub mod live;
pub mod locale;
pub mod status;
pub mod text;

pub use components::{shell, App};
