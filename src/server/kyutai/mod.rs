//! Kyutai's face of the server: moshi-server's routes, so that Kyutai's own client scripts and
//! Unmute work unchanged.
//!
//! - `GET /api/asr-streaming` (websocket): audio in, words out; `POST` the same path with an
//!   audio file for its words as JSON.
//! - `GET /api/tts_streaming?voice=..&format=..` (websocket): text in, audio and timed words
//!   out; `POST` `{text, voice}` for a WAV.
//! - `GET /api/modules_info` (slots used and total, per endpoint, for load balancers),
//!   `/api/build_info`, `/api/health`, `/metrics` (Prometheus).

mod asr;
mod messages;
mod socket;
pub(crate) mod tts;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::slots::Slots;
use super::{AppState, Client};

/// The paths, as moshi-server's configs name them.
pub(crate) const ASR_PATH: &str = "/api/asr-streaming";
pub(crate) const TTS_PATH: &str = "/api/tts_streaming";

/// The routes of Kyutai's protocol, for the endpoints served.
pub(crate) fn routes(state: &AppState) -> Router<Arc<AppState>> {
    let mut app = Router::new()
        .route("/api/modules_info", get(modules_info))
        .route("/api/build_info", get(build_info))
        .route("/api/health", get(health))
        .route("/metrics", get(metrics));
    if state.asr.is_some() {
        app = app.route(ASR_PATH, get(asr_socket).post(asr::post));
    }
    if state.tts.is_some() {
        app = app.route(TTS_PATH, get(tts_socket).post(tts::post));
    }
    app
}

/// The websocket limits: tungstenite's own cap sits above ours, so that a message a little
/// over the limit reaches us and gets a proper `Error` answer.
fn upgrade(ws: WebSocketUpgrade, state: &AppState) -> WebSocketUpgrade {
    let cap = state.config.limits.max_message_bytes * 2 + (64 << 10);
    ws.max_message_size(cap).max_frame_size(cap)
}

async fn asr_socket(
    State(state): State<Arc<AppState>>,
    client: Client,
    ws: WebSocketUpgrade,
) -> Response {
    let s = state.clone();
    upgrade(ws, &state).on_upgrade(move |socket| asr::serve_socket(s, socket, client))
}

async fn tts_socket(
    State(state): State<Arc<AppState>>,
    client: Client,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let request = match tts::Request::parse(&query) {
        Ok(request) => request,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let s = state.clone();
    upgrade(ws, &state).on_upgrade(move |socket| tts::serve_socket(s, socket, client, request))
}

/// moshi-server's `/api/modules_info`: one entry per endpoint, every value a string.
async fn modules_info(State(state): State<Arc<AppState>>) -> Response {
    let config = state.engine.manager().config();
    let mut modules = Vec::new();
    let mut entry = |kind: &str, path: &str, lm: &str, slots: &Slots| {
        modules.push(HashMap::from([
            ("type", kind.to_string()),
            ("path", path.to_string()),
            ("lm", lm.to_string()),
            ("used_slots", slots.used().to_string()),
            ("total_slots", slots.total().to_string()),
        ]));
    };
    if let Some(slots) = &state.asr {
        entry("batched_asr", ASR_PATH, &config.stt_repo, slots);
    }
    if let Some(slots) = &state.tts {
        entry("tts", TTS_PATH, &state.engine.tts_model_name(), slots);
    }
    axum::Json(modules).into_response()
}

async fn build_info() -> Response {
    axum::Json(HashMap::from([
        ("name", env!("CARGO_PKG_NAME")),
        ("version", env!("CARGO_PKG_VERSION")),
        ("protocol", "moshi-server"),
    ]))
    .into_response()
}

/// 200 while serving, 503 once shutting down (so that a load balancer stops sending).
async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.is_stopping() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
