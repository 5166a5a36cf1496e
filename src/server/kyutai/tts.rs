//! `/api/tts_streaming`: text-to-speech over a websocket (moshi-server's TTS protocol, as its
//! shipped `Py` module and `tts.rs` speak it), and the same path as a POST of `{text, voice}`
//! answering a WAV.
//!
//! Each stream is one library conversation (`engine.tts()...synthesize_stream` fed by a
//! `text_channel`); this module only translates between the socket and the conversation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::WebSocket;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::messages::{TtsIn, TtsOut, decode};
use super::socket::{self, Conn, Framing, Incoming, ping_clock};
use crate::server::visit::{End, Endpoint, Visit, code};
use crate::server::{AppState, Client};
use crate::voice::{
    AudioChunk, BoxAudioStream, Speaker, TtsConversation, TtsConversationBuilder, VoiceError,
};
use crate::{KyutaiTtsBuilder, TextSender, text_channel};

const ENDPOINT: &str = "tts";

/// The `format` query parameter (moshi-server's `StreamingOutput`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Bare little-endian `f32` samples, no messages.
    Pcm,
    /// MessagePack messages (Kyutai's clients use this one).
    PcmMessagePack,
    /// Ogg/Opus pages (moshi-server's default).
    OggOpus,
    /// Ogg/Opus pages inside MessagePack messages.
    OggOpusMessagePack,
}

impl Format {
    fn parse(name: Option<&str>) -> Result<Format, String> {
        Ok(match name {
            Some("Pcm") => Format::Pcm,
            Some("PcmMessagePack") => Format::PcmMessagePack,
            None | Some("OggOpus") => Format::OggOpus,
            Some("OggOpusMessagePack") => Format::OggOpusMessagePack,
            Some(other) => {
                return Err(format!(
                    "unknown format `{other}`: use PcmMessagePack, Pcm, OggOpus or \
                     OggOpusMessagePack"
                ));
            }
        })
    }
}

/// A TTS request's settings, from the query string. moshi-server's other parameters
/// (`top_k`, `cfg_alpha`, `voices`, `max_seq_len`) are accepted and ignored, as its `Py` module
/// ignores them.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    format: Format,
    voice: Option<String>,
    seed: Option<u64>,
    temperature: Option<f32>,
}

impl Request {
    /// A request for a 16-bit WAV in `voice` (the default voice when `None`).
    pub(crate) fn wav(voice: Option<String>) -> Request {
        Request {
            format: Format::Pcm,
            voice,
            seed: None,
            temperature: None,
        }
    }

    /// A request of OpenAI's speech route: the voice (the default when `None`) and sampling;
    /// the format is the route's own.
    pub(crate) fn openai(
        voice: Option<String>,
        seed: Option<u64>,
        temperature: Option<f32>,
    ) -> Request {
        Request {
            format: Format::Pcm,
            voice,
            seed,
            temperature,
        }
    }

    pub(crate) fn parse(query: &HashMap<String, String>) -> Result<Request, String> {
        let number = |key: &str| -> Result<Option<f64>, String> {
            query
                .get(key)
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|_| format!("`{key}` is not a number: {v}"))
                })
                .transpose()
        };
        let seed = query
            .get("seed")
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("`seed` is not a whole number: {v}"))
            })
            .transpose()?;
        Ok(Request {
            format: Format::parse(query.get("format").map(String::as_str))?,
            voice: query.get("voice").filter(|v| !v.is_empty()).cloned(),
            seed,
            temperature: number("temperature")?.map(|t| t as f32),
        })
    }

    fn builder(&self, state: &AppState, text: Option<&str>) -> KyutaiTtsBuilder {
        let mut speaker = Speaker::speaker("kyutai");
        if let Some(voice) = &self.voice {
            speaker = speaker.with_voice(voice.as_str());
        }
        if let Some(text) = text {
            speaker = speaker.speak(text);
        }
        let mut builder = state.engine.tts().with_speaker(speaker.build());
        if let Some(seed) = self.seed {
            builder = builder.seed(seed);
        }
        if let Some(t) = self.temperature {
            builder = builder.temperature(t);
        }
        builder
    }
}

/// A failure to start: the client's fault (a voice that does not exist, a bad setting) or the
/// server's.
fn start_error(e: VoiceError) -> End {
    match e {
        VoiceError::NotFound { .. } | VoiceError::InvalidInput(_) | VoiceError::Unsupported(_) => {
            End::Refused(code::POLICY, e.to_string(), "bad_request")
        }
        other => End::Failed(other.to_string()),
    }
}

/// Serves one websocket client, from the slot to the log line.
pub(crate) async fn serve_socket(
    state: Arc<AppState>,
    ws: WebSocket,
    client: Client,
    request: Request,
) {
    let framing = match request.format {
        Format::Pcm | Format::OggOpus => Framing::RawPcm,
        _ => Framing::MessagePack,
    };
    let conn = Conn::new(ws, &state.config.limits, framing);
    let visit = Visit::new(&state, client, Endpoint::Tts, ENDPOINT);
    let opus = matches!(request.format, Format::OggOpus | Format::OggOpusMessagePack);
    let refusal = (opus && !cfg!(feature = "opus")).then(|| {
        End::Refused(
            code::UNSUPPORTED,
            "the OggOpus formats are not available in this server (built without the `opus` \
             feature, which links libopus): ask for format=PcmMessagePack or format=Pcm"
                .into(),
            "unsupported",
        )
    });
    socket::serve(
        visit,
        conn,
        refusal,
        |message| TtsOut::Error { message },
        async |conn: &mut Conn| Stream::new(&state, request).run(conn).await,
    )
    .await;
}

/// One stream's state between the socket and its conversation.
struct Stream<'a> {
    state: &'a AppState,
    request: Request,
    /// The text's way in; `None` once the client sent `Eos`.
    text: Option<TextSender>,
    text_bytes: usize,
    first_text: Option<Instant>,
    /// When `Eos` came, and how much audio had been sent then (for the behind report).
    eos: Option<(Instant, u64)>,
    audio_ms: u64,
    last_chunk: Option<Instant>,
    behind: bool,
    /// The Ogg/Opus stream, for the `OggOpus` formats.
    #[cfg(feature = "opus")]
    opus: Option<crate::server::ogg_opus::OggOpusEncoder>,
}

impl<'a> Stream<'a> {
    fn new(state: &'a AppState, request: Request) -> Stream<'a> {
        Stream {
            state,
            request,
            text: None,
            text_bytes: 0,
            first_text: None,
            eos: None,
            audio_ms: 0,
            last_chunk: None,
            behind: false,
            #[cfg(feature = "opus")]
            opus: None,
        }
    }

    async fn run(&mut self, conn: &mut Conn) -> End {
        let started = Instant::now();
        let (sender, text) = text_channel();
        self.text = Some(sender);
        let conversation = self
            .request
            .builder(self.state, None)
            .synthesize_stream(text)
            .await;
        let mut audio = match conversation {
            Ok(conversation) => conversation.into_stream(),
            Err(e) => return start_error(e),
        };
        if let Err(end) = conn.send(&TtsOut::Ready).await {
            return end;
        }
        #[cfg(feature = "opus")]
        if let Err(end) = self.start_opus(conn).await {
            return end;
        }
        let mut shutdown = self.state.shutdown.clone();
        let mut ping = ping_clock(&self.state.config.limits);
        let end = loop {
            tokio::select! {
                _ = crate::server::stopping(&mut shutdown) => break End::Shutdown,
                chunk = audio.next() => match chunk {
                    Some(Ok(chunk)) => {
                        if let Err(end) = self.on_chunk(chunk, conn).await {
                            break end;
                        }
                    }
                    Some(Err(e)) => break End::Failed(e.to_string()),
                    None => break End::Done,
                },
                message = conn.recv() => match message {
                    Ok(message) => {
                        if let Err(end) = self.on_message(message) {
                            break end;
                        }
                    }
                    Err(end) => break end,
                },
                _ = ping.tick() => {
                    if let Err(end) = conn.keepalive(self.text.is_some()).await {
                        break end;
                    }
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        if seconds > 0.0 && self.audio_ms > 0 {
            self.state
                .metrics
                .real_time_factor
                .with_label_values(&[ENDPOINT])
                .observe(self.audio_ms as f64 / 1000.0 / seconds);
        }
        end
    }

    fn on_message(&mut self, message: Incoming) -> Result<(), End> {
        let text = match message {
            Incoming::Text(text) => text,
            Incoming::Binary(bytes) if bytes.as_ref() == b"\0" => return self.end_of_text(),
            Incoming::Binary(bytes) => match decode::<TtsIn>(&bytes).map_err(End::bad)? {
                TtsIn::Text { text } => text,
                TtsIn::Eos => return self.end_of_text(),
                TtsIn::Voice { .. } => {
                    return Err(End::Refused(
                        code::UNSUPPORTED,
                        "custom voice embeddings (Voice messages) are not supported by this \
                         server: name a voice with ?voice=..."
                            .into(),
                        "unsupported",
                    ));
                }
            },
        };
        let Some(sender) = &self.text else {
            return Err(End::bad("text after Eos"));
        };
        self.text_bytes += text.len();
        let limit = self.state.config.limits.max_text_bytes;
        if self.text_bytes > limit {
            return Err(End::bad(format!(
                "the text is over this server's limit of {limit} bytes per stream"
            )));
        }
        self.first_text.get_or_insert_with(Instant::now);
        // Each message is whole words (moshi-server splits every message on whitespace), so a
        // space ends its last word; the library joins pieces otherwise.
        sender
            .send(format!("{text} "))
            .map_err(|_| End::Failed("the synthesis stopped".into()))
    }

    fn end_of_text(&mut self) -> Result<(), End> {
        if self.text.take().is_some() {
            self.eos = Some((Instant::now(), self.audio_ms));
        }
        Ok(())
    }

    async fn on_chunk(&mut self, chunk: AudioChunk, conn: &mut Conn) -> Result<(), End> {
        let now = Instant::now();
        let metrics = &self.state.metrics;
        metrics.steps.with_label_values(&[ENDPOINT]).inc();
        match self.last_chunk.replace(now) {
            Some(last) => metrics
                .step_interval
                .with_label_values(&[ENDPOINT])
                .observe((now - last).as_secs_f64()),
            None => {
                if let Some(first) = self.first_text {
                    metrics
                        .first_audio
                        .with_label_values(&[ENDPOINT])
                        .observe((now - first).as_secs_f64());
                }
            }
        }
        self.audio_ms += chunk.samples.len() as u64 * 1000 / 24_000;
        self.check_behind();
        match self.request.format {
            Format::Pcm => {
                let bytes: Vec<u8> = chunk.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
                conn.send_bytes(bytes).await?;
            }
            #[cfg(feature = "opus")]
            Format::OggOpus | Format::OggOpusMessagePack => {
                let encoder = self.opus.as_mut().expect("started with the stream");
                let data = encoder.encode(&chunk.samples).map_err(End::Failed)?;
                self.send_opus(data, conn).await?;
            }
            _ => conn.send(&TtsOut::Audio { pcm: chunk.samples }).await?,
        }
        for word in chunk.words {
            conn.send(&TtsOut::Text {
                text: word.text,
                start_s: word.start_ms as f64 / 1000.0,
                stop_s: word.end_ms as f64 / 1000.0,
            })
            .await?;
        }
        Ok(())
    }

    /// For the `OggOpus` formats: starts the Ogg/Opus stream and sends its header pages, as
    /// moshi-server does before any audio.
    #[cfg(feature = "opus")]
    async fn start_opus(&mut self, conn: &mut Conn) -> Result<(), End> {
        if !matches!(
            self.request.format,
            Format::OggOpus | Format::OggOpusMessagePack
        ) {
            return Ok(());
        }
        let encoder = crate::server::ogg_opus::OggOpusEncoder::new().map_err(End::Failed)?;
        let header = encoder.header().to_vec();
        self.opus = Some(encoder);
        self.send_opus(header, conn).await
    }

    /// Ogg pages: a bare binary frame (`OggOpus`) or an `OggOpus` message; nothing while the
    /// encoder waits for a whole packet (moshi-server sends an empty one in its message format).
    #[cfg(feature = "opus")]
    async fn send_opus(&mut self, data: Vec<u8>, conn: &mut Conn) -> Result<(), End> {
        match self.request.format {
            Format::OggOpus if !data.is_empty() => conn.send_bytes(data).await,
            Format::OggOpusMessagePack => conn.send(&TtsOut::OggOpus { data }).await,
            _ => Ok(()),
        }
    }

    /// Once all the text is in, audio made slower than it plays is reported (before that, the
    /// model may be waiting for words, which is not the server's delay).
    fn check_behind(&mut self) {
        let Some((at, audio_then)) = self.eos else {
            return;
        };
        let wall = at.elapsed().as_millis() as u64;
        let made = self.audio_ms - audio_then;
        let threshold = self.state.config.limits.behind_threshold.as_millis() as u64;
        if !self.behind && wall > made + threshold {
            self.behind = true;
            self.state
                .metrics
                .behind
                .with_label_values(&[ENDPOINT])
                .inc();
            log::warn!(
                target: "kyutai::server",
                "tts stream behind real time: {made} ms of audio in {wall} ms"
            );
        }
    }
}

/// The body of `POST /api/tts_streaming` (moshi-server's `TtsQuery`), plus an optional seed.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct PostBody {
    text: String,
    #[serde(default)]
    voice: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
}

/// `POST /api/tts_streaming`: `{text, voice}` in, a 16-bit 24 kHz WAV out, streamed as it is
/// made (the header says "length unknown", as moshi-server's does).
pub(crate) async fn post(
    State(state): State<Arc<AppState>>,
    client: Client,
    Json(body): Json<PostBody>,
) -> Response {
    let request = Request {
        format: Format::Pcm,
        voice: body.voice,
        seed: body.seed,
        temperature: None,
    };
    let mut visit = Visit::new(&state, client, Endpoint::Tts, ENDPOINT);
    match start_speech(&mut visit, request, &body.text).await {
        Ok(audio) => wav_response(visit, audio),
        Err(end) => {
            // moshi-server answers every error as bare text.
            let answer = (end.http_status(), end.message()).into_response();
            visit.end(end);
            answer
        }
    }
}

/// A streamed 16-bit 24 kHz WAV of `audio` (the header says "length unknown", as
/// moshi-server's does). The body owns the visit: its slot is freed, and its line logged,
/// when the body is done or the client hangs up. The POST routes of moshi-server's and
/// pocket-tts's protocols answer with it.
pub(crate) fn wav_response(visit: Visit, audio: BoxAudioStream) -> Response {
    let header = crate::audio::streaming_wav_header(24_000, 1).to_vec();
    let samples = visit.stream(audio).map(|chunk| {
        chunk
            .map(|c| crate::server::audio_out::pcm16(&c.samples))
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(header) }).chain(samples);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(
            header::CONTENT_DISPOSITION,
            "attachment; filename=generated_speech.wav",
        )
        .body(Body::from_stream(body))
        .expect("a valid response")
}

/// Checks the text against the limit, takes a TTS slot (waiting up to `post_wait`) and starts
/// speaking `text` as `request` says: the start of every HTTP route that speaks.
pub(crate) async fn start_speech(
    visit: &mut Visit,
    request: Request,
    text: &str,
) -> Result<BoxAudioStream, End> {
    let limit = visit.state().config.limits.max_text_bytes;
    if text.len() > limit {
        return Err(End::Refused(
            code::TOO_BIG,
            format!("the text is over this server's limit of {limit} bytes"),
            "too_big",
        ));
    }
    visit.wait_slot().await?;
    let conversation = request
        .builder(visit.state(), Some(text))
        .synthesize()
        .await;
    conversation.map(|c| c.into_stream()).map_err(start_error)
}
