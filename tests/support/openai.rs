//! Shared by the tests of the server's OpenAI routes (`server_openai`, `server_openai_sdk`):
//! the server they run, the library's answers to compare with, and OpenAI-shaped requests.
#![allow(dead_code)]

use std::time::Duration;

use fluent_voice_kyutai::server::{Limits, ServerConfig};
use fluent_voice_kyutai::voice::{
    Speaker, SpeechSource, SttConversationBuilder, Transcript, TtsConversation,
    TtsConversationBuilder,
};
use futures::StreamExt;
use serde_json::Value;

use crate::server_support::{TestServer, http_client, relaxed_limits};
use crate::stt_tiny;
use crate::support::{STT, TestHub, publish, publish_defaults};

pub const KEY: &str = "public_token";
pub const AUDIO: &str = "tests/fixtures/stt_parity/speech.wav";
/// The text the speech tests speak (`tools/openai_sdk/check.py` speaks the same).
pub const TEXT: &str = "Hello from Rust. This is OpenAI's speech route.";
pub const LONG: Duration = Duration::from_secs(60);

/// Both endpoints, the test key, over the tiny TTS and the talkative tiny STT.
pub async fn server_with(batch_size: usize, limits: Limits) -> TestServer {
    TestServer::start(
        ServerConfig::default()
            .endpoints(true, true)
            .batch_size(batch_size)
            .api_key(KEY)
            .limits(limits),
        |hub: &TestHub| {
            publish_defaults(hub);
            publish(hub, STT, "main", &stt_tiny::stt_repo_talkative());
        },
    )
    .await
}

pub async fn server() -> TestServer {
    server_with(2, relaxed_limits()).await
}

/// The library's samples for `text` spoken whole by `voice` with `seed` (what the server's
/// HTTP routes do).
pub async fn library_speech(server: &TestServer, text: &str, voice: &str, seed: u64) -> Vec<f32> {
    let mut audio = server
        .engine
        .tts()
        .with_speaker(Speaker::speaker("A").with_voice(voice).speak(text).build())
        .seed(seed)
        .synthesize()
        .await
        .unwrap()
        .into_stream();
    let mut samples = Vec::new();
    while let Some(chunk) = audio.next().await {
        samples.extend_from_slice(&chunk.unwrap().samples);
    }
    samples
}

/// The 16-bit samples every format carries (moshi-server's scaling).
pub fn pcm16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
        .collect()
}

pub fn le_i16(bytes: &[u8]) -> Vec<i16> {
    assert_eq!(bytes.len() % 2, 0, "whole 16-bit samples");
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Decodes a FLAC stream with `claxon`, a decoder independent of the encoder.
pub fn decode_flac(bytes: Vec<u8>) -> Vec<i16> {
    let mut reader = claxon::FlacReader::new(std::io::Cursor::new(bytes)).unwrap();
    let info = reader.streaminfo();
    assert_eq!(
        (info.sample_rate, info.channels, info.bits_per_sample),
        (24_000, 1, 16)
    );
    reader
        .samples()
        .map(|s| i16::try_from(s.unwrap()).unwrap())
        .collect()
}

pub fn bearer(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.header("authorization", format!("Bearer {KEY}"))
}

pub async fn post_json(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    bearer(http_client().post(server.http(path)))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Checks OpenAI's error shape and returns (status, error object).
pub async fn openai_error(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "an error of status {status} is JSON"
    );
    let body: Value = response.json().await.unwrap();
    let error = body["error"].clone();
    for key in ["message", "type", "param", "code"] {
        assert!(error.get(key).is_some(), "`{key}` in {body}");
    }
    assert!(
        !error["message"].as_str().unwrap().is_empty(),
        "a message: {body}"
    );
    (status, error)
}

/// A multipart/form-data body: text fields, then the file (if any); (content type, body).
pub fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "kyutai-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some((file_name, bytes)) = file {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub async fn transcribe(
    server: &TestServer,
    fields: &[(&str, &str)],
    file: Option<(&str, &[u8])>,
) -> reqwest::Response {
    let (content_type, body) = multipart(fields, file);
    bearer(http_client().post(server.http("/v1/audio/transcriptions")))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The library's transcript of the file (what the route must answer).
pub async fn library_transcript(server: &TestServer, bytes: &[u8]) -> Transcript {
    server
        .engine
        .stt()
        .with_source(SpeechSource::from_bytes(bytes.to_vec()))
        .listen()
        .await
        .unwrap()
        .transcript()
        .await
        .unwrap()
}

/// The `data:` payloads of a server-sent event stream, as JSON.
pub fn sse_events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap())
        })
        .collect()
}

/// A small base64 decoder (SSE events, CDP screenshots) (the standard alphabet, with padding).
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for quad in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = quad
            .iter()
            .filter(|c| **c != b'=')
            .map(|c| value(*c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}
