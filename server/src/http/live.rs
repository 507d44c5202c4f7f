//! `GET /ws`: the page's live channel. The server speaks first (see `app::live`).

use crate::state::AppState;
use app::live::ServerMessage;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often an idle connection is pinged, so proxies do not drop it and dead peers are noticed.
const PING_EVERY: Duration = Duration::from_secs(25);

pub async fn upgrade(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    let shutdown = state.inner.shutdown.clone();
    ws.on_upgrade(move |socket| serve(socket, shutdown))
}

async fn serve(mut socket: WebSocket, shutdown: CancellationToken) {
    let hello = ServerMessage::Hello {
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    if send(&mut socket, &hello).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                // The page sends nothing but control frames; axum answers pings itself.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
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
