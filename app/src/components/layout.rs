//! The frame every page shares.

use crate::live::LinkState;
use leptos::prelude::*;

#[component]
pub fn Header() -> impl IntoView {
    let link =
        use_context::<ReadSignal<LinkState>>().unwrap_or_else(|| signal(LinkState::Connecting).0);
    view! {
        <header class="header">
            <a class="brand" href="/" aria-label="Exportal home">
                <svg class="brand-mark" viewBox="0 0 32 32" aria-hidden="true">
                    <rect x="3" y="3" width="26" height="26" rx="7"/>
                    <path d="M10 17l6 6 6-6M16 9v14"/>
                </svg>
                <span class="brand-name">"Exportal"</span>
            </a>
            <nav class="nav" aria-label="Main">
                <a href="/" class="nav-link">"Exports"</a>
            </nav>
            <span
                class=move || format!("link link-{}", link.get().as_str())
                data-testid="ws-status"
                data-state=move || link.get().as_str()
                role="status"
                aria-live="polite"
            >
                <span class="link-dot" aria-hidden="true"></span>
                {move || link.get().label()}
            </span>
        </header>
    }
}

#[component]
pub fn Footer() -> impl IntoView {
    view! {
        <footer class="footer">
            <span>"Exportal " {env!("CARGO_PKG_VERSION")}</span>
            <span class="footer-sep" aria-hidden="true">"·"</span>
            <span>"Exports are kept for a limited time and only you can download yours."</span>
        </footer>
    }
}

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <section class="card narrow">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <a href="/">"Go to your exports"</a> "."</p>
        </section>
    }
}
