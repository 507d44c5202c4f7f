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
use crate::live::{FollowerGuard, Subscription};
use crate::state::AppState;
use app::backend::{Admin, Identity};
use app::error::{ApiError, ErrorCode};
use app::live::ServerMessage;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Extension;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often stored records are read when jobs run in other processes (see `follow_store`).
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Every this many follows, the owner's job ids are listed (one request on Azure) and the
/// jobs not seen yet, submitted elsewhere, are read.
const NEW_JOBS_EVERY: u64 = 10;
/// Every this many follows, every listed record is read again: a finished job can become
/// active again elsewhere (a retry through another instance), or expire. This is the only read
/// whose cost grows with the owner's history, so it is rare.
const FULL_LIST_EVERY: u64 = 60;

/// Follows the stored records of `owner`'s jobs for all of their sockets on this instance,
/// until the last one closes: the active ones every time (cheap conditional reads), new ones
/// from a listing of ids now and then, and the whole list rarely. One follower per owner, so
/// the store is read per user, not per open page.
async fn follow(
    state: AppState,
    owner: String,
    closed: CancellationToken,
    _counted: FollowerGuard,
) {
    let hub = &state.inner.hub;
    let Some(service) = state.inner.service.clone() else {
        return;
    };
    let shutdown = state.inner.shutdown.clone();
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    // The first tick is immediate; the sockets have just read a snapshot.
    tick.tick().await;
    let mut follows = 0u64;
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        follows += 1;
        if follows.is_multiple_of(FULL_LIST_EVERY) {
            for job in service.list(&owner).await.unwrap_or_default() {
                hub.offer(&job);
            }
            continue;
        }
        let mut ids = Vec::new();
        if follows.is_multiple_of(NEW_JOBS_EVERY) {
            ids = hub.unseen(&owner, service.list_ids(&owner).await.unwrap_or_default());
        }
        for id in hub.active_jobs(&owner) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        for id in ids {
            if closed.is_cancelled() {
                return;
            }
            if let Ok(Some(fresh)) = service.jobs.get(&id).await {
                hub.offer(&fresh);
            }
        }
    }
}

/// How often an idle connection is pinged, so proxies do not drop it and dead peers are noticed.
const PING_EVERY: Duration = Duration::from_secs(25);

/// The page sends nothing but control frames: anything bigger than this closes the socket.
pub const MAX_INBOUND: usize = 4096;
/// Bytes gathered before a write reaches the socket, and the most that may wait unsent. The
/// write buffer grows only as messages need it, whatever this threshold.
const WRITE_BUFFER: usize = 64 * 1024;
/// What is read from the socket at once. The read buffer is allocated and zeroed in full per
/// socket (tungstenite's default, 128 KiB, was most of an idle socket's memory); the page
/// sends only small control frames, and a bigger frame makes it grow, up to `MAX_INBOUND`.
const READ_BUFFER: usize = 4 * 1024;
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
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_INBOUND)
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
    let changes = state.inner.hub.subscribe(&user);
    if changes.first && state.inner.follow_store {
        let counted = state.inner.hub.follower_started();
        tokio::spawn(follow(
            state.clone(),
            user.clone(),
            changes.closed(),
            counted,
        ));
    }
    if send_snapshot(&mut socket, &state, &changes).await.is_err() {
        return;
    }
    let shutdown = state.inner.shutdown.clone();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut admin_tick = admin.then(|| tokio::time::interval(ADMIN_EVERY));
    // The text last sent, so an unchanged overview is not sent again.
    let mut admin_sent = String::new();
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                // The page sends nothing but control frames; axum answers pings itself. A frame
                // over MAX_INBOUND arrives as an error, and ends the connection.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = async { admin_tick.as_mut().expect("admins only").tick().await }, if admin_tick.is_some() => {
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
            _ = changes.ready() => {
                // Everything that waits is taken at once: what changes while it is being
                // sent waits in the queue, where newer progress replaces older.
                let batch = changes.take();
                if batch.lagged && send_snapshot(&mut socket, &state, &changes).await.is_err() {
                    return;
                }
                for text in batch.messages {
                    if socket.send_raw(Message::Text(text)).await.is_err() {
                        return;
                    }
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

/// Sends the caller's jobs as they are now; a socket that cannot have them is closed.
async fn send_snapshot(
    socket: &mut Live,
    state: &AppState,
    changes: &Subscription,
) -> Result<(), ()> {
    let Some(message) = snapshot(state, changes.owner()).await else {
        let _ = socket
            .send_raw(Message::Close(Some(CloseFrame {
                code: 1011,
                reason: "jobs unavailable".into(),
            })))
            .await;
        return Err(());
    };
    if let ServerMessage::Snapshot { jobs } = &message {
        changes.saw(jobs);
    }
    let text = serde_json::to_string(&message).expect("server messages always serialise");
    socket.send_raw(Message::Text(text.into())).await
}
