//! `kyutai serve`: one HTTP server with three faces over the same engine, slots, keys, limits,
//! metrics and logs:
//!
//! - [`kyutai`]: Kyutai's streaming protocol (moshi-server's), in pure Rust, so that Kyutai's own
//!   client scripts and Unmute work unchanged against one binary with no Python;
//! - [`openai`]: OpenAI's audio API (`/v1/audio/speech`, `/v1/audio/transcriptions`,
//!   `/v1/models`), so that apps written for OpenAI's SDKs work by changing the base URL;
//! - [`page`]: a page at `/` to try both in a browser, over the Kyutai websockets.
//!
//! The server is a thin protocol layer over the library: each stream is one conversation of a
//! shared [`KyutaiEngine`], and it holds one of its endpoint's slots while it lasts (a
//! [`visit::Visit`], whose tail is written once for every route).
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

mod audio_out;
mod auth;
mod config;
pub mod kyutai;
mod metrics;
#[cfg(feature = "opus")]
mod ogg_opus;
pub mod openai;
pub mod page;
mod pocket_api;
mod slots;
mod visit;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

pub use config::{Limits, LimitsFile, ServerConfig, ServerFile};

use crate::KyutaiEngine;
use crate::error::MoshiError;
use auth::{Auth, Identity};
use metrics::Metrics;
use slots::Slots;

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
    /// When the server started, in Unix seconds (OpenAI's model objects' `created`).
    started_unix: u64,
}

impl AppState {
    /// True once the server has begun to shut down.
    fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
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
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
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

/// The three faces, with the limit on request bodies.
fn router(state: Arc<AppState>) -> Router {
    let limits = &state.config.limits;
    kyutai::routes(&state)
        .merge(pocket_api::routes(&state))
        .merge(openai::routes(&state))
        .merge(page::routes(&state))
        .layer(DefaultBodyLimit::max(limits.max_post_bytes))
        .with_state(state)
}

/// The client of a request, once authorized: who it is, for the connection log. Extracting it
/// checks the API key; a request without a valid one gets HTTP 401 before any upgrade.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    address: String,
    identity: Identity,
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
                // OpenAI's SDKs read their error shape (and raise `AuthenticationError`).
                Err(if parts.uri.path().starts_with(openai::PREFIX) {
                    openai::Error::unauthorized().into_response()
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        "a valid kyutai-api-key is required",
                    )
                        .into_response()
                })
            }
        }
    }
}
