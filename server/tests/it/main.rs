//! Integration tests: the server spawned for real (port 0, fresh data directory), real SQLite,
//! PostgreSQL and MariaDB (started by scripts/test.sh), real files.
//!
//! One test binary keeps link time down; each file is one area of behaviour.

mod admin;
mod api;
mod assets;
mod azure;
mod azure_faults;
mod azure_sweep;
mod crash;
mod edge;
mod ends;
mod http;
mod injection;
mod keyless;
mod limits;
mod metrics;
mod openapi;
mod process;
mod queue;
mod scanner;
mod sources;
mod support;
mod types;
mod webhooks;
mod worker;
mod ws;
