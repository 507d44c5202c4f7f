//! "Your exports": the live list of the user's jobs, fed by the `/ws` channel.

use crate::exports::{CancelExport, RetryExport};
use crate::jobs::{Job, JobStatus};
use crate::text::{group_digits, human_bytes};
use leptos::prelude::*;

/// Puts a version of a job into the list, newest job first. The page hears of a job from
/// several places (the live channel, and the answers of submit, cancel and retry), and they can
/// arrive out of order: a version with an older revision than the one shown is stale and is
/// dropped, so a late answer never turns a cancelled job back into a running one.
pub fn upsert(list: &mut Vec<Job>, job: Job) {
    match list.iter_mut().find(|j| j.id == job.id) {
        Some(existing) if job.revision < existing.revision => {}
        Some(existing) => *existing = job,
        None => {
            list.push(job);
            list.sort_by(|a, b| {
                b.created_at
                    .cmp(&a.created_at)
                    .then_with(|| b.id.cmp(&a.id))
            });
        }
    }
}

/// Replaces the list with a snapshot from the server, keeping any version the page already
/// has that is newer than the snapshot's (an action's answer can overtake a snapshot read).
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub fn replace_all(list: &mut Vec<Job>, snapshot: Vec<Job>) {
    let shown = std::mem::take(list);
    *list = snapshot;
    for job in shown {
        if list
            .iter()
            .any(|j| j.id == job.id && j.revision < job.revision)
        {
            upsert(list, job);
        }
    }
}

/// Milliseconds since the epoch, from the browser's clock (the server renders no live list).
fn now_ms() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0.0
    }
}

/// "about 2 min left", from the rate so far.
fn eta(job: &Job) -> Option<String> {
    let total = job.progress.total_rows?;
    let started = job.started_at?.timestamp_millis() as f64;
    let elapsed = (now_ms() - started) / 1000.0;
    let done = job.progress.rows as f64;
    if done < 1.0 || elapsed <= 0.5 || total as f64 <= done {
        return None;
    }
    let left = (total as f64 - done) / (done / elapsed);
    Some(if left < 60.0 {
        format!("about {} s left", left.ceil() as u64)
    } else {
        format!("about {} min left", (left / 60.0).ceil() as u64)
    })
}

#[component]
pub fn JobsList() -> impl IntoView {
    let jobs = use_context::<RwSignal<Vec<Job>>>().unwrap_or_else(|| RwSignal::new(vec![]));
    let loaded = use_context::<RwSignal<bool>>().unwrap_or_else(|| RwSignal::new(false));
    view! {
        <section class="card jobs-card" aria-labelledby="jobs-title">
            <h2 id="jobs-title">"Your exports"</h2>
            <Show
                when=move || loaded.get()
                fallback=|| view! { <p class="muted" data-testid="jobs-loading">"Loading your exports…"</p> }
            >
                <Show
                    when=move || jobs.with(|j| !j.is_empty())
                    fallback=|| view! { <p class="muted" data-testid="jobs-empty">"No exports yet. Choose a dataset and press Export."</p> }
                >
                    <ul class="jobs" data-testid="jobs">
                        <For each=move || jobs.get() key=|j| j.id.clone() let:job>
                            <JobRow id=job.id.clone() jobs/>
                        </For>
                    </ul>
                </Show>
            </Show>
        </section>
    }
}

/// One job. The row's structure only changes with the job's status; progress updates change
/// text and attributes in place, so a button under the pointer is never replaced mid-click.
#[component]
fn JobRow(id: String, jobs: RwSignal<Vec<Job>>) -> impl IntoView {
    let job = {
        let id = id.clone();
        Memo::new(move |_| jobs.with(|list| list.iter().find(|j| j.id == id).cloned()))
    };
    let status =
        Memo::new(move |_| job.with(|j| j.as_ref().map(|j| j.status).unwrap_or(JobStatus::Queued)));
    let cancel_requested =
        Memo::new(move |_| job.with(|j| j.as_ref().is_some_and(|j| j.cancel_requested)));
    let rows = Memo::new(move |_| job.with(|j| j.as_ref().map(|j| j.progress.rows).unwrap_or(0)));
    let percent = Memo::new(move |_| {
        job.with(|j| {
            let j = j.as_ref()?;
            match (j.status, j.progress.total_rows) {
                (JobStatus::Succeeded, _) => Some(100.0),
                (_, Some(t)) if t > 0 => {
                    Some((j.progress.rows as f64 / t as f64 * 100.0).min(100.0))
                }
                _ => None,
            }
        })
    });
    let error = Memo::new(move |_| {
        job.with(|j| {
            j.as_ref()
                .and_then(|j| j.error.clone())
                .filter(|e| e.code != "cancelled")
                .map(|e| e.message)
        })
    });
    let file_name = Memo::new(move |_| {
        job.with(|j| {
            j.as_ref()
                .and_then(|j| j.file.as_ref().map(|f| f.name.clone()))
                .unwrap_or_default()
        })
    });
    let title = move || {
        job.with(|j| {
            j.as_ref()
                .map(|j| {
                    format!(
                        "{} · {}{}",
                        j.dataset,
                        j.format.label(),
                        if j.gzip { " (gzip)" } else { "" }
                    )
                })
                .unwrap_or_default()
        })
    };
    let detail = move || {
        job.with(|j| {
            let Some(j) = j.as_ref() else {
                return String::new();
            };
            let rows_text = match j.progress.total_rows {
                Some(t) => format!(
                    "{} of {} rows",
                    group_digits(j.progress.rows),
                    group_digits(t)
                ),
                None => format!("{} rows", group_digits(j.progress.rows)),
            };
            match j.status {
                JobStatus::Running => {
                    let mut parts = vec![rows_text, human_bytes(j.progress.bytes)];
                    parts.extend(eta(j));
                    parts.join(" · ")
                }
                JobStatus::Succeeded => j
                    .file
                    .as_ref()
                    .map(|f| format!("{} rows · {}", group_digits(f.rows), human_bytes(f.bytes)))
                    .unwrap_or_default(),
                JobStatus::Queued => "Waiting for a worker…".into(),
                JobStatus::Retrying => "Will try again shortly.".into(),
                JobStatus::Expired => "The file has expired.".into(),
                _ => String::new(),
            }
        })
    };

    let cancel = ServerAction::<CancelExport>::new();
    let retry = ServerAction::<RetryExport>::new();
    // One effect per action: an effect reading both would apply the other action's old
    // answer again each time either one answers.
    for action in [cancel.value(), retry.value()] {
        Effect::new(move |_| {
            if let Some(Ok(updated)) = action.get() {
                jobs.update(|list| upsert(list, updated));
            }
        });
    }
    let action_error = move || {
        [cancel.value().get(), retry.value().get()]
            .into_iter()
            .flatten()
            .find_map(|r| r.err())
            .map(|e| e.message)
    };
    let download_href = format!("/api/v1/exports/{id}/download");
    let testid = format!("job-{id}");
    let (cancel_id, retry_id) = (id.clone(), id);

    view! {
        <li class=move || format!("job job-{}", status.get()) data-testid=testid data-status=move || status.get().as_str()>
            <div class="job-head">
                <span class="job-title">{title}</span>
                <span class=move || format!("badge badge-{}", status.get()) data-testid="job-status" aria-live="polite">
                    {move || status.get().as_str()}
                </span>
            </div>
            <div class="progress" role="progressbar" aria-label="Export progress"
                aria-valuemin="0" aria-valuemax="100"
                aria-valuenow=move || percent.get().map(|p| format!("{p:.0}"))
                data-testid="job-progress" data-rows=move || rows.get().to_string()>
                <div
                    class=move || if percent.get().is_some() { "progress-bar" } else { "progress-bar indeterminate" }
                    style=move || {
                        let fallback = if status.get() == JobStatus::Running { 30.0 } else { 0.0 };
                        format!("width: {}%", percent.get().unwrap_or(fallback))
                    }
                ></div>
            </div>
            <p class="job-detail muted small" data-testid="job-detail">{detail}</p>
            {move || error.get().map(|m| view! { <p class="error small" data-testid="job-error">{m}</p> })}
            {move || action_error().map(|m| view! { <p class="error small" role="alert">{m}</p> })}
            <div class="job-actions">
                <Show when=move || status.get().is_active()>
                    {
                        let id = cancel_id.clone();
                        view! {
                            <button type="button" class="button secondary small-button" data-testid="job-cancel"
                                disabled=move || cancel_requested.get()
                                on:click=move |_| { cancel.dispatch(CancelExport { id: id.clone() }); }>
                                {move || if cancel_requested.get() { "Cancelling…" } else { "Cancel" }}
                            </button>
                        }
                    }
                </Show>
                <Show when=move || matches!(status.get(), JobStatus::Failed | JobStatus::Cancelled)>
                    {
                        let id = retry_id.clone();
                        view! {
                            <button type="button" class="button secondary small-button" data-testid="job-retry"
                                on:click=move |_| { retry.dispatch(RetryExport { id: id.clone() }); }>
                                "Retry"
                            </button>
                        }
                    }
                </Show>
                <Show when=move || status.get() == JobStatus::Succeeded>
                    <a class="button small-button" data-testid="job-download"
                        download=move || file_name.get() href=download_href.clone()>
                        "Download"
                        <span class="visually-hidden">{move || format!(" {}", file_name.get())}</span>
                    </a>
                </Show>
            </div>
        </li>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::ExportFormat;

    fn job(id: &str, status: JobStatus, revision: u64) -> Job {
        let mut job = Job::queued(id, "ana", "orders", ExportFormat::Csv, vec!["id".into()]);
        // Longer ids are newer, so the expected order is easy to read.
        job.created_at =
            chrono::DateTime::from_timestamp(1_700_000_000 + id.len() as i64, 0).unwrap();
        job.status = status;
        job.revision = revision;
        job
    }

    #[test]
    fn a_late_older_version_does_not_replace_a_newer_one() {
        let mut list = vec![job("a", JobStatus::Queued, 3)];
        upsert(&mut list, job("a", JobStatus::Cancelled, 4));
        // The retry's answer (revision 3) arrives after the cancel (revision 4).
        upsert(&mut list, job("a", JobStatus::Queued, 3));
        assert_eq!(list[0].status, JobStatus::Cancelled);
    }

    #[test]
    fn progress_of_the_same_revision_is_shown() {
        let mut list = vec![job("a", JobStatus::Running, 2)];
        let mut ticked = job("a", JobStatus::Running, 2);
        ticked.progress.rows = 512;
        upsert(&mut list, ticked);
        assert_eq!(list[0].progress.rows, 512);
    }

    #[test]
    fn new_jobs_are_listed_newest_first() {
        let mut list = vec![];
        upsert(&mut list, job("a", JobStatus::Queued, 1));
        upsert(&mut list, job("bbb", JobStatus::Queued, 1));
        upsert(&mut list, job("bb", JobStatus::Queued, 1));
        let ids: Vec<&str> = list.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["bbb", "bb", "a"]);
    }

    #[test]
    fn a_snapshot_replaces_the_list_but_keeps_newer_versions_the_page_has() {
        let mut list = vec![
            job("a", JobStatus::Cancelled, 5),
            job("gone", JobStatus::Succeeded, 2),
        ];
        replace_all(
            &mut list,
            vec![
                job("bb", JobStatus::Queued, 1),
                job("a", JobStatus::Running, 4),
            ],
        );
        let seen: Vec<(&str, JobStatus)> = list.iter().map(|j| (j.id.as_str(), j.status)).collect();
        assert_eq!(
            seen,
            [("bb", JobStatus::Queued), ("a", JobStatus::Cancelled)]
        );
    }
}
