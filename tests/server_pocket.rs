//! `kyutai serve` with Pocket TTS, on the tiny model of `tests/fixtures/pocket`: Kyutai's
//! websocket TTS endpoint (as `tts_rust_server.py` speaks it) and the reference's own HTTP API
//! (`POST /tts`, `GET /health`, as `pocket-tts serve` answers them).

#[path = "support/server.rs"]
mod server_support;
mod support;

use std::time::Duration;

use fluent_voice_kyutai::models::TtsFamily;
use fluent_voice_kyutai::server::ServerConfig;
use server_support::*;
use support::pocket::*;

const KEY: &str = "public_token";
const LONG: Duration = Duration::from_secs(60);

/// A server of the tiny Pocket model whose EOS threshold and temperature are the `short`
/// case's.
async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let threshold = case("short")["eos_threshold"].as_f64().unwrap();
    let yaml = config_file(dir.path(), threshold, false);
    // POST /tts samples at the config's temperature: 0 here, as the recorded case.
    let greedy = std::fs::read_to_string(&yaml)
        .unwrap()
        .replace("default_temperature: 0.3", "default_temperature: 0.0");
    std::fs::write(&yaml, greedy).unwrap();
    let server = TestServer::start_models(
        ServerConfig::default()
            .endpoints(false, true)
            .api_key(KEY)
            .limits(relaxed_limits()),
        publish_pocket,
        move |models| models.tts_model(TtsFamily::Pocket(yaml.to_string_lossy().into())),
    )
    .await;
    (server, dir)
}

/// A multipart form of text fields and at most one file.
fn form(fields: &[(&str, &str)], file: Option<(&str, &str, Vec<u8>)>) -> (String, Vec<u8>) {
    let boundary = "kyutai-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .bytes(),
        );
    }
    if let Some((name, file_name, bytes)) = file {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .bytes(),
        );
        body.extend(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_tts(server: &TestServer, form: (String, Vec<u8>)) -> (u16, Vec<u8>) {
    let response = reqwest::Client::new()
        .post(server.http("/tts"))
        .header("content-type", form.0)
        .header("kyutai-api-key", KEY)
        .body(form.1)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

fn wav_samples(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(&bytes[..4], b"RIFF");
    bytes[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32767.0)
        .collect()
}

#[tokio::test]
async fn post_tts_answers_as_pocket_tts_serve_does() {
    let (server, _dir) = server().await;
    let (status, body) = server.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "healthy"
    );
    let text = case("short")["text"].as_str().unwrap().to_string();
    // The default voice (alba) and the same voice by name give the reference's audio.
    for fields in [
        vec![("text", text.as_str())],
        vec![("text", text.as_str()), ("voice_url", "alba")],
    ] {
        let (status, body) = post_tts(&server, form(&fields, None)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let d = max_diff(&wav_samples(&body), &reference_pcm("short"));
        assert!(
            d < 1e-4 + 1.0 / 32767.0,
            "POST /tts differs from the reference by {d}"
        );
    }
    // An uploaded voice is cloned (the tiny model's open weights hold the encoder).
    let wav = std::fs::read(fixtures().join("voice.wav")).unwrap();
    let (status, body) = post_tts(
        &server,
        form(
            &[("text", "Hello.")],
            Some(("voice_wav", "voice.wav", wav.clone())),
        ),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(wav_samples(&body).len() >= 1920);
    // The reference's refusals.
    let (status, body) = post_tts(&server, form(&[("text", "  ")], None)).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("Text cannot be empty"));
    let (status, body) = post_tts(
        &server,
        form(
            &[("text", "Hi."), ("voice_url", "alba")],
            Some(("voice_wav", "v.wav", wav)),
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("Cannot provide both"));
    let (status, body) = post_tts(
        &server,
        form(&[("text", "Hi."), ("voice_url", "nobody")], None),
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("voice_url must start with"));
    // The server still speaks after all that.
    let (status, _) = post_tts(&server, form(&[("text", "Fine.")], None)).await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn the_websocket_endpoint_speaks_pocket_tts_as_the_library_does() {
    let (server, _dir) = server().await;
    let text = case("short")["text"].as_str().unwrap().to_string();
    let mut ws = server
        .connect(
            "/api/tts_streaming?voice=alba&seed=3&temperature=0&format=PcmMessagePack",
            Some(KEY),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut ws, LONG, false).await.unwrap().kind(), "Ready");
    for word in text.split_whitespace() {
        send(&mut ws, server_support::text(word)).await;
    }
    send(&mut ws, eos()).await;
    let got = until_close(&mut ws, LONG, false).await;
    let mut samples = Vec::new();
    for g in &got {
        if let Got::Msg(m) = g
            && m["type"] == "Audio"
        {
            samples.extend(
                m["pcm"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32),
            );
        }
    }
    // The words arrive one by one; the sentence is spoken once it is complete, as the whole
    // text would be: the reference's audio.
    let d = max_diff(&samples, &reference_pcm("short"));
    assert!(
        d < 1e-4,
        "the websocket audio differs from the reference by {d}"
    );
    assert_eq!(
        got.last().unwrap(),
        &Got::Close(Some((1000, String::new())))
    );
    server.shutdown().await;
}
