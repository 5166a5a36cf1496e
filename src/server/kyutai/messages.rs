//! The MessagePack messages of Kyutai's protocol, exactly as moshi-server (rmp-serde, struct-map
//! encoding, an internal `"type"` tag) and its Python clients (msgpack) write and read them.
//! The field names and types follow moshi-server's `asr.rs` (`InMsg`, `OutMsg`) and
//! `py_module.rs` / `tts.rs` (the TTS `InMsg`, `OutMsg`): `f64` times, `f32` samples and
//! probabilities, `i64` marker ids.

use serde::{Deserialize, Serialize};

/// What an ASR client sends (moshi-server `asr.rs` `InMsg`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type")]
pub(crate) enum AsrIn {
    /// Used inside moshi-server's batched mode; accepted and ignored.
    Init,
    /// Echo `id` back once the audio sent before it has been transcribed.
    Marker {
        /// The client's marker id.
        id: i64,
    },
    /// 24 kHz mono samples, any count.
    Audio {
        /// Samples in `[-1, 1]`.
        pcm: Vec<f32>,
    },
    /// Ogg/Opus input: the bytes of an Ogg stream of Opus packets, in pieces of any size
    /// (decoded with the `opus` feature; refused without it).
    OggOpus {
        /// The Ogg bytes.
        #[serde(deserialize_with = "bytes_or_seq")]
        data: Vec<u8>,
    },
}

/// What the ASR endpoint sends (moshi-server `asr.rs` `OutMsg`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type")]
pub(crate) enum AsrOut {
    /// A word and when it started, in seconds of the client's audio.
    Word {
        /// The word.
        text: String,
        /// Its start, in seconds.
        start_time: f64,
    },
    /// The end of the last word, in seconds.
    EndWord {
        /// Its end, in seconds.
        stop_time: f64,
    },
    /// A marker, echoed.
    Marker {
        /// The client's id.
        id: i64,
    },
    /// One model step's pause probabilities, for models with voice-activity heads.
    Step {
        /// The model's step count.
        step_idx: usize,
        /// One probability per head.
        prs: Vec<f32>,
        /// Samples received and not yet heard by the model.
        buffered_pcm: usize,
    },
    /// Something went wrong; the server closes the socket after it.
    Error {
        /// What, in words.
        message: String,
    },
    /// The stream holds a slot and the model is ready.
    Ready,
}

/// What a TTS client sends (moshi-server `py_module.rs` `InMsg`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type")]
pub(crate) enum TtsIn {
    /// Text to say (words, as they arrive).
    Text {
        /// The text.
        text: String,
    },
    /// A custom voice's embeddings, which this server does not take.
    Voice {
        /// The flattened embeddings.
        embeddings: Vec<f32>,
        /// Their shape.
        shape: Vec<usize>,
    },
    /// The end of the text.
    Eos,
}

/// What the TTS endpoint sends (moshi-server `tts.rs` `OutMsg`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type")]
pub(crate) enum TtsOut {
    /// A word as spoken, in seconds of the audio.
    Text {
        /// The word.
        text: String,
        /// Its start, in seconds.
        start_s: f64,
        /// Its end, in seconds.
        stop_s: f64,
    },
    /// One 80 ms frame of 24 kHz audio.
    Audio {
        /// 1920 samples.
        pcm: Vec<f32>,
    },
    /// Ogg/Opus pages (`OggOpusMessagePack`): the header pages first, then the pages of the
    /// audio as it is made.
    #[cfg_attr(not(feature = "opus"), allow(dead_code))]
    OggOpus {
        /// The bytes of whole Ogg pages.
        data: Vec<u8>,
    },
    /// Something went wrong; the server closes the socket after it.
    Error {
        /// What, in words.
        message: String,
    },
    /// The stream holds a slot and the voice is loaded.
    Ready,
}

/// Encodes a message as moshi-server does: a MessagePack map with named fields.
pub(crate) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(message).expect("protocol messages always encode")
}

/// Decodes a client's message; the error says what was wrong, for the client.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| format!("invalid message: {e}"))
}

/// Bytes as MessagePack `bin` (what Python's `msgpack` writes for `bytes`) or as an array of
/// integers (what a `Vec<u8>` serializes to, as moshi-server reads it).
fn bytes_or_seq<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct Bytes;
    impl<'de> serde::de::Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes, or an array of integers from 0 to 255")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_any(Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_maps_tagged_by_type() {
        // {"type": "Ready"} and {"type": "Marker", "id": 7}, as msgpack-python packs them.
        assert_eq!(encode(&AsrOut::Ready), b"\x81\xa4type\xa5Ready");
        assert_eq!(
            encode(&AsrOut::Marker { id: 7 }),
            b"\x82\xa4type\xa6Marker\xa2id\x07"
        );
        // Samples are float32, times float64.
        let audio = encode(&TtsOut::Audio { pcm: vec![0.5] });
        assert!(
            audio.ends_with(b"\xa3pcm\x91\xca\x3f\x00\x00\x00"),
            "{audio:?}"
        );
        let word = encode(&AsrOut::EndWord { stop_time: 0.5 });
        assert!(
            word.ends_with(b"\xcb\x3f\xe0\x00\x00\x00\x00\x00\x00"),
            "{word:?}"
        );
        // Python's packb({"type": "Audio", "pcm": [0.5, 1]}) without use_single_float: float64
        // and int samples are taken too.
        let python = b"\x82\xa4type\xa5Audio\xa3pcm\x92\xcb\x3f\xe0\x00\x00\x00\x00\x00\x00\x01";
        assert_eq!(
            decode::<AsrIn>(python).unwrap(),
            AsrIn::Audio {
                pcm: vec![0.5, 1.0]
            }
        );
        assert_eq!(decode::<TtsIn>(b"\x81\xa4type\xa3Eos").unwrap(), TtsIn::Eos);
        assert!(decode::<TtsIn>(b"\x81\xa4type\xa4Nope").is_err());
        assert!(decode::<AsrIn>(b"\x82\xa4type\xa6Marker\xa2id\xa1x").is_err());
        assert!(decode::<AsrIn>(b"\xc1").is_err());
        // OggOpus data as Python's msgpack packs `bytes` (bin 8), and as an array of integers
        // (a Rust `Vec<u8>` through rmp-serde, moshi-server's own encoding).
        let ogg = AsrIn::OggOpus {
            data: vec![b'O', 1],
        };
        let python = b"\x82\xa4type\xa7OggOpus\xa4data\xc4\x02O\x01";
        assert_eq!(decode::<AsrIn>(python).unwrap(), ogg);
        assert_eq!(decode::<AsrIn>(&encode(&ogg)).unwrap(), ogg);
        assert!(decode::<AsrIn>(b"\x82\xa4type\xa7OggOpus\xa4data\xa1x").is_err());
    }
}
