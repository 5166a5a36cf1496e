//! Tests of the tiny-model builders (`tests/support/tiny.rs`): every repo parses the way a
//! loader will parse it, names only files it holds, and its tensors agree with its config, so a
//! failure elsewhere points at the code under test and not at the fixtures.
//!
//! `cargo run --example dump_tiny_repos -- <dir>` writes the repos (`<dir>/tts`, `<dir>/stt`,
//! `<dir>/voices`, ...) for `tools/fixtures/check_tiny_repos.py`, which loads them with the
//! Python reference.

#[path = "support/tiny.rs"]
mod tiny;

use std::collections::{BTreeMap, BTreeSet};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

type Repo = Vec<(String, Vec<u8>)>;

fn file<'a>(repo: &'a Repo, path: &str) -> &'a [u8] {
    repo.iter()
        .find(|(p, _)| p == path)
        .map(|(_, b)| b.as_slice())
        .unwrap_or_else(|| panic!("{path} is not in the repo"))
}

fn config(repo: &Repo) -> Value {
    serde_json::from_slice(file(repo, "config.json")).expect("config.json parses")
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

/// name -> (dtype, shape) of a safetensors file, parsed by the `safetensors` crate.
fn header(bytes: &[u8]) -> BTreeMap<String, (Dtype, Vec<usize>)> {
    let st = SafeTensors::deserialize(bytes).expect("safetensors parses");
    st.tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.dtype(), view.shape().to_vec())))
        .collect()
}

fn shape<'a>(h: &'a BTreeMap<String, (Dtype, Vec<usize>)>, name: &str) -> &'a [usize] {
    &h.get(name)
        .unwrap_or_else(|| panic!("tensor {name} missing"))
        .1
}

fn n(cfg: &Value, key: &str) -> usize {
    cfg[key].as_u64().unwrap_or_else(|| panic!("{key}")) as usize
}

fn total_size(repo: &Repo) -> usize {
    repo.iter().map(|(_, b)| b.len()).sum()
}

#[test]
fn tts_config_has_the_published_keys_and_names_files_in_the_repo() {
    let repo = tiny::tts_repo();
    let cfg = config(&repo);
    let mut expected: BTreeSet<String> = tiny::TTS_CONFIG_KEYS
        .iter()
        .map(|k| k.to_string())
        .collect();
    expected.insert("mimi_config_name".into());
    assert_eq!(keys(&cfg), expected);

    for key in [
        "moshi_name",
        "mimi_name",
        "tokenizer_name",
        "mimi_config_name",
    ] {
        let name = cfg[key].as_str().unwrap();
        assert!(!file(&repo, name).is_empty(), "{key} names {name}");
    }
    assert_eq!(cfg["moshi_name"], tiny::TTS_MOSHI_NAME);
    assert_eq!(cfg["mimi_name"], tiny::TTS_MIMI_NAME);
    assert_eq!(cfg["tokenizer_name"], tiny::TTS_TOKENIZER_NAME);
    assert_eq!(cfg["model_type"], "tts");
    assert_eq!(cfg["model_id"]["sig"], "1e68beda");
    assert_eq!(cfg["model_id"]["epoch"], 240);
    assert_eq!(cfg["existing_text_padding_id"], 3);
    assert_eq!(n(&cfg, "text_card"), tiny::TINY_SPM_VOCAB);
    // Python `LMModel`: one delay per codebook, the text stream first.
    assert_eq!(cfg["delays"].as_array().unwrap().len(), n(&cfg, "n_q") + 1);
    assert_eq!(
        cfg["depformer_weights_per_step_schedule"]
            .as_array()
            .unwrap()
            .len(),
        n(&cfg, "dep_q")
    );
    assert_eq!(
        cfg["conditioners"]["speaker_wavs"]["tensor"]["dim"],
        tiny::TTS_SPEAKER_DIM
    );
    assert_eq!(cfg["tts_config"]["second_stream_ahead"], 2);
    // The config is pretty-printed JSON like the published ones.
    assert!(file(&repo, "config.json").starts_with(b"{\n  \""));
}

#[test]
fn tts_lm_has_the_published_layout_and_agrees_with_the_config() {
    let repo = tiny::tts_repo();
    let cfg = config(&repo);
    let h = header(file(&repo, tiny::TTS_MOSHI_NAME));
    let dim = n(&cfg, "dim");
    let ddim = n(&cfg, "depformer_dim");
    let card = n(&cfg, "card");
    let text_card = n(&cfg, "text_card");
    let n_q = n(&cfg, "n_q");
    let dep_q = n(&cfg, "dep_q");
    let low_rank = n(&cfg, "depformer_low_rank_embeddings");
    let steps = 3; // distinct entries of the schedule [0, 1, 2, 2]

    // Stacked attention, never per-step modules.
    assert!(
        h.keys()
            .all(|k| !k.contains("in_projs.") && !k.contains("out_projs."))
    );
    for l in 0..n(&cfg, "num_layers") {
        let p = format!("transformer.layers.{l}");
        assert_eq!(
            shape(&h, &format!("{p}.self_attn.in_proj_weight")),
            [3 * dim, dim]
        );
        assert_eq!(
            shape(&h, &format!("{p}.self_attn.out_proj.weight")),
            [dim, dim]
        );
        assert_eq!(
            shape(&h, &format!("{p}.cross_attention.in_proj_weight")),
            [3 * dim, dim]
        );
        assert_eq!(
            shape(&h, &format!("{p}.cross_attention.out_proj.weight")),
            [dim, dim]
        );
        assert_eq!(shape(&h, &format!("{p}.norm1.alpha")), [1, 1, dim]);
        assert_eq!(shape(&h, &format!("{p}.norm_cross.bias")), [dim]);
        // hidden_scale 4.125 * 64 = 264 -> gated hidden 2 * 264 / 3 = 176.
        assert_eq!(
            shape(&h, &format!("{p}.gating.linear_in.weight")),
            [2 * 176, dim]
        );
        assert_eq!(
            shape(&h, &format!("{p}.gating.linear_out.weight")),
            [dim, 176]
        );
    }
    let p = "depformer.layers.0";
    assert_eq!(
        shape(&h, &format!("{p}.self_attn.in_proj_weight")),
        [steps * 3 * ddim, ddim]
    );
    assert_eq!(
        shape(&h, &format!("{p}.self_attn.out_proj.weight")),
        [steps * ddim, ddim]
    );
    for k in 0..steps {
        // depformer_dim_feedforward 64 -> hidden 2 * 64 / 3 = 42.
        assert_eq!(
            shape(&h, &format!("{p}.gating.{k}.linear_in.weight")),
            [84, ddim]
        );
        assert_eq!(
            shape(&h, &format!("{p}.gating.{k}.linear_out.weight")),
            [ddim, 42]
        );
        assert_eq!(shape(&h, &format!("depformer_in.{k}.weight")), [ddim, dim]);
    }
    assert!(!h.contains_key(&format!("{p}.gating.{steps}.linear_in.weight")));
    assert!(!h.contains_key(&format!("depformer_in.{steps}.weight")));

    for q in 0..n_q {
        assert_eq!(shape(&h, &format!("emb.{q}.weight")), [card + 1, dim]);
    }
    assert_eq!(shape(&h, "text_emb.weight"), [text_card + 1, dim]);
    assert_eq!(shape(&h, "text_emb.out1.weight"), [dim, dim]);
    assert_eq!(shape(&h, "text_linear.weight"), [text_card, dim]);
    assert_eq!(shape(&h, "out_norm.alpha"), [1, 1, dim]);
    for q in 0..dep_q - 1 {
        assert_eq!(
            shape(&h, &format!("depformer_emb.{q}.weight")),
            [card + 1, low_rank]
        );
        assert_eq!(
            shape(&h, &format!("depformer_emb.{q}.low_rank.weight")),
            [ddim, low_rank]
        );
    }
    assert!(!h.contains_key(&format!("depformer_emb.{}.weight", dep_q - 1)));
    assert_eq!(
        shape(&h, "depformer_text_emb.weight"),
        [text_card + 1, low_rank]
    );
    assert_eq!(
        shape(&h, "depformer_text_emb.out2.weight"),
        [ddim, low_rank]
    );
    for q in 0..dep_q {
        assert_eq!(shape(&h, &format!("linears.{q}.weight")), [card, ddim]);
    }
    let c = "condition_provider.conditioners";
    assert_eq!(
        shape(&h, &format!("{c}.speaker_wavs.output_proj.weight")),
        [dim, tiny::TTS_SPEAKER_DIM]
    );
    assert_eq!(shape(&h, &format!("{c}.cfg.embed.weight")), [8, 16]);
    assert_eq!(shape(&h, &format!("{c}.control.embed.weight")), [2, dim]);
    assert_eq!(
        shape(&h, &format!("{c}.control.learnt_padding")),
        [1, 1, dim]
    );

    // bf16, except the 8 conditioner tensors (as in the published 410 bf16 + 8 f32).
    let f32s: Vec<&String> = h
        .iter()
        .filter(|(_, (d, _))| *d == Dtype::F32)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(f32s.len(), 8);
    assert!(f32s.iter().all(|k| k.starts_with("condition_provider.")));
    assert!(
        h.values()
            .all(|(d, _)| *d == Dtype::F32 || *d == Dtype::BF16)
    );

    // Exactly the names the builder derives from the config, nothing more.
    let derived: BTreeSet<String> = tiny::lm_tensors(&cfg).into_iter().map(|t| t.name).collect();
    assert_eq!(derived, h.keys().cloned().collect());
}

#[test]
fn the_name_rules_reproduce_the_published_tts_checkpoint() {
    // The published kyutai/tts-1.6b-en_fr config (kyutai-models.md): 418 tensors, 410 bf16 and
    // 8 f32, 3,683,719,712 bytes in all.
    let mut cfg = tiny::tts_config();
    let published = serde_json::json!({
        "card": 2048, "n_q": 32, "dep_q": 32, "dim": 2048, "text_card": 8000,
        "num_heads": 16, "num_layers": 16, "depformer_dim": 1024, "depformer_num_heads": 16,
        "depformer_num_layers": 4, "depformer_dim_feedforward": 3072,
        "depformer_low_rank_embeddings": 128,
    });
    for (k, v) in published.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let mut schedule: Vec<usize> = (0..8).collect();
    for s in 8..11 {
        schedule.extend([s; 8]);
    }
    cfg["depformer_weights_per_step_schedule"] = serde_json::json!(schedule);
    cfg["conditioners"]["speaker_wavs"]["tensor"]["dim"] = 512.into();
    cfg["conditioners"]["control"]["lut"]["dim"] = 2048.into();
    let specs = tiny::lm_tensors(&cfg);
    assert_eq!(specs.len(), 418);
    assert_eq!(specs.iter().filter(|t| t.dtype == Dtype::BF16).count(), 410);
    let data: usize = specs
        .iter()
        .map(|t| t.numel() * if t.dtype == Dtype::BF16 { 2 } else { 4 })
        .sum();
    assert_eq!(data, 3_683_672_576);
    assert!(
        data < 3_683_719_712 && 3_683_719_712 - data < 64 * 1024,
        "header-sized gap"
    );

    // The standard Mimi config (loaders.py `_mimi_config`): 318 tensors, f32, 384,644,900 B.
    let mut mimi = tiny::mimi_config();
    mimi["seanet"]["dimension"] = 512.into();
    mimi["seanet"]["n_filters"] = 64.into();
    mimi["quantizer"] = serde_json::json!({"dimension": 256, "n_q": 32, "bins": 2048,
        "input_dimension": 512, "output_dimension": 512});
    for (k, v) in [
        ("d_model", 512),
        ("num_heads", 8),
        ("num_layers", 8),
        ("dim_feedforward", 2048),
        ("input_dimension", 512),
    ] {
        mimi["transformer"][k] = v.into();
    }
    mimi["transformer"]["output_dimensions"] = serde_json::json!([512]);
    let specs = tiny::mimi_tensors(&mimi);
    assert_eq!(specs.len(), 318);
    let data: usize = specs.iter().map(|t| t.numel() * 4).sum();
    assert_eq!(data, 384_605_572);

    // The stt-1b-en_fr-candle config: 135 bf16 tensors, 1,978,522,200 B in all.
    let mut stt = tiny::stt_config();
    for (k, v) in [
        ("card", 2048),
        ("n_q", 32),
        ("dim", 2048),
        ("text_card", 8000),
        ("num_heads", 16),
        ("num_layers", 16),
    ] {
        stt[k] = v.into();
    }
    let specs = tiny::lm_tensors(&stt);
    assert_eq!(specs.len(), 135);
    let data: usize = specs.iter().map(|t| t.numel() * 2).sum();
    assert!(data < 1_978_522_200 && 1_978_522_200 - data < 32 * 1024);
}

#[test]
fn mimi_has_real_names_and_agrees_with_its_config() {
    for (repo, mimi_name) in [
        (tiny::tts_repo(), tiny::TTS_MIMI_NAME),
        (tiny::stt_repo(), tiny::STT_MIMI_NAME),
    ] {
        let mc: Value = serde_json::from_slice(file(&repo, tiny::MIMI_CONFIG_NAME)).unwrap();
        assert_eq!(
            keys(&mc),
            [
                "channels",
                "frame_rate",
                "quantizer",
                "sample_rate",
                "seanet",
                "transformer"
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        );
        assert_eq!(mc["sample_rate"], 24000);
        assert_eq!(mc["frame_rate"], 12.5);
        let ratios: usize = mc["seanet"]["ratios"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_u64().unwrap() as usize)
            .product();
        assert_eq!(
            ratios * 2,
            1920,
            "hop 960, then a stride-2 downsample: 1920 samples a frame"
        );

        let h = header(file(&repo, mimi_name));
        assert!(h.values().all(|(d, _)| *d == Dtype::F32));
        let d = n(&mc["seanet"], "dimension");
        let td = n(&mc["transformer"], "d_model");
        assert_eq!(shape(&h, "encoder.model.0.conv.conv.weight"), [4, 1, 7]);
        assert_eq!(shape(&h, "encoder.model.14.conv.conv.weight"), [d, 64, 3]);
        assert_eq!(
            shape(&h, "decoder.model.2.convtr.convtr.weight"),
            [64, 32, 16]
        );
        assert_eq!(shape(&h, "decoder.model.14.conv.conv.weight"), [1, 4, 3]);
        assert_eq!(
            shape(
                &h,
                "encoder_transformer.transformer.layers.0.self_attn.in_proj_weight"
            ),
            [3 * td, td]
        );
        assert_eq!(
            shape(
                &h,
                "decoder_transformer.transformer.layers.0.layer_scale_2.scale"
            ),
            [td]
        );
        let q = &mc["quantizer"];
        let (qd, bins, n_q) = (n(q, "dimension"), n(q, "bins"), n(q, "n_q"));
        assert_eq!(
            shape(&h, "quantizer.rvq_first.input_proj.weight"),
            [qd, d, 1]
        );
        assert_eq!(
            shape(&h, "quantizer.rvq_rest.output_proj.weight"),
            [d, qd, 1]
        );
        assert_eq!(
            shape(
                &h,
                "quantizer.rvq_first.vq.layers.0._codebook.embedding_sum"
            ),
            [bins, qd]
        );
        let rest = format!(
            "quantizer.rvq_rest.vq.layers.{}._codebook.cluster_usage",
            n_q - 2
        );
        assert_eq!(shape(&h, &rest), [bins]);
        assert!(!h.contains_key(&format!(
            "quantizer.rvq_rest.vq.layers.{}._codebook.cluster_usage",
            n_q - 1
        )));
        assert_eq!(shape(&h, "downsample.conv.conv.conv.weight"), [d, d, 4]);
        assert_eq!(shape(&h, "upsample.convtr.convtr.convtr.weight"), [d, 1, 4]);
        let derived: BTreeSet<String> = tiny::mimi_tensors(&mc)
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(derived, h.keys().cloned().collect());

        // Codebook usage stays positive, `_initialized` is set.
        let st = SafeTensors::deserialize(file(&repo, mimi_name)).unwrap();
        let usage = st
            .tensor("quantizer.rvq_first.vq.layers.0._codebook.cluster_usage")
            .unwrap();
        assert!(
            usage
                .data()
                .chunks(4)
                .all(|b| f32::from_le_bytes(b.try_into().unwrap()) > 0.5)
        );
        let init = st
            .tensor("quantizer.rvq_rest.vq.layers.0._codebook._initialized")
            .unwrap();
        assert_eq!(init.data(), 1f32.to_le_bytes());
    }
    // Both repos carry the same Mimi bytes, as the published ones do.
    assert_eq!(
        file(&tiny::tts_repo(), tiny::TTS_MIMI_NAME),
        file(&tiny::stt_repo(), tiny::STT_MIMI_NAME)
    );
}

#[test]
fn stt_config_has_the_published_keys_and_names_files_in_the_repo() {
    let repo = tiny::stt_repo();
    let cfg = config(&repo);
    let mut expected: BTreeSet<String> = tiny::STT_CONFIG_KEYS
        .iter()
        .map(|k| k.to_string())
        .collect();
    expected.insert("mimi_config_name".into());
    assert_eq!(keys(&cfg), expected);
    // Like the published candle repo: no `moshi_name`, the weights are the default name.
    assert!(cfg.get("moshi_name").is_none());
    assert!(!file(&repo, "model.safetensors").is_empty());
    for key in ["mimi_name", "tokenizer_name", "mimi_config_name"] {
        let name = cfg[key].as_str().unwrap();
        assert!(!file(&repo, name).is_empty(), "{key} names {name}");
    }
    assert_eq!(cfg["mimi_name"], "mimi-pytorch-e351c8d8@125.safetensors");
    assert_eq!(cfg["model_type"], "stt");
    assert_eq!(cfg["dep_q"], 0);
    assert_eq!(cfg["stt_config"]["audio_delay_seconds"], 0.5);
    assert_eq!(cfg["stt_config"]["audio_silence_prefix_seconds"], 0.0);
    assert_eq!(cfg["delays"].as_array().unwrap().len(), n(&cfg, "n_q") + 1);
    assert_eq!(n(&cfg, "text_card"), tiny::TINY_SPM_VOCAB);
}

#[test]
fn stt_lm_has_the_names_the_rust_moshi_lm_reads() {
    let repo = tiny::stt_repo();
    let cfg = config(&repo);
    let h = header(file(&repo, tiny::STT_MOSHI_NAME));
    let dim = n(&cfg, "dim");
    assert!(h.values().all(|(d, _)| *d == Dtype::BF16));
    // moshi 0.6.4 `lm::LmModel::new_` with `depformer: None`, `extra_heads {4, 6}`.
    assert_eq!(
        shape(&h, "text_emb.weight"),
        [n(&cfg, "text_card") + 1, dim]
    );
    assert_eq!(shape(&h, "text_linear.weight"), [n(&cfg, "text_card"), dim]);
    assert_eq!(shape(&h, "out_norm.alpha"), [1, 1, dim]);
    for q in 0..n(&cfg, "n_q") {
        assert_eq!(
            shape(&h, &format!("emb.{q}.weight")),
            [n(&cfg, "card") + 1, dim]
        );
    }
    for i in 0..4 {
        assert_eq!(shape(&h, &format!("extra_heads.{i}.weight")), [6, dim]);
    }
    for l in 0..n(&cfg, "num_layers") {
        let p = format!("transformer.layers.{l}");
        assert_eq!(
            shape(&h, &format!("{p}.self_attn.in_proj_weight")),
            [3 * dim, dim]
        );
        assert_eq!(
            shape(&h, &format!("{p}.self_attn.out_proj.weight")),
            [dim, dim]
        );
        assert_eq!(shape(&h, &format!("{p}.norm2.alpha")), [1, 1, dim]);
        // moshi 0.6.4 `transformer.rs`: with `dim_feedforward = 4 * dim`, hidden = 11 * dim / 4,
        // the same 176 as Python's 2 * (4.125 * dim) / 3.
        assert_eq!(
            shape(&h, &format!("{p}.gating.linear_in.weight")),
            [2 * 11 * dim / 4, dim]
        );
        assert_eq!(
            shape(&h, &format!("{p}.gating.linear_out.weight")),
            [dim, 11 * dim / 4]
        );
    }
    assert!(
        h.keys()
            .all(|k| !k.starts_with("depformer") && !k.starts_with("linears."))
    );
    assert_eq!(h.len(), 2 * 6 + 4 + 3 + 4);
}

#[test]
fn voices_repo_holds_real_style_voice_files() {
    let dim = tiny::TTS_SPEAKER_DIM;
    let repo = tiny::voices_repo(dim);
    for voice in tiny::VOICE_NAMES {
        let name = format!("{voice}.1e68beda@240.safetensors");
        assert_eq!(name, tiny::voice_file(voice));
        let bytes = file(&repo, &name);
        let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
        let meta = meta.metadata().clone().expect("metadata");
        assert_eq!(meta.get("sig").map(String::as_str), Some("1e68beda"));
        assert_eq!(meta.get("epoch").map(String::as_str), Some("240"));
        let h = header(bytes);
        assert_eq!(h.len(), 1);
        assert_eq!(h["speaker_wavs"], (Dtype::F32, vec![1, dim, 125]));
    }
    // Other voices differ.
    assert_ne!(
        file(&repo, &tiny::voice_file(tiny::VOICE_NAMES[0]))[200..],
        file(&repo, &tiny::voice_file(tiny::VOICE_NAMES[1]))[200..]
    );
    // Files a loader must not fetch.
    assert!(file(&repo, "README.md").starts_with(b"# "));
    let wav = file(&repo, tiny::VOICE_NAMES[0]);
    assert!(wav.starts_with(b"RIFF") && &wav[8..12] == b"WAVE");
    assert!(wav.len() > 200 && wav.len() < 1000);
    // The real-size voice shape too.
    let big = tiny::voices_repo(512);
    let h = header(file(&big, &tiny::voice_file("vctk/p225_023.wav")));
    assert_eq!(h["speaker_wavs"].1, [1, 512, 125]);
}

#[test]
fn builders_are_deterministic_and_small() {
    let tts = tiny::tts_repo();
    assert_eq!(tts, tiny::tts_repo());
    let stt = tiny::stt_repo();
    assert_eq!(stt, tiny::stt_repo());
    let voices = tiny::voices_repo(tiny::TTS_SPEAKER_DIM);
    assert_eq!(voices, tiny::voices_repo(tiny::TTS_SPEAKER_DIM));
    for repo in [&tts, &stt, &voices] {
        assert!(total_size(repo) < 2 * 1024 * 1024, "{}", total_size(repo));
        let paths: BTreeSet<&String> = repo.iter().map(|(p, _)| p).collect();
        assert_eq!(paths.len(), repo.len(), "duplicate paths");
    }
    // Same seed, same bytes; different seeds differ; odd sizes work.
    assert_eq!(tiny::big_file(1_000_003, 7), tiny::big_file(1_000_003, 7));
    assert_ne!(tiny::big_file(64, 7), tiny::big_file(64, 8));
    assert_eq!(tiny::big_file(13, 1).len(), 13);
    assert_eq!(tiny::big_file(13, 1)[..8], tiny::big_file(16, 1)[..8]);
    // Weights stay in [-0.1, 0.1] (gains around 1).
    let w = tiny::tensor_values("x.weight", 10_000, 3);
    assert!(w.iter().all(|v| (-0.1..0.1).contains(v)));
    assert!(w.iter().any(|v| *v > 0.09) && w.iter().any(|v| *v < -0.09));
    let g = tiny::tensor_values("transformer.layers.0.norm1.alpha", 64, 3);
    assert!(g.iter().all(|v| (0.9..1.1).contains(v)));
}

#[test]
fn safetensors_helper_round_trips_values() {
    let bytes =
        tiny::safetensors_bytes(&[("a", Dtype::F32, &[2, 3]), ("b", Dtype::BF16, &[4])], 42);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let a = st.tensor("a").unwrap();
    let want = tiny::tensor_values("a", 6, 42);
    let got: Vec<f32> = a
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, want);
    let b = st.tensor("b").unwrap();
    let want = tiny::tensor_values("b", 4, 42);
    for (c, w) in b.data().chunks(2).zip(want) {
        let v = f32::from_bits((u16::from_le_bytes(c.try_into().unwrap()) as u32) << 16);
        assert!((v - w).abs() <= w.abs() / 128.0, "{v} vs {w}");
    }
    // Round to nearest even.
    assert_eq!(tiny::f32_to_bf16_bits(1.0), 0x3F80);
    assert_eq!(tiny::f32_to_bf16_bits(f32::from_bits(0x3F80_8000)), 0x3F80);
    assert_eq!(tiny::f32_to_bf16_bits(f32::from_bits(0x3F81_8000)), 0x3F82);
    assert_eq!(tiny::f32_to_bf16_bits(f32::from_bits(0x3F80_8001)), 0x3F81);
    // The header is 8-byte aligned, like the crate's own `serialize`.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
}

#[test]
fn spm_fixture_and_reference_are_consistent() {
    let spm = tiny::TINY_SPM;
    // A ModelProto starts with its first `pieces` entry: field 1, length-delimited (0x0a),
    // whose first field is the piece string `<unk>`.
    assert_eq!(spm[0], 0x0a);
    assert!(spm.windows(5).any(|w| w == b"<unk>"));
    assert!(spm.windows(5).any(|w| w == b"<pad>"));
    assert!(spm.len() < 8 * 1024, "a few KB");
    assert_eq!(file(&tiny::tts_repo(), tiny::TTS_TOKENIZER_NAME), spm);
    assert_eq!(file(&tiny::stt_repo(), tiny::STT_TOKENIZER_NAME), spm);

    let reference: Value =
        serde_json::from_str(include_str!("fixtures/tiny_spm_reference.json")).unwrap();
    assert_eq!(reference["vocab_size"], tiny::TINY_SPM_VOCAB);
    assert_eq!(reference["special_ids"]["unk"], 0);
    assert_eq!(reference["special_ids"]["bos"], 1);
    assert_eq!(reference["special_ids"]["eos"], 2);
    assert_eq!(reference["special_ids"]["pad"], 3);
    let pieces = reference["pieces"].as_array().unwrap();
    assert_eq!(pieces.len(), tiny::TINY_SPM_VOCAB);
    assert_eq!(pieces[3]["piece"], "<pad>");
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let ids = case["ids"].as_array().unwrap();
        assert!(
            ids.iter()
                .all(|i| (i.as_u64().unwrap() as usize) < tiny::TINY_SPM_VOCAB)
        );
        assert_eq!(ids.len(), case["pieces"].as_array().unwrap().len());
        assert!(case["decoded"].is_string());
    }
    // Unknown scripts go to <unk> (no byte fallback in so small a vocabulary).
    let cjk = cases.iter().find(|c| c["text"] == "日本語").unwrap();
    assert!(cjk["ids"].as_array().unwrap().contains(&Value::from(0)));
}
