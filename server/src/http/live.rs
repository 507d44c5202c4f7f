//! `GET /ws`: the page's live channel. It first sends a snapshot of the caller's jobs, then
//! every change of them; a connection that falls behind gets a new snapshot (see `app::live`).

use crate::state::AppState;
use app::backend::Identity;
use app::live::ServerMessage;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

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
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                // The page sends nothing but control frames; axum answers pings itself.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            change = changes.recv() => {
                let message = match change {
                    Ok(job) if job.owner == user => ServerMessage::Job { job: Box::new(job) },
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
