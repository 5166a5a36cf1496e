//! `kyutai serve`: Kyutai's streaming server protocol (moshi-server's) in pure Rust, so that
//! Kyutai's own client scripts and Unmute work unchanged against one binary with no Python.
//!
//! - `GET /api/asr-streaming` (websocket): audio in, words out; `POST` the same path with an
//!   audio file for its words as JSON.
//! - `GET /api/tts_streaming?voice=..&format=..` (websocket): text in, audio and timed words
//!   out; `POST` `{text, voice}` for a WAV.
//! - `GET /api/modules_info` (slots used and total, per endpoint, for load balancers),
//!   `/api/build_info`, `/api/health`, `/metrics` (Prometheus).
//!
//! The server is a thin protocol layer over the library: each stream is one conversation of a
//! shared [`KyutaiEngine`], and it holds one of its endpoint's slots while it lasts.
//!
//! ```no_run
//! # async fn run() -> Result<(), fluent_voice_kyutai::MoshiError> {
//! use fluent_voice_kyutai::KyutaiEngine;
//! use fluent_voice_kyutai::server::{Server, ServerConfig, shutdown_signal};
//!
//! let engine = KyutaiEngine::new().await?;
//! let server = Server::bind(ServerConfig::default().api_key("public_token"), engine).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(shutdown_signal()).await
//! # }
//! ```

mod asr;
mod auth;
mod config;
mod messages;
mod metrics;
#[cfg(feature = "opus")]
mod ogg_opus;
mod pocket_api;
mod slots;
mod socket;
mod tts;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

pub use config::{Limits, LimitsFile, ServerConfig, ServerFile};

use crate::KyutaiEngine;
use crate::error::MoshiError;
use auth::{Auth, Identity};
use metrics::Metrics;
use slots::Slots;
use socket::End;

/// The paths, as moshi-server's configs name them.
const ASR_PATH: &str = "/api/asr-streaming";
const TTS_PATH: &str = "/api/tts_streaming";

/// What every request handler shares.
pub(crate) struct AppState {
    engine: KyutaiEngine,
    config: ServerConfig,
    auth: Auth,
    asr: Option<Slots>,
    tts: Option<Slots>,
    metrics: Metrics,
    /// Turns true when the server shuts down; streams end cleanly on it.
    shutdown: watch::Receiver<bool>,
}

/// A server bound to its address, its models loaded (unless lazy).
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
}

impl Server {
    /// Checks `config`, fetches and loads the models of the endpoints served (unless
    /// `config.lazy`), and binds the address.
    pub async fn bind(config: ServerConfig, engine: KyutaiEngine) -> Result<Server, MoshiError> {
        config.validate()?;
        let engine_batch = engine.manager().config().batch_size;
        if config.asr && engine_batch < config.batch_size {
            log::warn!(
                target: "kyutai::server",
                "the engine's STT batch ({engine_batch}) is smaller than the server's \
                 ({}): the streams run in several batched steps",
                config.batch_size
            );
        }
        let engine_tts_batch = engine.manager().config().tts_batch_size;
        if config.tts && engine_tts_batch < config.batch_size {
            log::info!(
                target: "kyutai::server",
                "the engine's TTS batch ({engine_tts_batch}) is smaller than the server's \
                 ({}): the TTS streams run in several batched steps",
                config.batch_size
            );
        }
        if !config.lazy {
            if config.asr {
                engine.stt_model().await?;
            }
            if config.tts {
                engine.load_tts().await?;
            }
        }
        let address = SocketAddr::new(config.addr, config.port);
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
            MoshiError::io(
                "could not listen",
                std::path::Path::new(&address.to_string()),
                e,
            )
        })?;
        let (stop, shutdown) = watch::channel(false);
        let slots = |on: bool| on.then(|| Slots::new(config.batch_size));
        let state = Arc::new(AppState {
            auth: Auth::new(&config.api_keys),
            asr: slots(config.asr),
            tts: slots(config.tts),
            metrics: Metrics::new().with_endpoints(
                &[(config.asr, "asr"), (config.tts, "tts")]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, name)| *name)
                    .collect::<Vec<_>>(),
            ),
            engine,
            config,
            shutdown,
        });
        Ok(Server {
            listener,
            state,
            stop,
        })
    }

    /// The address the server listens on (with the port chosen when it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// True when no API key is configured: every client is accepted.
    pub fn is_open(&self) -> bool {
        self.state.auth.is_open()
    }

    /// Serves until `shutdown` completes; then stops accepting, lets the streams in flight
    /// end cleanly (each gets a close frame, "going away"), and returns once they have, or
    /// after the grace period.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MoshiError> {
        let Server {
            listener,
            state,
            stop,
        } = self;
        let app = router(state.clone());
        let stop_streams = stop.clone();
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_streams.send(true);
        })
        .await
        .map_err(|e| MoshiError::io("the server failed", std::path::Path::new("-"), e))?;
        let _ = stop.send(true);
        let streams_ended = async {
            for slots in [&state.asr, &state.tts].into_iter().flatten() {
                slots.all_free().await;
            }
        };
        let grace = state.config.limits.shutdown_grace;
        if tokio::time::timeout(grace, streams_ended).await.is_err() {
            log::warn!(target: "kyutai::server", "streams still open after {grace:?}; exiting");
        }
        Ok(())
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM: the signals a terminal, a service manager or a
/// container runtime sends to stop the server.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM can be watched");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Completes once the server shuts down (the watch's guard is not held across awaits, so the
/// streams' futures stay `Send`).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn router(state: Arc<AppState>) -> Router {
    let limits = &state.config.limits;
    let mut app = Router::new()
        .route("/api/modules_info", get(modules_info))
        .route("/api/build_info", get(build_info))
        .route("/api/health", get(health))
        .route("/metrics", get(metrics));
    if state.asr.is_some() {
        app = app.route(ASR_PATH, get(asr_socket).post(asr::post));
    }
    if state.tts.is_some() {
        app = app.route(TTS_PATH, get(tts_socket).post(tts::post));
        if let crate::models::TtsFamily::Pocket(_) = &state.engine.manager().config().tts_family() {
            app = app
                .route(pocket_api::TTS, post(pocket_api::tts))
                .route(pocket_api::HEALTH, get(pocket_api::health));
        }
    }
    app.layer(DefaultBodyLimit::max(limits.max_post_bytes))
        .with_state(state)
}

/// The websocket limits: tungstenite's own cap sits above ours, so that a message a little
/// over the limit reaches us and gets a proper `Error` answer.
fn upgrade(ws: WebSocketUpgrade, state: &AppState) -> WebSocketUpgrade {
    let cap = state.config.limits.max_message_bytes * 2 + (64 << 10);
    ws.max_message_size(cap).max_frame_size(cap)
}

async fn asr_socket(
    State(state): State<Arc<AppState>>,
    client: Client,
    ws: WebSocketUpgrade,
) -> Response {
    let s = state.clone();
    upgrade(ws, &state).on_upgrade(move |socket| asr::serve_socket(s, socket, client))
}

async fn tts_socket(
    State(state): State<Arc<AppState>>,
    client: Client,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let request = match tts::Request::parse(&query) {
        Ok(request) => request,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let s = state.clone();
    upgrade(ws, &state).on_upgrade(move |socket| tts::serve_socket(s, socket, client, request))
}

/// The client of a request, once authorized: who it is, for the connection log. Extracting it
/// checks the API key; a request without a valid one gets HTTP 401 before any upgrade.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    address: String,
    identity: Identity,
}

impl Client {
    /// The connection's one log line: who, which endpoint, how long, how it ended.
    fn log(&self, endpoint: &str, started: Instant, end: &End) {
        log::info!(
            target: "kyutai::server",
            "{} ({}) {endpoint} {:.1}s {}",
            self.address,
            self.identity,
            started.elapsed().as_secs_f64(),
            end.outcome()
        );
    }
}

impl FromRequestParts<Arc<AppState>> for Client {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.to_string());
        // Behind a proxy, its X-Real-IP (as moshi-server logs it).
        let real_ip = parts
            .headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let address = real_ip.or(peer).unwrap_or_else(|| "?".into());
        let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
            .map(|Query(q)| q)
            .unwrap_or_default();
        match state
            .auth
            .check(&parts.headers, query.get("auth_id").map(String::as_str))
        {
            Some(identity) => Ok(Client { address, identity }),
            None => {
                log::info!(target: "kyutai::server", "{address} refused: no valid API key");
                Err((
                    StatusCode::UNAUTHORIZED,
                    "a valid kyutai-api-key is required",
                )
                    .into_response())
            }
        }
    }
}

/// moshi-server's `/api/modules_info`: one entry per endpoint, every value a string.
async fn modules_info(State(state): State<Arc<AppState>>) -> Response {
    let config = state.engine.manager().config();
    let mut modules = Vec::new();
    let mut entry = |kind: &str, path: &str, lm: &str, slots: &Slots| {
        modules.push(HashMap::from([
            ("type", kind.to_string()),
            ("path", path.to_string()),
            ("lm", lm.to_string()),
            ("used_slots", slots.used().to_string()),
            ("total_slots", slots.total().to_string()),
        ]));
    };
    if let Some(slots) = &state.asr {
        entry("batched_asr", ASR_PATH, &config.stt_repo, slots);
    }
    if let Some(slots) = &state.tts {
        entry("tts", TTS_PATH, &state.engine.tts_model_name(), slots);
    }
    axum::Json(modules).into_response()
}

async fn build_info() -> Response {
    axum::Json(HashMap::from([
        ("name", env!("CARGO_PKG_NAME")),
        ("version", env!("CARGO_PKG_VERSION")),
        ("protocol", "moshi-server"),
    ]))
    .into_response()
}

/// 200 while serving, 503 once shutting down (so that a load balancer stops sending).
async fn health(State(state): State<Arc<AppState>>) -> Response {
    if *state.shutdown.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
