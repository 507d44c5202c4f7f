//! "New export": dataset, filters, columns, format, preview and the Export button.

use super::jobs_list::upsert;
use crate::catalog::{DatasetInfo, ParamInfo, ParamType};
use crate::exports::{list_datasets, PreviewExport, SubmitExport};
use crate::jobs::{Delimiter, ExportFormat, ExportRequest, FileOptions, Job, Preview};
use crate::text::group_digits;
use leptos::prelude::*;
use std::collections::BTreeMap;

#[component]
pub fn ExportForm() -> impl IntoView {
    let datasets = Resource::new(|| (), |_| list_datasets());
    view! {
        <section class="card form-card" aria-labelledby="new-export-title">
            <h2 id="new-export-title">"New export"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading datasets…"</p> }>
                {move || datasets.get().map(|answer| match answer {
                    Ok(list) if list.is_empty() => view! {
                        <p class="muted">"No datasets are configured yet. Ask your operator to declare some."</p>
                    }.into_any(),
                    Ok(list) => view! { <Form datasets=list/> }.into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                })}
            </Transition>
        </section>
    }
}

/// What the form holds for the chosen dataset.
#[derive(Clone, Copy)]
struct FormState {
    dataset: RwSignal<DatasetInfo>,
    params: RwSignal<BTreeMap<String, String>>,
    columns: RwSignal<Vec<String>>,
    format: RwSignal<ExportFormat>,
    gzip: RwSignal<bool>,
    options: RwSignal<FileOptions>,
}

impl FormState {
    fn reset(&self, dataset: DatasetInfo) {
        let defaults = dataset
            .params
            .iter()
            .filter_map(|p| {
                p.default.as_ref().map(|d| {
                    let text = d
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| d.to_string());
                    (p.name.clone(), text)
                })
            })
            .collect();
        self.params.set(defaults);
        self.columns
            .set(dataset.columns.iter().map(|c| c.name.clone()).collect());
        self.options.set(dataset.defaults.clone());
        if !dataset.formats.contains(&self.format.get_untracked()) {
            self.format.set(
                dataset
                    .formats
                    .first()
                    .copied()
                    .unwrap_or(ExportFormat::Csv),
            );
        }
        self.dataset.set(dataset);
    }

    /// The request as the server will check it; empty inputs are left out.
    fn request(&self) -> ExportRequest {
        let dataset = self.dataset.get_untracked();
        let params = self
            .params
            .get_untracked()
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let chosen = self.columns.get_untracked();
        let all = chosen.len() == dataset.columns.len();
        let format = self.format.get_untracked();
        ExportRequest {
            dataset: dataset.id,
            format,
            params,
            columns: (!all).then_some(chosen),
            gzip: self.gzip.get_untracked() && format.can_gzip(),
            options: self.options.get_untracked(),
        }
    }

    /// Problems the browser can see before asking the server.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let params = self.params.get_untracked();
        for p in self.dataset.get_untracked().params {
            let empty = params.get(&p.name).is_none_or(|v| v.trim().is_empty());
            if p.required && empty {
                out.push(format!("{} is required.", label(&p)));
            }
        }
        if self.columns.get_untracked().is_empty() {
            out.push("Choose at least one column.".into());
        }
        out
    }
}

fn label(p: &ParamInfo) -> String {
    p.label.clone().unwrap_or_else(|| p.name.replace('_', " "))
}

#[component]
fn Form(datasets: Vec<DatasetInfo>) -> impl IntoView {
    let first = datasets[0].clone();
    let state = FormState {
        dataset: RwSignal::new(first.clone()),
        params: RwSignal::new(BTreeMap::new()),
        columns: RwSignal::new(Vec::new()),
        format: RwSignal::new(ExportFormat::Csv),
        gzip: RwSignal::new(false),
        options: RwSignal::new(FileOptions::default()),
    };
    state.reset(first);
    let jobs = use_context::<RwSignal<Vec<Job>>>();
    let submit = ServerAction::<SubmitExport>::new();
    let preview = ServerAction::<PreviewExport>::new();
    let local_problems = RwSignal::new(Vec::<String>::new());

    // A submitted job appears at once; the live channel keeps it current afterwards.
    Effect::new(move |_| {
        if let (Some(Ok(job)), Some(jobs)) = (submit.value().get(), jobs) {
            jobs.update(|list| upsert(list, job));
        }
    });

    let check_then = move |run: &dyn Fn(ExportRequest)| {
        let problems = state.problems();
        local_problems.set(problems.clone());
        if problems.is_empty() {
            run(state.request());
        }
    };
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        check_then(&|request| {
            submit.dispatch(SubmitExport { request });
        });
    };
    let on_preview = move |_| {
        check_then(&|request| {
            preview.dispatch(PreviewExport { request });
        });
    };
    let choose = move |d: DatasetInfo| {
        state.reset(d);
        preview.value().set(None);
        submit.value().set(None);
        local_problems.set(vec![]);
    };

    view! {
        <form class="export-form" on:submit=on_submit novalidate>
            <fieldset class="datasets">
                <legend>"Dataset"</legend>
                {datasets.into_iter().map(|d| {
                    let id = d.id.clone();
                    let checked = move || state.dataset.with(|s| s.id == id);
                    let d2 = d.clone();
                    view! {
                        <label class="dataset-option" data-testid=format!("dataset-{}", d.id)>
                            <input type="radio" name="dataset" value=d.id.clone()
                                prop:checked=checked
                                on:change=move |_| choose(d2.clone())/>
                            <span class="dataset-title">{d.title.clone()}</span>
                            <span class="dataset-description">{d.description.clone()}</span>
                        </label>
                    }
                }).collect_view()}
            </fieldset>

            {move || {
                let params = state.dataset.get().params;
                (!params.is_empty()).then(|| view! {
                    <fieldset class="params">
                        <legend>"Filters"</legend>
                        <div class="param-grid">
                            {params.into_iter().map(|p| view! { <ParamInput param=p state/> }).collect_view()}
                        </div>
                    </fieldset>
                })
            }}

            <fieldset class="columns">
                <legend>"Columns"</legend>
                <div class="column-tools">
                    <button type="button" class="link-button" on:click=move |_| {
                        state.columns.set(state.dataset.get_untracked().columns.iter().map(|c| c.name.clone()).collect())
                    }>"All"</button>
                    <button type="button" class="link-button" on:click=move |_| state.columns.set(vec![])>"None"</button>
                </div>
                <div class="column-grid">
                    {move || state.dataset.get().columns.into_iter().map(|c| {
                        let name = c.name.clone();
                        let n1 = name.clone();
                        let n2 = name.clone();
                        view! {
                            <label class="check" data-testid=format!("column-{name}")>
                                <input type="checkbox"
                                    prop:checked=move || state.columns.with(|cs| cs.contains(&n1))
                                    on:change=move |ev| {
                                        let on = event_target_checked(&ev);
                                        let all: Vec<String> = state.dataset.get_untracked().columns.iter().map(|c| c.name.clone()).collect();
                                        state.columns.update(|cs| {
                                            if on && !cs.contains(&n2) { cs.push(n2.clone()); }
                                            if !on { cs.retain(|x| x != &n2); }
                                            // Keep the dataset's column order.
                                            cs.sort_by_key(|x| all.iter().position(|a| a == x));
                                        });
                                    }/>
                                <span>{name.clone()}</span>
                                <span class="column-type">{c.kind.name()}</span>
                            </label>
                        }
                    }).collect_view()}
                </div>
            </fieldset>

            <fieldset class="formats">
                <legend>"Format"</legend>
                <div class="format-row">
                    {move || state.dataset.get().formats.into_iter().map(|f| view! {
                        <label class="pill" data-testid=format!("format-{}", f.as_str())>
                            <input type="radio" name="format" value=f.as_str()
                                prop:checked=move || state.format.get() == f
                                on:change=move |_| state.format.set(f)/>
                            <span>{f.label()}</span>
                        </label>
                    }).collect_view()}
                    <label class="check gzip" data-testid="gzip">
                        <input type="checkbox"
                            prop:checked=move || state.gzip.get() && state.format.get().can_gzip()
                            prop:disabled=move || !state.format.get().can_gzip()
                            on:change=move |ev| state.gzip.set(event_target_checked(&ev))/>
                        <span>"gzip"</span>
                    </label>
                </div>
            </fieldset>

            <FileOptionsInput state/>

            <div class="form-errors" role="alert" data-testid="form-error">
                {move || local_problems.get().into_iter().map(|p| view! { <p class="error">{p}</p> }).collect_view()}
                {move || submit.value().get().and_then(|r| r.err()).map(|e| view! { <p class="error">{e.message}</p> })}
                {move || preview.value().get().and_then(|r| r.err()).map(|e| view! { <p class="error">{e.message}</p> })}
            </div>

            <div class="actions">
                <button type="button" class="button secondary" data-testid="preview-button"
                    on:click=on_preview disabled=move || preview.pending().get()>
                    {move || if preview.pending().get() { "Loading preview…" } else { "Preview" }}
                </button>
                <button type="submit" class="button" data-testid="export-button" disabled=move || submit.pending().get()>
                    {move || if submit.pending().get() { "Starting…" } else { "Export" }}
                </button>
            </div>
            <p class="muted small" data-testid="submit-status" aria-live="polite">
                {move || submit.value().get().and_then(|r| r.ok()).map(|job| format!("Export started ({}).", job.format.label()))}
            </p>
        </form>
        {move || preview.value().get().and_then(|r| r.ok()).map(|p| view! { <PreviewTable preview=p/> })}
    }
}

/// Options that make the file open right in a spreadsheet: the CSV delimiter and BOM (with
/// an "Excel" preset that picks them for the browser's language), the time zone of
/// timestamps, and display names as headers.
#[component]
fn FileOptionsInput(state: FormState) -> impl IntoView {
    let csv = move || state.format.get() == ExportFormat::Csv;
    let delimiter = move || {
        state
            .options
            .with(|o| o.delimiter.unwrap_or(Delimiter::Comma).as_str())
    };
    let excel = move |_| {
        state.options.update(|o| {
            o.bom = Some(true);
            o.delimiter = Some(if crate::locale::decimal_comma() {
                Delimiter::Semicolon
            } else {
                Delimiter::Comma
            });
        })
    };
    let my_zone = move |_| {
        if let Some(zone) = crate::locale::browser_time_zone() {
            state.options.update(|o| o.time_zone = Some(zone));
        }
    };
    let has_labels = move || state.dataset.with(|d| !d.labels.is_empty());
    view! {
        <fieldset class="file-options">
            <legend>"File options"</legend>
            <div class="param-grid">
                <Show when=csv>
                    <div class="field">
                        <label for="option-delimiter">"Delimiter"</label>
                        <select id="option-delimiter" data-testid="option-delimiter"
                            prop:value=delimiter
                            on:change=move |ev| {
                                let d = Delimiter::parse(&event_target_value(&ev));
                                state.options.update(|o| o.delimiter = d);
                            }>
                            {Delimiter::ALL.into_iter().map(|d| view! {
                                <option value=d.as_str()>{d.label()}</option>
                            }).collect_view()}
                        </select>
                    </div>
                    <div class="field">
                        <label class="check" data-testid="option-bom">
                            <input type="checkbox"
                                prop:checked=move || state.options.with(|o| o.bom == Some(true))
                                on:change=move |ev| {
                                    let on = event_target_checked(&ev);
                                    state.options.update(|o| o.bom = Some(on));
                                }/>
                            <span>"UTF-8 BOM (for Excel)"</span>
                        </label>
                        <button type="button" class="link-button" data-testid="excel-preset"
                            on:click=excel>"Excel preset"</button>
                    </div>
                </Show>
                <div class="field">
                    <label for="option-time-zone">"Time zone"</label>
                    <input id="option-time-zone" data-testid="option-time-zone" type="text"
                        placeholder="UTC" autocomplete="off" spellcheck="false"
                        prop:value=move || state.options.with(|o| o.time_zone.clone().unwrap_or_default())
                        on:input=move |ev| {
                            let zone = event_target_value(&ev);
                            let zone = zone.trim();
                            state.options.update(|o| {
                                o.time_zone = (!zone.is_empty()).then(|| zone.to_string())
                            });
                        }/>
                    <button type="button" class="link-button" data-testid="my-time-zone"
                        on:click=my_zone>"Use my time zone"</button>
                </div>
                <Show when=has_labels>
                    <div class="field">
                        <label class="check" data-testid="option-labels">
                            <input type="checkbox"
                                prop:checked=move || state.options.with(|o| o.labels == Some(true))
                                on:change=move |ev| {
                                    let on = event_target_checked(&ev);
                                    state.options.update(|o| o.labels = Some(on));
                                }/>
                            <span>"Display names as headers"</span>
                        </label>
                    </div>
                </Show>
            </div>
        </fieldset>
    }
    // Erased: the form's view type is deep enough to reach the compiler's recursion limit in
    // release builds without it.
    .into_any()
}

#[component]
fn ParamInput(param: ParamInfo, state: FormState) -> impl IntoView {
    let id = format!("param-{}", param.name);
    let name = param.name.clone();
    let value = {
        let name = name.clone();
        move || {
            state
                .params
                .with(|p| p.get(&name).cloned().unwrap_or_default())
        }
    };
    let set = {
        let name = name.clone();
        move |v: String| {
            state.params.update(|p| {
                p.insert(name.clone(), v);
            })
        }
    };
    let required = param.required;
    let label_text = label(&param);
    let input = match param.kind {
        ParamType::Enum | ParamType::Boolean => {
            let options: Vec<String> = match param.kind {
                ParamType::Boolean => vec!["true".into(), "false".into()],
                _ => param.values.clone().unwrap_or_default(),
            };
            let set = set.clone();
            view! {
                <select id=id.clone() data-testid=id.clone() aria-required=required.to_string()
                    prop:value=value on:change=move |ev| set(event_target_value(&ev))>
                    <option value="">{if required { "Choose…" } else { "Any" }}</option>
                    {options.into_iter().map(|o| view! { <option value=o.clone()>{o.clone()}</option> }).collect_view()}
                </select>
            }
            .into_any()
        }
        kind => {
            let (input_type, step) = match kind {
                ParamType::Integer => ("number", Some("1")),
                ParamType::Number => ("number", Some("any")),
                ParamType::Date => ("date", None),
                ParamType::Datetime => ("datetime-local", None),
                _ => ("text", None),
            };
            let set = set.clone();
            view! {
                <input id=id.clone() data-testid=id.clone() type=input_type step=step
                    required=required aria-required=required.to_string()
                    prop:value=value on:input=move |ev| set(event_target_value(&ev))/>
            }
            .into_any()
        }
    };
    view! {
        <div class="field">
            <label for=id.clone()>
                {label_text}
                {required.then(|| view! { <span class="required" aria-hidden="true">" *"</span> })}
            </label>
            {input}
        </div>
    }
}

#[component]
fn PreviewTable(preview: Preview) -> impl IntoView {
    let count = match preview.estimated_rows {
        Some(n) => format!("About {} rows will be exported.", group_digits(n)),
        None => "The row count could not be estimated quickly.".to_string(),
    };
    let shown = preview.rows.len();
    view! {
        <section class="preview" data-testid="preview" aria-label="Preview">
            <p class="preview-count" data-testid="preview-count">{count}</p>
            <div class="table-wrap" tabindex="0">
                <table>
                    <caption class="muted small">{format!("The first {shown} rows")}</caption>
                    <thead><tr>{preview.columns.iter().map(|c| view! { <th scope="col">{c.clone()}</th> }).collect_view()}</tr></thead>
                    <tbody>
                        {preview.rows.into_iter().map(|row| view! {
                            <tr>{row.into_iter().map(|cell| {
                                let (text, class) = match cell {
                                    serde_json::Value::Null => ("NULL".to_string(), "null"),
                                    serde_json::Value::String(s) => (s, ""),
                                    other => (other.to_string(), "num"),
                                };
                                view! { <td class=class>{text}</td> }
                            }).collect_view()}</tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </section>
    }
}
