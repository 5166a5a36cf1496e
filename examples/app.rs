//! A small application on `fluent-voice-kyutai`, written as an app developer would: the code the
//! README's "Use it in your app" section shows, function by function. `tests/readme_app.rs` runs
//! every function against the loopback test hub and checks that the README shows this code as it
//! is here.
//!
//! ```text
//! cargo run --release --example app -- say "Hello from Rust." hello.wav
//! cargo run --release --example app -- transcribe hello.wav
//! ```

use fluent_voice_kyutai::prelude::*;

// README: save speech
/// Speaks `text` with the default voice and saves it as a 16-bit WAV file.
pub async fn say_to_file(text: &str, path: &str) -> Result<(), VoiceError> {
    let samples = Kyutai::tts()
        .with_speaker(Speaker::speaker("Narrator").speak(text).build())
        .synthesize()
        .await?
        .collect_samples()
        .await?;
    write_wav(path, &samples, 24_000, 1, WavFormat::Pcm16)?;
    Ok(())
}
// README: end

// README: transcript
/// Transcribes an audio file: the text, each word with its times, and the audio's length.
pub async fn transcribe_file(path: &str) -> Result<Transcript, VoiceError> {
    Kyutai::stt()
        .with_source(SpeechSource::from_file(path))
        .listen()
        .await?
        .transcript()
        .await
}
// README: end

// README: errors
/// Tells the user what went wrong, by kind; the engine's own error has the details.
pub async fn say_or_explain(text: &str, path: &str) -> String {
    match say_to_file(text, path).await {
        Ok(()) => format!("saved {path}"),
        Err(VoiceError::NotFound { message, .. }) => format!("check the name: {message}"),
        Err(VoiceError::Offline { message, .. }) => format!("go online once: {message}"),
        Err(VoiceError::Network { message, .. }) => format!("try again later: {message}"),
        Err(VoiceError::InvalidInput(message)) => format!("fix the input: {message}"),
        Err(VoiceError::Io(error)) => format!("file trouble ({:?}): {error}", error.kind()),
        Err(other) => match other.moshi() {
            Some(MoshiError::DiskFull { needed, .. }) => format!("free {needed} bytes"),
            _ => format!("failed: {other}"),
        },
    }
}
// README: end

#[tokio::main]
pub async fn main() -> Result<(), VoiceError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["say", text, path] => println!("{}", say_or_explain(text, path).await),
        ["transcribe", path] => {
            let transcript = transcribe_file(path).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&transcript).unwrap_or_default()
            );
        }
        _ => eprintln!("usage: app say TEXT OUT.wav | app transcribe AUDIO"),
    }
    Ok(())
}
