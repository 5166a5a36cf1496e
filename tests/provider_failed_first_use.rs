//! The real process-wide provider: a failed first initialization is not cached, the callers that
//! waited on it share its error (one attempt, not one per caller), and the next call retries.

mod support;

use fluent_voice_kyutai::prelude::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_first_use_is_shared_by_waiters_and_retried_later() {
    let hub = TestHub::start();
    publish_defaults(&hub);
    let cache = tempfile::tempdir().unwrap();
    Kyutai::configure(config(&hub, cache.path()).max_attempts(2)).unwrap();
    // The hub is down for the first attempt.
    hub.inject(Fault::new("config.json", FaultKind::Status(503)).times(1000));

    let callers: Vec<_> = (0..8)
        .map(|_| tokio::spawn(async { Kyutai::engine().await?.ensure_stt().await.cloned() }))
        .collect();
    for caller in callers {
        let error = caller.await.unwrap().unwrap_err();
        assert!(
            matches!(error, MoshiError::Network { attempts: 2, .. }),
            "{error:?}"
        );
    }
    // One shared attempt: two requests (the attempt and its retry), not sixteen.
    let config_requests = hub
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("config.json"))
        .count();
    assert_eq!(config_requests, 2, "{:#?}", hub.requests());

    // The hub recovers; the failure was not cached, so the next call fetches.
    hub.clear_faults();
    hub.clear_log();
    let stt = Kyutai::engine().await.unwrap().ensure_stt().await.unwrap();
    assert!(stt.lm_weights.exists());
    assert_eq!(downloads_of(&hub, tiny::STT_MOSHI_NAME), 1);
    assert_eq!(
        fluent_voice_kyutai::internals::global_provider().creations_started(),
        1,
        "the engine itself was created once"
    );
}
