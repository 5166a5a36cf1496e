//! Zero setup: `Kyutai::tts()` on the real process-wide provider, against the loopback hub.
//! (Its own test binary: the provider is configured once per process.)

mod support;
#[path = "support/tts_reference.rs"]
mod tts_reference;

use fluent_voice_kyutai::prelude::*;
use futures::StreamExt;
use support::*;

#[tokio::test]
async fn kyutai_tts_fetches_loads_once_and_speaks() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    Kyutai::configure(config(&hub, cache.path())).unwrap();

    for _ in 0..2 {
        let conversation = Kyutai::tts()
            .with_speaker(
                Speaker::speaker("Narrator")
                    .with_voice(VOICE)
                    .speak("Hello from Rust.")
                    .build(),
            )
            .temperature(0.0)
            .synthesize()
            .await
            .unwrap();
        let mut stream = conversation.into_stream();
        let mut pcm = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert_eq!(chunk.sample_rate, 24_000);
            pcm.extend(chunk.samples.iter().copied());
        }
        // The reference's waveform for this text, voice and the default CFG (2.0), greedy.
        tts_reference::assert_same_pcm("tts_parity", "hello", &pcm);
    }
    // Fetched once for the process.
    assert_eq!(downloads_of(&hub, tiny::TTS_MOSHI_NAME), 1);
    assert_eq!(downloads_of(&hub, &tiny::voice_file(VOICE)), 1);
}
