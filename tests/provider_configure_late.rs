//! The real process-wide provider: `Kyutai::configure` after first use is refused with a typed
//! error that hands the configuration back.

use fluent_voice_kyutai::prelude::*;

#[test]
fn configure_after_first_use_is_refused_and_returns_the_config() {
    // First use: building a conversation fixes the configuration (no network is touched here).
    let _builder = Kyutai::stt();
    let late = KyutaiModelConfig::default().stt_repo("kyutai/stt-2.6b-en-candle");
    let error = Kyutai::configure(late).unwrap_err();
    assert!(error.is_already_in_use());
    assert!(!error.is_already_configured());
    let message = error.to_string();
    assert!(
        message.contains("after the Kyutai models were first used"),
        "{message}"
    );
    assert!(message.ends_with('.'), "a full sentence: {message}");
    assert_eq!(error.into_config().stt_repo, "kyutai/stt-2.6b-en-candle");
}
