//! A load generator for `kyutai serve`: N speech-to-text streams fed at real time and M
//! text-to-speech streams, all at once, reporting whether the server kept up.
//!
//! ```text
//! cargo run --release --example server_load -- [--url ws://127.0.0.1:8080] [--api-key KEY]
//!     [--asr N] [--tts M] [--seconds S] [--voice NAME]
//! ```
//!
//! - STT: each stream sends 80 ms frames of a tone at real time for S seconds, with a `Marker`
//!   every second. A marker comes back once the audio before it has been transcribed (the model's
//!   delay included), so its round trip, less that delay, is how far behind real time the server
//!   runs; a stream "holds real time" when its latest marker came back within 1 s of the first's
//!   latency (the backlog did not grow).
//! - TTS: each stream sends a sentence (as Kyutai's client does: one message per word) and
//!   `Eos`, and measures the time to the first audio frame and the audio made per second.
//!
//! Percentiles are over all streams. The server's own view is at `/metrics`.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TEXT: &str = "Hello, this is a test of the moshi text to speech system, this should result \
                    in some nicely sounding generated voice.";

struct Args {
    url: String,
    key: String,
    asr: usize,
    tts: usize,
    seconds: u64,
    voice: String,
}

fn args() -> Args {
    let mut args = Args {
        url: "ws://127.0.0.1:8080".into(),
        key: "public_token".into(),
        asr: 4,
        tts: 2,
        seconds: 10,
        voice: "expresso/ex03-ex01_happy_001_channel1_334s.wav".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value,
            "--api-key" => args.key = value,
            "--asr" => args.asr = value.parse().expect("a number"),
            "--tts" => args.tts = value.parse().expect("a number"),
            "--seconds" => args.seconds = value.parse().expect("a number"),
            "--voice" => args.voice = value,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, key: &str) -> Ws {
    let mut request = url.into_client_request().expect("a websocket URL");
    request
        .headers_mut()
        .insert("kyutai-api-key", key.parse().expect("a header value"));
    tokio_tungstenite::connect_async(request)
        .await
        .expect("the server accepts the connection")
        .0
}

fn pack<T: Serialize>(message: &T) -> Message {
    Message::binary(rmp_serde::to_vec_named(message).expect("encodes"))
}

#[derive(Serialize)]
struct Audio<'a> {
    r#type: &'static str,
    pcm: &'a [f32],
}

#[derive(Serialize)]
struct Marker {
    r#type: &'static str,
    id: i64,
}

#[derive(Serialize)]
struct Text<'a> {
    r#type: &'static str,
    text: &'a str,
}

fn kind(message: &Message) -> (String, Result<serde_json::Value, rmp_serde::decode::Error>) {
    let value: Result<serde_json::Value, rmp_serde::decode::Error> =
        rmp_serde::from_slice(message.clone().into_data().as_ref());
    let kind = value
        .as_ref()
        .ok()
        .and_then(|v| v["type"].as_str().map(String::from))
        .unwrap_or_default();
    (kind, value)
}

/// Marker round trips of one real-time STT stream, in seconds.
async fn asr_stream(url: String, key: String, seconds: u64) -> Vec<f64> {
    let ws = connect(&format!("{url}/api/asr-streaming"), &key).await;
    let (mut tx, mut rx) = ws.split();
    let sent_at = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<Instant>::new()));
    let sent = sent_at.clone();
    let reader = tokio::spawn(async move {
        let mut trips = Vec::new();
        while let Some(Ok(message)) = rx.next().await {
            let (kind, value) = kind(&message);
            if kind == "Marker" {
                let id = value.as_ref().unwrap()["id"].as_i64().unwrap() as usize;
                trips.push(sent.lock()[id].elapsed().as_secs_f64());
            }
            if kind == "Error" {
                eprintln!("asr error: {:?}", value);
                break;
            }
        }
        trips
    });
    let frame: Vec<f32> = (0..1920)
        .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 24_000.0).sin())
        .collect();
    let start = Instant::now();
    let frames = seconds * 25 / 2;
    for n in 0..frames {
        tokio::time::sleep_until((start + Duration::from_millis(80 * n)).into()).await;
        if tx
            .send(pack(&Audio {
                r#type: "Audio",
                pcm: &frame,
            }))
            .await
            .is_err()
        {
            break;
        }
        if n % 12 == 11 {
            let id = sent_at.lock().len() as i64;
            sent_at.lock().push(Instant::now());
            let _ = tx
                .send(pack(&Marker {
                    r#type: "Marker",
                    id,
                }))
                .await;
        }
    }
    // Silence for the last markers to come back (the model's delay).
    let silence = vec![0.0f32; 1920];
    for n in 0..40 {
        tokio::time::sleep_until((start + Duration::from_millis(80 * (frames + n))).into()).await;
        let _ = tx
            .send(pack(&Audio {
                r#type: "Audio",
                pcm: &silence,
            }))
            .await;
    }
    let _ = tx.close().await;
    reader.await.unwrap_or_default()
}

/// (first-audio latency, audio seconds per second, frame gaps) of one TTS stream.
async fn tts_stream(url: String, key: String, voice: String) -> (f64, f64, Vec<f64>) {
    let voice = voice.replace('/', "%2F");
    let mut ws = connect(
        &format!("{url}/api/tts_streaming?voice={voice}&format=PcmMessagePack"),
        &key,
    )
    .await;
    let sent = Instant::now();
    for word in TEXT.split_whitespace() {
        ws.send(pack(&Text {
            r#type: "Text",
            text: word,
        }))
        .await
        .unwrap();
    }
    ws.send(Message::binary(b"\x81\xa4type\xa3Eos".to_vec()))
        .await
        .unwrap();
    let (mut first, mut last, mut samples, mut gaps) = (None, None::<Instant>, 0usize, Vec::new());
    while let Some(Ok(message)) = ws.next().await {
        let (kind, value) = kind(&message);
        match kind.as_str() {
            "Audio" => {
                let now = Instant::now();
                first.get_or_insert(now);
                if let Some(last) = last {
                    gaps.push((now - last).as_secs_f64());
                }
                last = Some(now);
                samples += value.unwrap()["pcm"].as_array().map_or(0, Vec::len);
            }
            "Error" => {
                eprintln!("tts error: {:?}", value);
                break;
            }
            _ => {}
        }
    }
    let first = first.unwrap_or(sent);
    let made = samples as f64 / 24_000.0;
    let took = last.map_or(0.0, |l| (l - first).as_secs_f64()).max(1e-3);
    ((first - sent).as_secs_f64(), made / took, gaps)
}

fn percentiles(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
    format!(
        "p50 {:.3} s, p90 {:.3} s, p99 {:.3} s, max {:.3} s",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}

#[tokio::main]
async fn main() {
    let args = args();
    let asr: Vec<_> = (0..args.asr)
        .map(|_| tokio::spawn(asr_stream(args.url.clone(), args.key.clone(), args.seconds)))
        .collect();
    let tts: Vec<_> = (0..args.tts)
        .map(|_| {
            tokio::spawn(tts_stream(
                args.url.clone(),
                args.key.clone(),
                args.voice.clone(),
            ))
        })
        .collect();
    let (mut trips, mut held) = (Vec::new(), 0);
    for task in asr {
        let stream = task.await.unwrap();
        if let (Some(first), Some(last)) = (stream.first(), stream.last())
            && last - first < 1.0
        {
            held += 1;
        }
        trips.extend(stream);
    }
    let (mut firsts, mut rates, mut gaps) = (Vec::new(), Vec::new(), Vec::new());
    for task in tts {
        let (first, rate, g) = task.await.unwrap();
        firsts.push(first);
        rates.push(rate);
        gaps.extend(g);
    }
    println!("STT: {} streams, {held} held real time", args.asr);
    println!(
        "  marker round trip (model delay included): {}",
        percentiles(trips)
    );
    let real_time = rates.iter().filter(|r| **r >= 1.0).count();
    println!(
        "TTS: {} streams, {real_time} made audio at least at real time",
        args.tts
    );
    println!("  first audio: {}", percentiles(firsts));
    println!(
        "  audio made per second: {}",
        percentiles(rates).replace(" s", "x")
    );
    println!("  gap between frames: {}", percentiles(gaps));
}
