//! `kyutai serve`, OpenAI's face: `/v1/audio/speech`, `/v1/audio/transcriptions` and
//! `/v1/models` over real HTTP on loopback, against the tiny models. The audio equals the
//! library's for the same text, voice and seed in every format; the words equal the library's
//! for the same file in every response format; every bad request gets OpenAI's error shape with
//! the status its SDKs map to a typed exception, and harms no other stream.

#[path = "support/openai.rs"]
mod openai_support;
#[path = "support/server.rs"]
mod server_support;
#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;
#[path = "support/tts_reference.rs"]
mod tts_reference;

use std::time::Duration;

use fluent_voice_kyutai::server::Limits;
use futures::StreamExt;
use openai_support::*;
use serde_json::{Value, json};
use server_support::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn speech_in_every_format_is_the_librarys_audio_for_the_same_seed() {
    let server = server().await;
    let expected = pcm16(&library_speech(&server, TEXT, VOICE, 7).await);
    assert!(expected.len() >= 1920, "some audio");
    // `alloy` is OpenAI's name for VOICE with the 1.6B (the table in `openai/voices.rs`).
    for voice in [json!("alloy"), json!(VOICE), json!({"id": VOICE})] {
        for format in ["wav", "pcm", "flac"] {
            let response = post_json(
                &server,
                "/v1/audio/speech",
                json!({"model": "tts-1", "input": TEXT, "voice": voice,
                       "response_format": format, "seed": 7}),
            )
            .await;
            assert_eq!(response.status(), 200, "{format}");
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_string();
            let bytes = response.bytes().await.unwrap().to_vec();
            let samples = match format {
                "wav" => {
                    assert_eq!(content_type, "audio/wav");
                    assert_eq!(&bytes[..4], b"RIFF");
                    le_i16(&bytes[44..])
                }
                "pcm" => {
                    assert_eq!(content_type, "audio/pcm");
                    le_i16(&bytes)
                }
                _ => {
                    assert_eq!(content_type, "audio/flac");
                    assert_eq!(&bytes[..4], b"fLaC");
                    decode_flac(bytes)
                }
            };
            assert_eq!(samples, expected, "{format} with voice {voice}");
        }
    }
    // With no response_format: WAV (OpenAI's default, MP3, has no encoder in this build).
    let response = post_json(
        &server,
        "/v1/audio/speech",
        json!({"model": "gpt-4o-mini-tts", "input": TEXT, "voice": "alloy", "seed": 7,
               "instructions": "Speak cheerfully.", "speed": 1.0}),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "audio/wav");
    assert_eq!(
        le_i16(&response.bytes().await.unwrap()[44..]),
        expected,
        "instructions are ignored"
    );
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn speech_as_ogg_opus_decodes_to_the_librarys_length() {
    let server = server().await;
    let expected = library_speech(&server, TEXT, VOICE, 7).await;
    let response = post_json(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": TEXT, "voice": VOICE, "response_format": "opus",
               "seed": 7}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/ogg");
    let bytes = response.bytes().await.unwrap().to_vec();
    assert_eq!(&bytes[..4], b"OggS");
    assert_eq!(&bytes[28..36], b"OpusHead");
    // Decoded with libopus (the `ogg` and `opus` crates, as any Ogg/Opus player does): Opus is
    // lossy, so the length is checked, not the samples. The last packet is padded with silence
    // to a whole one, and the last page's granule position (at 48 kHz) says where the speech
    // really ends.
    let mut packets = ogg::PacketReader::new(std::io::Cursor::new(bytes));
    let mut decoder = opus::Decoder::new(24_000, opus::Channels::Mono).unwrap();
    let mut pcm = vec![0.0f32; 2880];
    let mut decoded = 0;
    let mut end = 0;
    while let Some(packet) = packets.read_packet().unwrap() {
        end = packet.absgp_page();
        if packet.data.starts_with(b"OpusHead") || packet.data.starts_with(b"OpusTags") {
            continue;
        }
        decoded += decoder.decode_float(&packet.data, &mut pcm, false).unwrap();
    }
    assert_eq!(end, expected.len() as u64 * 2, "the last granule position");
    assert!(
        decoded >= expected.len() && decoded <= expected.len() + 960,
        "{decoded} samples decoded for {} made",
        expected.len()
    );
}

/// The body streams: its first bytes arrive while the rest is still being made, and a
/// `stream_format: "sse"` answer carries the same audio in `speech.audio.delta` events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn speech_streams_chunked_and_as_server_sent_events() {
    let server = server().await;
    let expected = pcm16(&library_speech(&server, TEXT, VOICE, 3).await);
    let response = post_json(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": TEXT, "voice": VOICE, "response_format": "pcm",
               "seed": 3}),
    )
    .await;
    assert!(
        response.headers().get("content-length").is_none(),
        "a chunked body, not a whole one"
    );
    let mut body = response.bytes_stream();
    let mut pieces = 0;
    let mut bytes = Vec::new();
    while let Some(piece) = body.next().await {
        bytes.extend_from_slice(&piece.unwrap());
        pieces += 1;
    }
    assert!(pieces > 1, "the audio came in {pieces} piece(s)");
    assert_eq!(le_i16(&bytes), expected);

    let response = post_json(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": TEXT, "voice": VOICE, "response_format": "pcm",
               "stream_format": "sse", "seed": 3}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(&response.text().await.unwrap());
    let (done, deltas) = events.split_last().unwrap();
    let mut audio = Vec::new();
    for delta in deltas {
        assert_eq!(delta["type"], "speech.audio.delta", "{delta}");
        audio.extend(base64_decode(delta["audio"].as_str().unwrap()));
    }
    assert_eq!(le_i16(&audio), expected);
    assert_eq!(done["type"], "speech.audio.done");
    let usage = &done["usage"];
    assert_eq!(usage["input_tokens"], TEXT.split_whitespace().count());
    assert_eq!(usage["output_tokens"], expected.len().div_ceil(1920));
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_speech_requests_get_openai_errors_naming_the_param() {
    let server = server().await;
    let speech = |body: Value| post_json(&server, "/v1/audio/speech", body);
    let base = json!({"model": "tts-1", "input": TEXT, "voice": VOICE});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    for (body, param, needle) in [
        (
            with("voice", json!("nobody/nothing.wav")),
            "voice",
            "nobody",
        ),
        (with("model", json!("dall-e-3")), "model", "dall-e-3"),
        (
            with("response_format", json!("mp3")),
            "response_format",
            "wav, pcm, flac",
        ),
        (
            with("response_format", json!("aiff")),
            "response_format",
            "aiff",
        ),
        (with("input", json!("  ")), "input", "empty"),
        (with("input", json!("a".repeat(4097))), "input", "4096"),
        (with("speed", json!(1.5)), "speed", "1.0"),
        (with("stream_format", json!("ws")), "stream_format", "sse"),
        (with("voice", json!(3)), "voice", "string"),
        (json!({"input": TEXT, "voice": VOICE}), "model", "required"),
        (
            json!({"model": "tts-1", "voice": VOICE}),
            "input",
            "required",
        ),
    ] {
        let (status, error) = openai_error(speech(body.clone()).await).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["param"], param, "{body}: {error}");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{needle} in {error}"
        );
    }
    // Not JSON at all: 415 for the wrong content type, 400 for a broken body.
    let response = bearer(http_client().post(server.http("/v1/audio/speech")))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(openai_error(response).await.0, 415);
    let response = bearer(http_client().post(server.http("/v1/audio/speech")))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(openai_error(response).await.0, 400);
    // After all of that the route still speaks, and no slot was left taken.
    assert_eq!(server.slots("/api/tts_streaming").await.0, 0);
    let response = speech(base.clone()).await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap().len() > 44);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_routes_and_models_answer_as_openai_does() {
    let server = server().await;
    // A wrong key and no key: 401 with OpenAI's code, on every route.
    for path in ["/v1/models", "/v1/audio/speech", "/v1/audio/transcriptions"] {
        for auth in [Some("Bearer wrong"), None] {
            let mut request = http_client().post(server.http(path));
            if path == "/v1/models" {
                request = http_client().get(server.http(path));
            }
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let (status, error) = openai_error(request.send().await.unwrap()).await;
            assert_eq!(
                (status, error["code"].as_str()),
                (401, Some("invalid_api_key"))
            );
        }
    }
    // The models served, under our names and OpenAI's.
    let models: Value = bearer(http_client().get(server.http("/v1/models")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            m["id"].as_str().unwrap()
        })
        .collect();
    for id in [
        TTS,
        "kyutai-tts",
        "tts-1",
        "tts-1-hd",
        "gpt-4o-mini-tts",
        STT,
        "kyutai-stt",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    assert!(ids.contains(&"whisper-1"), "{ids:?}");
    let one = bearer(http_client().get(server.http("/v1/models/whisper-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.unwrap()["id"], "whisper-1");
    let missing = bearer(http_client().get(server.http("/v1/models/gpt-5")))
        .send()
        .await
        .unwrap();
    let (status, error) = openai_error(missing).await;
    assert_eq!((status, error["param"].as_str()), (404, Some("model")));
    // Routes OpenAI has and this server does not, and a wrong method.
    let chat = post_json(&server, "/v1/chat/completions", json!({})).await;
    let (status, error) = openai_error(chat).await;
    assert_eq!(status, 404);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("/v1/chat/completions")
    );
    let get = bearer(http_client().get(server.http("/v1/audio/speech")))
        .send()
        .await
        .unwrap();
    assert_eq!(openai_error(get).await.0, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transcriptions_in_every_format_are_the_librarys_words() {
    let server = server().await;
    let file = std::fs::read(AUDIO).unwrap();
    let transcript = library_transcript(&server, &file).await;
    assert!(transcript.words.len() >= 2, "the talkative model talks");
    let upload = Some(("speech.wav", file.as_slice()));

    let json_answer: Value = transcribe(&server, &[("model", "whisper-1")], upload)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json_answer["text"], transcript.text.as_str());
    assert_eq!(json_answer["usage"]["type"], "duration");

    let verbose: Value = transcribe(
        &server,
        &[
            ("model", "gpt-4o-transcribe"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
            ("timestamp_granularities[]", "segment"),
            ("prompt", "ignored"),
            ("language", "en"),
        ],
        upload,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(verbose["text"], transcript.text.as_str());
    assert_eq!(verbose["language"], "english");
    assert_eq!(
        verbose["duration"].as_f64().unwrap(),
        transcript.duration_ms as f64 / 1000.0
    );
    let words: Vec<(String, f64, f64)> = verbose["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["word"].as_str().unwrap().to_string(),
                w["start"].as_f64().unwrap(),
                w["end"].as_f64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, f64, f64)> = transcript
        .words
        .iter()
        .map(|w| {
            (
                w.text.clone(),
                w.start_ms as f64 / 1000.0,
                w.end_ms as f64 / 1000.0,
            )
        })
        .collect();
    assert_eq!(words, expected);
    let segments = verbose["segments"].as_array().unwrap();
    let phrases = transcript.phrases();
    assert_eq!(segments.len(), phrases.len());
    for (segment, phrase) in segments.iter().zip(&phrases) {
        assert_eq!(segment["text"].as_str().unwrap().trim(), phrase.text);
        assert_eq!(
            segment["start"].as_f64().unwrap(),
            phrase.start_ms as f64 / 1000.0
        );
    }
    // Words only: no segments, as OpenAI answers.
    let words_only: Value = transcribe(
        &server,
        &[
            ("model", "whisper-1"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
        ],
        upload,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(words_only.get("segments").is_none(), "{words_only}");
    assert_eq!(
        words_only["words"].as_array().unwrap().len(),
        expected.len()
    );

    for (format, content_type, body) in [
        ("text", "text/plain", format!("{}\n", transcript.text)),
        ("srt", "text/plain", transcript.to_srt()),
        ("vtt", "text/vtt", transcript.to_vtt()),
    ] {
        let response = transcribe(
            &server,
            &[("model", "whisper-1"), ("response_format", format)],
            upload,
        )
        .await;
        assert_eq!(response.status(), 200, "{format}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        assert_eq!(response.text().await.unwrap(), body, "{format}");
    }
    assert!(transcript.to_vtt().starts_with("WEBVTT"));

    // stream=true: a delta per word, as the words are decided, then the whole text.
    let response = transcribe(
        &server,
        &[("model", "gpt-4o-mini-transcribe"), ("stream", "true")],
        upload,
    )
    .await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(&response.text().await.unwrap());
    let (done, deltas) = events.split_last().unwrap();
    assert_eq!(deltas.len(), transcript.words.len());
    let streamed: String = deltas
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "transcript.text.delta");
            d["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(streamed, transcript.text);
    assert_eq!(done["type"], "transcript.text.done");
    assert_eq!(done["text"], transcript.text.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_uploads_get_openai_errors_and_harm_no_other_stream() {
    let limits = Limits {
        max_post_bytes: 200_000,
        ..relaxed_limits()
    };
    let server = server_with(2, limits).await;
    let file = std::fs::read(AUDIO).unwrap();
    let upload = Some(("speech.wav", file.as_slice()));
    // A live websocket stream runs through all of it.
    let mut ws = server
        .connect("/api/asr-streaming", Some(KEY))
        .await
        .unwrap();
    assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");

    let big = vec![0u8; 300_000];
    let (status, error) =
        openai_error(transcribe(&server, &[("model", "whisper-1")], Some(("big.wav", &big))).await)
            .await;
    assert_eq!((status, error["param"].as_str()), (413, Some("file")));
    for (fields, file, param) in [
        (
            vec![("model", "whisper-1")],
            Some(("noise.wav", &b"not audio at all"[..])),
            "file",
        ),
        (vec![("model", "whisper-1")], None, "file"),
        (
            vec![("model", "whisper-1")],
            Some(("empty.wav", &b""[..])),
            "file",
        ),
        (vec![("model", "tts-1")], upload, "model"),
        (vec![], upload, "model"),
        (
            vec![("model", "whisper-1"), ("response_format", "tsv")],
            upload,
            "response_format",
        ),
        (
            vec![("model", "whisper-1"), ("language", "tlh")],
            upload,
            "language",
        ),
        (
            vec![
                ("model", "whisper-1"),
                ("timestamp_granularities[]", "letter"),
            ],
            upload,
            "timestamp_granularities",
        ),
        (
            vec![("model", "whisper-1"), ("stream", "maybe")],
            upload,
            "stream",
        ),
    ] {
        let (status, error) = openai_error(transcribe(&server, &fields, file).await).await;
        assert_eq!(
            (status, error["param"].as_str()),
            (400, Some(param)),
            "{fields:?}: {error}"
        );
    }
    // A JSON body where a form is wanted: 415.
    let response = post_json(&server, "/v1/audio/transcriptions", json!({"file": "x"})).await;
    assert_eq!(openai_error(response).await.0, 415);
    // The websocket stream was not harmed: its marker comes back.
    send(&mut ws, audio(&vec![0.0; 1920])).await;
    send(&mut ws, marker(5)).await;
    loop {
        send(&mut ws, audio(&vec![0.0; 1920])).await;
        let Some(Got::Msg(m)) = next(&mut ws, LONG, false).await else {
            panic!("the stream ended")
        };
        if m["type"] == "Marker" {
            assert_eq!(m["id"], 5);
            break;
        }
    }
    drop(ws);
    server.wait_slots("/api/asr-streaming", 0).await;
    let ok = transcribe(&server, &[("model", "whisper-1")], upload).await;
    assert_eq!(ok.status(), 200);
}

/// With every slot taken, both routes answer 429 with `Retry-After` (the SDKs' `RateLimitError`,
/// retried after that long); once the slot is free they answer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_slots_answer_429_and_free_slots_answer_again() {
    // Relaxed: the held websocket streams send nothing for a while, and must not time out.
    let server = server_with(1, relaxed_limits()).await;
    let file = std::fs::read(AUDIO).unwrap();
    let upload = Some(("speech.wav", file.as_slice()));
    let mut tts = server
        .connect("/api/tts_streaming?format=Pcm", Some(KEY))
        .await
        .unwrap();
    let mut asr = server
        .connect("/api/asr-streaming", Some(KEY))
        .await
        .unwrap();
    assert_eq!(next(&mut asr, LONG, false).await.unwrap().kind(), "Ready");
    server.wait_slots("/api/tts_streaming", 1).await;
    server.wait_slots("/api/asr-streaming", 1).await;
    let busy_speech = post_json(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": TEXT}),
    )
    .await;
    let busy_transcription = transcribe(&server, &[("model", "whisper-1")], upload).await;
    for (route, response) in [
        ("speech", busy_speech),
        ("transcription", busy_transcription),
    ] {
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            Some("1"),
            "{route}: {}",
            response.status()
        );
        let (status, error) = openai_error(response).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (429, Some("rate_limit_exceeded"))
        );
    }
    send(&mut tts, eos()).await;
    let _ = until_close(&mut tts, LONG, true).await;
    drop(asr);
    server.wait_slots("/api/tts_streaming", 0).await;
    server.wait_slots("/api/asr-streaming", 0).await;
    let speech = post_json(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": TEXT}),
    )
    .await;
    assert_eq!(speech.status(), 200);
    assert!(speech.bytes().await.unwrap().len() > 44);
    assert_eq!(
        transcribe(&server, &[("model", "whisper-1")], upload)
            .await
            .status(),
        200
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("kyutai_connections_total{endpoint=\"tts\"}"),
        "{metrics}"
    );
}

/// A client that hangs up in the middle of the audio frees its slot, and the next request is
/// answered in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_hanging_up_mid_stream_frees_its_slot() {
    let server = server_with(1, relaxed_limits()).await;
    let long = TEXT.repeat(40);
    let response = post_json(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": long, "voice": VOICE, "response_format": "pcm"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert_eq!(server.slots("/api/tts_streaming").await.0, 1);
    drop(body);
    server.wait_slots("/api/tts_streaming", 0).await;
    let expected = pcm16(&library_speech(&server, TEXT, VOICE, 9).await);
    let again = post_json(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": TEXT, "voice": VOICE, "response_format": "pcm",
               "seed": 9}),
    )
    .await;
    assert_eq!(le_i16(&again.bytes().await.unwrap()), expected);
}

/// `kyutai serve --voice NAME` speaks with NAME where a request names none, on OpenAI's route
/// and Kyutai's; a voice the repository lacks stops the server at start, naming it.
#[test]
fn serve_voice_sets_the_default_voice_of_every_tts_route() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let other = tiny::VOICE_NAMES[2];
    assert_ne!(other, VOICE);
    let missing = kyutai_command(
        &hub,
        cache.path(),
        &[
            "serve",
            "--port",
            "0",
            "--no-asr",
            "--voice",
            "vctk/nobody.wav",
        ],
    )
    .output()
    .unwrap();
    assert!(!missing.status.success());
    let (_, stderr) = output_text(&missing);
    assert!(stderr.contains("vctk/nobody.wav"), "{stderr}");

    let config = cache.path().join("serve.toml");
    std::fs::write(
        &config,
        format!("voice = \"{other}\"\napi_keys = [\"{KEY}\"]\n"),
    )
    .unwrap();
    for args in [
        vec![
            "serve",
            "--port",
            "0",
            "--no-asr",
            "--voice",
            other,
            "--api-key",
            KEY,
        ],
        vec![
            "serve",
            "--port",
            "0",
            "--no-asr",
            "--config",
            config.to_str().unwrap(),
        ],
    ] {
        let mut child = KillOnDrop(
            kyutai_command(&hub, cache.path(), &args)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let addr = listening_addr(&mut child.0);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let [unnamed, named, built_in] = runtime.block_on(async {
            let speak = |voice: Option<&str>| {
                let mut body = json!({"model": "tts-1", "input": TEXT, "response_format": "pcm",
                                      "seed": 5});
                if let Some(voice) = voice {
                    body["voice"] = json!(voice);
                }
                let request = http_client()
                    .post(format!("http://{addr}/v1/audio/speech"))
                    .header("authorization", format!("Bearer {KEY}"))
                    .json(&body);
                async move {
                    let response = request.send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap().to_vec()
                }
            };
            [
                speak(None).await,
                speak(Some(other)).await,
                speak(Some(VOICE)).await,
            ]
        });
        // Kyutai's route too: a POST naming no voice.
        let kyutai_post = runtime.block_on(async {
            let response = http_client()
                .post(format!("http://{addr}/api/tts_streaming"))
                .header("kyutai-api-key", KEY)
                .json(&json!({"text": TEXT}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap().len()
        });
        drop(child);
        assert!(unnamed == named, "{args:?}: no voice named is {other}");
        assert!(unnamed != built_in, "{args:?}: not the built-in default");
        assert!(kyutai_post > 44, "{args:?}");
    }
}

/// `kyutai serve` generates 24 codebooks of the 1.6B by default (Kyutai's server's `n_q`), all
/// of a model with fewer (the tiny one has 4), and `--n-q N` exactly N: greedy speech is then the
/// Python reference's for that many codebooks (`TTSModel(n_q=...)`), sample for sample.
#[test]
fn serve_generates_the_codebooks_n_q_asks_for() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    for (args, fixture) in [(vec![], "hello"), (vec!["--n-q", "3"], "hello_n_q_3")] {
        // f32 weights, as the reference ran (`serve` takes `--weights`, not KYUTAI_WEIGHTS).
        let mut command = vec![
            "serve",
            "--port",
            "0",
            "--no-asr",
            "--api-key",
            KEY,
            "--weights",
            "f32",
        ];
        command.extend(&args);
        let mut child = KillOnDrop(
            kyutai_command(&hub, cache.path(), &command)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let addr = listening_addr(&mut child.0);
        let record = tts_reference::fixture("tts_parity", fixture);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let body = runtime.block_on(async {
            let response = http_client()
                .post(format!("http://{addr}/v1/audio/speech"))
                .bearer_auth(KEY)
                .json(
                    &json!({"model": "tts-1", "input": record["text"], "voice": record["voice"],
                              "response_format": "pcm", "temperature": 0}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap().to_vec()
        });
        tts_reference::assert_same_pcm16("tts_parity", fixture, &le_i16(&body));
    }
    // More codebooks than the model has: the server does not start, and says why.
    let too_many = kyutai_command(
        &hub,
        cache.path(),
        &["serve", "--port", "0", "--no-asr", "--n-q", "5"],
    )
    .output()
    .unwrap();
    assert!(!too_many.status.success());
    let (_, stderr) = output_text(&too_many);
    assert!(stderr.contains("has 4 audio codebooks"), "{stderr}");
}

/// A server process, killed when the test ends, also when it fails half-way.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the server's "listening on" line and returns its address.
fn listening_addr(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("the server starts");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            return rest.split_whitespace().next().unwrap().to_string();
        }
    }
}
