//! The page at `/`, in a real browser: Debian's Chromium (installed by `tools/setup.sh`),
//! headless, driven through its DevTools protocol over a websocket, against `kyutai serve` on
//! the tiny models, with a fake microphone that plays a fixture WAV.
//!
//! - The key: the page asks for it, says clearly when it is refused, and shows the panels once
//!   it is right.
//! - Speak: typed text gives, sample for sample, the library's audio for the same text, voice,
//!   seed and temperature (sent word by word, as the page sends it).
//! - Listen: the samples the page sent (the microphone resampled to 24 kHz by its worklet) are
//!   the fixture's (correlation above 0.95 once aligned), and the words the page shows are the
//!   library's words for those samples.
//! - A screenshot is saved to `target/page-screenshot.png` (the README's is `docs/page.png`).
//! - The static files have their content types and fetch nothing from elsewhere.

#[path = "support/openai.rs"]
mod openai_support;
#[path = "support/server.rs"]
mod server_support;
#[path = "support/stt_tiny.rs"]
mod stt_tiny;
mod support;

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use fluent_voice_kyutai::text_channel;
use fluent_voice_kyutai::voice::{
    Speaker, SpeechSource, SttConversationBuilder, TranscriptEvent, TtsConversation,
    TtsConversationBuilder,
};
use futures::{SinkExt, StreamExt};
use openai_support::{AUDIO, KEY, base64_decode, server};
use serde_json::{Value, json};
use server_support::*;
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium, killed (and its profile removed) when the test ends, also on failure.
struct Browser {
    child: std::process::Child,
    _profile: tempfile::TempDir,
    /// The DevTools endpoint, `127.0.0.1:PORT`.
    devtools: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start(microphone: &Path) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "Chromium is not installed: run tools/setup.sh (Debian's `chromium` package)"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-port=0",
            ])
            .arg(format!(
                "--use-file-for-fake-audio-capture={}%noloop",
                microphone.display()
            ))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let devtools = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("Chromium starts and prints its DevTools address");
            if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                break rest.split('/').next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || while lines.recv().is_ok() {});
        Browser {
            child,
            _profile: profile,
            devtools,
        }
    }

    /// A DevTools session on the browser's first page.
    async fn page(&self) -> Cdp {
        let targets: Vec<Value> = http_client()
            .get(format!("http://{}/json/list", self.devtools))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets.iter().find(|t| t["type"] == "page").unwrap();
        let url = page["webSocketDebuggerUrl"].as_str().unwrap();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Cdp { ws, id: 0 }
    }
}

/// Chromium's DevTools protocol: commands by id, events skipped.
struct Cdp {
    ws: Ws,
    id: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let id = self.id;
        let command = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer"))
                .unwrap()
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise), by value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `condition` is true in the page.
    async fn wait_for(&mut self, condition: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(&format!("Boolean({condition})")).await == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "never true: {condition}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn fixture() -> Vec<f32> {
    hound::WavReader::open(AUDIO)
        .unwrap()
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

/// The best normalised correlation of `part` inside `whole`, over every lag.
fn best_correlation(whole: &[f32], part: &[f32]) -> (usize, f64) {
    let norm = |x: &[f32]| x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    let part_norm = norm(part);
    let mut best = (0, -1.0);
    for lag in 0..=whole.len().saturating_sub(part.len()) {
        let window = &whole[lag..lag + part.len()];
        let dot: f64 = window
            .iter()
            .zip(part)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let c = dot / (norm(window) * part_norm).max(1e-12);
        if c > best.1 {
            best = (lag, c);
        }
    }
    best
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_asks_for_the_key_speaks_and_listens_in_chromium() {
    let server = server().await;
    // Chromium's fake microphone reads a WAV at 48 kHz best: the fixture, resampled by the
    // library, so that the page's own resampler has real work to do.
    let dir = tempfile::tempdir().unwrap();
    let microphone = dir.path().join("microphone.wav");
    let speech = fixture();
    let upsampled = fluent_voice_kyutai::audio::MonoConverter::new(24_000, 1, 48_000)
        .map(|mut c| {
            let mut out = c.push(&speech).unwrap();
            out.extend(c.finish().unwrap());
            out
        })
        .unwrap();
    fluent_voice_kyutai::audio::write_wav(&microphone, &upsampled, 48_000, 1, Default::default())
        .unwrap();
    let browser = Browser::start(&microphone);
    let mut page = browser.page().await;
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1200, "height": 860, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;
    page.call("Page.navigate", json!({"url": server.http("/")}))
        .await;

    // The key: asked for, refused when wrong (and said so), accepted when right.
    page.wait_for(
        "window.kyutai && !document.getElementById('key-panel').hidden",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(page.eval("kyutai.keyError").await, json!(false));
    page.eval(
        "document.getElementById('key').value = 'wrong'; \
         document.getElementById('key-form').requestSubmit()",
    )
    .await;
    page.wait_for("kyutai.keyError", Duration::from_secs(10))
        .await;
    let shown = page
        .eval("getComputedStyle(document.getElementById('key-error')).display !== 'none' && document.getElementById('key-error').textContent")
        .await;
    assert!(shown.as_str().unwrap().contains("refused"), "{shown}");
    page.eval(&format!(
        "document.getElementById('key').value = '{KEY}'; \
         document.getElementById('key-form').requestSubmit()"
    ))
    .await;
    page.wait_for("kyutai.ready", Duration::from_secs(10)).await;
    assert_eq!(page.eval("kyutai.keyError").await, json!(false));
    let voices = page.eval("kyutai.info.voices").await;
    assert_eq!(
        voices.as_array().unwrap().len(),
        support::tiny::VOICE_NAMES.len()
    );

    // Speak: the library's audio for the same words, voice, seed and temperature.
    let text = "Hello from the page, in a real browser.";
    page.eval(&format!(
        "document.getElementById('text').value = {}; \
         document.getElementById('seed').value = '42'; \
         document.getElementById('temperature').value = '0.6'; \
         document.getElementById('speak').click()",
        json!(text)
    ))
    .await;
    page.wait_for("kyutai.tts.done", Duration::from_secs(60))
        .await;
    assert_eq!(page.eval("kyutai.tts.error").await, Value::Null);
    let voice = page
        .eval("document.getElementById('voice').value")
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(voice, server.engine.default_voice());
    let received = floats(
        &page
            .eval("kyutai.tts.samples.flatMap((c) => Array.from(c))")
            .await,
    );
    assert_eq!(
        page.eval("kyutai.tts.received_samples").await,
        json!(received.len())
    );
    let (tx, pieces) = text_channel();
    let mut audio = server
        .engine
        .tts()
        .with_speaker(Speaker::speaker("A").with_voice(voice.as_str()).build())
        .seed(42)
        .temperature(0.6)
        .synthesize_stream(pieces)
        .await
        .unwrap()
        .into_stream();
    // The server reads each `Text` message as a word: the library's stream takes the spaces.
    for word in text.split_inclusive(' ') {
        tx.send(word).unwrap();
    }
    drop(tx);
    let mut expected = Vec::new();
    while let Some(chunk) = audio.next().await {
        expected.extend_from_slice(&chunk.unwrap().samples);
    }
    assert_eq!(received.len(), expected.len(), "the library's length");
    assert!(received == expected, "the library's samples");
    assert_eq!(
        page.eval("document.getElementById('download').hidden")
            .await,
        json!(false),
        "the WAV can be saved"
    );

    // Listen: the fake microphone plays the fixture once; the page resamples it to 24 kHz.
    page.eval("document.getElementById('listen').click()").await;
    page.wait_for("kyutai.asr.sent_samples > 0", Duration::from_secs(30))
        .await;
    let seconds = speech.len() as f64 / 24_000.0;
    tokio::time::sleep(Duration::from_secs_f64(seconds + 1.5)).await;
    page.eval("document.getElementById('listen').click()").await;
    page.wait_for("kyutai.asr.done", Duration::from_secs(60))
        .await;
    let asr = page
        .eval("JSON.stringify({...kyutai.asr, sent_pcm: kyutai.asr.sent_pcm.length})")
        .await;
    assert_eq!(page.eval("kyutai.asr.error").await, Value::Null, "{asr}");
    let sent = floats(&page.eval("kyutai.asr.sent_pcm").await);
    assert!(sent.len() >= speech.len(), "{} samples sent", sent.len());
    // The fixture is in what was sent, at some lag: an excerpt of its loudest part is found
    // with a high correlation, and the whole of it, at that lag, too.
    let (lag, excerpt) = best_correlation(&sent, &speech[9_600..14_400]);
    let start = lag
        .checked_sub(9_600)
        .expect("the speech starts after the capture");
    let (_, whole) = best_correlation(&sent[start..start + speech.len()], &speech);
    println!(
        "page: {} samples sent, speech at {start}, correlation {excerpt:.4} (excerpt), {whole:.4} (all)",
        sent.len()
    );
    assert!(excerpt > 0.95 && whole > 0.95, "{excerpt} {whole}");
    // The words the page shows are the library's words for the samples it sent.
    let shown: Vec<String> = serde_json::from_value(page.eval("kyutai.asr.words").await).unwrap();
    let mut events = server
        .engine
        .stt()
        .with_source(SpeechSource::from_pcm(sent.clone(), 24_000, 1))
        .listen()
        .await
        .unwrap()
        .into_events();
    // The page's ends of turn are the library's (Unmute's rule, the same on both sides) over
    // the model steps the page heard of.
    let page_steps = page.eval("kyutai.asr.steps").await.as_u64().unwrap();
    let (mut words, mut steps, mut ends) = (Vec::new(), 0, 0);
    while let Some(event) = events.next().await {
        match event.unwrap() {
            TranscriptEvent::Word(w) => words.push(w.text),
            TranscriptEvent::VoiceActivity { .. } => steps += 1,
            TranscriptEvent::EndOfTurn { .. } if steps <= page_steps => ends += 1,
            _ => {}
        }
    }
    assert!(page_steps > 12, "{page_steps} steps");
    assert_eq!(
        page.eval("kyutai.asr.ends").await,
        json!(ends),
        "ends of turn"
    );
    println!("page: {page_steps} steps, {ends} ends of turn");
    // The tiny model's pause head stays low, so the rule itself is checked on the steps of the
    // Rust rule's own test (`src/stt/end_of_turn.rs`): skipped steps, one end per pause, none
    // without words.
    let marks = page
        .eval(
            "(() => { const r = kyutai.turnRule(); const s = (p) => r.step([0, 0, p, 0]); \
             r.word(); const out = []; for (let i = 0; i < 12; i++) out.push(s(1)); \
             out.push(s(0.1), s(0.2), s(0.9), s(0.95), s(0.1), s(0.9)); r.word(); \
             out.push(s(0.2), s(0.8)); return out; })()",
        )
        .await;
    let mut expected_marks = vec![false; 12];
    expected_marks.extend([false, false, true, false, false, false, false, true]);
    assert_eq!(marks, json!(expected_marks), "Unmute's end-of-turn rule");
    assert!(!shown.is_empty(), "the talkative model says words");
    assert!(
        shown.len() <= words.len() && shown[..] == words[..shown.len()],
        "{shown:?} vs the library's {words:?}"
    );
    // Every word the library decided before the audio's end reached the page (the page's
    // marker comes back once all the audio it sent is transcribed).
    assert!(
        shown.len() + 2 >= words.len(),
        "{shown:?} vs the library's {words:?}"
    );
    let heard = page
        .eval("document.getElementById('heard').textContent")
        .await;
    assert!(heard.as_str().unwrap().contains(&shown[0]), "{heard}");

    // The screenshot.
    let shot = page
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert_eq!(&png[1..4], b"PNG");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/page-screenshot.png");
    std::fs::write(&path, png).unwrap();
    println!("page: screenshot at {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_is_embedded_with_its_types_and_fetches_nothing_from_elsewhere() {
    let server = server().await;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/page/app.js", "text/javascript; charset=utf-8"),
        ("/page/mic-worklet.js", "text/javascript; charset=utf-8"),
        ("/page/style.css", "text/css; charset=utf-8"),
    ] {
        // The files are open to all (they hold nothing); the key guards what they show.
        let response = http_client().get(server.http(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.len() > 500, "{path} has content");
        for scheme in ["http://", "https://", "//cdn", "import "] {
            assert!(!body.contains(scheme), "{path} reaches elsewhere: {scheme}");
        }
    }
    // `/page/info` is behind the key: 401 without it, the served models with it.
    let (status, _) = server.get("/page/info").await;
    assert_eq!(status, 401);
    let info: Value = http_client()
        .get(server.http("/page/info"))
        .header("kyutai-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (info["tts"].as_bool(), info["asr"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(info["needs_key"], true);
    assert_eq!(info["default_voice"], server.engine.default_voice());
}
