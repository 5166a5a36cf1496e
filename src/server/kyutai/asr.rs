//! `/api/asr-streaming`: speech-to-text over a websocket (moshi-server's `batched_asr.rs`
//! protocol), and the same path as a POST of an audio file answering the words as JSON.
//!
//! Each stream is one library conversation (`engine.stt()` on a stream of PCM frames, with
//! progress events); this module only translates between the socket and the conversation.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::WebSocket;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::messages::{AsrIn, AsrOut, decode};
use super::socket::{self, Conn, Framing, Incoming, ping_clock};
use crate::server::visit::{End, Endpoint, Visit, code};
use crate::server::{AppState, Client};
use crate::voice::{SpeechSource, SttConversationBuilder, TranscriptEvent, VoiceError};

const ENDPOINT: &str = "asr";
const SAMPLE_RATE: u64 = 24_000;
/// Samples per model step (80 ms).
const FRAME: u64 = 1920;

/// Serves one websocket client, from the slot to the log line.
pub(crate) async fn serve_socket(state: Arc<AppState>, ws: WebSocket, client: Client) {
    let conn = Conn::new(ws, &state.config.limits, Framing::MessagePack);
    let visit = Visit::new(&state, client, Endpoint::Asr, ENDPOINT);
    socket::serve(
        visit,
        conn,
        None,
        |message| AsrOut::Error { message },
        async |conn: &mut Conn| Stream::new(&state).run(conn).await,
    )
    .await;
}

/// One stream's state between the socket and its conversation.
struct Stream<'a> {
    state: &'a AppState,
    /// Samples received from the client.
    received: u64,
    /// Markers waiting for the transcript to reach them: (audio position in ms, id).
    markers: VecDeque<(u64, i64)>,
    /// The model steps seen (for `Step.step_idx`).
    steps: usize,
    /// How far the transcript is settled, in ms of the client's audio (none before the first
    /// progress event: not even time 0 is settled then).
    settled_ms: Option<u64>,
    last_step: Option<Instant>,
    behind: bool,
    /// The decoder of `OggOpus` input, from the first such message on.
    #[cfg(feature = "opus")]
    opus: Option<crate::server::ogg_opus::OggOpusDecoder>,
}

impl<'a> Stream<'a> {
    fn new(state: &'a AppState) -> Stream<'a> {
        Stream {
            state,
            received: 0,
            markers: VecDeque::new(),
            steps: 0,
            settled_ms: None,
            last_step: None,
            behind: false,
            #[cfg(feature = "opus")]
            opus: None,
        }
    }

    async fn run(&mut self, conn: &mut Conn) -> End {
        let started = Instant::now();
        let (audio, frames) = mpsc::unbounded_channel::<Vec<f32>>();
        let frames = futures::stream::unfold(frames, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        let conversation = self
            .state
            .engine
            .stt()
            .with_source(SpeechSource::from_stream(frames, SAMPLE_RATE as u32, 1))
            .progress_events(true)
            .word_start_events(true)
            .listen()
            .await;
        let mut events = match conversation {
            Ok(conversation) => conversation.into_events(),
            Err(e) => return End::Failed(format!("the model could not start: {e}")),
        };
        if let Err(end) = conn.send(&AsrOut::Ready).await {
            return end;
        }
        let mut shutdown = self.state.shutdown.clone();
        let mut ping = ping_clock(&self.state.config.limits);
        let max_backlog = self.state.config.limits.max_buffered_audio.as_millis() as u64;
        let end = loop {
            // Backpressure: while the model is far behind, stop reading the socket.
            let reading = self.backlog_ms() < max_backlog;
            tokio::select! {
                _ = crate::server::stopping(&mut shutdown) => break End::Shutdown,
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        if let Err(end) = self.on_event(event, conn).await {
                            break end;
                        }
                    }
                    Some(Err(e)) => break End::Failed(e.to_string()),
                    None => break End::Failed("the transcription ended early".into()),
                },
                message = conn.recv(), if reading => match message {
                    Ok(message) => {
                        if let Err(end) = self.on_message(message, &audio, conn).await {
                            break end;
                        }
                    }
                    Err(end) => break end,
                },
                _ = ping.tick() => {
                    if !reading {
                        conn.excuse_silence();
                    }
                    if let Err(end) = conn.keepalive(true).await {
                        break end;
                    }
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        if let Some(settled) = self.settled_ms.filter(|_| seconds > 0.0) {
            self.state
                .metrics
                .real_time_factor
                .with_label_values(&[ENDPOINT])
                .observe(settled as f64 / 1000.0 / seconds);
        }
        end
    }

    /// Audio received and not yet transcribed, in ms.
    fn backlog_ms(&self) -> u64 {
        (self.received * 1000 / SAMPLE_RATE).saturating_sub(self.settled_ms.unwrap_or(0))
    }

    async fn on_message(
        &mut self,
        message: Incoming,
        audio: &mpsc::UnboundedSender<Vec<f32>>,
        conn: &mut Conn,
    ) -> Result<(), End> {
        let bytes = match message {
            Incoming::Binary(bytes) => bytes,
            Incoming::Text(_) => {
                return Err(End::Refused(
                    code::UNSUPPORTED,
                    "text frames are not part of this protocol: send MessagePack binary frames"
                        .into(),
                    "bad_input",
                ));
            }
        };
        match decode::<AsrIn>(&bytes).map_err(End::bad)? {
            AsrIn::Init => {}
            AsrIn::Audio { pcm } => {
                if let Some(i) = pcm.iter().position(|x| !x.is_finite()) {
                    return Err(End::bad(format!(
                        "audio sample {i} is not a finite number ({})",
                        pcm[i]
                    )));
                }
                self.hear(pcm, audio)?;
            }
            AsrIn::Marker { id } => {
                // As moshi-server: the marker comes back once the whole frames received before
                // it (and the model's delay) have been transcribed.
                let at_ms = self.received / FRAME * FRAME * 1000 / SAMPLE_RATE;
                self.markers.push_back((at_ms, id));
                self.echo_markers(conn).await?;
            }
            // As moshi-server: the bytes of an Ogg/Opus stream, in pieces of any size, decoded
            // to 24 kHz as the pages complete.
            #[cfg(feature = "opus")]
            AsrIn::OggOpus { data } => {
                let decoder = match &mut self.opus {
                    Some(decoder) => decoder,
                    None => self.opus.insert(
                        crate::server::ogg_opus::OggOpusDecoder::new()
                            .map_err(|e| End::Failed(e.to_string()))?,
                    ),
                };
                let pcm = decoder.push(&data).map_err(End::bad)?;
                self.hear(pcm, audio)?;
            }
            #[cfg(not(feature = "opus"))]
            AsrIn::OggOpus { .. } => {
                return Err(End::Refused(
                    code::UNSUPPORTED,
                    "OggOpus input is not available in this server (built without the `opus` \
                     feature, which links libopus): send Audio messages (24 kHz float samples)"
                        .into(),
                    "unsupported",
                ));
            }
        }
        Ok(())
    }

    /// Passes received samples on to the transcription.
    fn hear(&mut self, pcm: Vec<f32>, audio: &mpsc::UnboundedSender<Vec<f32>>) -> Result<(), End> {
        if !pcm.is_empty() {
            self.received += pcm.len() as u64;
            audio
                .send(pcm)
                .map_err(|_| End::Failed("the transcription stopped".into()))?;
        }
        Ok(())
    }

    async fn on_event(&mut self, event: TranscriptEvent, conn: &mut Conn) -> Result<(), End> {
        match event {
            // As moshi-server: `Word` as soon as the word is recognised, `EndWord` once it ends.
            TranscriptEvent::WordStarted { text, start_ms } => {
                conn.send(&AsrOut::Word {
                    text,
                    start_time: start_ms as f64 / 1000.0,
                })
                .await?;
            }
            TranscriptEvent::Word(word) => {
                conn.send(&AsrOut::EndWord {
                    stop_time: word.end_ms as f64 / 1000.0,
                })
                .await?;
            }
            TranscriptEvent::VoiceActivity {
                time_ms,
                pause_probabilities,
            } => {
                self.steps += 1;
                let heard = time_ms * SAMPLE_RATE / 1000;
                conn.send(&AsrOut::Step {
                    step_idx: self.steps,
                    prs: pause_probabilities,
                    buffered_pcm: self.received.saturating_sub(heard) as usize,
                })
                .await?;
            }
            TranscriptEvent::Progress { time_ms } => {
                self.settled_ms = Some(time_ms);
                self.on_step();
                self.echo_markers(conn).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Metrics for one model step, and the behind-real-time report.
    fn on_step(&mut self) {
        let metrics = &self.state.metrics;
        metrics.steps.with_label_values(&[ENDPOINT]).inc();
        let now = Instant::now();
        if let Some(last) = self.last_step.replace(now) {
            metrics
                .step_interval
                .with_label_values(&[ENDPOINT])
                .observe((now - last).as_secs_f64());
        }
        let threshold = self.state.config.limits.behind_threshold.as_millis() as u64;
        if !self.behind && self.backlog_ms() > threshold {
            self.behind = true;
            metrics.behind.with_label_values(&[ENDPOINT]).inc();
            log::warn!(
                target: "kyutai::server",
                "asr stream behind real time: {} ms of audio waiting",
                self.backlog_ms()
            );
        }
    }

    async fn echo_markers(&mut self, conn: &mut Conn) -> Result<(), End> {
        while let Some(&(at_ms, id)) = self.markers.front() {
            if self.settled_ms.is_none_or(|settled| settled < at_ms) {
                break;
            }
            self.markers.pop_front();
            conn.send(&AsrOut::Marker { id }).await?;
        }
        Ok(())
    }
}

/// `POST /api/asr-streaming`: an audio file in, its words out, as moshi-server answers
/// (`[{"type": "Word", "text", "start_time"}, {"type": "EndWord", "stop_time"}, ...]`).
pub(crate) async fn post(
    State(state): State<Arc<AppState>>,
    client: Client,
    body: Bytes,
) -> Response {
    let mut visit = Visit::new(&state, client, Endpoint::Asr, ENDPOINT);
    match transcribe(&mut visit, body).await {
        Ok(words) => {
            visit.end(End::Done);
            Json(words).into_response()
        }
        Err(end) => {
            // moshi-server answers full slots with 503, and every error as bare text.
            let status = match end {
                End::Refused(code::TRY_AGAIN, ..) => StatusCode::SERVICE_UNAVAILABLE,
                _ => end.http_status(),
            };
            let answer = (status, message_of(&end)).into_response();
            visit.end(end);
            answer
        }
    }
}

/// The text of a refusal or failure, for the client.
fn message_of(end: &End) -> String {
    match end {
        End::Refused(_, message, _) | End::Failed(message) => message.clone(),
        other => other.outcome(),
    }
}

/// The words of an uploaded file, moshi-server's way.
async fn transcribe(visit: &mut Visit, body: Bytes) -> Result<Vec<AsrOut>, End> {
    visit.wait_slot().await?;
    if body.is_empty() {
        return Err(End::bad("empty body: POST an audio file"));
    }
    let conversation = visit
        .state()
        .engine
        .stt()
        .with_source(SpeechSource::from_bytes(body))
        .listen()
        .await;
    let result = match conversation {
        Ok(c) => c.transcript().await,
        Err(e) => Err(e),
    };
    let transcript = result.map_err(|e| match e {
        VoiceError::InvalidInput(_) => End::bad(e.to_string()),
        other => End::Failed(other.to_string()),
    })?;
    let mut out = Vec::with_capacity(transcript.words.len() * 2);
    for word in transcript.words {
        out.push(AsrOut::Word {
            text: word.text,
            start_time: word.start_ms as f64 / 1000.0,
        });
        out.push(AsrOut::EndWord {
            stop_time: word.end_ms as f64 / 1000.0,
        });
    }
    Ok(out)
}
