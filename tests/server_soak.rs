//! A soak of `kyutai serve` on loopback (ignored by `cargo test`: it runs for minutes). The
//! binary serves the tiny models while four clients mix every face of the server for
//! `KYUTAI_SOAK_SECS` seconds (default 300): Kyutai's TTS and STT websockets, OpenAI's speech,
//! transcriptions and models, and the page's assets, with one request in ten malformed (broken
//! JSON, a garbage multipart body, garbage on a websocket, an unknown voice, a wrong key).
//!
//! Afterwards: the process is still alive; every well-formed request got the answer it gets
//! when the server is idle (the same audio bytes for the same seed, the same words for the same
//! file) and every malformed one its error; the server's resident memory, sampled every 5 s,
//! stays within 10% after the first fifth of the run (the warm-up). The figures are printed:
//!
//! ```text
//! cargo test --test server_soak -- --ignored --nocapture
//! ```

#[path = "support/openai.rs"]
mod openai_support;
#[path = "support/server.rs"]
mod server_support;
#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openai_support::{AUDIO, KEY, TEXT, multipart};
use serde_json::{Value, json};
use server_support::*;
use support::*;

/// What a kind of request should answer, learnt from the idle server before the soak.
#[derive(Clone)]
struct Expected {
    speech: Vec<u8>,
    transcript: String,
    asr_words: Vec<String>,
}

#[derive(Default)]
struct Tally {
    /// Per kind: (answered as expected, answered otherwise).
    counts: BTreeMap<&'static str, (u64, u64)>,
    /// The first few wrong answers, for the report.
    wrong: Vec<String>,
}

impl Tally {
    fn record(&mut self, kind: &'static str, result: Result<(), String>) {
        let entry = self.counts.entry(kind).or_default();
        match result {
            Ok(()) => entry.0 += 1,
            Err(e) => {
                entry.1 += 1;
                if self.wrong.len() < 20 {
                    self.wrong.push(format!("{kind}: {e}"));
                }
            }
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn speech_body() -> Value {
    json!({"model": "tts-1", "input": TEXT, "voice": "alloy", "response_format": "pcm",
           "seed": 11})
}

async fn speech(base: &str) -> Result<Vec<u8>, String> {
    let response = http_client()
        .post(format!("{base}/v1/audio/speech"))
        .bearer_auth(KEY)
        .json(&speech_body())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    Ok(response.bytes().await.map_err(|e| e.to_string())?.to_vec())
}

async fn transcription(base: &str, file: &[u8]) -> Result<String, String> {
    let (content_type, body) = multipart(&[("model", "whisper-1")], Some(("speech.wav", file)));
    let response = http_client()
        .post(format!("{base}/v1/audio/transcriptions"))
        .bearer_auth(KEY)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    Ok(body["text"].as_str().unwrap_or_default().to_string())
}

/// Streams the fixture over the STT websocket, then a marker and silence until it returns.
async fn asr_words(ws_base: &str, samples: &[f32]) -> Result<Vec<String>, String> {
    let url = format!("{ws_base}/api/asr-streaming?auth_id={KEY}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let long = Duration::from_secs(60);
    match next(&mut ws, long, false).await {
        Some(g) if g.kind() == "Ready" => {}
        other => return Err(format!("no Ready: {other:?}")),
    }
    for chunk in samples.chunks(1920) {
        send(&mut ws, audio(chunk)).await;
    }
    send(&mut ws, marker(1)).await;
    let mut words = Vec::new();
    loop {
        send(&mut ws, audio(&[0.0; 1920])).await;
        match next(&mut ws, long, false).await {
            Some(Got::Msg(m)) if m["type"] == "Word" => {
                words.push(m["text"].as_str().unwrap_or_default().to_string())
            }
            Some(Got::Msg(m)) if m["type"] == "Marker" => break,
            Some(Got::Msg(_)) => {}
            other => return Err(format!("the stream ended: {other:?}")),
        }
    }
    Ok(words)
}

/// Speaks over the TTS websocket: Ready, 80 ms frames, a normal close.
async fn tts_ws(ws_base: &str) -> Result<(), String> {
    let url = format!("{ws_base}/api/tts_streaming?format=PcmMessagePack&auth_id={KEY}&seed=2");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    send(&mut ws, server_support::text(TEXT)).await;
    send(&mut ws, eos()).await;
    let got = until_close(&mut ws, Duration::from_secs(60), false).await;
    let frames = got.iter().filter(|g| g.kind() == "Audio").count();
    match got.last() {
        Some(Got::Close(Some((1000, _)))) if frames > 0 => Ok(()),
        other => Err(format!("{frames} frames, then {other:?}")),
    }
}

/// One malformed request of five kinds; each must get its error, and the server go on.
async fn malformed(base: &str, ws_base: &str, which: usize) -> Result<(), String> {
    let client = http_client();
    let status = |s: reqwest::StatusCode, want: u16| {
        if s.as_u16() == want {
            Ok(())
        } else {
            Err(format!("status {s}, not {want}"))
        }
    };
    match which % 5 {
        0 => {
            let r = client
                .post(format!("{base}/v1/audio/speech"))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body("{\"model\": \"tts-1\", \"input\": ")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            status(r.status(), 400)
        }
        1 => {
            let r = client
                .post(format!("{base}/v1/audio/transcriptions"))
                .bearer_auth(KEY)
                .header("content-type", "multipart/form-data; boundary=xyz")
                .body("--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\ngarbage")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            status(r.status(), 400)
        }
        2 => {
            let url = format!("{ws_base}/api/asr-streaming?auth_id={KEY}");
            let (mut ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .map_err(|e| e.to_string())?;
            let _ = next(&mut ws, Duration::from_secs(30), false).await;
            send(
                &mut ws,
                tokio_tungstenite::tungstenite::Message::binary(vec![0xc1, 0xff, 0x00]),
            )
            .await;
            let got = until_close(&mut ws, Duration::from_secs(30), false).await;
            match got.last() {
                Some(Got::Close(Some((code, _)))) if *code != 1000 => Ok(()),
                other => Err(format!("garbage ended with {other:?}")),
            }
        }
        3 => {
            let mut body = speech_body();
            body["voice"] = json!("nobody/nothing.wav");
            let r = client
                .post(format!("{base}/v1/audio/speech"))
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            status(r.status(), 400)
        }
        _ => {
            let r = client
                .get(format!("{base}/v1/models"))
                .bearer_auth("wrong")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            status(r.status(), 401)
        }
    }
}

#[test]
#[ignore = "a soak of minutes: cargo test --test server_soak -- --ignored --nocapture"]
fn a_soak_of_mixed_routes_keeps_answering_and_memory_stays_flat() {
    let seconds: u64 = std::env::var("KYUTAI_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let hub = TestHub::start();
    publish_defaults(&hub);
    publish(&hub, STT, "main", &stt_tiny::stt_repo_talkative());
    let cache = tempfile::tempdir().unwrap();
    let args = [
        "serve",
        "--port",
        "0",
        "--batch-size",
        "4",
        "--api-key",
        KEY,
    ];
    let mut child = KillOnDrop(
        kyutai_command(&hub, cache.path(), &args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("the server starts");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Drain the log so that the pipe never fills.
    std::thread::spawn(move || while lines.recv().is_ok() {});
    let base = format!("http://{addr}");
    let ws_base = format!("ws://{addr}");
    let file = std::fs::read(AUDIO).unwrap();
    let samples: Vec<f32> = hound::WavReader::open(AUDIO)
        .unwrap()
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let rss = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let started = Instant::now();
    runtime.block_on(async {
        let expected = Expected {
            speech: speech(&base).await.unwrap(),
            transcript: transcription(&base, &file).await.unwrap(),
            asr_words: asr_words(&ws_base, &samples).await.unwrap(),
        };
        assert!(!expected.speech.is_empty() && !expected.asr_words.is_empty());
        let end = started + Duration::from_secs(seconds);
        let sampler = {
            let rss = rss.clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    rss.lock()
                        .unwrap()
                        .push((started.elapsed().as_secs(), rss_kib(pid)));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            })
        };
        let mut workers = Vec::new();
        for worker in 0..4usize {
            let (base, ws_base, file, samples) =
                (base.clone(), ws_base.clone(), file.clone(), samples.clone());
            let (expected, tally) = (expected.clone(), tally.clone());
            workers.push(tokio::spawn(async move {
                let mut k = 0;
                while Instant::now() < end {
                    k += 1;
                    // Across the four clients, one request in ten is malformed.
                    let n = k * 4 + worker;
                    let (kind, result): (&'static str, Result<(), String>) = if n % 10 == 3 {
                        ("malformed", malformed(&base, &ws_base, n / 10).await)
                    } else {
                        match (k + worker) % 6 {
                            0 => ("tts websocket", tts_ws(&ws_base).await),
                            1 => (
                                "asr websocket",
                                asr_words(&ws_base, &samples).await.and_then(|w| {
                                    (w == expected.asr_words)
                                        .then_some(())
                                        .ok_or(format!("{w:?}"))
                                }),
                            ),
                            2 => (
                                "openai speech",
                                speech(&base).await.and_then(|s| {
                                    (s == expected.speech)
                                        .then_some(())
                                        .ok_or(format!("{} other bytes", s.len()))
                                }),
                            ),
                            3 => (
                                "openai transcription",
                                transcription(&base, &file).await.and_then(|t| {
                                    (t == expected.transcript).then_some(()).ok_or(t)
                                }),
                            ),
                            4 => ("page", page(&base).await),
                            _ => ("openai models", models(&base).await),
                        }
                    };
                    tally.lock().unwrap().record(kind, result);
                }
            }));
        }
        for worker in workers {
            worker.await.unwrap();
        }
        sampler.await.unwrap();
    });
    let alive = child.0.try_wait().unwrap().is_none();
    drop(child);

    let tally = tally.lock().unwrap();
    let rss = rss.lock().unwrap();
    let warm: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= seconds / 5)
        .map(|(_, kib)| *kib)
        .collect();
    let (low, high) = (
        *warm.iter().min().unwrap() as f64,
        *warm.iter().max().unwrap() as f64,
    );
    println!(
        "soak: {seconds} s, 4 clients, {}",
        started.elapsed().as_secs()
    );
    for (kind, (ok, wrong)) in &tally.counts {
        println!("soak: {kind:>22}: {ok} as expected, {wrong} otherwise");
    }
    println!(
        "soak: RSS (MiB) at start {:.1}, after warm-up {:.1} .. {:.1} (spread {:.1}%), at end {:.1}",
        rss[0].1 as f64 / 1024.0,
        low / 1024.0,
        high / 1024.0,
        (high / low - 1.0) * 100.0,
        rss.last().unwrap().1 as f64 / 1024.0
    );
    for wrong in &tally.wrong {
        println!("soak: wrong: {wrong}");
    }
    assert!(alive, "the server died");
    assert!(tally.wrong.is_empty(), "{:?}", tally.wrong);
    assert!(
        tally.counts.len() == 7,
        "every kind ran: {:?}",
        tally.counts.keys()
    );
    assert!(high <= low * 1.10, "RSS grew: {low} KiB .. {high} KiB");
}

/// The server process, killed when the test ends, also when it fails half-way.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn page(base: &str) -> Result<(), String> {
    for (path, needle) in [("/", "<html"), ("/page/app.js", "kyutai")] {
        let response = http_client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("{path}: status {}", response.status()));
        }
        let body = response.text().await.map_err(|e| e.to_string())?;
        if !body.contains(needle) {
            return Err(format!("{path} lacks {needle}"));
        }
    }
    Ok(())
}

async fn models(base: &str) -> Result<(), String> {
    let response = http_client()
        .get(format!("{base}/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    let ids = body["data"].as_array().map(Vec::len).unwrap_or(0);
    (ids >= 6).then_some(()).ok_or(format!("{ids} models"))
}
