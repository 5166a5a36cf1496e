//! The page at `/`: try the server in a browser. **Speak** types text and plays it as it
//! streams (a voice from the server's voices, a seed and a temperature; the WAV can be saved);
//! **Listen** sends the microphone (Web Audio, resampled to 24 kHz in the page) and shows the
//! words as they are decided, with the ends of turns (Unmute's rule over the pause
//! probabilities the server sends).
//!
//! Both go over Kyutai's websocket endpoints, as any client would. The files are embedded in
//! the binary, with no CDN and no build step, so the page works offline. When the server needs
//! an API key, the page asks for it once (kept in the browser's local storage) and says so
//! clearly when it is wrong.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{AppState, Client};
use crate::models::TtsFamily;

const INDEX: &str = include_str!("index.html");
const APP: &str = include_str!("app.js");
const MIC: &str = include_str!("mic-worklet.js");
const STYLE: &str = include_str!("style.css");

/// The page's routes: the files (open to all: they hold nothing), and `/page/info` (behind
/// the key, so that the page learns whether its key is right).
pub(crate) fn routes(_state: &AppState) -> Router<Arc<AppState>> {
    let file = |body: &'static str, content_type: &'static str| {
        get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
                .into_response()
        })
    };
    Router::new()
        .route("/", file(INDEX, "text/html; charset=utf-8"))
        .route("/page/app.js", file(APP, "text/javascript; charset=utf-8"))
        .route(
            "/page/mic-worklet.js",
            file(MIC, "text/javascript; charset=utf-8"),
        )
        .route("/page/style.css", file(STYLE, "text/css; charset=utf-8"))
        .route("/page/info", get(info))
}

/// What the page shows: the endpoints served, the voices, the default voice.
async fn info(State(state): State<Arc<AppState>>, _client: Client) -> Response {
    let voices = if state.tts.is_none() {
        Vec::new()
    } else {
        match state.engine.manager().config().tts_family() {
            TtsFamily::Pocket(_) => crate::pocket::config::PREDEFINED_VOICES
                .iter()
                .map(|v| v.to_string())
                .collect(),
            _ => state.engine.voices().await.unwrap_or_else(|e| {
                log::warn!(target: "kyutai::server", "could not list the voices: {e}");
                vec![state.engine.default_voice().to_string()]
            }),
        }
    };
    axum::Json(json!({
        "tts": state.tts.is_some(),
        "asr": state.asr.is_some(),
        "tts_model": state.tts.is_some().then(|| state.engine.tts_model_name()),
        "stt_model": state.asr.is_some().then(|| state.engine.manager().config().stt_repo.clone()),
        "voices": voices,
        "default_voice": state.engine.default_voice(),
        "needs_key": !state.auth.is_open(),
    }))
    .into_response()
}
