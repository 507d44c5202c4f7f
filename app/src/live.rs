//! The live channel between a page and the server (`GET /ws`).
//!
//! The server speaks first and only sends [`ServerMessage`]s; the page never has to ask for
//! state it might have missed, because every (re)connection starts with a fresh message that
//! carries the whole current state. Dropped connections are therefore harmless: the page
//! reconnects with exponential back-off and jitter (so that a restarted server is not hit by
//! every page at the same instant) and applies what it is sent.

use crate::jobs::Job;
use serde::{Deserialize, Serialize};

/// The path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";

/// A message from the server to the page, as JSON text frames tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The caller's jobs as they are now: the first message of every connection, and sent
    /// again whenever the server could not deliver every change.
    Snapshot { jobs: Vec<Job> },
    /// One job changed (state or progress).
    Job { job: Box<Job> },
    /// For admins only: what the admin page shows, on connect and whenever it changes.
    Admin {
        overview: Box<crate::admin::Overview>,
    },
}

/// How the page's live link is doing, shown in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    /// Lost; the next attempt (counting from 1) is scheduled.
    Reconnecting {
        attempt: u32,
    },
}

impl LinkState {
    pub fn label(self) -> &'static str {
        match self {
            LinkState::Connecting => "Connecting…",
            LinkState::Connected => "Live",
            LinkState::Reconnecting { .. } => "Reconnecting…",
        }
    }

    /// A stable machine-readable name, used as a CSS hook and by the browser tests.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Reconnecting { .. } => "reconnecting",
        }
    }
}

/// First and largest delay between reconnection attempts.
const BACKOFF_BASE_MS: f64 = 500.0;
const BACKOFF_MAX_MS: f64 = 15_000.0;

/// The delay before reconnection attempt `attempt` (1-based): exponential, capped, with "equal
/// jitter" — half fixed, half random — so pages spread out but none retries immediately.
/// `random` is a uniform sample from `[0, 1)`.
pub fn reconnect_delay_ms(attempt: u32, random: f64) -> u32 {
    let exp = BACKOFF_BASE_MS * 2f64.powi(attempt.saturating_sub(1).min(16) as i32);
    let capped = exp.min(BACKOFF_MAX_MS);
    (capped / 2.0 + capped / 2.0 * random.clamp(0.0, 1.0)) as u32
}

#[cfg(feature = "hydrate")]
pub use client::connect;

#[cfg(feature = "hydrate")]
mod client {
    use super::*;
    use futures::StreamExt;
    use gloo_net::websocket::{futures::WebSocket, Message};
    use leptos::prelude::*;

    /// The WebSocket address for the page's own origin (`wss:` when the page is `https:`).
    fn ws_url() -> Option<String> {
        let location = web_sys::window()?.location();
        let scheme = if location.protocol().ok()? == "https:" {
            "wss"
        } else {
            "ws"
        };
        Some(format!("{scheme}://{}{WS_PATH}", location.host().ok()?))
    }

    /// Keeps a live link open for the life of the page, reporting its state through `state`
    /// and every message through `on_message`.
    pub fn connect(state: WriteSignal<LinkState>, on_message: impl Fn(ServerMessage) + 'static) {
        leptos::task::spawn_local(async move {
            let mut attempt = 0u32;
            loop {
                if let Some(ws) = ws_url().and_then(|url| WebSocket::open(&url).ok()) {
                    // Keep the sink alive: dropping both halves closes the socket.
                    let (_sink, mut stream) = ws.split();
                    while let Some(frame) = stream.next().await {
                        let Ok(Message::Text(text)) = frame else {
                            if frame.is_err() {
                                break;
                            }
                            continue;
                        };
                        match serde_json::from_str::<ServerMessage>(&text) {
                            Ok(message) => {
                                attempt = 0;
                                state.set(LinkState::Connected);
                                on_message(message);
                            }
                            Err(e) => leptos::logging::warn!("ignoring a live message: {e}"),
                        }
                    }
                }
                attempt = attempt.saturating_add(1);
                state.set(LinkState::Reconnecting { attempt });
                let delay = reconnect_delay_ms(attempt, js_sys::Math::random());
                gloo_timers::future::TimeoutFuture::new(delay).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_by_type() {
        let m = ServerMessage::Snapshot { jobs: vec![] };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json, serde_json::json!({"type": "snapshot", "jobs": []}));
        assert_eq!(serde_json::from_value::<ServerMessage>(json).unwrap(), m);
    }

    #[test]
    fn reconnect_delay_grows_exponentially_within_jitter_bounds() {
        assert_eq!(reconnect_delay_ms(1, 0.0), 250);
        assert_eq!(reconnect_delay_ms(1, 1.0), 500);
        assert_eq!(reconnect_delay_ms(2, 0.0), 500);
        assert_eq!(reconnect_delay_ms(3, 0.999), 1999);
        for attempt in 1..8 {
            assert!(reconnect_delay_ms(attempt + 1, 0.0) >= reconnect_delay_ms(attempt, 0.0));
        }
    }

    #[test]
    fn reconnect_delay_is_capped_even_after_many_attempts() {
        assert_eq!(reconnect_delay_ms(u32::MAX, 1.0), 15_000);
        assert_eq!(reconnect_delay_ms(40, 0.0), 7_500);
    }
}
