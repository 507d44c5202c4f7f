//! The start page.

use crate::status::{fetch_status, FetchStatus, ServerStatus};
use leptos::prelude::*;

#[component]
pub fn HomePage() -> impl IntoView {
    // Rendered on the server, then refreshed from the browser on demand: the refresh is a
    // real server-function round trip.
    let initial = Resource::new(|| (), |_| fetch_status());
    let refresh = ServerAction::<FetchStatus>::new();
    let refreshes = refresh.version();

    view! {
        <section class="hero">
            <h1>"Your data, exported"</h1>
            <p class="lead">
                "Pick a dataset, choose filters, columns and a format, and Exportal builds the file in "
                "the background. Follow its progress live and download it when it is ready."
            </p>
        </section>
        <div class="workspace">
            <super::export_form::ExportForm/>
            <super::jobs_list::JobsList/>
        </div>
        <section class="card status-card" aria-labelledby="status-title">
            <div class="card-head">
                <h2 id="status-title">"Service status"</h2>
                <button
                    class="button secondary"
                    data-testid="status-refresh"
                    on:click=move |_| { refresh.dispatch(FetchStatus {}); }
                    disabled=move || refresh.pending().get()
                >
                    {move || if refresh.pending().get() { "Checking…" } else { "Check again" }}
                </button>
            </div>
            <Transition fallback=|| view! { <p class="muted">"Asking the server…"</p> }>
                {move || {
                    let latest = refresh.value().get().or_else(|| initial.get());
                    latest.map(|answer| match answer {
                        Ok(status) => view! { <StatusFacts status/> }.into_any(),
                        Err(e) => view! {
                            <p class="error" role="alert" data-testid="status-error">{e.message}</p>
                        }.into_any(),
                    })
                }}
            </Transition>
            <p class="muted small" data-testid="status-checks">
                {move || match refreshes.get() {
                    0 => "Shown as rendered by the server.".to_string(),
                    1 => "Checked from your browser once.".to_string(),
                    n => format!("Checked from your browser {n} times."),
                }}
            </p>
        </section>
    }
}

#[component]
fn StatusFacts(status: ServerStatus) -> impl IntoView {
    view! {
        <dl class="facts" data-testid="server-status">
            <div><dt>"Version"</dt><dd data-testid="server-version">{status.version}</dd></div>
            <div><dt>"Role"</dt><dd>{status.role}</dd></div>
            <div><dt>"Storage"</dt><dd>{status.storage}</dd></div>
            <div><dt>"Up for"</dt><dd>{format_uptime(status.uptime_secs)}</dd></div>
        </dl>
    }
}

fn format_uptime(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}
