//! `config.json` of the TTS: every published key is read; unknown or unsupported values are
//! clear errors, not silent defaults.

#[path = "support/tiny.rs"]
mod tiny;

use fluent_voice_kyutai::internals::tts::TtsConfig;
use serde_json::{Value, json};

fn parse(cfg: &Value) -> Result<TtsConfig, String> {
    TtsConfig::from_json(cfg.to_string().as_bytes()).map_err(|e| e.to_string())
}

fn with(key: &str, value: Value) -> Value {
    let mut cfg = tiny::tts_config();
    cfg[key] = value;
    cfg
}

#[test]
fn the_tiny_config_is_read_field_by_field() {
    let cfg = parse(&tiny::tts_config()).unwrap();
    assert_eq!((cfg.dim, cfg.num_heads, cfg.num_layers), (64, 4, 2));
    assert_eq!(
        (cfg.card, cfg.n_q, cfg.dep_q, cfg.text_card),
        (64, 4, 4, 96)
    );
    assert_eq!(cfg.delays, [0, 0, 2, 2, 2]);
    assert_eq!(cfg.depformer_schedule, [0, 1, 2, 2]);
    assert_eq!(cfg.depformer_weight_sets(), 3);
    assert_eq!(cfg.depformer_low_rank_embeddings, Some(16));
    assert!(cfg.demux_second_stream && cfg.cross_attention);
    assert_eq!(cfg.second_stream_ahead, 2);
    assert_eq!(cfg.delay_steps(12.5), 16);
    assert_eq!(
        (cfg.model_id.sig.as_str(), cfg.model_id.epoch.as_str()),
        ("1e68beda", "240")
    );
    assert_eq!((cfg.temp, cfg.text_temp), (0.6, 0.6));
    assert_eq!(cfg.cfg_values().unwrap()[2], "2.0");
    let fuser = cfg.fuser.as_ref().unwrap();
    assert_eq!(fuser.sum, ["control", "cfg"]);
    assert_eq!(fuser.cross, ["speaker_wavs"]);
    assert_eq!(cfg.text_card_out, 96);
}

#[test]
fn unknown_or_unsupported_values_are_clear_errors() {
    let cases = [
        (with("some_new_option", json!(3)), "some_new_option"),
        (with("model_type", json!("stt")), "not a TTS model"),
        (
            with("positional_embedding", json!("sin")),
            "positional_embedding",
        ),
        (
            with("depformer_pos_emb", json!("rope")),
            "depformer_pos_emb",
        ),
        (with("gating", json!("none")), "gating"),
        (with("norm", json!("batch_norm")), "norm"),
        (with("causal", json!(false)), "causal"),
        (with("delays", json!([0, 0, 2])), "delays"),
        (with("dep_q", json!(2)), "dep_q"),
        (
            with("depformer_weights_per_step_schedule", json!([0, 1])),
            "schedule",
        ),
        (
            with("tts_config", json!({"second_stream_ahead": 2})),
            "audio_delay",
        ),
        (with("model_id", json!({"epoch": 1})), "missing field `sig`"),
        (
            with("lm_gen_config", json!({"top_p": 0.9})),
            "lm_gen_config.top_p",
        ),
        (with("dim", json!("big")), "`dim`"),
        (with("device", json!("cuda")), "`device`"),
    ];
    for (cfg, expected) in cases {
        let err = parse(&cfg).unwrap_err();
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
        assert!(
            err.starts_with("invalid configuration: TTS config.json"),
            "{err}"
        );
    }
    let mut cfg = tiny::tts_config();
    cfg["conditioners"]["cfg"]["type"] = json!("t5");
    assert!(parse(&cfg).unwrap_err().contains("`t5`"));
    let mut cfg = tiny::tts_config();
    cfg["fuser"]["prepend"] = json!(["cfg"]);
    assert!(parse(&cfg).unwrap_err().contains("prepend"));
    let mut cfg = tiny::tts_config();
    cfg["tts_config"]["multistream"] = json!(true);
    assert!(parse(&cfg).unwrap_err().contains("multistream"));
}

#[test]
fn neutral_lm_options_are_accepted() {
    let mut cfg = tiny::tts_config();
    cfg["norm_emb"] = json!(false);
    cfg["depformer_norm"] = json!(null);
    parse(&cfg).unwrap();
    cfg["norm_emb"] = json!(true);
    assert!(parse(&cfg).unwrap_err().contains("norm_emb"));
}

/// A config saved from the Python side: its loader writes `output_dim` (the model's `dim`) and
/// `device` into every conditioner's arguments, and the constructors take `force_linear`,
/// `pad_empty`, `output_bias`, `learn_padding` (and `init_scale` for LUTs).
#[test]
fn conditioner_arguments_written_by_python_are_accepted() {
    let mut cfg = tiny::tts_config();
    for (name, kind) in [
        ("cfg", "lut"),
        ("control", "lut"),
        ("speaker_wavs", "tensor"),
    ] {
        let args = &mut cfg["conditioners"][name][kind];
        args["output_dim"] = json!(64);
        args["device"] = json!("cuda:0");
        args["force_linear"] = json!(true);
        args["pad_empty"] = json!(true);
        args["output_bias"] = json!(false);
        args["learn_padding"] = json!(true);
    }
    cfg["conditioners"]["cfg"]["lut"]["init_scale"] = json!(1.0);
    let parsed = parse(&cfg).unwrap();
    assert_eq!(parsed.cfg_values().unwrap().len(), 7);

    // The model's width is the only possible output width.
    let mut wrong = cfg.clone();
    wrong["conditioners"]["cfg"]["lut"]["output_dim"] = json!(32);
    let err = parse(&wrong).unwrap_err();
    assert!(
        err.contains("conditioner `cfg`") && err.contains("output_dim is 32"),
        "{err}"
    );
    // A key no conditioner takes is still refused, by name.
    let mut unknown = cfg.clone();
    unknown["conditioners"]["speaker_wavs"]["tensor"]["colour"] = json!("red");
    let err = parse(&unknown).unwrap_err();
    assert!(err.contains("colour"), "{err}");
    // A bias on the projection: the reference asserts against it too.
    let mut bias = cfg;
    bias["conditioners"]["control"]["lut"]["output_bias"] = json!(true);
    assert!(parse(&bias).unwrap_err().contains("output_bias"));
}

/// `model_id.epoch` may be written as a number or a string (the reference formats either into
/// the voice file name).
#[test]
fn model_id_takes_strings_or_numbers() {
    let cfg = parse(&with(
        "model_id",
        json!({"sig": "1e68beda", "epoch": "240"}),
    ))
    .unwrap();
    assert_eq!(cfg.model_id.epoch, "240");
}

/// Keys the reference's constructors take with their default values are accepted, and so are
/// the older name `demux_second_text_stream` and training-only keys.
#[test]
fn keys_with_reference_defaults_are_accepted() {
    let mut cfg = tiny::tts_config();
    cfg["kv_repeat"] = json!(1);
    cfg["depformer_kv_repeat"] = json!(1);
    cfg["gradient_checkpointing"] = json!(true);
    cfg["lora"] = json!(false);
    cfg["existing_text_end_padding_id"] = json!(0);
    let value = cfg
        .as_object_mut()
        .unwrap()
        .remove("demux_second_stream")
        .unwrap();
    cfg["demux_second_text_stream"] = value;
    assert!(parse(&cfg).unwrap().demux_second_stream);
    cfg["skip_self_attn"] = json!(true);
    assert!(parse(&cfg).unwrap_err().contains("skip_self_attn"));
}
