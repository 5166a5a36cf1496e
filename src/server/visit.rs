//! One client's visit to a route, from the connection count to the log line: written once for
//! every face of the server (Kyutai's websockets and POSTs, OpenAI's routes), so that each
//! route counts, limits, logs and frees its slot the same way.
//!
//! A [`Visit`] holds the route's slot while the stream lasts and does its tail when it is
//! dropped: it counts how the stream ended, writes the one log line, and frees the slot (in that
//! order, so that a shutdown, which waits for every slot, sees the log line first). Because the
//! tail runs on drop, a streamed HTTP body that owns its visit is logged when the body ends or the
//! client hangs up, not when its headers go out.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use futures::{Stream, StreamExt};
use prometheus::IntGauge;

use super::slots::{Slot, Slots};
use super::{AppState, Client};

/// Close codes (RFC 6455). They also class an [`End`] for the HTTP routes
/// ([`End::http_status`]).
pub(crate) mod code {
    /// The stream ended normally.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client sent data of a kind this endpoint does not take.
    pub const UNSUPPORTED: u16 = 1003;
    /// The client broke the protocol (malformed message, timeout).
    pub const POLICY: u16 = 1008;
    /// A message was over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server failed.
    pub const SERVER_ERROR: u16 = 1011;
    /// Every slot is taken: try again later.
    pub const TRY_AGAIN: u16 = 1013;
}

/// Why a stream ends (also its outcome in the connection log).
#[derive(Debug, Clone)]
pub(crate) enum End {
    /// The stream finished (TTS: the speech has ended).
    Done,
    /// The client closed the socket or went away.
    ClientClosed,
    /// The server is shutting down.
    Shutdown,
    /// The client is refused or broke the protocol: `(close code, message, metric kind)`.
    Refused(u16, String, &'static str),
    /// The engine failed.
    Failed(String),
}

impl End {
    pub(crate) fn bad(message: impl Into<String>) -> End {
        End::Refused(code::POLICY, message.into(), "bad_input")
    }

    /// Every slot of the route is taken.
    pub(crate) fn no_free_channels() -> End {
        End::Refused(
            code::TRY_AGAIN,
            "no free channels".into(),
            "no_free_channels",
        )
    }

    /// For the connection log.
    pub(crate) fn outcome(&self) -> String {
        match self {
            End::Done => "done".into(),
            End::ClientClosed => "closed by the client".into(),
            End::Shutdown => "server shutdown".into(),
            End::Refused(_, m, _) => format!("refused: {m}"),
            End::Failed(m) => format!("failed: {m}"),
        }
    }

    /// What the client is told.
    pub(crate) fn message(&self) -> String {
        match self {
            End::Done => "done".into(),
            End::ClientClosed => "closed by the client".into(),
            End::Shutdown => "the server is shutting down".into(),
            End::Refused(_, m, _) | End::Failed(m) => m.clone(),
        }
    }

    /// The HTTP status that answers this end on a plain HTTP route.
    pub(crate) fn http_status(&self) -> StatusCode {
        match self {
            End::Done | End::ClientClosed => StatusCode::OK,
            End::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
            // As moshi-server answers its POSTs (OpenAI's face answers 429 instead).
            End::Refused(code::TRY_AGAIN, ..) => StatusCode::SERVICE_UNAVAILABLE,
            End::Refused(code::TOO_BIG, ..) => StatusCode::PAYLOAD_TOO_LARGE,
            End::Refused(code::GOING_AWAY, ..) => StatusCode::SERVICE_UNAVAILABLE,
            End::Refused(..) => StatusCode::BAD_REQUEST,
            End::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Which slots and metric series a route uses: the websocket, POST and OpenAI routes of one
/// capability share them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Asr,
    Tts,
}

impl Endpoint {
    /// The metrics label (and the Kyutai routes' name in the log).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Endpoint::Asr => "asr",
            Endpoint::Tts => "tts",
        }
    }

    fn slots(self, state: &AppState) -> &Slots {
        match self {
            Endpoint::Asr => state.asr.as_ref(),
            Endpoint::Tts => state.tts.as_ref(),
        }
        .expect("a route exists only when its endpoint is served")
    }
}

/// One client's visit to a route: see the module docs.
pub(crate) struct Visit {
    state: Arc<AppState>,
    client: Client,
    endpoint: Endpoint,
    /// The route's name in the log line.
    name: &'static str,
    started: Instant,
    /// The slot and the open-streams gauge it raised.
    slot: Option<(Slot, IntGauge)>,
    end: End,
}

impl Visit {
    /// Counts the connection; the visit ends "closed by the client" unless told otherwise.
    pub(crate) fn new(
        state: &Arc<AppState>,
        client: Client,
        endpoint: Endpoint,
        name: &'static str,
    ) -> Visit {
        state
            .metrics
            .connections
            .with_label_values(&[endpoint.label()])
            .inc();
        Visit {
            state: state.clone(),
            client,
            endpoint,
            name,
            started: Instant::now(),
            slot: None,
            end: End::ClientClosed,
        }
    }

    /// The server's shared state.
    pub(crate) fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Takes a free slot now (a stream), or says that none is free.
    pub(crate) fn take_slot(&mut self) -> Result<(), End> {
        let slot = self.endpoint.slots(&self.state).try_acquire();
        self.hold(slot)
    }

    /// Takes a slot, waiting up to the `post_wait` limit for one (a request that can queue
    /// briefly, as moshi-server's POSTs do).
    pub(crate) async fn wait_slot(&mut self) -> Result<(), End> {
        let wait = self.state.config.limits.post_wait;
        let slot = self.endpoint.slots(&self.state).acquire_within(wait).await;
        self.hold(slot)
    }

    fn hold(&mut self, slot: Option<Slot>) -> Result<(), End> {
        let slot = slot.ok_or_else(End::no_free_channels)?;
        let open = self
            .state
            .metrics
            .open
            .with_label_values(&[self.endpoint.label()]);
        open.inc();
        self.slot = Some((slot, open));
        Ok(())
    }

    /// Hands the visit to a streamed response body: the visit ends "done" when `stream` ends,
    /// "failed" at its first error, and "closed by the client" when the body is dropped before
    /// its end (the client hung up); its tail runs then.
    pub(crate) fn stream<T, E: std::fmt::Display>(
        mut self,
        stream: impl Stream<Item = Result<T, E>> + Send + 'static,
    ) -> impl Stream<Item = Result<T, E>> + Send + 'static {
        self.end = End::ClientClosed;
        futures::stream::unfold(
            (Box::pin(stream), Some(self)),
            |(mut stream, mut visit)| async move {
                let item = stream.next().await;
                match (&item, visit.as_mut()) {
                    (Some(Err(e)), Some(v)) => v.end(End::Failed(e.to_string())),
                    (None, Some(v)) => v.end(End::Done),
                    _ => {}
                }
                match item {
                    Some(item) => Some((item, (stream, visit))),
                    None => {
                        drop(visit.take());
                        None
                    }
                }
            },
        )
    }

    /// Records how the visit ended (what the tail counts and logs).
    pub(crate) fn end(&mut self, end: End) {
        self.end = end;
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        let label = self.endpoint.label();
        self.state.metrics.count_end(label, &self.end);
        log::info!(
            target: "kyutai::server",
            "{} ({}) {} {:.1}s {}",
            self.client.address,
            self.client.identity,
            self.name,
            self.started.elapsed().as_secs_f64(),
            self.end.outcome()
        );
        if let Some((slot, open)) = self.slot.take() {
            open.dec();
            drop(slot);
        }
    }
}
