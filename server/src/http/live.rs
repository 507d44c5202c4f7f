//! `GET /ws`: the page's live channel. It first sends a snapshot of the caller's jobs, then
//! every change of them; a connection that falls behind gets a new snapshot (see `app::live`).

use crate::state::AppState;
use app::backend::Identity;
use app::jobs::Job;
use app::live::ServerMessage;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
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

pub async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
) -> Response {
    ws.on_upgrade(move |socket| serve(socket, state, user.0))
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

async fn serve(mut socket: WebSocket, state: AppState, user: String) {
    // Subscribe before reading the snapshot: a change between the two is then sent twice
    // rather than lost.
    let mut changes = state.inner.hub.subscribe();
    let Some(first) = snapshot(&state, &user).await else {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
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
        ServerMessage::Job { .. } => HashMap::new(),
    };
    let following = state.inner.follow_store;
    let mut follow = tokio::time::interval(FOLLOW_EVERY);
    let mut follows = 0u64;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                // The page sends nothing but control frames; axum answers pings itself.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
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
                let _ = socket.send(Message::Close(Some(close))).await;
                break;
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(message).expect("server messages always serialise");
    socket.send(Message::Text(text.into())).await
}
