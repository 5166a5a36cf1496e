//! The HTTP API of `pocket-tts serve` (the reference package's FastAPI app), served beside
//! Kyutai's protocol when the TTS model is Pocket TTS, so that its clients work unchanged:
//!
//! - `GET /health` answers `{"status": "healthy"}`;
//! - `POST /tts` takes a multipart form: `text`, and at most one of `voice_url` (a predefined
//!   voice name, or an `hf://` file: audio to clone or a `.safetensors` voice state) and
//!   `voice_wav` (an uploaded audio file to clone), and streams a 16-bit 24 kHz WAV back as it
//!   is generated, with the reference's status codes and messages for bad requests.
//!
//! The speech itself goes through the same slots, limits, metrics and logs as the websocket
//! endpoint ([`super::tts::wav_response`]). An `http(s)://` `voice_url`, which the reference
//! downloads from anywhere, is refused: this server fetches model files from the hub only.

use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use axum::Router;
use axum::routing::{get, post};

use super::kyutai::tts::{Request, start_speech, wav_response};
use super::visit::{Endpoint, Visit};
use super::{AppState, Client};

/// The reference's routes.
pub(crate) const TTS: &str = "/tts";
pub(crate) const HEALTH: &str = "/health";

/// The reference's routes, when the TTS served is Pocket TTS.
pub(crate) fn routes(state: &AppState) -> Router<Arc<AppState>> {
    let pocket = matches!(
        state.engine.manager().config().tts_family(),
        crate::models::TtsFamily::Pocket(_)
    );
    if state.tts.is_some() && pocket {
        Router::new()
            .route(TTS, post(tts))
            .route(HEALTH, get(health))
    } else {
        Router::new()
    }
}

/// `GET /health`.
pub(crate) async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "healthy"})).into_response()
}

/// A FastAPI-style error: `{"detail": "..."}` with its status.
fn detail(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"detail": message.into()})),
    )
        .into_response()
}

/// `POST /tts`.
pub(crate) async fn tts(
    State(state): State<Arc<AppState>>,
    client: Client,
    mut form: Multipart,
) -> Response {
    let (mut text, mut voice_url, mut voice_wav) = (None, None, None);
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return detail(StatusCode::BAD_REQUEST, format!("bad form: {e}")),
        };
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) => return detail(StatusCode::BAD_REQUEST, format!("bad form: {e}")),
        };
        match name.as_str() {
            "text" => text = Some(String::from_utf8_lossy(&bytes).to_string()),
            "voice_url" => voice_url = Some(String::from_utf8_lossy(&bytes).to_string()),
            "voice_wav" => voice_wav = Some((bytes.to_vec(), file_name)),
            _ => {}
        }
    }
    let Some(text) = text else {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, "field required: text");
    };
    if text.trim().is_empty() {
        return detail(StatusCode::BAD_REQUEST, "Text cannot be empty");
    }
    if voice_url.is_some() && voice_wav.is_some() {
        return detail(
            StatusCode::BAD_REQUEST,
            "Cannot provide both voice_url and voice_wav",
        );
    }
    let voice = match (voice_url, voice_wav) {
        (Some(url), _) if url.starts_with("http://") || url.starts_with("https://") => {
            return detail(
                StatusCode::BAD_REQUEST,
                "this server fetches voices from the Hugging Face hub only: give a voice name, \
                 an hf:// path, or upload voice_wav",
            );
        }
        (Some(url), _) if url.starts_with("hf://") => Some(url),
        (Some(name), _) if crate::pocket::config::PREDEFINED_VOICES.contains(&name.as_str()) => {
            Some(name)
        }
        (Some(_), _) => {
            return detail(
                StatusCode::BAD_REQUEST,
                "voice_url must start with http://, https://, or hf://",
            );
        }
        (None, Some((bytes, file_name))) => {
            let extension = file_name
                .as_deref()
                .and_then(|f| std::path::Path::new(f).extension())
                .and_then(|e| e.to_str())
                .unwrap_or("wav")
                .to_string();
            match state
                .engine
                .pocket_voice_from_audio(bytes, &extension)
                .await
            {
                Ok(name) => Some(name),
                Err(e) => return detail(StatusCode::BAD_REQUEST, e.to_string()),
            }
        }
        (None, None) => None,
    };
    let mut visit = Visit::new(&state, client, Endpoint::Tts, "tts");
    match start_speech(&mut visit, Request::wav(voice), &text).await {
        Ok(audio) => wav_response(visit, audio),
        Err(end) => {
            let answer = detail(end.http_status(), end.message());
            visit.end(end);
            answer
        }
    }
}
