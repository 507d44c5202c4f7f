//! `/admin`: the operator's console. Rendered on the server from one overview, then kept live
//! by the overviews `/ws` sends admins. Everyone else gets the "page not found" page (and a
//! 404 status), as for any address that does not exist.

use crate::admin::{admin_overview, AdminCancel, AdminRedrive, Overview, RunningJob};
use crate::error::ErrorCode;
use crate::jobs::Job;
use crate::text::{group_digits, human_bytes};
use chrono::Timelike;
use leptos::prelude::*;

fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.0} min", s / 60.0)
    }
}

fn short(id: &str) -> String {
    id.chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

#[component]
pub fn AdminPage() -> impl IntoView {
    let initial = Resource::new(|| (), |_| admin_overview());
    // The latest overview from the live channel (or an action's answer), newer than `initial`.
    let live = use_context::<RwSignal<Option<Overview>>>().unwrap_or_else(|| RwSignal::new(None));
    let cancel = ServerAction::<AdminCancel>::new();
    let redrive = ServerAction::<AdminRedrive>::new();
    let (notice, set_notice) = signal(None::<(bool, String)>);
    for (action, verb) in [(cancel.value(), "Cancel"), (redrive.value(), "Redrive")] {
        Effect::new(move |_| match action.get() {
            Some(Ok(job)) => {
                set_notice.set(Some((
                    true,
                    format!(
                        "{verb} of job {} accepted: it is {} now.",
                        short(&job.id),
                        job.status
                    ),
                )));
                // Show the effect at once rather than at the next live overview.
                leptos::task::spawn_local(async move {
                    if let Ok(o) = admin_overview().await {
                        live.set(Some(o));
                    }
                });
            }
            Some(Err(e)) => set_notice.set(Some((false, e.message))),
            None => {}
        });
    }

    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || {
                let first = initial.get()?;
                Some(match first {
                    Err(e) if e.code == ErrorCode::NotFound => {
                        #[cfg(feature = "ssr")]
                        if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
                            res.set_status(http::StatusCode::NOT_FOUND);
                        }
                        view! { <super::layout::NotFound/> }.into_any()
                    }
                    Err(e) => view! {
                        <section class="card"><p class="error" role="alert">{e.message}</p></section>
                    }.into_any(),
                    Ok(first) => {
                        let overview = Memo::new(move |_| live.get().unwrap_or_else(|| first.clone()));
                        view! {
                            <section class="hero">
                                <h1>"Operations"</h1>
                                <p class="lead">"The queue, running exports, failures and what each dataset exported in the last 24 hours, live."</p>
                            </section>
                            <p class="notice" role="status" aria-live="polite" data-testid="admin-notice">
                                {move || notice.get().map(|(ok, text)| view! {
                                    <span class=if ok { "ok" } else { "error" }>{text}</span>
                                })}
                            </p>
                            <QueueCard overview cancel/>
                            <FailuresCard overview redrive/>
                            <DatasetsCard overview/>
                        }.into_any()
                    }
                })
            }}
        </Suspense>
    }
    .into_any()
}

#[component]
fn QueueCard(overview: Memo<Overview>, cancel: ServerAction<AdminCancel>) -> impl IntoView {
    let q = move || overview.with(|o| o.queue.clone());
    view! {
        <section class="card" aria-labelledby="queue-title">
            <h2 id="queue-title">"Queue"</h2>
            <dl class="facts">
                <div><dt>"Waiting or held"</dt><dd data-testid="queue-depth">{move || format!("{}{}", if q().approximate { "≈" } else { "" }, group_digits(q().depth))}</dd></div>
                <div><dt>"Poison queue"</dt><dd data-testid="poison-depth">{move || group_digits(q().poison_depth)}</dd></div>
                <div><dt>"Oldest waiting"</dt><dd data-testid="oldest-queued">{move || q().oldest_queued_secs.map(|s| seconds(s as f64)).unwrap_or_else(|| "none".into())}</dd></div>
                <div><dt>"Running"</dt><dd data-testid="running-count">{move || q().running.len()}</dd></div>
            </dl>
            <div class="table-wrap" tabindex="0" role="region" aria-labelledby="running-caption">
                <table data-testid="running">
                    <caption id="running-caption">"Running exports"</caption>
                    <thead><tr>
                        <th scope="col">"Job"</th><th scope="col">"Owner"</th><th scope="col">"Dataset"</th>
                        <th scope="col">"Rows"</th><th scope="col">"Worker"</th><th scope="col">"Heartbeat"</th>
                        <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                    </tr></thead>
                    <tbody>
                        <For each=move || q().running key=|r| (r.job.id.clone(), r.job.revision) let:r>
                            <RunningRow r=r cancel/>
                        </For>
                    </tbody>
                </table>
            </div>
            <Show when=move || q().running.is_empty()>
                <p class="muted small" data-testid="running-none">"Nothing is running."</p>
            </Show>
        </section>
    }
    .into_any()
}

#[component]
fn RunningRow(r: RunningJob, cancel: ServerAction<AdminCancel>) -> impl IntoView {
    let id = r.job.id.clone();
    let heartbeat = r
        .heartbeat_at
        // Fields, not a strftime pattern: the pattern parser and formatter would be shipped to
        // every browser for this one cell.
        .map(|t| format!("{:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second()))
        .unwrap_or_default();
    let label = format!("Cancel job {}", short(&id));
    let requested = r.job.cancel_requested;
    let (testid, shown, title) = (format!("running-{id}"), short(&id), id.clone());
    view! {
        <tr data-testid=testid>
            <td title=title>{shown}</td>
            <td>{r.job.owner.clone()}</td>
            <td>{format!("{} · {}", r.job.dataset, r.job.format)}</td>
            <td class="num" data-testid="running-rows">{group_digits(r.job.progress.rows)}</td>
            <td>{r.worker.clone().unwrap_or_default()}</td>
            <td>{heartbeat}</td>
            <td>
                <button type="button" class="button secondary small-button" data-testid="admin-cancel"
                    aria-label=label disabled=requested
                    on:click=move |_| { cancel.dispatch(AdminCancel { id: id.clone() }); }>
                    {if requested { "Cancelling…" } else { "Cancel" }}
                </button>
            </td>
        </tr>
    }
    .into_any()
}

#[component]
fn FailuresCard(overview: Memo<Overview>, redrive: ServerAction<AdminRedrive>) -> impl IntoView {
    let failures = move || overview.with(|o| o.failures.clone());
    view! {
        <section class="card" aria-labelledby="failures-title">
            <h2 id="failures-title">"Recent failures"</h2>
            <Show when=move || !failures().is_empty()
                fallback=|| view! { <p class="muted small" data-testid="failures-none">"No failed exports."</p> }>
                <div class="table-wrap" tabindex="0" role="region" aria-labelledby="failures-caption">
                    <table data-testid="failures">
                        <caption id="failures-caption">"Failed exports, newest first"</caption>
                        <thead><tr>
                            <th scope="col">"Job"</th><th scope="col">"Owner"</th><th scope="col">"Dataset"</th>
                            <th scope="col">"Attempts"</th><th scope="col">"Reason"</th>
                            <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                        </tr></thead>
                        <tbody>
                            <For each=failures key=|j| (j.id.clone(), j.revision) let:job>
                                <FailureRow job redrive/>
                            </For>
                        </tbody>
                    </table>
                </div>
            </Show>
        </section>
    }
    .into_any()
}

#[component]
fn FailureRow(job: Job, redrive: ServerAction<AdminRedrive>) -> impl IntoView {
    let id = job.id.clone();
    let reason = job
        .error
        .as_ref()
        .map(|e| format!("{} ({})", e.message, e.code))
        .unwrap_or_default();
    let label = format!("Redrive job {}", short(&id));
    let (testid, shown, title) = (format!("failure-{id}"), short(&id), id.clone());
    view! {
        <tr data-testid=testid>
            <td title=title>{shown}</td>
            <td>{job.owner.clone()}</td>
            <td>{format!("{} · {}", job.dataset, job.format)}</td>
            <td class="num">{job.attempts}</td>
            <td class="reason" data-testid="failure-reason">{reason}</td>
            <td>
                <button type="button" class="button small-button" data-testid="admin-redrive"
                    aria-label=label disabled=move || redrive.pending().get()
                    on:click=move |_| { redrive.dispatch(AdminRedrive { id: id.clone() }); }>
                    "Redrive"
                </button>
            </td>
        </tr>
    }
    .into_any()
}

#[component]
fn DatasetsCard(overview: Memo<Overview>) -> impl IntoView {
    let stats = move || overview.with(|o| o.stats.clone());
    let p = |v: Option<f64>| v.map(seconds).unwrap_or_else(|| "–".into());
    view! {
        <section class="card" aria-labelledby="datasets-title">
            <h2 id="datasets-title">"Datasets, last 24 hours"</h2>
            <div class="table-wrap" tabindex="0" role="region" aria-labelledby="datasets-caption">
                <table data-testid="dataset-stats">
                    <caption id="datasets-caption">
                        {move || if stats().truncated { "Per dataset (the newest jobs only: more than one report reads)" } else { "Per dataset" }}
                    </caption>
                    <thead><tr>
                        <th scope="col">"Dataset"</th><th scope="col">"Exports"</th><th scope="col">"Succeeded"</th>
                        <th scope="col">"Failed"</th><th scope="col">"Cancelled"</th><th scope="col">"Rows"</th>
                        <th scope="col">"Bytes"</th><th scope="col">"p50"</th><th scope="col">"p95"</th>
                    </tr></thead>
                    <tbody>
                        <For each=move || stats().datasets key=|d| format!("{d:?}") let:d>
                            <tr data-testid=format!("stats-{}", d.dataset)>
                                <th scope="row">{d.dataset.clone()}</th>
                                <td class="num" data-testid="stats-exports">{d.exports}</td>
                                <td class="num">{d.succeeded}</td>
                                <td class="num" data-testid="stats-failed">{d.failed}</td>
                                <td class="num">{d.cancelled}</td>
                                <td class="num">{group_digits(d.rows)}</td>
                                <td class="num">{human_bytes(d.bytes)}</td>
                                <td class="num">{p(d.p50_secs)}</td>
                                <td class="num">{p(d.p95_secs)}</td>
                            </tr>
                        </For>
                    </tbody>
                </table>
            </div>
        </section>
    }
    .into_any()
}
