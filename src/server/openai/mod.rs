//! OpenAI's face of the server: its audio API, so that apps and frameworks written for OpenAI's
//! SDKs (Open WebUI, LiveKit's and Pipecat's OpenAI plugins, LangChain, scripts) work against
//! `kyutai serve` by changing their base URL to `http://HOST:PORT/v1`.
//!
//! - `POST /v1/audio/speech`: text to speech ([`speech`]);
//! - `POST /v1/audio/transcriptions`: an audio file to text ([`transcriptions`]);
//! - `GET /v1/models`, `GET /v1/models/{id}`: what is served, under our names and OpenAI's.
//!
//! The routes share the server's keys (`Authorization: Bearer KEY` is accepted), slots, limits,
//! metrics and logs with Kyutai's protocol; every error has OpenAI's shape ([`error`]), so the
//! SDKs raise their typed exceptions. Model names: `tts-1`, `tts-1-hd` and `gpt-4o-mini-tts*`
//! name the TTS served; `whisper-1`, `gpt-4o-transcribe*`, `gpt-4o-mini-transcribe*` and
//! `gpt-transcribe` the STT; our own names (the repository, `pocket:NAME`, `kyutai-tts`,
//! `pocket-tts`, `kyutai-stt`) work too. Voices: [`voices`].

pub(crate) mod error;
mod speech;
mod transcriptions;
pub(crate) mod voices;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

use super::{AppState, Client};
use crate::models::TtsFamily;
pub(crate) use error::Error;

/// Where OpenAI's routes live; the SDKs' base URL is `http://HOST:PORT/v1`.
pub(crate) const PREFIX: &str = "/v1";

/// OpenAI's TTS model names, all standing for the TTS served.
const TTS_ALIASES: [&str; 3] = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];
/// OpenAI's STT model names, all standing for the STT served.
const STT_ALIASES: [&str; 3] = ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"];

/// The routes of OpenAI's API, for the endpoints served; any other path under `/v1` answers
/// OpenAI's 404.
pub(crate) fn routes(state: &AppState) -> Router<Arc<AppState>> {
    let mut app = Router::new()
        .route("/v1/models", get(list_models).fallback(wrong_method))
        .route("/v1/models/{id}", get(model).fallback(wrong_method));
    if state.tts.is_some() {
        app = app.route(
            "/v1/audio/speech",
            post(speech::create).fallback(wrong_method),
        );
    }
    if state.asr.is_some() {
        app = app.route(
            "/v1/audio/transcriptions",
            post(transcriptions::create).fallback(wrong_method),
        );
    }
    app.route("/v1", any(no_route))
        .route("/v1/{*rest}", any(no_route))
}

async fn no_route(method: Method, uri: axum::http::Uri) -> Response {
    Error::no_route(method.as_str(), uri.path()).into_response()
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> Response {
    Error::no_route(method.as_str(), uri.path())
        .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
        .into_response()
}

/// Our own names of the TTS served: its model (`kyutai/tts-1.6b-en_fr`, `pocket:NAME`) and
/// its family.
fn tts_names(state: &AppState) -> Vec<String> {
    let family = match state.engine.manager().config().tts_family() {
        TtsFamily::Pocket(_) => "pocket-tts",
        _ => "kyutai-tts",
    };
    vec![state.engine.tts_model_name(), family.to_string()]
}

fn stt_names(state: &AppState) -> Vec<String> {
    vec![
        state.engine.manager().config().stt_repo.clone(),
        "kyutai-stt".to_string(),
    ]
}

/// True when `name` stands for the TTS served (OpenAI's names, dated or not, and ours).
pub(crate) fn is_tts_model(state: &AppState, name: &str) -> bool {
    TTS_ALIASES.contains(&name)
        || name.starts_with("gpt-4o-mini-tts-")
        || tts_names(state).iter().any(|n| n == name)
}

/// True when `name` stands for the STT served.
pub(crate) fn is_stt_model(state: &AppState, name: &str) -> bool {
    STT_ALIASES.contains(&name)
        || name == "gpt-transcribe"
        || name.starts_with("gpt-4o-transcribe-")
        || name.starts_with("gpt-4o-mini-transcribe-")
        || stt_names(state).iter().any(|n| n == name)
}

/// Every model id served: ours first, then OpenAI's aliases.
fn model_ids(state: &AppState) -> Vec<String> {
    let mut ids = Vec::new();
    if state.tts.is_some() {
        ids.extend(tts_names(state));
        ids.extend(TTS_ALIASES.iter().map(|s| s.to_string()));
    }
    if state.asr.is_some() {
        ids.extend(stt_names(state));
        ids.extend(STT_ALIASES.iter().map(|s| s.to_string()));
    }
    ids
}

fn model_object(state: &AppState, id: &str) -> serde_json::Value {
    json!({
        "id": id,
        "object": "model",
        "created": state.started_unix,
        "owned_by": "kyutai",
    })
}

/// `GET /v1/models`.
async fn list_models(State(state): State<Arc<AppState>>, _client: Client) -> Response {
    let data: Vec<_> = model_ids(&state)
        .iter()
        .map(|id| model_object(&state, id))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}` (an id may hold a slash, as a repository's does: `{id}` is then
/// percent-encoded by the SDKs).
async fn model(
    State(state): State<Arc<AppState>>,
    _client: Client,
    Path(id): Path<String>,
) -> Response {
    if model_ids(&state).contains(&id) {
        axum::Json(model_object(&state, &id)).into_response()
    } else {
        Error::no_model(&id).into_response()
    }
}
