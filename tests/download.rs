//! Downloading through the model manager against the loopback hub: first use, cache hits,
//! forced downloads, custom repos, pinned revisions, per-file overrides, lazy fetching.

mod support;

use fluent_voice_kyutai::models::ModelFile;
use fluent_voice_kyutai::{KyutaiEngine, KyutaiModelManager, MoshiError};
use support::*;

#[tokio::test]
async fn first_use_downloads_verifies_and_lays_out_the_cache() {
    let hub = TestHub::start();
    let published = publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let manager = KyutaiModelManager::with_config(config(&hub, cache.path())).unwrap();

    let paths = manager.download_models().await.unwrap();

    let tts = paths.tts().unwrap();
    assert_eq!(tts.commit, published.tts);
    assert!(tts.lm_weights.ends_with(tiny::TTS_MOSHI_NAME));
    assert!(tts.mimi_weights.ends_with(tiny::TTS_MIMI_NAME));
    assert!(tts.tokenizer.ends_with(tiny::TTS_TOKENIZER_NAME));
    assert!(
        tts.mimi_config
            .as_ref()
            .unwrap()
            .ends_with(tiny::MIMI_CONFIG_NAME)
    );
    let stt = paths.stt().unwrap();
    assert_eq!(stt.commit, published.stt);
    assert!(stt.lm_weights.ends_with(tiny::STT_MOSHI_NAME));
    // The bytes on disk are the published bytes.
    let served: std::collections::BTreeMap<_, _> = tiny::tts_repo().into_iter().collect();
    assert_eq!(
        std::fs::read(&tts.lm_weights).unwrap(),
        served[tiny::TTS_MOSHI_NAME]
    );
    // Snapshot entries are relative symlinks into blobs/, and refs/main holds the commit.
    let link = std::fs::read_link(&tts.lm_weights).unwrap();
    assert!(link.starts_with("../../blobs"), "{link:?}");
    let repo_dir = cache.path().join("models--kyutai--tts-1.6b-en_fr");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        published.tts
    );
    // No partial file is left behind.
    for entry in std::fs::read_dir(repo_dir.join("blobs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".incomplete"), "{name}");
    }
    // Each file the model needs was transferred exactly once; the rest of the repo never.
    let needed = [
        "config.json",
        tiny::TTS_MOSHI_NAME,
        tiny::TTS_MIMI_NAME,
        tiny::TTS_TOKENIZER_NAME,
        tiny::MIMI_CONFIG_NAME,
    ];
    for (file, _) in tiny::tts_repo() {
        let expected = usize::from(needed.contains(&file.as_str()));
        let gets = hub
            .requests()
            .iter()
            .filter(|r| {
                r.method == "GET" && r.path == format!("/{TTS}/resolve/{}/{file}", published.tts)
            })
            .count();
        assert_eq!(gets, expected, "{file}");
    }
    let voice = paths.voice(VOICE).unwrap();
    assert!(voice.to_string_lossy().ends_with(&tiny::voice_file(VOICE)));
}

#[tokio::test]
async fn a_second_manager_on_the_same_cache_transfers_no_bytes_and_force_transfers_again() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    KyutaiModelManager::with_config(config(&hub, cache.path()))
        .unwrap()
        .download_models()
        .await
        .unwrap();
    let first_bytes = file_bytes_served(&hub);
    assert!(first_bytes > 0);

    hub.clear_log();
    let again = KyutaiModelManager::with_config(config(&hub, cache.path())).unwrap();
    again.download_models().await.unwrap();
    assert_eq!(file_bytes_served(&hub), 0, "{:#?}", hub.requests());
    // One metadata request per repository (to see whether `main` moved), nothing per file.
    let heads = hub.requests().iter().filter(|r| r.method == "HEAD").count();
    assert_eq!(heads, 3, "{:#?}", hub.requests());

    hub.clear_log();
    let forced =
        KyutaiModelManager::with_config(config(&hub, cache.path()).force_download(true)).unwrap();
    forced.download_models().await.unwrap();
    assert_eq!(file_bytes_served(&hub), first_bytes);
}

#[tokio::test]
async fn only_what_is_used_is_fetched() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    assert!(
        hub.requests().is_empty(),
        "creating an engine fetches nothing"
    );

    engine.ensure_voice(VOICE).await.unwrap();
    let requests = hub.requests();
    assert!(
        requests.iter().all(|r| !r.path.contains(STT)),
        "no STT request: {requests:#?}"
    );
    // From the voices repo, exactly the one voice file, nothing else.
    let voice_paths: Vec<_> = requests
        .iter()
        .filter(|r| r.path.contains(VOICES))
        .map(|r| r.path.clone())
        .collect();
    assert!(
        voice_paths
            .iter()
            .all(|p| p.ends_with(&tiny::voice_file(VOICE))),
        "{voice_paths:#?}"
    );
    assert!(engine.model_paths().stt().is_none());

    hub.clear_log();
    engine.ensure_stt().await.unwrap();
    assert!(hub.requests().iter().all(|r| r.path.contains(STT)));
    // A second call on the engine does nothing at all.
    hub.clear_log();
    engine.ensure_stt().await.unwrap();
    engine.ensure_voice(VOICE).await.unwrap();
    assert!(hub.requests().is_empty());
}

#[tokio::test]
async fn custom_repos_and_a_pinned_revision() {
    let hub = TestHub::start();
    let old = publish(&hub, "me/my-stt", "main", &tiny::stt_repo());
    // A later commit changes config.json; the pinned revision must still give the old one.
    let mut changed = tiny::stt_repo();
    for (path, bytes) in &mut changed {
        if path == "config.json" {
            let mut value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            value["comment"] = "second commit".into();
            *bytes = serde_json::to_vec_pretty(&value).unwrap();
        }
    }
    let new = publish(&hub, "me/my-stt", "main", &changed);
    assert_ne!(old, new);
    let cache = tempfile::tempdir().unwrap();

    let pinned = KyutaiModelManager::with_config(
        config(&hub, cache.path())
            .stt_repo("me/my-stt")
            .stt_revision(&old),
    )
    .unwrap();
    let stt = pinned.fetch_stt().await.unwrap();
    assert_eq!(stt.commit, old);
    assert!(stt.config.to_string_lossy().contains(&old));
    let text = std::fs::read_to_string(&stt.config).unwrap();
    assert!(!text.contains("second commit"));

    let latest =
        KyutaiModelManager::with_config(config(&hub, cache.path()).stt_repo("me/my-stt")).unwrap();
    let stt = latest.fetch_stt().await.unwrap();
    assert_eq!(stt.commit, new);
    assert!(
        std::fs::read_to_string(&stt.config)
            .unwrap()
            .contains("second commit")
    );
    // The weights did not change between commits: the blob is shared, not fetched twice.
    assert_eq!(downloads_of(&hub, tiny::STT_MOSHI_NAME), 1);
    // A pinned commit that is cached needs no request at all.
    hub.clear_log();
    let again = KyutaiModelManager::with_config(
        config(&hub, cache.path())
            .stt_repo("me/my-stt")
            .stt_revision(&old),
    )
    .unwrap();
    again.fetch_stt().await.unwrap();
    assert!(hub.requests().is_empty(), "{:#?}", hub.requests());
}

#[tokio::test]
async fn hf_and_file_overrides_replace_single_files() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    // Another repo holds an alternative Mimi.
    let mimi = repo_file(&tiny::tts_repo(), tiny::TTS_MIMI_NAME);
    hub.publish(
        "other/codecs",
        "main",
        &[("nested/mimi.safetensors", mimi.clone())],
    );
    let local_dir = tempfile::tempdir().unwrap();
    let local_tokenizer = local_dir.path().join("my_tokenizer.model");
    std::fs::write(&local_tokenizer, tiny::TINY_SPM).unwrap();
    let cache = tempfile::tempdir().unwrap();

    let manager = KyutaiModelManager::with_config(
        config(&hub, cache.path())
            .tts_file(
                ModelFile::MimiWeights,
                "hf://other/codecs/nested/mimi.safetensors",
            )
            .tts_file(
                ModelFile::Tokenizer,
                format!("file://{}", local_tokenizer.display()),
            ),
    )
    .unwrap();
    let tts = manager.fetch_tts().await.unwrap();
    assert!(
        tts.mimi_weights
            .starts_with(cache.path().join("models--other--codecs"))
    );
    assert_eq!(std::fs::read(&tts.mimi_weights).unwrap(), mimi);
    assert_eq!(tts.tokenizer, local_tokenizer);
    // The repo's own Mimi and tokenizer were never requested.
    let requests = hub.requests();
    assert!(
        requests
            .iter()
            .all(|r| !r.path.ends_with(tiny::TTS_MIMI_NAME))
    );
    assert!(
        requests
            .iter()
            .all(|r| !r.path.ends_with(tiny::TTS_TOKENIZER_NAME))
    );

    // A file:// override that does not exist is a clear error.
    let manager = KyutaiModelManager::with_config(
        config(&hub, cache.path()).tts_file(ModelFile::Tokenizer, "file:///nonexistent/tok.model"),
    )
    .unwrap();
    let error = manager.fetch_tts().await.unwrap_err();
    assert!(
        matches!(error, MoshiError::InvalidModelFile { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("/nonexistent/tok.model"));
}

#[tokio::test]
async fn overrides_written_in_config_json_are_honoured() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let mimi = repo_file(&tiny::stt_repo(), tiny::STT_MIMI_NAME);
    hub.publish("kyutai/shared-mimi", "main", &[("mimi.safetensors", mimi)]);
    let mut files = tiny::stt_repo();
    files.retain(|(p, _)| p != tiny::STT_MIMI_NAME);
    for (path, bytes) in &mut files {
        if path == "config.json" {
            let mut value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            value["mimi_name"] = "hf://kyutai/shared-mimi/mimi.safetensors".into();
            *bytes = serde_json::to_vec(&value).unwrap();
        }
    }
    publish(&hub, "me/stt-shared-mimi", "main", &files);
    let cache = tempfile::tempdir().unwrap();
    let manager =
        KyutaiModelManager::with_config(config(&hub, cache.path()).stt_repo("me/stt-shared-mimi"))
            .unwrap();
    let stt = manager.fetch_stt().await.unwrap();
    assert!(
        stt.mimi_weights
            .starts_with(cache.path().join("models--kyutai--shared-mimi"))
    );
}

#[tokio::test]
async fn unknown_voices_and_bad_voice_names_are_clear_errors() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    let engine = KyutaiEngine::with_config(config(&hub, cache.path()))
        .await
        .unwrap();
    let error = engine
        .ensure_voice("expresso/no-such-voice.wav")
        .await
        .unwrap_err();
    match &error {
        MoshiError::VoiceNotFound { voice, file, .. } => {
            assert_eq!(voice, "expresso/no-such-voice.wav");
            assert_eq!(file, "expresso/no-such-voice.wav.1e68beda@240.safetensors");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.to_string().contains("voices are named by their path"));
    let error = engine.ensure_voice("../../etc/passwd").await.unwrap_err();
    assert!(matches!(error, MoshiError::InvalidInput(_)), "{error}");
}

/// A cache hit whose blob has no verification record (another client put it there) is hashed
/// before it is trusted: on a blocking thread, so the async runtime keeps running meanwhile,
/// even a single-threaded one.
#[tokio::test(flavor = "current_thread")]
async fn hashing_a_cached_blob_does_not_stall_the_runtime() {
    let hub = TestHub::start();
    let big = tiny::big_file(96 << 20, 7);
    hub.publish("test/big", "main", &[("weights.bin", big)]);
    let cache = tempfile::tempdir().unwrap();
    let manager = KyutaiModelManager::with_config(config(&hub, cache.path())).unwrap();
    let first = manager
        .fetch_file("test/big", "main", "weights.bin")
        .await
        .unwrap();
    assert!(!first.from_cache);
    // Forget that it was verified: the next hit must hash the 96 MB again.
    let records = cache.path().join("models--test--big/.kyutai-verified");
    for entry in std::fs::read_dir(&records).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }

    let manager =
        KyutaiModelManager::with_config(config(&hub, cache.path()).offline(true)).unwrap();
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let started = std::time::Instant::now();
    let hit = manager
        .fetch_file("test/big", "main", "weights.bin")
        .await
        .unwrap();
    let took = started.elapsed();
    ticker.abort();
    assert!(hit.from_cache);
    let ticked = ticks.load(std::sync::atomic::Ordering::SeqCst);
    // The timer ran on this one runtime thread while the file was hashed.
    assert!(
        ticked as f64 >= took.as_millis() as f64 / 20.0 && ticked >= 5,
        "{ticked} ticks in {took:?}"
    );
    // And the record is written again, so the next hit is a stat.
    assert!(
        std::fs::read_dir(&records)
            .unwrap()
            .any(|e| e.unwrap().file_type().unwrap().is_file())
    );
}
