//! `GET /ws`: the page's live channel. It first sends a snapshot of the caller's jobs, then
//! every change of them; a connection that falls behind gets a new snapshot (see `app::live`).
//!
//! What a socket may cost is bounded: only pages of allowed origins may open one (a foreign
//! page could otherwise ride the user's ambient credentials), a user holds a limited number,
//! inbound frames are tiny, and a client that does not take what it is sent within the send
//! timeout is dropped (it reconnects and gets a snapshot) rather than buffered for.

use crate::config::{origin_of, Edge};
use crate::error::api_error_response;
use crate::http::limits::too_many;
use crate::state::AppState;
use app::backend::{Admin, Identity};
use app::error::{ApiError, ErrorCode};
use app::jobs::Job;
use app::live::ServerMessage;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Extension;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often stored records are read when jobs run in other processes (see `follow_store`).
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Every this many follows, the whole list is read again, to see jobs submitted elsewhere.
const FULL_LIST_EVERY: u64 = 10;

/// The records to compare with what the page has: the active ones every time (cheap
/// conditional reads), the whole list now and then.
async fn followed(
    state: &AppState,
    user: &str,
    sent: &HashMap<String, Job>,
    follows: u64,
) -> Vec<Job> {
    let Some(service) = state.inner.service.as_ref() else {
        return vec![];
    };
    if follows.is_multiple_of(FULL_LIST_EVERY) {
        return service.list(user).await.unwrap_or_default();
    }
    let mut out = Vec::new();
    for job in sent.values().filter(|j| j.status.is_active()) {
        if let Ok(Some(fresh)) = service.jobs.get(&job.id).await {
            out.push(fresh);
        }
    }
    out
}

/// How often an idle connection is pinged, so proxies do not drop it and dead peers are noticed.
const PING_EVERY: Duration = Duration::from_secs(25);

/// The page sends nothing but control frames: anything bigger than this closes the socket.
pub const MAX_INBOUND: usize = 4096;
/// Bytes gathered before a write reaches the socket, and the most that may wait unsent.
const WRITE_BUFFER: usize = 64 * 1024;
const MAX_WRITE_BUFFER: usize = 8 * 1024 * 1024;

/// Whether a page of this `Origin` may open the live channel. No `Origin` means no browser
/// (browsers always send it on WebSocket requests), so no ambient credentials to abuse.
pub fn origin_allowed(headers: &HeaderMap, edge: &Edge) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(|o| origin_of(o).ok()) else {
        return false;
    };
    if edge.public_origin.as_deref() == Some(origin.as_str()) || edge.ws_origins.contains(&origin) {
        return true;
    }
    if !edge.ws_origins.is_empty() {
        return false;
    }
    // Same origin: the Origin's host and port are the Host the request was sent to.
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let (scheme, authority) = origin.split_once("://").unwrap_or_default();
    let host = host.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    host.strip_suffix(default_port).unwrap_or(&host) == authority
}

pub async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    admin: Option<Extension<Admin>>,
    headers: HeaderMap,
) -> Response {
    let admin = admin.is_some();
    let edge = &state.inner.settings.edge;
    if !origin_allowed(&headers, edge) {
        return api_error_response(ApiError::new(
            ErrorCode::Forbidden,
            "This page's origin may not open the live channel.",
        ));
    }
    let Some(slot) = state.inner.sockets.acquire(&user.0, edge.ws_per_user) else {
        return too_many(
            format!(
                "You already have {} live connections open; close a tab and try again.",
                edge.ws_per_user
            ),
            Duration::from_secs(5),
        );
    };
    let send_timeout = edge.ws_send_timeout;
    ws.max_message_size(MAX_INBOUND)
        .max_frame_size(MAX_INBOUND)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            serve(
                Live {
                    socket,
                    send_timeout,
                },
                state,
                user.0,
                admin,
            )
            .await
        })
}

/// A socket whose every send either completes within the timeout or ends the connection.
struct Live {
    socket: WebSocket,
    send_timeout: Duration,
}

impl Live {
    async fn send_raw(&mut self, message: Message) -> Result<(), ()> {
        match tokio::time::timeout(self.send_timeout, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                tracing::info!(
                    timeout_ms = self.send_timeout.as_millis() as u64,
                    "a live client did not take its messages in time; dropped"
                );
                Err(())
            }
        }
    }

    async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        self.socket.recv().await
    }
}

async fn snapshot(state: &AppState, user: &str) -> Option<ServerMessage> {
    let service = state.inner.service.as_ref()?;
    match service.list(user).await {
        Ok(jobs) => Some(ServerMessage::Snapshot { jobs }),
        Err(e) => {
            tracing::warn!("no snapshot for a live connection: {e}");
            None
        }
    }
}

/// How often an admin's page is sent the overview, when it changed.
const ADMIN_EVERY: Duration = Duration::from_secs(2);

/// The admin overview, if this instance can make one now.
async fn admin_overview(state: &AppState) -> Option<ServerMessage> {
    let service = state.inner.service.as_ref()?;
    match service.overview().await {
        Ok(overview) => Some(ServerMessage::Admin {
            overview: Box::new(overview),
        }),
        Err(e) => {
            tracing::warn!("no admin overview for a live connection: {e}");
            None
        }
    }
}

async fn serve(mut socket: Live, state: AppState, user: String, admin: bool) {
    // Subscribe before reading the snapshot: a change between the two is then sent twice
    // rather than lost.
    let mut changes = state.inner.hub.subscribe();
    let Some(first) = snapshot(&state, &user).await else {
        let _ = socket
            .send_raw(Message::Close(Some(CloseFrame {
                code: 1011,
                reason: "jobs unavailable".into(),
            })))
            .await;
        return;
    };
    if send(&mut socket, &first).await.is_err() {
        return;
    }
    let shutdown = state.inner.shutdown.clone();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    // What this page was last sent, to send only changes when following the store.
    let mut sent: HashMap<String, Job> = match &first {
        ServerMessage::Snapshot { jobs } => {
            jobs.iter().map(|j| (j.id.clone(), j.clone())).collect()
        }
        ServerMessage::Job { .. } | ServerMessage::Admin { .. } => HashMap::new(),
    };
    let following = state.inner.follow_store;
    let mut admin_tick = tokio::time::interval(ADMIN_EVERY);
    // The text last sent, so an unchanged overview is not sent again.
    let mut admin_sent = String::new();
    let mut follow = tokio::time::interval(FOLLOW_EVERY);
    let mut follows = 0u64;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                // The page sends nothing but control frames; axum answers pings itself. A frame
                // over MAX_INBOUND arrives as an error, and ends the connection.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = admin_tick.tick(), if admin => {
                if let Some(message) = admin_overview(&state).await {
                    let text = serde_json::to_string(&message).expect("server messages always serialise");
                    if text != admin_sent {
                        if socket.send_raw(Message::Text(text.clone().into())).await.is_err() {
                            return;
                        }
                        admin_sent = text;
                    }
                }
            }
            _ = follow.tick(), if following => {
                follows += 1;
                for job in followed(&state, &user, &sent, follows).await {
                    // Every stored change bumps the revision; a read that raced a newer
                    // write is not sent, so the page never steps back.
                    if sent.get(&job.id).is_none_or(|s| job.revision > s.revision) {
                        sent.insert(job.id.clone(), job.clone());
                        if send(&mut socket, &ServerMessage::Job { job: Box::new(job) }).await.is_err() {
                            return;
                        }
                    }
                }
            }
            change = changes.recv() => {
                let message = match change {
                    Ok(job) if job.owner == user => {
                        sent.insert(job.id.clone(), job.clone());
                        ServerMessage::Job { job: Box::new(job) }
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => match snapshot(&state, &user).await {
                        Some(s) => s,
                        None => continue,
                    },
                    Err(RecvError::Closed) => break,
                };
                if send(&mut socket, &message).await.is_err() {
                    break;
                }
            }
            // "Service restart" tells the page to reconnect (to this or another instance)
            // instead of treating the close as an error.
            _ = shutdown.cancelled() => {
                let close = CloseFrame { code: 1012, reason: "server restarting".into() };
                let _ = socket.send_raw(Message::Close(Some(close))).await;
                break;
            }
            _ = ping.tick() => {
                if socket.send_raw(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn send(socket: &mut Live, message: &ServerMessage) -> Result<(), ()> {
    let text = serde_json::to_string(message).expect("server messages always serialise");
    socket.send_raw(Message::Text(text.into())).await
}
