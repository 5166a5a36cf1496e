//! The real process-wide provider: eight concurrent first callers of the zero-setup API cause
//! one engine creation and one download of each file. (One scenario per test binary: the global
//! lives as long as the process.)

mod support;

use fluent_voice_kyutai::prelude::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_first_callers_share_one_download() {
    let hub = TestHub::start();
    let published = publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    Kyutai::configure(config(&hub, cache.path())).unwrap();

    let callers: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                Kyutai::tts()
                    .with_speaker(Speaker::speaker("n").speak(format!("Hello {i}.")).build())
                    .synthesize()
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for caller in callers {
        caller
            .await
            .unwrap()
            .expect("every first caller gets a conversation");
    }

    assert_eq!(
        fluent_voice_kyutai::internals::global_provider().creations_started(),
        1
    );
    let engine = Kyutai::get().expect("the engine exists after first use");
    let paths = engine.model_paths();
    let tts = paths.tts().unwrap();
    assert_eq!(tts.commit, published.tts);
    for file in [
        "config.json",
        tiny::TTS_MOSHI_NAME,
        tiny::TTS_MIMI_NAME,
        tiny::TTS_TOKENIZER_NAME,
    ] {
        assert_eq!(
            downloads_of(&hub, &format!("{TTS}/resolve/{}/{file}", published.tts)),
            1,
            "{file}"
        );
    }
    assert_eq!(downloads_of(&hub, &tiny::voice_file(VOICE)), 1);
    // Nothing of the STT model was fetched by TTS use.
    assert!(hub.requests().iter().all(|r| !r.path.contains(STT)));
    // Later conversations reuse the same engine: no request at all.
    hub.clear_log();
    let again = Kyutai::engine().await.unwrap();
    assert!(again.ptr_eq(engine));
    again.ensure_tts().await.unwrap();
    assert!(hub.requests().is_empty());
}
