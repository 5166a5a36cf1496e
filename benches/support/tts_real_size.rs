//! The TTS model of the published `kyutai/tts-1.6b-en_fr` config, for benchmarks that build it
//! with random weights, and a long script for it.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use fluent_voice_kyutai::internals::tts::conditioners::Conditions;
use fluent_voice_kyutai::internals::tts::state_machine::Entry;

/// The published `config.json` (`KYUTAI_BENCH_LAYERS` shrinks the main transformer for a
/// quicker run).
pub fn published_config() -> serde_json::Value {
    let layers: usize = std::env::var("KYUTAI_BENCH_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut delays = vec![0, 0];
    delays.extend([2; 31]);
    let mut schedule: Vec<usize> = (0..8).collect();
    schedule.extend([8; 8]);
    schedule.extend([9; 8]);
    schedule.extend([10; 8]);
    let cfg_values: Vec<String> = (0..7)
        .map(|i| format!("{:.1}", 1.0 + 0.5 * i as f64))
        .collect();
    serde_json::json!({
        "card": 2048, "n_q": 32, "dep_q": 32, "delays": delays, "dim": 2048,
        "text_card": 8000, "existing_text_padding_id": 3, "num_heads": 16,
        "num_layers": layers, "hidden_scale": 4.125, "causal": true, "layer_scale": null,
        "context": 500, "max_period": 10000, "gating": "silu", "norm": "rms_norm_f32",
        "positional_embedding": "rope", "depformer_dim": 1024, "depformer_num_heads": 16,
        "depformer_num_layers": 4, "depformer_dim_feedforward": 3072,
        "depformer_multi_linear": true, "depformer_pos_emb": "none",
        "depformer_weights_per_step": true, "depformer_low_rank_embeddings": 128,
        "demux_second_stream": true, "text_card_out": null, "cross_attention": true,
        "conditioners": {
            "speaker_wavs": {"type": "tensor", "tensor": {"dim": 512}},
            "cfg": {"type": "lut", "lut": {"n_bins": 7, "dim": 16, "tokenizer": "noop",
                    "possible_values": cfg_values}},
            "control": {"type": "lut", "lut": {"dim": 2048, "n_bins": 1, "tokenizer": "noop",
                        "possible_values": ["ok"]}}
        },
        "fuser": {"cross_attention_pos_emb": true, "cross_attention_pos_emb_scale": 1,
                  "sum": ["control", "cfg"], "prepend": [], "cross": ["speaker_wavs"]},
        "tts_config": {"audio_delay": 1.28, "second_stream_ahead": 2},
        "model_id": {"sig": "1e68beda", "epoch": 240},
        "depformer_weights_per_step_schedule": schedule,
        "model_type": "tts", "lm_gen_config": {"temp": 0.6, "text_temp": 0.6}
    })
}

/// A script of `words` two-token words, each followed by 2 steps of padding.
pub fn entries(words: usize) -> Vec<Entry> {
    (0..words)
        .map(|i| Entry {
            tokens: vec![10 + (i as i64 % 500), 600 + (i as i64 % 300)],
            text: format!("w{i}"),
            padding: 2,
        })
        .collect()
}

/// The conditioning a conversation of this model gets: `control` "ok", `cfg` 2.0 (the
/// reference's default) and a random voice embedding (`[512, 125]`).
pub fn conditions(device: &Device) -> Conditions {
    let mut conditions = Conditions::default();
    conditions
        .values
        .insert("control".into(), Some("ok".into()));
    conditions.values.insert("cfg".into(), Some("2.0".into()));
    conditions
        .voices
        .push(Tensor::randn(0f32, 1.0, (512, 125), device).unwrap());
    conditions
}
