//! Time to first audio of `kyutai` text-to-speech as a voice agent meets it: the model loaded
//! beforehand (as a server or an app does at start), then a conversation whose words arrive at
//! an LLM's pace, against the same text given whole.
//!
//! ```text
//! cargo run --release --example first_audio -- CACHE_DIR [WEIGHTS] [WORDS_PER_SECOND]
//! ```
//!
//! CACHE_DIR holds the models (offline: nothing is fetched), for example the real-size
//! random-weight repos of `tools/bench/make_real_size.py`; WEIGHTS is f32, q8 (default) or q4;
//! WORDS_PER_SECOND defaults to 10. Prints, for each way of giving the text, the time from the
//! first word to the first audio, and how much audio came per second of generation after it.

use std::time::{Duration, Instant};

use fluent_voice_kyutai::models::{KyutaiModelConfig, Weights};
use fluent_voice_kyutai::voice::{Speaker, TtsConversation, TtsConversationBuilder};
use fluent_voice_kyutai::{KyutaiEngine, text_channel};
use futures::StreamExt;

const TEXT: &str = "Sure, here is what I found. The weather tomorrow looks mild, with a little \
rain in the morning and sun later in the afternoon.";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let cache = args
        .next()
        .ok_or("usage: first_audio CACHE_DIR [WEIGHTS] [WPS]")?;
    let weights: Weights = args.next().as_deref().unwrap_or("q8").parse()?;
    let wps: f64 = args.next().as_deref().unwrap_or("10").parse()?;
    let config = KyutaiModelConfig::default()
        .tts_model(fluent_voice_kyutai::models::TtsFamily::Dsm)
        .cache_dir(&cache)
        .offline(true)
        .tts_weights(weights);
    let engine = KyutaiEngine::with_config(config).await?;
    let started = Instant::now();
    engine.tts_model().await?;
    eprintln!(
        "weights {weights}: model loaded in {:.1?}",
        started.elapsed()
    );

    for (name, streamed) in [("whole text", false), ("streamed", true)] {
        let builder = engine.tts().seed(1);
        let started = Instant::now();
        let mut audio = if streamed {
            let (tx, text) = text_channel();
            let gap = Duration::from_secs_f64(1.0 / wps);
            tokio::spawn(async move {
                for word in TEXT.split_inclusive(' ') {
                    if tx.send(word).is_err() {
                        return;
                    }
                    tokio::time::sleep(gap).await;
                }
            });
            builder.synthesize_stream(text).await?.into_stream()
        } else {
            let speaker = Speaker::speaker("A").speak(TEXT).build();
            builder
                .with_speaker(speaker)
                .synthesize()
                .await?
                .into_stream()
        };
        let mut first = None;
        let mut samples = 0usize;
        while let Some(chunk) = audio.next().await {
            let chunk = chunk?;
            first.get_or_insert_with(|| started.elapsed());
            samples += chunk.samples.len();
        }
        let total = started.elapsed();
        let first = first.ok_or("no audio")?;
        let seconds = samples as f64 / 24_000.0;
        println!(
            "{weights} {name:10} ({wps} words/s): first audio after {:.2} s; {seconds:.1} s of \
             audio in {:.1} s ({:.2}x real time after the first audio)",
            first.as_secs_f64(),
            total.as_secs_f64(),
            seconds / (total - first).as_secs_f64().max(1e-9),
        );
    }
    Ok(())
}
