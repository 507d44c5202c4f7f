//! The page: an application shell (header, main area, footer) and its routes.

mod admin;
mod export_form;
mod home;
mod jobs_list;
mod layout;

use crate::live::LinkState;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, Link, Meta, MetaTags, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    StaticSegment,
};

/// The HTML document around the app; rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                // With hashed file names (release builds), the stylesheet's name carries its hash.
                <HashedStylesheet options=options.clone() id="leptos"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The application, as both the server renders it and the browser hydrates it.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let (link, set_link) = signal(LinkState::Connecting);
    provide_context(link);
    // The user's jobs, as the live channel reports them; `loaded` turns true with the first
    // snapshot, so the page never shows "no exports" before it knows.
    let jobs = RwSignal::new(Vec::<crate::jobs::Job>::new());
    let loaded = RwSignal::new(false);
    provide_context(jobs);
    provide_context(loaded);
    // Admins only: the overview the live channel sends them.
    let overview = RwSignal::new(None::<crate::admin::Overview>);
    provide_context(overview);

    // Effects run only in the browser, after hydration: the live link and the hydration
    // marker the browser tests wait for.
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| {
        set_hydrated.set(true);
        #[cfg(feature = "hydrate")]
        crate::live::connect(set_link, move |message| match message {
            crate::live::ServerMessage::Snapshot { jobs: all } => {
                jobs.update(|list| jobs_list::replace_all(list, all));
                loaded.set(true);
            }
            crate::live::ServerMessage::Job { job } => {
                jobs.update(|list| jobs_list::upsert(list, *job));
            }
            crate::live::ServerMessage::Admin { overview: o } => overview.set(Some(*o)),
        });
        #[cfg(not(feature = "hydrate"))]
        let _ = (set_link, jobs, loaded, overview);
    });

    view! {
        <Title text="Exportal"/>
        <Meta name="description" content="Export data from your databases as CSV, NDJSON, JSON or Excel files."/>
        <Meta name="theme-color" content="#1f4e79"/>
        <Link rel="icon" type_="image/svg+xml" href="/favicon.svg"/>
        <Router>
            <div class="app" data-hydrated=move || hydrated.get().to_string()>
                <a class="skip-link" href="#main">"Skip to content"</a>
                <layout::Header/>
                <main class="main" id="main" tabindex="-1">
                    <Routes fallback=layout::NotFound>
                        <Route path=StaticSegment("") view=home::HomePage/>
                        <Route path=StaticSegment("admin") view=admin::AdminPage/>
                    </Routes>
                </main>
                <layout::Footer/>
            </div>
        </Router>
    }
}
