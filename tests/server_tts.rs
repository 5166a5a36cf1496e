//! `kyutai serve`, text-to-speech: `/api/tts_streaming` with real websocket clients on loopback
//! against the tiny TTS model: the library's audio and word timings for text sent word by word
//! with pauses (seeded), both framings, POST, bad input, slots, and concurrency.

#[path = "support/server.rs"]
mod server_support;
mod support;
#[path = "support/tts_reference.rs"]
mod tts_reference;

use std::time::Duration;

use fluent_voice_kyutai::server::ServerConfig;
use fluent_voice_kyutai::text_channel;
use fluent_voice_kyutai::voice::{Speaker, TtsConversation, TtsConversationBuilder};
use futures::StreamExt;
use serde_json::json;
use server_support::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const PATH: &str = "/api/tts_streaming";
const KEY: &str = "public_token";
const TEXT: &str = "Hello from Rust. This is streamed text, one word at a time!";
const LONG: Duration = Duration::from_secs(120);

async fn server(batch_size: usize) -> TestServer {
    TestServer::start(
        ServerConfig::default()
            .endpoints(false, true)
            .batch_size(batch_size)
            .api_key(KEY)
            .limits(relaxed_limits()),
        |hub| {
            publish_defaults(hub);
        },
    )
    .await
}

fn query(seed: u64, format: &str) -> String {
    let voice: String = VOICE.replace('/', "%2F");
    format!("{PATH}?voice={voice}&seed={seed}&format={format}")
}

/// The library's audio and word timings (s) for `text` streamed word by word with `seed`.
async fn library(
    server: &TestServer,
    text: &str,
    seed: u64,
) -> (Vec<f32>, Vec<(String, f64, f64)>) {
    let (tx, pieces) = text_channel();
    let mut audio = server
        .engine
        .tts()
        .with_speaker(Speaker::speaker("A").with_voice(VOICE).build())
        .seed(seed)
        .synthesize_stream(pieces)
        .await
        .unwrap()
        .into_stream();
    for word in text.split_inclusive(' ') {
        tx.send(word).unwrap();
    }
    drop(tx);
    let (mut samples, mut words) = (Vec::new(), Vec::new());
    while let Some(chunk) = audio.next().await {
        let chunk = chunk.unwrap();
        samples.extend_from_slice(&chunk.samples);
        for w in chunk.words {
            words.push((w.text, w.start_ms as f64 / 1000.0, w.end_ms as f64 / 1000.0));
        }
    }
    (samples, words)
}

/// Sends `text` one word per message, `pause` apart, then `Eos`; returns the audio and words
/// the server sent, checking Ready first and a normal close last.
async fn speak(ws: &mut Ws, text: &str, pause: Duration) -> (Vec<f32>, Vec<(String, f64, f64)>) {
    assert_eq!(next(ws, LONG, false).await.unwrap().kind(), "Ready");
    for word in text.split_whitespace() {
        send(ws, server_support::text(word)).await;
        tokio::time::sleep(pause).await;
    }
    send(ws, eos()).await;
    let got = until_close(ws, LONG, false).await;
    assert_eq!(
        got.last().unwrap(),
        &Got::Close(Some((1000, String::new()))),
        "a normal close"
    );
    collect(&got)
}

fn collect(got: &[Got]) -> (Vec<f32>, Vec<(String, f64, f64)>) {
    let (mut samples, mut words) = (Vec::new(), Vec::new());
    for g in got {
        let Got::Msg(m) = g else { continue };
        match m["type"].as_str().unwrap() {
            "Audio" => {
                let pcm = m["pcm"].as_array().unwrap();
                assert_eq!(pcm.len(), 1920, "80 ms frames");
                samples.extend(pcm.iter().map(|v| v.as_f64().unwrap() as f32));
            }
            "Text" => words.push((
                m["text"].as_str().unwrap().to_string(),
                m["start_s"].as_f64().unwrap(),
                m["stop_s"].as_f64().unwrap(),
            )),
            other => panic!("unexpected {other}: {m}"),
        }
    }
    (samples, words)
}

/// Straight to the Python reference: the recorded greedy cases (`moshi` 0.2.13 `TTSModel`, the
/// default voice, cfg 2.0; `tests/fixtures/tts_parity/`) sent to the server one word per message,
/// 40 ms apart (so the model waits for words), give the reference's waveform sample for sample,
/// and each word's `Text` starts where the reference's transcript puts it (its step, less the 2
/// frames the output drops, at 80 ms a frame).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn words_sent_one_by_one_give_the_python_references_audio_and_timings() {
    let server = server(2).await;
    for name in ["hello", "two_sentences"] {
        let record = tts_reference::fixture("tts_parity", name);
        assert_eq!(record["voice"].as_str(), Some(VOICE));
        assert_eq!(
            (record["temp"].as_f64(), record["cfg"].as_f64()),
            (Some(0.0), Some(2.0))
        );
        let text = record["text"].as_str().unwrap();
        let mut ws = server
            .connect(
                &format!("{}&temperature=0", query(0, "PcmMessagePack")),
                Some(KEY),
            )
            .await
            .unwrap();
        let (samples, words) = speak(&mut ws, text, Duration::from_millis(40)).await;
        tts_reference::assert_same_pcm("tts_parity", name, &samples);
        let transcript: Vec<(String, f64)> = record["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let step = w[1].as_u64().unwrap() as f64;
                (w[0].as_str().unwrap().to_string(), (step - 2.0) * 0.08)
            })
            .collect();
        assert_eq!(words.len(), transcript.len(), "{name}: {words:?}");
        for ((text, start, _), (want, want_start)) in words.iter().zip(&transcript) {
            assert_eq!(text, want, "{name}");
            assert!(
                (start - want_start).abs() < 1e-9,
                "{name}: {text} at {start} s"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn words_sent_with_pauses_give_the_library_audio_and_timings() {
    let server = server(2).await;
    let (samples, words) = library(&server, TEXT, 11).await;
    assert!(!samples.is_empty());
    assert_eq!(
        words.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(),
        TEXT.split_whitespace().collect::<Vec<_>>()
    );

    // Kyutai's client: one Text message per word (here 40 ms apart, so the model waits).
    let mut ws = server
        .connect(&query(11, "PcmMessagePack"), Some(KEY))
        .await
        .unwrap();
    let got = speak(&mut ws, TEXT, Duration::from_millis(40)).await;
    assert_eq!(got.0, samples, "same audio, sample for sample");
    assert_eq!(got.1, words, "same words and times");

    // Plain text frames, several words each, and a binary "\0" to end: the same.
    let mut ws = server
        .connect(&query(11, "PcmMessagePack"), Some(KEY))
        .await
        .unwrap();
    assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");
    send(&mut ws, Message::text("Hello from Rust. This")).await;
    send(
        &mut ws,
        Message::text("is streamed text, one word at a time!"),
    )
    .await;
    send(&mut ws, Message::binary(b"\0".to_vec())).await;
    let got = until_close(&mut ws, LONG, false).await;
    assert_eq!(collect(&got).0, samples);

    // `Pcm`: bare float32 frames, no messages, a normal close.
    let mut ws = server.connect(&query(11, "Pcm"), Some(KEY)).await.unwrap();
    send(&mut ws, Message::text(TEXT)).await;
    send(&mut ws, eos()).await;
    let got = until_close(&mut ws, LONG, true).await;
    let raw: Vec<f32> = got
        .iter()
        .filter_map(|g| match g {
            Got::Bytes(b) => Some(
                b.chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap())),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(raw, samples);
    assert_eq!(
        got.last().unwrap(),
        &Got::Close(Some((1000, String::new())))
    );

    // POST: a WAV of the same audio (16-bit, open-ended header as moshi-server's).
    let response = http_client()
        .post(server.http(PATH))
        .header("kyutai-api-key", KEY)
        .header("content-type", "application/json")
        .body(json!({"text": TEXT, "voice": VOICE, "seed": 11}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    let wav = response.bytes().await.unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    let pcm: Vec<i16> = wav[44..]
        .chunks(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let whole = server
        .engine
        .tts()
        .with_speaker(Speaker::speaker("A").with_voice(VOICE).speak(TEXT).build())
        .seed(11)
        .synthesize()
        .await
        .unwrap()
        .collect_samples()
        .await
        .unwrap();
    let expected: Vec<i16> = whole
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
        .collect();
    assert_eq!(pcm, expected);
    server.wait_slots(PATH, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_an_error_and_a_close_and_harms_no_other_stream() {
    let server = server(3).await;
    let (samples, _) = library(&server, TEXT, 5).await;
    let good = {
        let mut ws = server
            .connect(&query(5, "PcmMessagePack"), Some(KEY))
            .await
            .unwrap();
        tokio::spawn(async move { speak(&mut ws, TEXT, Duration::from_millis(30)).await })
    };
    let long = "word ".repeat(20_000);
    let cases: Vec<(&str, Vec<Message>, &str, u16)> = vec![
        (
            "malformed",
            vec![Message::binary(vec![0xc1u8])],
            "invalid message",
            1008,
        ),
        (
            "audio on the text route",
            vec![audio(&[0.0; 1920])],
            "unknown variant",
            1008,
        ),
        (
            "raw samples",
            vec![Message::binary(vec![0u8, 0, 128, 63, 0, 0, 0, 63])],
            "invalid message",
            1008,
        ),
        (
            "wrong field type",
            vec![msgpack(json!({"type": "Text", "text": 3}))],
            "invalid message",
            1008,
        ),
        (
            "custom voice",
            vec![msgpack(
                json!({"type": "Voice", "embeddings": [0.0], "shape": [1]}),
            )],
            "Voice",
            1003,
        ),
        (
            "text after the end",
            vec![Message::text(TEXT), eos(), server_support::text("more")],
            "after Eos",
            1008,
        ),
        ("too much text", vec![Message::text(long)], "limit", 1008),
    ];
    for (what, messages, needle, code) in cases {
        let mut ws = server
            .connect(&query(1, "PcmMessagePack"), Some(KEY))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws, LONG, false).await.unwrap().kind(),
            "Ready",
            "{what}"
        );
        for message in messages {
            send(&mut ws, message).await;
        }
        let got = until_close(&mut ws, LONG, false).await;
        assert_refused(&got, needle, code);
    }
    // Refused at the start: a voice that does not exist, the Opus formats.
    let mut ws = server
        .connect(
            &format!("{PATH}?voice=nobody%2Fnothing.wav&format=PcmMessagePack"),
            Some(KEY),
        )
        .await
        .unwrap();
    assert_refused(
        &until_close(&mut ws, LONG, false).await,
        "nobody/nothing.wav",
        1008,
    );
    // Without the `opus` feature, the Opus formats are refused clearly.
    if !cfg!(feature = "opus") {
        let mut ws = server
            .connect(&query(1, "OggOpusMessagePack"), Some(KEY))
            .await
            .unwrap();
        assert_refused(&until_close(&mut ws, LONG, false).await, "OggOpus", 1003);
        let mut ws = server
            .connect(&query(1, "OggOpus"), Some(KEY))
            .await
            .unwrap();
        let got = until_close(&mut ws, LONG, true).await;
        match got.last().unwrap() {
            Got::Close(Some((1003, reason))) => assert!(reason.contains("OggOpus"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    // An unknown format is refused before the upgrade.
    let e = server
        .connect(&query(1, "Mp3"), Some(KEY))
        .await
        .unwrap_err();
    assert!(matches!(e, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 400));

    let (heard, _) = good.await.unwrap();
    assert_eq!(heard, samples, "the good stream got its audio");
    server.wait_slots(PATH, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slots_run_out_and_come_back_when_a_client_leaves_mid_speech() {
    let server = server(1).await;
    let mut first = server
        .connect(&query(1, "PcmMessagePack"), Some(KEY))
        .await
        .unwrap();
    assert_eq!(next(&mut first, LONG, false).await.unwrap().kind(), "Ready");
    send(&mut first, Message::text(TEXT)).await;
    assert_eq!(next(&mut first, LONG, false).await.unwrap().kind(), "Audio");
    assert_eq!(server.slots(PATH).await, (1, 1));
    let mut second = server
        .connect(&query(1, "PcmMessagePack"), Some(KEY))
        .await
        .unwrap();
    assert_refused(
        &until_close(&mut second, LONG, false).await,
        "no free channels",
        1013,
    );
    drop(first);
    server.wait_slots(PATH, 0).await;
    let mut third = server
        .connect(&query(1, "PcmMessagePack"), Some(KEY))
        .await
        .unwrap();
    assert_eq!(next(&mut third, LONG, false).await.unwrap().kind(), "Ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_streams_each_get_their_solo_audio() {
    let server = server(16).await;
    let texts: Vec<String> = (0..16)
        .map(|i| {
            TEXT.split_whitespace()
                .take(3 + i % 5)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut solo = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let mut ws = server
            .connect(&query(i as u64, "PcmMessagePack"), Some(KEY))
            .await
            .unwrap();
        solo.push(speak(&mut ws, text, Duration::ZERO).await);
    }
    let model = server.engine.tts_model().await.unwrap();
    let solo_counters = model.step_counters();
    let mut tasks = Vec::new();
    for (i, text) in texts.iter().cloned().enumerate() {
        let mut ws = server
            .connect(&query(i as u64, "PcmMessagePack"), Some(KEY))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            speak(&mut ws, &text, Duration::from_millis(10)).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(300), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, solo[i], "stream {i}");
    }
    assert_ne!(
        solo[0].0, solo[1].0,
        "different seeds and texts, different audio"
    );
    // The streams shared the engine's batched steps: more than one stream per step on average.
    let (steps, slot_steps) = model.step_counters();
    let (steps, slot_steps) = (steps - solo_counters.0, slot_steps - solo_counters.1);
    assert!(
        slot_steps as f64 / steps as f64 > 1.5,
        "{slot_steps} stream-steps in {steps} batched steps"
    );
}

/// With the `opus` feature (`cargo test --features opus`, CI runs it): both Opus formats carry
/// moshi-server's Ogg stream (the header pages first, then a page per 40 ms packet) of the
/// library's audio: decoded, it has the audio's length (whole packets) and follows it.
#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_opus_formats_carry_the_librarys_audio_in_ogg_pages() {
    let server = server(2).await;
    let (samples, words) = library(&server, TEXT, 11).await;
    let (other, _) = library(&server, "Quite another text, spoken by the same voice.", 11).await;
    for format in ["OggOpusMessagePack", "OggOpus"] {
        let raw = format == "OggOpus";
        let mut ws = server.connect(&query(11, format), Some(KEY)).await.unwrap();
        if !raw {
            assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");
        }
        for word in TEXT.split_whitespace() {
            send(&mut ws, server_support::text(word)).await;
        }
        send(&mut ws, eos()).await;
        let got = until_close(&mut ws, LONG, raw).await;
        let mut ogg_bytes = Vec::new();
        let mut texts = Vec::new();
        for g in &got {
            match g {
                Got::Bytes(b) => ogg_bytes.extend_from_slice(b),
                Got::Msg(m) if m["type"] == "OggOpus" => ogg_bytes.extend(
                    m["data"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|b| b.as_u64().unwrap() as u8),
                ),
                Got::Msg(m) if m["type"] == "Text" => texts.push(m["text"].clone()),
                Got::Msg(m) => panic!("{format}: unexpected {m}"),
                Got::Close(c) => assert_eq!(c, &Some((1000, String::new())), "{format}"),
            }
        }
        // Words as messages in the MessagePack format only (as moshi-server).
        assert_eq!(texts.len(), if raw { 0 } else { words.len() }, "{format}");
        assert!(ogg_bytes.starts_with(b"OggS"), "{format}: an Ogg stream");

        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(ogg_bytes));
        let head = reader.read_packet_expected().unwrap();
        assert!(head.data.starts_with(b"OpusHead"), "{format}");
        let tags = reader.read_packet_expected().unwrap();
        assert!(tags.data.starts_with(b"OpusTags"), "{format}");
        let mut decoder = opus::Decoder::new(24_000, opus::Channels::Mono).unwrap();
        let mut decoded = Vec::new();
        while let Some(packet) = reader.read_packet().unwrap() {
            let mut out = vec![0f32; 2880];
            let n = decoder.decode_float(&packet.data, &mut out, false).unwrap();
            assert_eq!(n, 960, "{format}: 40 ms packets");
            decoded.extend_from_slice(&out[..n]);
        }
        assert_eq!(
            decoded.len(),
            samples.len() / 960 * 960,
            "{format}: the audio's length"
        );
        // Opus is lossy (and the tiny model's audio is noise-like, which it keeps only in
        // outline) and delays the signal by its look-ahead: find that delay, then the loudness
        // of each 20 ms of the decoded audio follows the library's.
        let rms = |x: &[f32]| {
            x.chunks(480)
                .map(|c| (c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32).sqrt() as f64)
                .collect::<Vec<f64>>()
        };
        let correlation = |a: &[f64], b: &[f64]| {
            let n = a.len().min(b.len());
            let (a, b) = (&a[..n], &b[..n]);
            let (ma, mb) = (
                a.iter().sum::<f64>() / n as f64,
                b.iter().sum::<f64>() / n as f64,
            );
            let dot: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
            let na: f64 = a.iter().map(|x| (x - ma).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum::<f64>().sqrt();
            dot / (na * nb)
        };
        let reference = rms(&samples[..decoded.len() - 480]);
        let best = (0..480)
            .step_by(12)
            .map(|delay| correlation(&reference, &rms(&decoded[delay..])))
            .fold(f64::MIN, f64::max);
        let level = rms(&decoded).iter().sum::<f64>() / rms(&samples).iter().sum::<f64>();
        // Against other audio, for scale.
        let unrelated = (0..480)
            .step_by(12)
            .map(|delay| correlation(&rms(&other), &rms(&decoded[delay..])))
            .fold(f64::MIN, f64::max);
        eprintln!(
            "{format}: {} samples, loudness correlation {best:.3} (other audio: \
             {unrelated:.3}), level {level:.2}",
            decoded.len()
        );
        assert!(best > 0.8, "{format}: loudness correlation {best}");
        assert!(best > unrelated + 0.3, "{format}: {best} vs {unrelated}");
        assert!((0.5..1.5).contains(&level), "{format}: level {level}");
    }
}
