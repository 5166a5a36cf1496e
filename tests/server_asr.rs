//! `kyutai serve`, speech-to-text: `/api/asr-streaming` with real websocket clients on loopback
//! against the tiny "talkative" STT model: every message type both ways, the library's words
//! (same input, same words), markers, auth, slots, bad input, timeouts, concurrency, POST, the
//! info routes, and the binary with a graceful shutdown.

#[path = "support/server.rs"]
mod server_support;
#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use std::io::BufRead;
use std::time::Duration;

use fluent_voice_kyutai::server::{Limits, ServerConfig};
use fluent_voice_kyutai::voice::{SpeechSource, SttConversationBuilder, TranscriptEvent};
use futures::StreamExt;
use serde_json::{Value, json};
use server_support::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const PATH: &str = "/api/asr-streaming";
const AUDIO: &str = "tests/fixtures/stt_parity/speech.wav";
const KEY: &str = "public_token";
const LONG: Duration = Duration::from_secs(60);

fn speech() -> Vec<f32> {
    hound::WavReader::open(AUDIO)
        .unwrap()
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

fn publish_stt(hub: &TestHub) {
    publish(hub, STT, "main", &stt_tiny::stt_repo_talkative());
}

async fn server(config: ServerConfig) -> TestServer {
    server_with_limits(config, fast_limits()).await
}

/// The ASR endpoint only, with the test key, over the talkative tiny model.
async fn server_with_limits(config: ServerConfig, limits: Limits) -> TestServer {
    let config = config.endpoints(true, false).api_key(KEY).limits(limits);
    TestServer::start(config, publish_stt).await
}

/// What a stream gave before its marker came back.
#[derive(Debug, Clone, PartialEq)]
struct Heard {
    /// (text, start, stop) from each Word and the EndWord after it.
    words: Vec<(String, f64, f64)>,
    /// (step_idx, prs) of each Step.
    steps: Vec<(u64, Vec<f64>)>,
}

/// Streams `samples` in chunks of `chunk`, then a marker, then 80 ms frames of silence until
/// the marker comes back; returns what came before it. Checks the message order on the way.
async fn stream(ws: Ws, samples: &[f32], chunk: usize) -> Heard {
    stream_messages(ws, samples.chunks(chunk).map(audio).collect()).await
}

/// [`stream`] with the audio sent as `messages`.
async fn stream_messages(ws: Ws, messages: Vec<Message>) -> Heard {
    let (mut tx, mut rx) = ws.split();
    use futures::SinkExt;
    let ready = rx.next().await.unwrap().unwrap();
    assert_eq!(decode(&ready)["type"], "Ready");
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut heard = Heard {
            words: Vec::new(),
            steps: Vec::new(),
        };
        let mut open_word: Option<(String, f64)> = None;
        while let Some(message) = rx.next().await {
            let message = message.unwrap();
            if !message.is_binary() {
                continue;
            }
            let m = decode(&message);
            match m["type"].as_str().unwrap() {
                "Word" => {
                    assert!(open_word.is_none(), "a Word before the last one's EndWord");
                    open_word = Some((
                        m["text"].as_str().unwrap().into(),
                        m["start_time"].as_f64().unwrap(),
                    ));
                }
                "EndWord" => {
                    let (text, start) = open_word.take().expect("an EndWord after its Word");
                    heard
                        .words
                        .push((text, start, m["stop_time"].as_f64().unwrap()));
                }
                "Step" => {
                    let prs = m["prs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p.as_f64().unwrap())
                        .collect();
                    heard.steps.push((m["step_idx"].as_u64().unwrap(), prs));
                    assert!(m["buffered_pcm"].as_u64().is_some());
                }
                "Marker" => {
                    assert_eq!(m["id"], 7);
                    let _ = done_tx.send(());
                    return heard;
                }
                other => panic!("unexpected {other}: {m}"),
            }
        }
        panic!("the socket closed before the marker came back");
    });
    for message in messages {
        tx.send(message).await.unwrap();
    }
    tx.send(marker(7)).await.unwrap();
    let silence = vec![0.0f32; 1920];
    for _ in 0..500 {
        if done_rx.try_recv().is_ok() {
            break;
        }
        tx.send(audio(&silence)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let heard = tokio::time::timeout(LONG, reader).await.unwrap().unwrap();
    let _ = tx.close().await;
    heard
}

fn decode(message: &Message) -> Value {
    rmp_serde::from_slice(&message.clone().into_data()).unwrap()
}

/// The library's words and voice-activity probabilities for the same samples.
async fn library(
    server: &TestServer,
    samples: Vec<f32>,
) -> (Vec<(String, f64, f64)>, Vec<Vec<f64>>) {
    let mut events = server
        .engine
        .stt()
        .with_source(SpeechSource::from_pcm(samples, 24_000, 1))
        .listen()
        .await
        .unwrap()
        .into_events();
    let (mut words, mut steps) = (Vec::new(), Vec::new());
    while let Some(event) = events.next().await {
        match event.unwrap() {
            TranscriptEvent::Word(w) => {
                words.push((w.text, w.start_ms as f64 / 1000.0, w.end_ms as f64 / 1000.0))
            }
            TranscriptEvent::VoiceActivity {
                pause_probabilities,
                ..
            } => steps.push(pause_probabilities.iter().map(|&p| f64::from(p)).collect()),
            _ => {}
        }
    }
    (words, steps)
}

/// `speech` then `seconds` of silence.
fn padded(speech: &[f32], seconds: f32) -> Vec<f32> {
    let mut samples = speech.to_vec();
    samples.extend(vec![0.0; (seconds * 24_000.0) as usize]);
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_gives_the_library_words_steps_and_echoes_its_marker() {
    let server = server(ServerConfig::default().batch_size(2)).await;
    let samples = padded(&speech(), 2.0);
    let ws = server.connect(PATH, Some(KEY)).await.unwrap();
    // Odd chunk sizes: the server cuts 80 ms frames itself.
    let heard = stream(ws, &samples, 1000).await;
    let (words, steps) = library(&server, samples.clone()).await;

    assert!(!heard.words.is_empty(), "the talkative model says words");
    // Same input, same words: what came before the marker is the start of the library's
    // transcript, and holds every word that ended before the marker's place in the audio.
    assert_eq!(heard.words[..], words[..heard.words.len()]);
    let marker_s = (samples.len() / 1920 * 1920) as f64 / 24_000.0;
    // (Strictly before: the library's run goes on past the marker with its own tail of silence,
    // and clamps the words it decides there to the end of the audio, the marker's place.)
    let ended = words.iter().filter(|w| w.2 < marker_s).count();
    assert!(
        heard.words.len() >= ended,
        "{} < {ended}",
        heard.words.len()
    );
    // One Step per model step, numbered from 1, with the library's probabilities (4 heads).
    assert!(!heard.steps.is_empty());
    for (i, (step_idx, prs)) in heard.steps.iter().enumerate() {
        assert_eq!(*step_idx, i as u64 + 1);
        assert_eq!(prs.len(), 4);
        assert_eq!(prs, &steps[i], "step {step_idx}");
    }
    // The marker waited for the model's delay: all the audio before it was heard, plus the
    // delay (0.5 s: 6 whole steps, 0.48 s).
    let heard_s = heard.steps.len() as f64 * 0.08;
    assert!(
        heard_s >= marker_s + 0.48 - 1e-9,
        "{heard_s} < {marker_s} + 0.48"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_marker_waits_for_the_audio_before_it_and_the_model_delay() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(30),
        ..fast_limits()
    };
    let server = server_with_limits(ServerConfig::default(), limits).await;
    let mut ws = server.connect(PATH, Some(KEY)).await.unwrap();
    assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");
    // The markers that come back within `wait` (the stream stays open meanwhile).
    async fn markers(ws: &mut Ws, wait: Duration) -> Vec<i64> {
        let mut ids = Vec::new();
        while let Some(got) = next(ws, wait, false).await {
            match got {
                Got::Msg(m) if m["type"] == "Marker" => ids.push(m["id"].as_i64().unwrap()),
                Got::Msg(_) => {}
                other => panic!("{other:?}"),
            }
        }
        ids
    }
    // A marker before any audio, then 1 s of audio and another marker. The first comes back
    // once the model has heard its delay (6 steps, 0.48 s) past the start; the second, placed
    // after the 12 whole frames (0.96 s) received before it, only 0.48 s of audio after it.
    send(&mut ws, marker(1)).await;
    send(&mut ws, audio(&speech()[..24_000])).await;
    send(&mut ws, marker(2)).await;
    assert_eq!(markers(&mut ws, Duration::from_millis(700)).await, [1]);
    send(&mut ws, audio(&vec![0.0; 7_680])).await; // 0.32 s: not yet
    assert_eq!(
        markers(&mut ws, Duration::from_millis(700)).await,
        [] as [i64; 0]
    );
    send(&mut ws, audio(&vec![0.0; 3_840])).await; // 0.16 s more: now
    assert_eq!(markers(&mut ws, Duration::from_millis(700)).await, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_checked_in_the_header_or_the_query() {
    let server = server(ServerConfig::default()).await;
    let refused = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("not an HTTP refusal: {other}"),
    };
    assert_eq!(refused(server.connect(PATH, None).await.unwrap_err()), 401);
    assert_eq!(
        refused(server.connect(PATH, Some("wrong")).await.unwrap_err()),
        401
    );
    // The query works when there is no header; a wrong header is not rescued by it.
    let query = format!("{PATH}?auth_id={KEY}");
    let mut ws = server.connect(&query, None).await.unwrap();
    assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");
    assert_eq!(
        refused(server.connect(&query, Some("wrong")).await.unwrap_err()),
        401
    );
    let mut ws = server.connect(PATH, Some(KEY)).await.unwrap();
    assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");
    // POST too.
    let response = http_client()
        .post(server.http(PATH))
        .body(std::fs::read(AUDIO).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // With no key configured, everyone is in.
    let open = TestServer::start(
        ServerConfig::default()
            .endpoints(true, false)
            .limits(fast_limits()),
        publish_stt,
    )
    .await;
    let mut ws = open.connect(PATH, None).await.unwrap();
    assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_endpoint_refuses_and_a_departed_client_frees_its_slot() {
    let server = server(ServerConfig::default().batch_size(1)).await;
    assert_eq!(server.slots(PATH).await, (0, 1));
    let mut first = server.connect(PATH, Some(KEY)).await.unwrap();
    assert_eq!(next(&mut first, LONG, false).await.unwrap().kind(), "Ready");
    send(&mut first, audio(&speech()[..10_000])).await;
    assert_eq!(server.slots(PATH).await, (1, 1));

    let mut second = server.connect(PATH, Some(KEY)).await.unwrap();
    let got = until_close(&mut second, LONG, false).await;
    assert_refused(&got, "no free channels", 1013);
    assert_eq!(got.len(), 2, "no Ready for a refused client: {got:?}");
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("kyutai_errors_total{endpoint=\"asr\",kind=\"no_free_channels\"} 1"),
        "{metrics}"
    );

    // The first client vanishes mid-stream (no close frame): its slot comes back.
    drop(first);
    server.wait_slots(PATH, 0).await;
    let mut third = server.connect(PATH, Some(KEY)).await.unwrap();
    assert_eq!(next(&mut third, LONG, false).await.unwrap().kind(), "Ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_an_error_and_a_close_and_harms_no_other_stream() {
    let server = server(ServerConfig::default().batch_size(3)).await;
    let samples = padded(&speech(), 1.0);
    // A well-behaved stream runs through all of it.
    let good = {
        let ws = server.connect(PATH, Some(KEY)).await.unwrap();
        let samples = samples.clone();
        tokio::spawn(async move { stream(ws, &samples, 480).await })
    };
    let huge = vec![0.25f32; 1_200_000]; // 4.8 MB of float32: over the 4 MiB limit
    let cases: Vec<(&str, Message, &str, u16)> = vec![
        (
            "malformed",
            Message::binary(vec![0xc1u8, 0x00]),
            "invalid message",
            1008,
        ),
        (
            "unknown type",
            msgpack(json!({"type": "Shout", "pcm": []})),
            "unknown variant",
            1008,
        ),
        (
            "wrong field type",
            msgpack(json!({"type": "Audio", "pcm": "loud"})),
            "invalid message",
            1008,
        ),
        (
            "missing field",
            msgpack(json!({"type": "Marker"})),
            "id",
            1008,
        ),
        (
            "text frame",
            Message::text("{\"type\": \"Audio\"}"),
            "text frames",
            1003,
        ),
        (
            "not a number",
            msgpack(json!({"type": "Audio", "pcm": [0.0, 1e39]})),
            "not a finite number",
            1008,
        ),
        #[cfg(not(feature = "opus"))]
        (
            "opus input without the opus feature",
            msgpack(json!({"type": "OggOpus", "data": [1, 2]})),
            "OggOpus",
            1003,
        ),
        #[cfg(feature = "opus")]
        (
            "opus input that is not Ogg",
            msgpack(json!({"type": "OggOpus", "data": vec![7; 64]})),
            "not an Ogg stream",
            1008,
        ),
        ("oversize", audio(&huge), "limit", 1009),
    ];
    for (what, message, needle, code) in cases {
        let mut ws = server.connect(PATH, Some(KEY)).await.unwrap();
        assert_eq!(
            next(&mut ws, LONG, false).await.unwrap().kind(),
            "Ready",
            "{what}"
        );
        send(&mut ws, audio(&samples[..4_000])).await;
        send(&mut ws, message).await;
        let got = until_close(&mut ws, LONG, false).await;
        assert_refused(&got, needle, code);
    }
    let heard = good.await.unwrap();
    let ws = server.connect(PATH, Some(KEY)).await.unwrap();
    let solo = stream(ws, &samples, 480).await;
    assert_eq!(heard.words, solo.words);
    assert!(!heard.words.is_empty());
    server.wait_slots(PATH, 0).await;
    let (_, metrics) = server.get("/metrics").await;
    let bad_inputs = if cfg!(feature = "opus") { 7 } else { 6 };
    assert!(
        metrics.contains(&format!(
            "kyutai_errors_total{{endpoint=\"asr\",kind=\"bad_input\"}} {bad_inputs}"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_unresponsive_clients_are_dropped() {
    let server = server(ServerConfig::default()).await;
    // Reads (so it answers pings) but sends no data: dropped after the idle timeout (0.8 s).
    let mut idle = server.connect(PATH, Some(KEY)).await.unwrap();
    let started = std::time::Instant::now();
    let got = until_close(&mut idle, LONG, false).await;
    assert_refused(&got, "no data", 1008);
    assert!(started.elapsed() >= Duration::from_millis(700));
    // Never reads, so never answers a ping: dropped 0.4 s after its last frame.
    let mut deaf = server.connect(PATH, Some(KEY)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = until_close(&mut deaf, LONG, false).await;
    assert_eq!(got[0].kind(), "Ready");
    assert_refused(&got, "no answer to pings", 1008);
    server.wait_slots(PATH, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_streams_each_get_their_solo_result() {
    let server = server_with_limits(ServerConfig::default().batch_size(16), relaxed_limits()).await;
    let speech = speech();
    // Sixteen different inputs: the speech cut at different lengths, then silence.
    let inputs: Vec<Vec<f32>> = (0..16)
        .map(|i| padded(&speech[..speech.len() * (i + 4) / 20], 1.0))
        .collect();
    let mut solo = Vec::new();
    for input in &inputs {
        let ws = server.connect(PATH, Some(KEY)).await.unwrap();
        solo.push(stream(ws, input, 1920).await);
    }
    let mut tasks = Vec::new();
    for input in inputs.clone() {
        let ws = server.connect(PATH, Some(KEY)).await.unwrap();
        tasks.push(tokio::spawn(async move { stream(ws, &input, 1920).await }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let heard = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(heard, solo[i], "stream {i}");
    }
    let distinct: std::collections::HashSet<String> =
        solo.iter().map(|h| format!("{:?}", h.words)).collect();
    assert!(distinct.len() > 1, "the inputs give different transcripts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_answers_the_words_of_an_audio_file_and_the_info_routes_answer() {
    let server = server(ServerConfig::default().batch_size(2)).await;
    let response = http_client()
        .post(server.http(PATH))
        .header("kyutai-api-key", KEY)
        .body(std::fs::read(AUDIO).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Vec<Value> = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let (words, _) = library(&server, speech()).await;
    let mut expected = Vec::new();
    for (text, start, stop) in &words {
        expected.push(json!({"type": "Word", "text": text, "start_time": start}));
        expected.push(json!({"type": "EndWord", "stop_time": stop}));
    }
    assert_eq!(body, expected);
    assert!(!words.is_empty());
    // Not audio: a 400 with the reason.
    let response = http_client()
        .post(server.http(PATH))
        .header("kyutai-api-key", KEY)
        .body(b"hello, not audio".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    assert_eq!(server.get("/api/health").await, (200, "ok".to_string()));
    let (status, info) = server.get("/api/build_info").await;
    assert_eq!(status, 200);
    assert!(info.contains("\"version\""), "{info}");
    let (_, modules) = server.get("/api/modules_info").await;
    let modules: Value = serde_json::from_str(&modules).unwrap();
    assert_eq!(
        modules,
        json!([{"type": "batched_asr", "path": PATH, "lm": STT, "used_slots": "0", "total_slots": "2"}])
    );
    let (_, metrics) = server.get("/metrics").await;
    for name in [
        "kyutai_connections_total{endpoint=\"asr\"} 2",
        "kyutai_streams_open{endpoint=\"asr\"} 0",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
    // No TTS here.
    assert_eq!(server.get("/api/tts_streaming").await.0, 404);
}

#[test]
fn the_binary_serves_logs_each_connection_and_shuts_down_gracefully_on_sigterm() {
    let hub = TestHub::start();
    publish_stt(&hub);
    let cache = tempfile::tempdir().unwrap();
    let config_file = cache.path().join("serve.toml");
    std::fs::write(
        &config_file,
        "batch_size = 2\napi_keys = [\"from-file\"]\n[limits]\nidle_timeout_s = 30\n",
    )
    .unwrap();
    let config_arg = config_file.to_str().unwrap();
    let mut child = kyutai_command(
        &hub,
        cache.path(),
        &["serve", "--port", "0", "--no-tts", "--config", config_arg],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("the server starts");
        log.push(line.clone());
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = format!("ws://{addr}{PATH}?auth_id=from-file");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");
        send(&mut ws, audio(&speech())).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // SIGTERM mid-stream: the stream ends with "going away", and the process exits 0.
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let got = until_close(&mut ws, LONG, false).await;
        assert_eq!(
            got.last().unwrap(),
            &Got::Close(Some((1001, "server shutting down".into())))
        );
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
    let log = log.join("\n");
    assert!(log.contains("(key #1) asr"), "{log}");
    assert!(log.contains("server shutdown"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

/// A stream whose audio waits longer than `behind_threshold` to be transcribed is reported in
/// `/metrics` (and the log), and keeps being served: its marker still comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_behind_real_time_is_reported_not_dropped() {
    let behind = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("kyutai_streams_behind_total{endpoint=\"asr\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    for (threshold_ms, expected) in [(4_000, "0"), (100, "1")] {
        let limits = Limits {
            idle_timeout: Duration::from_secs(30),
            behind_threshold: Duration::from_millis(threshold_ms),
            ..fast_limits()
        };
        let server = server_with_limits(ServerConfig::default(), limits).await;
        let mut ws = server.connect(PATH, Some(KEY)).await.unwrap();
        assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");
        // 1.6 s of audio at once: the model works through it step by step, so until it has,
        // more than 100 ms (and less than 4 s) of it waits.
        send(&mut ws, audio(&speech())).await;
        send(&mut ws, marker(3)).await;
        send(&mut ws, audio(&vec![0.0; 24_000])).await;
        let mut marker_back = false;
        while let Some(got) = next(&mut ws, LONG, false).await {
            if let Got::Msg(m) = &got
                && m["type"] == "Marker"
            {
                assert_eq!(m["id"], 3);
                marker_back = true;
                break;
            }
        }
        assert!(
            marker_back,
            "threshold {threshold_ms} ms: the stream is still served"
        );
        let (_, metrics) = server.get("/metrics").await;
        assert_eq!(
            behind(&metrics).as_deref(),
            Some(expected),
            "threshold {threshold_ms} ms: {metrics}"
        );
        server.shutdown().await;
    }
}

/// With the `opus` feature (CI runs it): `OggOpus` input, an Ogg/Opus stream sent in pieces
/// of any size (as moshi-server takes it, Python's `bytes`), gives the words of the same audio
/// decoded and sent as `Audio`.
#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ogg_opus_input_gives_the_words_of_its_decoded_audio() {
    let server = server(ServerConfig::default()).await;
    let speech = padded(&speech(), 0.5);
    // Encode: OpusHead and OpusTags pages, then a page per 40 ms packet.
    let mut encoder =
        opus::Encoder::new(24_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut pages = ogg::PacketWriter::new(Vec::new());
    let end = ogg::PacketWriteEndInfo::EndPage;
    let mut head = b"OpusHead".to_vec();
    head.extend([1, 1, 0, 0, 0xc0, 0x5d, 0, 0, 0, 0, 0]);
    pages.write_packet(head, 1, end, 0).unwrap();
    let tags = [b"OpusTags".as_slice(), &[0; 8]].concat();
    pages.write_packet(tags, 1, end, 0).unwrap();
    let mut decoder = opus::Decoder::new(24_000, opus::Channels::Mono).unwrap();
    let mut decoded = Vec::new();
    let mut packet = vec![0u8; 4000];
    for (i, frame) in speech.chunks_exact(960).enumerate() {
        let size = encoder.encode_float(frame, &mut packet).unwrap();
        pages
            .write_packet(packet[..size].to_vec(), 1, end, (i as u64 + 1) * 1920)
            .unwrap();
        let mut pcm = vec![0f32; 960];
        let n = decoder
            .decode_float(&packet[..size], &mut pcm, false)
            .unwrap();
        decoded.extend_from_slice(&pcm[..n]);
    }
    let stream_bytes = pages.into_inner();
    let messages: Vec<Message> = stream_bytes
        .chunks(333)
        .map(|piece| {
            // {"type": "OggOpus", "data": <bin 16>}, as msgpack-python packs `bytes`.
            let mut message = b"\x82\xa4type\xa7OggOpus\xa4data\xc5".to_vec();
            message.extend((piece.len() as u16).to_be_bytes());
            message.extend(piece);
            Message::binary(message)
        })
        .collect();
    let ws = server.connect(PATH, Some(KEY)).await.unwrap();
    let from_opus = stream_messages(ws, messages).await;
    let ws = server.connect(PATH, Some(KEY)).await.unwrap();
    let from_pcm = stream(ws, &decoded, 1920).await;
    assert!(!from_pcm.words.is_empty());
    assert_eq!(from_opus, from_pcm);
}

/// A client that closes gets the closing handshake back (a clean close, not a reset: browsers
/// report a reset as 1006, an abnormal end), also while the model is still sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clients_close_is_answered_with_a_close_frame() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let server = server(ServerConfig::default()).await;
    let mut ws = server.connect(PATH, Some(KEY)).await.unwrap();
    assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");
    send(&mut ws, audio(&speech())).await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    })))
    .await
    .unwrap();
    let mut closed = None;
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Close(frame)) => closed = Some(frame),
            Ok(_) => {}
            Err(e) => panic!("the server reset the connection: {e}"),
        }
    }
    assert!(closed.is_some(), "a close frame came back");
    server.wait_slots(PATH, 0).await;
}
