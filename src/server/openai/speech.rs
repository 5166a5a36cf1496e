//! `POST /v1/audio/speech`: OpenAI's text to speech, spoken by the served TTS.
//!
//! The JSON fields are OpenAI's: `model`, `input` (at most 4096 characters, as OpenAI's), `voice`
//! (a name or `{"id": NAME}`; see [`super::voices`]), `response_format` (`wav`, `pcm`, `flac`,
//! and `opus` with the `opus` feature: this build has no MP3 or AAC encoder, so those are
//! refused with the list of formats it has; when the field is absent, WAV, since OpenAI's
//! default, MP3, is not available), `speed` (only 1.0: the models speak at their own pace),
//! `instructions` (accepted and ignored: Kyutai's models take no style prompt) and
//! `stream_format` (`audio` or `sse`). Two fields of our own, `seed` and `temperature`, set the
//! sampling as the websocket's query does.
//!
//! The audio streams as it is made: the first bytes leave after the first 80 ms frame. With
//! `stream_format: "sse"`, each piece is a `speech.audio.delta` event (base64 of the format's
//! bytes) and a `speech.audio.done` event ends the stream, with `usage` counting the input's
//! words and the 80 ms frames made.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use super::{Error, voices};
use crate::server::audio_out::{AudioFormat, Encoder};
use crate::server::kyutai::tts::{Request, start_speech};
use crate::server::visit::{End, Endpoint, Visit};
use crate::server::{AppState, Client};
use crate::voice::BoxAudioStream;

/// OpenAI's limit on `input`, in characters.
const MAX_INPUT_CHARS: usize = 4096;

/// A checked request.
struct Speech {
    input: String,
    voice: Option<String>,
    format: AudioFormat,
    sse: bool,
    seed: Option<u64>,
    temperature: Option<f32>,
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if state.is_stopping() {
        return Error::stopping().into_response();
    }
    // A body over the server's limit (`max_post_bytes`), answered in OpenAI's shape.
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            return Error::bad_request(format!("the body could not be read: {}", e.body_text()))
                .with_status(e.status())
                .into_response();
        }
    };
    let speech = match parse(&state, &headers, &body) {
        Ok(speech) => speech,
        Err(e) => return e.into_response(),
    };
    let mut visit = Visit::new(&state, client, Endpoint::Tts, "openai speech");
    let request = Request::openai(speech.voice.clone(), speech.seed, speech.temperature);
    let audio = match start_speech(&mut visit, request, &speech.input).await {
        Ok(audio) => audio,
        Err(end) => {
            let error = Error::from_end(&end, Some("voice"));
            visit.end(end);
            return error.into_response();
        }
    };
    let encoder = match speech.format.encoder() {
        Ok(encoder) => encoder,
        Err(e) => return Error::from_end(&End::Failed(e), None).into_response(),
    };
    let words = speech.input.split_whitespace().count();
    if speech.sse {
        let events = visit.stream(encoded(audio, encoder));
        Sse::new(sse_events(events, words))
            .keep_alive(KeepAlive::default())
            .into_response()
    } else {
        let bytes = visit
            .stream(encoded(audio, encoder))
            .map(|piece| piece.map(|(bytes, _)| bytes).map_err(std::io::Error::other));
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, speech.format.content_type())
            .header(
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=speech.{}", speech.format.extension()),
            )
            .body(Body::from_stream(bytes))
            .expect("a valid response")
    }
}

/// Checks the request's content type and fields.
fn parse(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Speech, Error> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json_type {
        return Err(Error::bad_request(
            "this route takes a JSON body: send `Content-Type: application/json`",
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(Error::bad_request("the body must be a JSON object"));
    };
    let string = |name: &'static str| -> Result<Option<&str>, Error> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::invalid(name, format!("`{name}` must be a string"))),
        }
    };
    let number = |name: &'static str| -> Result<Option<f64>, Error> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(Error::invalid(name, format!("`{name}` must be a number"))),
        }
    };

    let model = string("model")?.ok_or_else(|| Error::invalid("model", "`model` is required"))?;
    if !super::is_tts_model(state, model) {
        return Err(Error::invalid(
            "model",
            format!(
                "the model `{model}` is not served here: use tts-1, tts-1-hd, gpt-4o-mini-tts \
                 or {}",
                super::tts_names(state).join(", ")
            ),
        )
        .with_code("model_not_found"));
    }
    let input = string("input")?.ok_or_else(|| Error::invalid("input", "`input` is required"))?;
    if input.trim().is_empty() {
        return Err(Error::invalid(
            "input",
            "`input` is empty: give the text to speak",
        ));
    }
    if input.chars().count() > MAX_INPUT_CHARS {
        return Err(Error::invalid(
            "input",
            format!("`input` is longer than {MAX_INPUT_CHARS} characters"),
        )
        .with_code("string_above_max_length"));
    }
    let voice = match fields.get("voice") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(Value::Object(custom)) => match custom.get("id") {
            Some(Value::String(id)) => Some(id.clone()),
            _ => {
                return Err(Error::invalid(
                    "voice",
                    "a custom `voice` is `{\"id\": NAME}`",
                ));
            }
        },
        Some(_) => return Err(Error::invalid("voice", "`voice` must be a string")),
    };
    if voice.as_deref().is_some_and(|v| v.trim().is_empty()) {
        return Err(Error::invalid("voice", "`voice` is empty: name a voice"));
    }
    let family = state.engine.manager().config().tts_family();
    let voice = voice.map(|name| voices::kyutai_voice(&family, &name));
    let format = match string("response_format")? {
        None => AudioFormat::Wav,
        Some(name) => AudioFormat::from_name(name).ok_or_else(|| {
            Error::invalid(
                "response_format",
                format!(
                    "the response_format `{name}` is not available in this server: use one of {}",
                    AudioFormat::supported().join(", ")
                ),
            )
        })?,
    };
    let sse = match string("stream_format")? {
        None | Some("audio") => false,
        Some("sse") => true,
        Some(other) => {
            return Err(Error::invalid(
                "stream_format",
                format!("the stream_format `{other}` is unknown: use audio or sse"),
            ));
        }
    };
    if let Some(speed) = number("speed")?
        && speed != 1.0
    {
        return Err(Error::invalid(
            "speed",
            format!(
                "speed {speed} is not available: Kyutai's models speak at their own pace, so \
                 only 1.0 is accepted"
            ),
        ));
    }
    string("instructions")?;
    let seed = match fields.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| Error::invalid("seed", "`seed` must be a whole number"))?,
        ),
    };
    let temperature = number("temperature")?.map(|t| t as f32);
    if temperature.is_some_and(|t| !(t.is_finite() && t >= 0.0)) {
        return Err(Error::invalid(
            "temperature",
            "`temperature` must be 0 or more",
        ));
    }
    Ok(Speech {
        input: input.to_string(),
        voice,
        format,
        sse,
        seed,
        temperature,
    })
}

/// The format's bytes of `audio`: the header, one piece per chunk (pieces an encoder holds back
/// are skipped), and the tail; each with the number of samples it holds.
fn encoded(
    audio: BoxAudioStream,
    encoder: Encoder,
) -> impl Stream<Item = Result<(Bytes, usize), String>> + Send + 'static {
    let header = encoder.header();
    let pieces = futures::stream::unfold(
        (audio, Some(encoder)),
        |(mut audio, mut encoder)| async move {
            let active = encoder.as_mut()?;
            loop {
                match audio.next().await {
                    Some(Ok(chunk)) => match active.push(&chunk.samples) {
                        Ok(bytes) if bytes.is_empty() => continue,
                        Ok(bytes) => {
                            return Some((Ok((bytes, chunk.samples.len())), (audio, encoder)));
                        }
                        Err(e) => return Some((Err(e), (audio, None))),
                    },
                    Some(Err(e)) => return Some((Err(e.to_string()), (audio, None))),
                    None => {
                        let tail = active.finish().map(|bytes| (bytes, 0));
                        return Some((tail, (audio, None)));
                    }
                }
            }
        },
    )
    .filter(|piece| std::future::ready(!matches!(piece, Ok((bytes, 0)) if bytes.is_empty())));
    futures::stream::iter((!header.is_empty()).then_some(Ok((header, 0)))).chain(pieces)
}

/// OpenAI's speech events: a `speech.audio.delta` per piece, then `speech.audio.done` with the
/// usage; an error in the middle ends the stream with an `error` event (the SDK raises it).
fn sse_events(
    pieces: impl Stream<Item = Result<(Bytes, usize), String>> + Send + 'static,
    words: usize,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    futures::stream::unfold(
        (Box::pin(pieces), 0usize, false),
        move |(mut pieces, samples, ended)| async move {
            if ended {
                return None;
            }
            Some(match pieces.next().await {
                Some(Ok((bytes, n))) => {
                    let audio = base64::engine::general_purpose::STANDARD.encode(&bytes);
                    let delta = event(json!({"type": "speech.audio.delta", "audio": audio}));
                    (Ok(delta), (pieces, samples + n, false))
                }
                Some(Err(message)) => {
                    let error = Error::from_end(&End::Failed(message), None);
                    (
                        Ok(event(json!({"error": error.inner()}))),
                        (pieces, samples, true),
                    )
                }
                None => {
                    let frames = samples.div_ceil(1920);
                    let done = event(json!({
                        "type": "speech.audio.done",
                        "usage": {
                            "input_tokens": words,
                            "output_tokens": frames,
                            "total_tokens": words + frames,
                        },
                    }));
                    (Ok(done), (pieces, samples, true))
                }
            })
        },
    )
}

fn event(data: Value) -> Event {
    Event::default().data(data.to_string())
}
