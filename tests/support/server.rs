//! Shared by the server tests: `kyutai serve` in-process on loopback, against the test hub's
//! tiny models, and websocket clients that speak the protocol as Kyutai's Python clients do.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use fluent_voice_kyutai::server::{Limits, Server, ServerConfig};
use fluent_voice_kyutai::{KyutaiEngine, KyutaiModelConfig};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::{TestHub, config};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A server running in this process, with its hub and cache.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: KyutaiEngine,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), fluent_voice_kyutai::MoshiError>>>,
    _hub: TestHub,
    _cache: tempfile::TempDir,
}

/// Fast limits for tests (timeouts in hundreds of milliseconds).
pub fn fast_limits() -> Limits {
    Limits {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(800),
        post_wait: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// Limits for many streams on a loaded machine: pings still fast, but a client busy for a
/// second is not taken for a dead one.
pub fn relaxed_limits() -> Limits {
    Limits {
        pong_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        ..fast_limits()
    }
}

impl TestServer {
    /// Starts a hub with `publish`'s repos and a server with `config` on a free port.
    pub async fn start(config_: ServerConfig, publish: impl FnOnce(&TestHub)) -> TestServer {
        Self::start_models(config_, publish, |models| models).await
    }

    /// [`TestServer::start`] with the engine's settings changed by `models` (another TTS
    /// family, say).
    pub async fn start_models(
        config_: ServerConfig,
        publish: impl FnOnce(&TestHub),
        models: impl FnOnce(KyutaiModelConfig) -> KyutaiModelConfig,
    ) -> TestServer {
        let hub = TestHub::start();
        publish(&hub);
        let cache = tempfile::tempdir().unwrap();
        // The engine settings `kyutai serve` gives: batched steps of the server's batch size.
        let models = models(config(&hub, cache.path()));
        let engine = KyutaiEngine::with_config(config_.engine_config(models))
            .await
            .unwrap();
        let server = Server::bind(config_.port(0), engine.clone()).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            engine,
            stop: Some(stop),
            task: Some(task),
            _hub: hub,
            _cache: cache,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connects to `path` with the `kyutai-api-key` header when `key` is given.
    pub async fn connect(&self, path: &str, key: Option<&str>) -> Result<Ws, WsError> {
        let mut request = self.url(path).into_client_request().unwrap();
        if let Some(key) = key {
            request
                .headers_mut()
                .insert("kyutai-api-key", key.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(ws, _)| ws)
    }

    /// Asks the server to shut down and waits for it.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    /// `GET path`, as (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = http_client().get(self.http(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// The slots of `path` in `/api/modules_info`: (used, total).
    pub async fn slots(&self, path: &str) -> (usize, usize) {
        let (_, body) = self.get("/api/modules_info").await;
        let modules: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let module = modules.iter().find(|m| m["path"] == path).unwrap();
        let number = |key: &str| module[key].as_str().unwrap().parse().unwrap();
        (number("used_slots"), number("total_slots"))
    }

    /// Waits until `path` has `used` slots taken.
    pub async fn wait_slots(&self, path: &str, used: usize) {
        for _ in 0..200 {
            if self.slots(path).await.0 == used {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{path} never had {used} slots used: {:?}",
            self.slots(path).await
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `{"type": "Audio", "pcm": [...]}` with float32 samples, as `msgpack.packb(...,
/// use_single_float=True)` writes it.
pub fn audio(pcm: &[f32]) -> Message {
    #[derive(Serialize)]
    struct Audio<'a> {
        r#type: &'static str,
        pcm: &'a [f32],
    }
    Message::binary(
        rmp_serde::to_vec_named(&Audio {
            r#type: "Audio",
            pcm,
        })
        .unwrap(),
    )
}

/// `{"type": "Marker", "id": id}`.
pub fn marker(id: i64) -> Message {
    #[derive(Serialize)]
    struct Marker {
        r#type: &'static str,
        id: i64,
    }
    Message::binary(
        rmp_serde::to_vec_named(&Marker {
            r#type: "Marker",
            id,
        })
        .unwrap(),
    )
}

/// `{"type": "Text", "text": text}`.
pub fn text(text: &str) -> Message {
    #[derive(Serialize)]
    struct Text<'a> {
        r#type: &'static str,
        text: &'a str,
    }
    Message::binary(
        rmp_serde::to_vec_named(&Text {
            r#type: "Text",
            text,
        })
        .unwrap(),
    )
}

/// `{"type": "Eos"}`.
pub fn eos() -> Message {
    Message::binary(b"\x81\xa4type\xa3Eos".to_vec())
}

/// Any msgpack map, from JSON (numbers as Python packs them: float64, ints).
pub fn msgpack(value: serde_json::Value) -> Message {
    Message::binary(rmp_serde::to_vec_named(&value).unwrap())
}

/// What the server sent: a decoded MessagePack message, raw bytes (TTS `Pcm`), or the close.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    Msg(serde_json::Value),
    Bytes(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl Got {
    pub fn kind(&self) -> String {
        match self {
            Got::Msg(v) => v["type"].as_str().unwrap_or("?").to_string(),
            Got::Bytes(_) => "bytes".into(),
            Got::Close(_) => "close".into(),
        }
    }
}

/// The next message (pings answered by the client library), or the close; `None` on timeout.
pub async fn next(ws: &mut Ws, timeout: Duration, raw: bool) -> Option<Got> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(None) => return Some(Got::Close(None)),
            Ok(Some(Err(_))) => return Some(Got::Close(None)),
            Ok(Some(Ok(message))) => message,
        };
        return Some(match message {
            Message::Binary(bytes) if raw => Got::Bytes(bytes.to_vec()),
            Message::Binary(bytes) => Got::Msg(rmp_serde::from_slice(&bytes).unwrap()),
            Message::Close(frame) => Got::Close(
                frame.map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string())),
            ),
            Message::Text(t) => panic!("the server sent a text frame: {t}"),
            _ => continue,
        });
    }
}

/// Every message until the close (which is included), within `timeout` in all.
pub async fn until_close(ws: &mut Ws, timeout: Duration, raw: bool) -> Vec<Got> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(ws, left, raw).await {
            None => panic!("no close within {timeout:?}; got {out:?}"),
            Some(got @ Got::Close(_)) => {
                out.push(got);
                return out;
            }
            Some(got) => out.push(got),
        }
    }
}

/// Sends, ignoring a socket the server already closed.
pub async fn send(ws: &mut Ws, message: Message) {
    let _ = ws.send(message).await;
}

/// Asserts that `got` ends with an `Error` whose message contains `needle`, then a close
/// with `code`.
pub fn assert_refused(got: &[Got], needle: &str, code: u16) {
    let n = got.len();
    assert!(n >= 2, "{got:?}");
    match (&got[n - 2], &got[n - 1]) {
        (Got::Msg(m), Got::Close(Some((c, _)))) => {
            assert_eq!(m["type"], "Error", "{got:?}");
            let message = m["message"].as_str().unwrap();
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            assert_eq!(*c, code, "{got:?}");
        }
        _ => panic!("expected an Error then a close, got {got:?}"),
    }
}

/// An HTTP client for the loopback server (no proxy from the environment).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
