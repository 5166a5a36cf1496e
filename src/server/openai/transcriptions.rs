//! `POST /v1/audio/transcriptions`: OpenAI's speech to text, heard by the served STT.
//!
//! The multipart fields are OpenAI's: `file` (any format the library decodes: WAV, FLAC, MP3,
//! Ogg/Vorbis, ...), `model`, `language` (checked against the model's languages; Kyutai's STT
//! recognises them by itself), `prompt` (accepted and ignored: the model takes no prompt),
//! `response_format` (`json`, `text`, `srt`, `vtt`, `verbose_json`), `timestamp_granularities[]`
//! (`word`, `segment`; for `verbose_json`), `temperature` (accepted and ignored: decoding is
//! greedy, as Kyutai's) and `stream`. List fields are taken with or without `[]`, as the SDKs
//! send them with it.
//!
//! `verbose_json` has `duration`, `language` (the one asked for, else the model's first),
//! `words` when `word` is asked for, and `segments` (the phrases subtitles show, grouped as
//! [`PhraseGrouper`](crate::voice::PhraseGrouper) does) unless only `word` is. A segment's
//! `tokens`, `avg_logprob`, `compression_ratio` and `no_speech_prob` are Whisper's and not
//! computed by Kyutai's model: they are sent as empty and 0 so that the SDKs' types read them.
//! With `stream=true`, each word is a `transcript.text.delta` event as soon as it is decided,
//! and `transcript.text.done` carries the whole text.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::Error;
use crate::server::visit::{End, Endpoint, Visit};
use crate::server::{AppState, Client};
use crate::voice::{
    SpeechSource, SttConversationBuilder, Transcript, TranscriptEvent, TranscriptionSegment,
    VoiceError,
};

/// The answer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

/// A checked request.
struct Upload {
    file: Bytes,
    extension: Option<String>,
    format: Format,
    language: Option<crate::voice::Language>,
    words: bool,
    segments: bool,
    stream: bool,
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    client: Client,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    if state.is_stopping() {
        return Error::stopping().into_response();
    }
    let upload = match read(&state, form).await {
        Ok(upload) => upload,
        Err(e) => return e.into_response(),
    };
    let mut visit = Visit::new(&state, client, Endpoint::Asr, "openai transcription");
    if let Err(end) = visit.wait_slot().await {
        let error = Error::from_end(&end, None);
        visit.end(end);
        return error.into_response();
    }
    let conversation = state
        .engine
        .stt()
        .with_source(match &upload.extension {
            Some(extension) => SpeechSource::from_bytes_with_format(upload.file.clone(), extension),
            None => SpeechSource::from_bytes(upload.file.clone()),
        })
        .listen()
        .await;
    let conversation = match conversation {
        Ok(conversation) => conversation,
        Err(e) => return fail(visit, e),
    };
    if upload.stream {
        return stream(visit, conversation).await;
    }
    match conversation.transcript().await {
        Ok(transcript) => {
            visit.end(End::Done);
            answer(&upload, &state, &transcript)
        }
        Err(e) => fail(visit, e),
    }
}

/// The answer to a transcription that failed: 400 naming `file` for audio the library cannot
/// read, 500 otherwise.
fn fail(mut visit: Visit, e: VoiceError) -> Response {
    let error = match &e {
        VoiceError::InvalidInput(message) | VoiceError::Unsupported(message) => Error::invalid(
            "file",
            format!("the file could not be read as audio: {message}"),
        ),
        _ => Error::from_end(&End::Failed(e.to_string()), None),
    };
    visit.end(End::Failed(e.to_string()));
    error.into_response()
}

/// Reads and checks the form.
async fn read(
    state: &AppState,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Upload, Error> {
    let mut form = form.map_err(|e| {
        Error::bad_request(format!(
            "this route takes a multipart/form-data body with a `file` field: {e}"
        ))
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    })?;
    let mut file = None;
    let mut fields: Vec<(String, String)> = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(form_error(e)),
        };
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(form_error)?;
        if name == "file" {
            let extension = file_name
                .as_deref()
                .and_then(|f| std::path::Path::new(f).extension())
                .and_then(|e| e.to_str())
                .map(str::to_lowercase);
            file = Some((bytes, extension));
        } else {
            let key = name.strip_suffix("[]").unwrap_or(&name).to_string();
            fields.push((key, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    let one = |key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let (file, extension) = file.ok_or_else(|| Error::invalid("file", "`file` is required"))?;
    if file.is_empty() {
        return Err(Error::invalid(
            "file",
            "`file` is empty: upload an audio file",
        ));
    }
    let model = one("model").ok_or_else(|| Error::invalid("model", "`model` is required"))?;
    if !super::is_stt_model(state, model) {
        return Err(Error::invalid(
            "model",
            format!(
                "the model `{model}` is not served here: use whisper-1, gpt-4o-transcribe, \
                 gpt-4o-mini-transcribe or {}",
                super::stt_names(state).join(", ")
            ),
        )
        .with_code("model_not_found"));
    }
    let format = match one("response_format").unwrap_or("json") {
        "json" => Format::Json,
        "text" => Format::Text,
        "srt" => Format::Srt,
        "vtt" => Format::Vtt,
        "verbose_json" => Format::VerboseJson,
        other => {
            return Err(Error::invalid(
                "response_format",
                format!(
                    "the response_format `{other}` is not available: use json, text, srt, vtt \
                     or verbose_json"
                ),
            ));
        }
    };
    let language = match one("language").filter(|l| !l.is_empty()) {
        None => None,
        Some(code) => {
            let served = state.engine.stt_languages();
            match code.parse::<crate::voice::Language>() {
                Ok(language) if served.contains(&language) => Some(language),
                _ => {
                    return Err(Error::invalid(
                        "language",
                        format!(
                            "the language `{code}` is not one this model hears: {}",
                            served
                                .iter()
                                .map(|l| l.code().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
    };
    let mut granularities = Vec::new();
    for (key, value) in &fields {
        if key == "timestamp_granularities" {
            match value.as_str() {
                "word" | "segment" => granularities.push(value.clone()),
                other => {
                    return Err(Error::invalid(
                        "timestamp_granularities",
                        format!("the granularity `{other}` is unknown: use word or segment"),
                    ));
                }
            }
        }
    }
    let stream = match one("stream") {
        None | Some("false") | Some("False") | Some("0") => false,
        Some("true") | Some("True") | Some("1") => true,
        Some(other) => {
            return Err(Error::invalid(
                "stream",
                format!("`stream` must be true or false, not `{other}`"),
            ));
        }
    };
    if let Some(t) = one("temperature")
        && t.parse::<f64>().is_err()
    {
        return Err(Error::invalid(
            "temperature",
            format!("`temperature` is not a number: {t}"),
        ));
    }
    let words = granularities.iter().any(|g| g == "word");
    let segments = granularities.is_empty() || granularities.iter().any(|g| g == "segment");
    Ok(Upload {
        file,
        extension,
        format,
        language,
        words,
        segments,
        stream,
    })
}

/// A form that could not be read: 413 over the server's body limit, 400 otherwise.
fn form_error(e: axum::extract::multipart::MultipartError) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::invalid(
            "file",
            format!("the upload is over this server's size limit: {e}"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .with_code("file_too_large")
    } else {
        Error::bad_request(format!("the multipart form could not be read: {e}"))
    }
}

/// The whole transcript in the asked-for shape.
fn answer(upload: &Upload, state: &AppState, transcript: &Transcript) -> Response {
    let text_type = |body: String, content_type: &'static str| {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    match upload.format {
        Format::Json => axum::Json(json!({
            "text": transcript.text,
            "usage": usage(transcript),
        }))
        .into_response(),
        Format::Text => text_type(
            format!("{}\n", transcript.text),
            "text/plain; charset=utf-8",
        ),
        Format::Srt => text_type(transcript.to_srt(), "text/plain; charset=utf-8"),
        Format::Vtt => text_type(transcript.to_vtt(), "text/vtt; charset=utf-8"),
        Format::VerboseJson => {
            let language = upload
                .language
                .clone()
                .or_else(|| state.engine.stt_languages().into_iter().next());
            let language = language
                .map(|l| {
                    l.english_name()
                        .map(str::to_lowercase)
                        .unwrap_or_else(|| l.code().to_string())
                })
                .unwrap_or_default();
            let mut body = json!({
                "task": "transcribe",
                "language": language,
                "duration": seconds(transcript.duration_ms),
                "text": transcript.text,
                "usage": usage(transcript),
            });
            if upload.words {
                body["words"] = transcript
                    .words
                    .iter()
                    .map(|w| json!({"word": w.text, "start": seconds(w.start_ms), "end": seconds(w.end_ms)}))
                    .collect();
            }
            if upload.segments {
                body["segments"] = transcript
                    .phrases()
                    .iter()
                    .enumerate()
                    .map(|(id, phrase)| segment(id, phrase))
                    .collect();
            }
            axum::Json(body).into_response()
        }
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// OpenAI's usage by duration: whole seconds of audio, rounded up.
fn usage(transcript: &Transcript) -> Value {
    json!({"type": "duration", "seconds": transcript.duration_ms.div_ceil(1000)})
}

/// A phrase as a Whisper segment (its text with Whisper's leading space).
fn segment(id: usize, phrase: &TranscriptionSegment) -> Value {
    json!({
        "id": id,
        "seek": 0,
        "start": seconds(phrase.start_ms),
        "end": seconds(phrase.end_ms),
        "text": format!(" {}", phrase.text),
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": 0.0,
        "compression_ratio": 0.0,
        "no_speech_prob": 0.0,
    })
}

/// `stream=true`: a `transcript.text.delta` event per word as the model decides it, then
/// `transcript.text.done`. The first event is awaited before the answer starts, so that audio
/// the library cannot read still gets a plain 400.
async fn stream(visit: Visit, conversation: crate::KyutaiSttConversation) -> Response {
    let mut events = conversation.into_events();
    let first = events.next().await;
    if let Some(Err(e)) = first {
        return fail(visit, e);
    }
    let events = visit.stream(futures::stream::iter(first).chain(events));
    let sse = futures::stream::unfold(
        (Box::pin(events), Vec::<String>::new(), false),
        |(mut events, mut words, ended)| async move {
            if ended {
                return None;
            }
            loop {
                match events.next().await {
                    Some(Ok(TranscriptEvent::Word(word))) => {
                        let delta = if words.is_empty() {
                            word.text.clone()
                        } else {
                            format!(" {}", word.text)
                        };
                        words.push(word.text);
                        let event = sse(json!({"type": "transcript.text.delta", "delta": delta}));
                        return Some((Ok::<_, Infallible>(event), (events, words, false)));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        let error = Error::from_end(&End::Failed(e.to_string()), None);
                        let event = sse(json!({"error": error.inner()}));
                        return Some((Ok(event), (events, words, true)));
                    }
                    None => {
                        let text = words.join(" ");
                        let event = sse(json!({"type": "transcript.text.done", "text": text}));
                        return Some((Ok(event), (events, words, true)));
                    }
                }
            }
        },
    );
    Sse::new(sse)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn sse(data: Value) -> Event {
    Event::default().data(data.to_string())
}
