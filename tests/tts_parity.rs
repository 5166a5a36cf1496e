//! Parity of the Rust TTS with the Python reference (`moshi` 0.2.13 `TTSModel`) on the tiny TTS
//! repo: the fixtures in `tests/fixtures/tts_parity/` were recorded by
//! `tools/parity/tts/make_reference.py` from the same repo bytes, one per setting of the knobs a
//! user has: text, voice, `cfg` value (CFG distillation), temperature and seed. The repo is
//! fetched through the loopback hub like any user would fetch it.

mod support;
#[path = "support/tts_reference.rs"]
mod tts_reference;

use std::collections::BTreeMap;
use std::sync::Arc;

use fluent_voice_kyutai::KyutaiEngine;
use fluent_voice_kyutai::internals::tts::conditioners::Conditions;
use fluent_voice_kyutai::internals::tts::generate::{GenerationSettings, Generator};
use fluent_voice_kyutai::internals::tts::synth::{SynthesisSettings, TtsModel};
use serde_json::Value;
use support::*;
use tts_reference::{
    assert_clearly_different, assert_same_pcm, assert_same_tokens, entries, run_to_end,
};

const DIR: &str = "tts_parity";

/// Every recorded case, and what sets it apart from `hello` (greedy, the default voice, cfg 2.0).
const CASES: [(&str, &str); 8] = [
    ("hello", ""),
    ("bonjour", "text"),
    ("two_sentences", "text"),
    ("hello_other_voice", "voice"),
    ("hello_cfg_3", "cfg"),
    ("hello_temp_0.6_seed_1", "temperature"),
    ("hello_temp_0.6_seed_2", "seed"),
    ("hello_temp_1.0_seed_1", "temperature"),
];

struct Loaded {
    engine: KyutaiEngine,
    model: Arc<TtsModel>,
    _cache: tempfile::TempDir,
    _hub: TestHub,
}

async fn load() -> Loaded {
    load_with(|config| config).await
}

/// [`load`], with the engine's settings changed by `settings`.
async fn load_with(
    settings: impl FnOnce(
        fluent_voice_kyutai::KyutaiModelConfig,
    ) -> fluent_voice_kyutai::KyutaiModelConfig,
) -> Loaded {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(settings(config(&hub, cache.path())))
        .await
        .unwrap();
    let model = engine.tts_model().await.unwrap();
    Loaded {
        engine,
        model,
        _cache: cache,
        _hub: hub,
    }
}

/// The conditioning of `voice` at `cfg`, as a conversation builds it.
async fn conditions(loaded: &Loaded, voice: &str, cfg: f64) -> Conditions {
    let model = &loaded.model;
    let voice = model
        .load_voice(&loaded.engine.ensure_voice(voice).await.unwrap())
        .unwrap();
    model.conditions(Some(&voice), cfg).unwrap()
}

/// A case's sampling settings, for the whole synthesis path.
fn synthesis_settings(case: &Case) -> SynthesisSettings {
    SynthesisSettings {
        temp: case.temp,
        text_temp: case.temp,
        seed: case.seed,
    }
}

/// The settings a case was recorded with.
struct Case {
    text: String,
    voice: String,
    cfg: f64,
    temp: f64,
    seed: u64,
    record: Value,
}

fn case(name: &str) -> Case {
    let record = tts_reference::fixture(DIR, name);
    Case {
        text: record["text"].as_str().unwrap().to_string(),
        voice: record["voice"].as_str().unwrap().to_string(),
        cfg: record["cfg"].as_f64().unwrap(),
        temp: record["temp"].as_f64().unwrap(),
        seed: record["seed"].as_u64().unwrap(),
        record,
    }
}

#[tokio::test]
async fn text_and_audio_tokens_match_the_reference_at_every_step() {
    let loaded = load().await;
    let model = &loaded.model;
    for (name, _) in CASES {
        let case = case(name);
        let record = &case.record;
        let delay_steps = record["delay_steps"].as_u64().unwrap() as usize;
        assert_eq!(delay_steps, model.delay_steps);
        let conditions = conditions(&loaded, &case.voice, case.cfg).await;
        let settings = GenerationSettings {
            temp: case.temp,
            text_temp: case.temp,
            top_k: model.lm.cfg.top_k,
            top_k_text: model.lm.cfg.top_k_text,
            seed: case.seed,
            final_padding: 4,
            max_steps: record["max_steps"].as_u64().unwrap() as usize,
        };
        let mut generator = Generator::new(
            &model.lm,
            entries(record),
            &conditions,
            delay_steps,
            settings,
        )
        .unwrap();
        let frames = run_to_end(&model.lm, &mut generator);
        assert_same_tokens(name, &generator, &frames, record);
    }
}

/// Fewer codebooks than the model has (`tts_n_q`, the reference's `TTSModel(n_q=...)`): the
/// tokens at every step (the depformer's fewer draws included, with sampling) and the waveform
/// (Mimi decoding the codebooks it gets) are the reference's; the model's own number of
/// codebooks is the default, and more than it has is refused when the model loads.
#[tokio::test]
async fn fewer_codebooks_give_the_references_tokens_and_waveform() {
    let loaded = load_with(|config| config.tts_n_q(3)).await;
    let model = &loaded.model;
    assert_eq!((model.lm.cfg.n_q, model.lm.cfg.dep_q), (4, 3));
    for name in ["hello_n_q_3", "hello_temp_0.6_seed_1_n_q_3"] {
        let case = case(name);
        let record = &case.record;
        assert_eq!(record["n_q"], 3, "{name}");
        let conditions = conditions(&loaded, &case.voice, case.cfg).await;
        let settings = GenerationSettings {
            temp: case.temp,
            text_temp: case.temp,
            top_k: model.lm.cfg.top_k,
            top_k_text: model.lm.cfg.top_k_text,
            seed: case.seed,
            final_padding: 4,
            max_steps: record["max_steps"].as_u64().unwrap() as usize,
        };
        let mut generator = Generator::new(
            &model.lm,
            entries(record),
            &conditions,
            model.delay_steps,
            settings,
        )
        .unwrap();
        let frames = run_to_end(&model.lm, &mut generator);
        assert!(frames.iter().all(|f| f.len() == 4), "text + 3 codebooks");
        assert_same_tokens(name, &generator, &frames, record);
        let mut pcm = Vec::new();
        model
            .synthesize_segment(
                &case.text,
                &conditions,
                &synthesis_settings(&case),
                &mut |c| {
                    pcm.extend(c);
                    true
                },
            )
            .unwrap();
        assert_same_pcm(DIR, name, &pcm);
        // Not the audio of all four codebooks.
        let all = tts_reference::reference_pcm(DIR, name.trim_end_matches("_n_q_3"));
        assert_clearly_different(name, &pcm, &all);
    }
    // Two of four: the depformer's steps share weight sets (schedule [0, 1, 2, 2]), stacked in
    // the file; the first two steps use two of the three, and the model still loads and speaks.
    let two = load_with(|config| config.tts_n_q(2)).await;
    assert_eq!(two.model.lm.cfg.dep_q, 2);
    let conditions = conditions(&two, VOICE, 2.0).await;
    let mut samples = 0;
    two.model
        .synthesize_segment(
            "Hello.",
            &conditions,
            &synthesis_settings(&case("hello")),
            &mut |c| {
                samples += c.len();
                true
            },
        )
        .unwrap();
    assert!(samples > 0);
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()).tts_n_q(5))
        .await
        .unwrap();
    let error = engine.tts_model().await.err().expect("5 of 4 codebooks");
    assert!(
        error.to_string().contains("has 4 audio codebooks"),
        "{error}"
    );
}

/// The whole path a conversation takes (text normalisation and tokenization, voice, CFG value,
/// sampling, streaming Mimi decoding) gives the reference's waveform for every setting, and
/// changing any one knob changes the waveform.
#[tokio::test]
async fn every_setting_gives_the_reference_waveform_and_each_knob_matters() {
    let loaded = load().await;
    let model = &loaded.model;
    let mut outputs = BTreeMap::new();
    for (name, _) in CASES {
        let case = case(name);
        // Text normalisation + SentencePiece + speaker token + padding, as `prepare_script`.
        assert_eq!(
            model.entries(&case.text),
            entries(&case.record),
            "{name}: entries"
        );
        let conditions = conditions(&loaded, &case.voice, case.cfg).await;
        let settings = synthesis_settings(&case);
        let mut pcm = Vec::new();
        model
            .synthesize_segment(&case.text, &conditions, &settings, &mut |chunk| {
                assert_eq!(chunk.len(), 1920, "one Mimi frame per chunk");
                pcm.extend(chunk);
                true
            })
            .unwrap();
        assert_same_pcm(DIR, name, &pcm);
        outputs.insert(name, pcm);
    }
    for (name, knob) in CASES {
        let base = match name {
            "hello_temp_0.6_seed_2" | "hello_temp_1.0_seed_1" => "hello_temp_0.6_seed_1",
            "hello" => continue,
            _ => "hello",
        };
        assert_clearly_different(
            &format!("{name} vs {base} (the {knob})"),
            &outputs[name],
            &outputs[base],
        );
    }
}

/// Word timings: each word and the step at which the state machine fed it to the model are the
/// reference's `TTSResult.all_transcripts`, for every case (one text per language, two
/// sentences, each knob), whether the text is given at once or word by word; a word is heard from
/// that step less the two frames the output drops, until the next word starts.
#[tokio::test]
async fn word_timings_are_the_reference_transcript() {
    use fluent_voice_kyutai::internals::tts::synth::SegmentEvent;
    let loaded = load().await;
    let model = &loaded.model;
    for (name, _) in CASES {
        let case = case(name);
        let reference: Vec<(String, usize)> = case.record["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w[0].as_str().unwrap().to_string(),
                    w[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert!(reference.len() >= 3, "{name}");
        let conditions = conditions(&loaded, &case.voice, case.cfg).await;
        let settings = synthesis_settings(&case);
        for word_by_word in [false, true] {
            let mut entries: Vec<_> = model.entries(&case.text);
            entries.reverse();
            let mut input = || match word_by_word {
                true => entries.pop().map(|e| vec![e]),
                false => (!entries.is_empty()).then(|| entries.drain(..).rev().collect()),
            };
            let mut timings = Vec::new();
            model
                .synthesize_entries(&mut input, &conditions, &settings, &mut |event| {
                    if let SegmentEvent::Word(w) = event {
                        timings.push(w);
                    }
                    true
                })
                .unwrap();
            let ours: Vec<(String, usize)> =
                timings.iter().map(|w| (w.text.clone(), w.step)).collect();
            assert_eq!(ours, reference, "{name} (word by word: {word_by_word})");
            for (i, w) in timings.iter().enumerate() {
                assert_eq!(w.start_frame, w.step - 2, "{name}: {}", w.text);
                if let Some(next) = timings.get(i + 1) {
                    assert_eq!(w.end_frame, next.start_frame, "{name}: {}", w.text);
                }
            }
        }
    }
}

/// The reference's streaming mode (`tts_pytorch_streaming.py`'s `TTSGen`, recorded by
/// `tools/parity/tts/make_streaming_reference.py`): words given one at a time, the generator
/// waiting whenever the words the next step may need are not there. The Rust generator waits at
/// the same steps (each word is asked for after as many steps as the reference ran before it was
/// appended) and gives the same text tokens at every step the reference ran. The reference then
/// runs a fixed tail; the Rust generator ends as the batch mode does (`end_step` plus the final
/// padding), so only the number of tail steps may differ.
#[tokio::test]
async fn streamed_words_wait_at_the_reference_streaming_modes_steps() {
    let loaded = load().await;
    let model = &loaded.model;
    let record = tts_reference::fixture(DIR, "streaming_hello");
    let text = record["text"].as_str().unwrap();
    let (voice, cfg) = (
        record["voice"].as_str().unwrap(),
        record["cfg"].as_f64().unwrap(),
    );
    let conditions = conditions(&loaded, voice, cfg).await;
    let settings = GenerationSettings {
        temp: 0.0,
        text_temp: 0.0,
        top_k: model.lm.cfg.top_k,
        top_k_text: model.lm.cfg.top_k_text,
        seed: 0,
        final_padding: 4,
        max_steps: 400,
    };
    let mut entries: std::collections::VecDeque<_> = model.entries(text).into();
    assert_eq!(
        entries.iter().cloned().collect::<Vec<_>>(),
        tts_reference::entries(&record),
        "entries"
    );
    let mut generator =
        Generator::streaming(&model.lm, &conditions, model.delay_steps, settings).unwrap();
    let mut asked_at = Vec::new();
    while !generator.finished() {
        while !generator.ready() {
            match entries.pop_front() {
                Some(entry) => {
                    asked_at.push(generator.steps());
                    generator.push_entries([entry], 0);
                }
                None => generator.close_input(),
            }
        }
        generator.step(&model.lm).unwrap();
    }
    let expected_at: Vec<usize> = record["appended_at_step"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(
        asked_at, expected_at,
        "the steps at which each word was waited for"
    );
    let reference: Vec<(i64, i64)> = record["text_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t[0].as_i64().unwrap(), t[1].as_i64().unwrap()))
        .collect();
    let ours: Vec<(i64, i64)> = generator
        .text_log
        .iter()
        .map(|t| (t.sampled, t.fed))
        .collect();
    let common = ours.len().min(reference.len());
    let text_done = record["text_done_step"].as_u64().unwrap() as usize;
    assert!(common > text_done, "{common} steps in common");
    assert_eq!(
        ours[..common],
        reference[..common],
        "text tokens, step by step"
    );
    assert_eq!(
        generator.state.end_step,
        record["end_step"].as_u64().map(|v| v as usize)
    );
    eprintln!(
        "streaming: {} reference steps (fixed tail), {} ours (batch-mode end)",
        reference.len(),
        ours.len()
    );
}
