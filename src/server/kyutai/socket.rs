//! One websocket client: reading with the size limit and keepalive (pings, no-pong and idle
//! timeouts, as moshi-server has them), writing protocol messages, and ending with an `Error`
//! and a close frame, or a clean close; [`serve`] is the life of every websocket stream.

use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use serde::Serialize;
use tokio::time::{Interval, MissedTickBehavior};

use super::messages::encode;
use crate::server::config::Limits;
use crate::server::visit::{End, Visit, code};

/// A data message from the client.
pub(crate) enum Incoming {
    Binary(Bytes),
    Text(String),
}

/// Serves one websocket stream of `visit`: takes its slot (or ends with `refusal`, or "no free
/// channels"), runs `stream`, ends with an `Error` message made by `error` and a close frame, then
/// the visit's tail (count, log line, free slot), and waits briefly for the client's close.
pub(crate) async fn serve<T: Serialize>(
    mut visit: Visit,
    mut conn: Conn,
    refusal: Option<End>,
    error: impl FnOnce(String) -> T,
    stream: impl AsyncFnOnce(&mut Conn) -> End,
) {
    let end = match refusal.map_or_else(|| visit.take_slot(), Err) {
        Ok(()) => stream(&mut conn).await,
        Err(end) => end,
    };
    conn.finish(&end, error).await;
    visit.end(end);
    drop(visit);
    conn.await_close().await;
}

/// How a stream's server messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// MessagePack maps (every ASR stream; TTS `PcmMessagePack`).
    MessagePack,
    /// TTS `Pcm`: bare little-endian `f32` samples, no messages; errors go in the close frame.
    RawPcm,
}

/// A websocket client with its keepalive state.
pub(crate) struct Conn {
    ws: WebSocket,
    limits: Limits,
    framing: Framing,
    last_seen: Instant,
    last_data: Instant,
    /// A close frame was sent.
    closing: bool,
}

/// The ping clock of one stream (kept outside [`Conn`], so that a stream's loop can wait on
/// it and on the socket at once).
pub(crate) fn ping_clock(limits: &Limits) -> Interval {
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + limits.ping_interval,
        limits.ping_interval,
    );
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping
}

impl Conn {
    pub(crate) fn new(ws: WebSocket, limits: &Limits, framing: Framing) -> Conn {
        Conn {
            ws,
            limits: limits.clone(),
            framing,
            last_seen: Instant::now(),
            last_data: Instant::now(),
            closing: false,
        }
    }

    /// The next data message. Cancel-safe (it only awaits the socket's next frame).
    pub(crate) async fn recv(&mut self) -> Result<Incoming, End> {
        loop {
            let message = match self.ws.recv().await {
                None => return Err(End::ClientClosed),
                Some(Err(e)) => {
                    let text = e.to_string();
                    // tungstenite refuses frames over its own (larger) limit before we see them.
                    return Err(if text.contains("too long") || text.contains("too big") {
                        End::Refused(
                            code::TOO_BIG,
                            format!("message too large: {text}"),
                            "too_big",
                        )
                    } else {
                        End::ClientClosed
                    });
                }
                Some(Ok(message)) => message,
            };
            self.last_seen = Instant::now();
            let size = match &message {
                Message::Binary(b) => b.len(),
                Message::Text(t) => t.len(),
                _ => 0,
            };
            if size > self.limits.max_message_bytes {
                return Err(End::Refused(
                    code::TOO_BIG,
                    format!(
                        "message of {size} bytes is over this server's limit of {} bytes",
                        self.limits.max_message_bytes
                    ),
                    "too_big",
                ));
            }
            match message {
                Message::Binary(bytes) => {
                    self.last_data = self.last_seen;
                    return Ok(Incoming::Binary(bytes));
                }
                Message::Text(text) => {
                    self.last_data = self.last_seen;
                    return Ok(Incoming::Text(text.to_string()));
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => return Err(End::ClientClosed),
            }
        }
    }

    /// At a ping time: drops a client silent too long (no pong), or idle too long while the
    /// server waits for its data (`awaiting_data`); otherwise pings it.
    pub(crate) async fn keepalive(&mut self, awaiting_data: bool) -> Result<(), End> {
        if self.last_seen.elapsed() > self.limits.pong_timeout {
            return Err(End::Refused(
                code::POLICY,
                format!(
                    "no answer to pings for {:.1} s",
                    self.last_seen.elapsed().as_secs_f64()
                ),
                "timeout",
            ));
        }
        if awaiting_data && self.last_data.elapsed() > self.limits.idle_timeout {
            return Err(End::Refused(
                code::POLICY,
                format!(
                    "no data for {:.1} s",
                    self.last_data.elapsed().as_secs_f64()
                ),
                "timeout",
            ));
        }
        self.send_raw(Message::Ping(Bytes::new())).await
    }

    /// Restarts the idle clock (while the server itself held the client back, its silence
    /// does not count).
    pub(crate) fn excuse_silence(&mut self) {
        self.last_seen = Instant::now();
        self.last_data = self.last_seen;
    }

    /// Sends a protocol message (dropped in raw framing, which carries audio only).
    pub(crate) async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), End> {
        match self.framing {
            Framing::MessagePack => self.send_raw(Message::Binary(encode(message).into())).await,
            Framing::RawPcm => Ok(()),
        }
    }

    /// Sends raw bytes as a binary frame.
    pub(crate) async fn send_bytes(&mut self, bytes: Vec<u8>) -> Result<(), End> {
        self.send_raw(Message::Binary(bytes.into())).await
    }

    async fn send_raw(&mut self, message: Message) -> Result<(), End> {
        self.ws.send(message).await.map_err(|_| End::ClientClosed)
    }

    /// Ends the stream: an `Error` message first when it failed (built by `error` from the
    /// text), then a close frame with the matching code.
    pub(crate) async fn finish<T: Serialize>(
        &mut self,
        end: &End,
        error: impl FnOnce(String) -> T,
    ) {
        let (code, reason) = match end {
            End::Done => (code::NORMAL, String::new()),
            End::ClientClosed => (code::NORMAL, String::new()),
            End::Shutdown => (code::GOING_AWAY, "server shutting down".to_string()),
            End::Refused(code, message, _) => (*code, message.clone()),
            End::Failed(message) => (code::SERVER_ERROR, message.clone()),
        };
        if matches!(end, End::ClientClosed) {
            // The client's close frame queued tungstenite's reply; flushing sends it, so that
            // the client sees a clean close (a browser reports 1006 otherwise).
            let _ = futures::SinkExt::flush(&mut self.ws).await;
            return;
        }
        if code != code::NORMAL {
            let _ = self.send(&error(reason.clone())).await;
        }
        let frame = CloseFrame {
            code,
            reason: truncate(&reason, 120).into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        self.closing = true;
    }

    /// After [`finish`](Self::finish): waits briefly for the client's close, so that it sees a
    /// clean close rather than a reset.
    pub(crate) async fn await_close(mut self) {
        if !self.closing {
            return;
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while let Some(Ok(message)) = self.ws.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// At most `max` bytes of `text`, cut at a character boundary (close reasons are short).
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
