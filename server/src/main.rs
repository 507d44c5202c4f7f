//! The `server` binary: parses the command line, then hands over to [`server::start`].

use server::config::{help_text, Command};
use std::process::ExitCode;

/// Rows are allocated on the reading task and freed on the formatting thread; glibc's malloc
/// pays for every such cross-thread free, mimalloc hands them back cheaply.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let settings = match Command::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Command::Run(settings)) => *settings,
        Ok(Command::Help) => {
            print!("{}", help_text());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("exportal {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("exportal: {e}");
            return ExitCode::from(2);
        }
    };
    server::telemetry::init(settings.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("exportal: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("exportal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: server::config::Settings) -> anyhow::Result<()> {
    let leptos = leptos::config::get_configuration(None)?.leptos_options;
    let mut running = server::start(settings, leptos).await?;
    tokio::select! {
        result = running.wait() => return result,
        _ = server::shutdown_signal() => tracing::info!("shutting down"),
    }
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}
