//! `kyutai`: download and inspect Kyutai models from the command line.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fluent_voice_kyutai::models::{
    KyutaiModelConfig, ProgressEvent, ProgressMode, TtsFamily, Weights,
};
use fluent_voice_kyutai::{KyutaiEngine, MoshiError};

#[derive(Parser)]
#[command(
    name = "kyutai",
    version,
    about = "Kyutai text-to-speech and speech-to-text models"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args)]
struct Common {
    /// TTS model repository (a model of the 1.6B DSM family; selects that family).
    #[arg(long, global = true, value_name = "REPO")]
    tts_repo: Option<String>,
    /// The TTS model: `dsm` (the 1.6B, the default on GPUs), `pocket` (Pocket TTS English, made
    /// for CPUs: the default there), `pocket:LANGUAGE` (french, german_24l, english_2m_2026-10,
    /// ...), a Pocket config FILE.yaml, or hf://REPO/PATH.yaml@REVISION. `--tts-repo` wins: it
    /// names a DSM model.
    #[arg(long, global = true, value_name = "MODEL", env = "KYUTAI_TTS_MODEL")]
    tts_model: Option<TtsFamily>,
    /// STT model repository.
    #[arg(long, global = true, value_name = "REPO")]
    stt_repo: Option<String>,
    /// Voice embeddings repository.
    #[arg(long, global = true, value_name = "REPO")]
    voices_repo: Option<String>,
    /// Hub cache directory (default: HF_HUB_CACHE, else $HF_HOME/hub).
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<std::path::PathBuf>,
    /// Never use the network: serve from the cache or fail.
    #[arg(long, global = true)]
    offline: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Where the models run: cpu, cuda, cuda:N, metal or metal:N (GPUs need a build with the
    /// `cuda` or `metal` feature).
    #[arg(long, global = true, value_name = "DEVICE", default_value = "cpu")]
    device: fluent_voice_kyutai::models::Device,
}

#[derive(Subcommand)]
enum Command {
    /// Download and verify models (default: TTS, STT and the default voice).
    Download {
        /// Only the TTS model (and voices).
        #[arg(long)]
        tts: bool,
        /// Only the STT model.
        #[arg(long)]
        stt: bool,
        /// A voice to fetch, e.g. expresso/ex03-ex01_happy_001_channel1_334s.wav (repeatable).
        #[arg(long = "voice", value_name = "NAME")]
        voices: Vec<String>,
        /// Download again even if the cache holds a verified copy.
        #[arg(long)]
        force: bool,
        /// Also prepare these weights now (q8, q4: derive the quantized files), so that the
        /// first `say` or `transcribe` starts fast.
        #[arg(long, value_name = "f32|bf16|q8|q4", env = "KYUTAI_WEIGHTS")]
        weights: Option<Weights>,
    },
    /// Transcribe an audio file (WAV, FLAC, MP3, OGG/Vorbis) with the STT model.
    Transcribe {
        /// The audio file.
        audio: std::path::PathBuf,
        /// Output: plain text (words printed as they are recognised), one JSON object, or
        /// SRT subtitles.
        #[arg(long, value_enum, default_value_t = transcribe::Format::Text)]
        format: transcribe::Format,
        /// How the language model's weights are held: f32, q8 or q4 on the CPU (default q8;
        /// quantized once at the first use and kept in the cache), bf16 or f16 on GPUs.
        #[arg(long, value_name = "f32|bf16|q8|q4", env = "KYUTAI_WEIGHTS")]
        weights: Option<Weights>,
    },
    /// Speak a text with the TTS model and write a 16-bit PCM mono WAV at 24000 Hz.
    Say {
        /// The text to speak (or use -f).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Read the text from a file; `-` reads standard input as it arrives and speaks while
        /// it is still being written (`some-llm | kyutai say -f - -o - | aplay`).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// The output WAV file; `-` streams it to standard output as it is made (a WAV header
        /// of open-ended length, then 16-bit samples).
        #[arg(short = 'o', long = "output", default_value = "out.wav")]
        output: std::path::PathBuf,
        /// Also write each word's start and end in the audio: JSON
        /// (`[{"text", "start_ms", "end_ms"}]`), or SRT subtitles when FILE ends in `.srt`.
        #[arg(long, value_name = "FILE")]
        timings: Option<std::path::PathBuf>,
        /// The voice, e.g. expresso/ex03-ex01_happy_001_channel1_334s.wav.
        #[arg(long, value_name = "NAME")]
        voice: Option<String>,
        /// Seed of the sampler: the same seed gives the same audio.
        #[arg(long)]
        seed: Option<u64>,
        /// Sampling temperature (0 = greedy; default: the model's lm_gen_config).
        #[arg(long)]
        temperature: Option<f32>,
        /// Classifier-free guidance coefficient (default 2.0).
        #[arg(long = "cfg-coef")]
        cfg_coef: Option<f32>,
        /// Audio codebooks the 1.6B generates (default: all 32, as Kyutai's scripts; Kyutai's
        /// server uses 24): fewer is faster, with less audio detail.
        #[arg(long = "n-q", value_name = "N")]
        n_q: Option<usize>,
        /// How the language model's weights are held: f32, q8 or q4 on the CPU (default q8;
        /// quantized once at the first use and kept in the cache), bf16 or f16 on GPUs.
        #[arg(long, value_name = "f32|bf16|q8|q4", env = "KYUTAI_WEIGHTS")]
        weights: Option<Weights>,
    },
    /// Serve Kyutai's streaming protocol (moshi-server's): speech-to-text at
    /// /api/asr-streaming, text-to-speech at /api/tts_streaming, for Kyutai's client scripts
    /// and Unmute.
    #[cfg(feature = "server")]
    Serve(serve::Options),
    /// Write a Pocket TTS voice state (`--tts-model pocket...`): the voice of an audio file
    /// (cloned; needs the gated weights) or a predefined voice, as a `.safetensors` file the
    /// `pocket-tts` Python package loads, and `--voice` here takes.
    ExportVoice {
        /// An audio file to clone (WAV, FLAC, MP3, OGG) or a predefined voice name (alba, ...).
        voice: String,
        /// The voice state file to write.
        output: std::path::PathBuf,
    },
    /// List what the cache holds; with --verify, re-hash every file.
    Cache {
        /// Re-hash every cached file against the hash the hub announced.
        #[arg(long)]
        verify: bool,
    },
}

impl Common {
    fn config(&self) -> KyutaiModelConfig {
        let mut config = KyutaiModelConfig::default();
        if let Some(family) = &self.tts_model {
            config = config.tts_model(family.clone());
        }
        if let Some(repo) = &self.tts_repo {
            config = config.tts_repo(repo);
        }
        if let Some(repo) = &self.stt_repo {
            config = config.stt_repo(repo);
        }
        if let Some(repo) = &self.voices_repo {
            config = config.voices_repo(repo);
        }
        if let Some(dir) = &self.cache_dir {
            config = config.cache_dir(dir);
        }
        if self.offline {
            config = config.offline(true);
        }
        if self.quiet {
            config = config.progress(ProgressMode::Quiet);
        }
        config.device(self.device)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, MoshiError> {
    let config = cli.common.config();
    if matches!(
        cli.command,
        Command::Say { .. } | Command::Transcribe { .. }
    ) {
        // A GPU that cannot be used fails here, before gigabytes of weights are downloaded.
        config.device.check()?;
    }
    match cli.command {
        Command::Download {
            tts,
            stt,
            voices,
            force,
            weights,
        } => {
            let config = match weights {
                Some(w) => config.weights(w),
                None => config,
            };
            download(
                config.force_download(force),
                tts,
                stt,
                voices,
                weights.is_some(),
            )
            .await
        }
        Command::Cache { verify } => cache(config, verify),
        Command::ExportVoice { voice, output } => export_voice(config, &voice, &output).await,
        Command::Say {
            text,
            file,
            output,
            timings,
            voice,
            seed,
            temperature,
            cfg_coef,
            n_q,
            weights,
        } => {
            let config = match n_q {
                Some(n) => config.tts_n_q(n),
                None => config,
            };
            let config = match weights {
                Some(w) => config.tts_weights(w),
                None => config,
            };
            let options = say::Options {
                timings,
                voice,
                seed,
                temperature,
                cfg_coef,
            };
            say::run(config, text, file, output, options).await
        }
        Command::Transcribe {
            audio,
            format,
            weights,
        } => {
            let config = match weights {
                Some(w) => config.stt_weights(w),
                None => config,
            };
            transcribe::run(config, audio, format).await
        }
        #[cfg(feature = "server")]
        Command::Serve(options) => serve::run(config, cli.common, options).await,
    }
}

async fn download(
    config: KyutaiModelConfig,
    tts: bool,
    stt: bool,
    mut voices: Vec<String>,
    prepare_weights: bool,
) -> Result<ExitCode, MoshiError> {
    let (want_tts, want_stt) = match (tts, stt) {
        (false, false) => (true, true),
        chosen => chosen,
    };
    let want_tts = want_tts || !voices.is_empty();
    if want_tts && voices.is_empty() {
        voices.push(config.default_voice.clone());
    }
    // Through the engine, so that preparing the weights reuses the files just fetched.
    let engine = KyutaiEngine::with_config(config.on_progress(say_when_waiting)).await?;
    if want_stt {
        let stt = engine.ensure_stt().await?;
        let files = [
            &stt.config,
            &stt.lm_weights,
            &stt.mimi_weights,
            &stt.tokenizer,
        ];
        print_model(
            "stt ",
            &stt.repo,
            &stt.commit,
            &files,
            stt.mimi_config.as_deref(),
        );
        if prepare_weights && let Some(path) = engine.prepare_stt_weights().await? {
            println!("     {}", path.display());
        }
    }
    if want_tts && let TtsFamily::Pocket(_) = &engine.manager().config().tts_family() {
        let pocket = engine.pocket_tts().await?;
        let files = [&pocket.files.weights, &pocket.files.tokenizer];
        print_model(
            "tts ",
            &format!("pocket:{}", pocket.files.name),
            "",
            &files,
            None,
        );
        if let Some(note) = &pocket.files.cloning_off {
            eprintln!("note: voice cloning is off: {note}");
        }
        if voices == [config_default_voice()] {
            voices = vec![engine.default_voice().to_string()];
        }
        for voice in &voices {
            engine.pocket_voice(voice).await?;
            println!("voice {voice}");
        }
    } else if want_tts {
        let tts = engine.ensure_tts().await?;
        let files = [
            &tts.config,
            &tts.lm_weights,
            &tts.mimi_weights,
            &tts.tokenizer,
        ];
        print_model(
            "tts ",
            &tts.repo,
            &tts.commit,
            &files,
            tts.mimi_config.as_deref(),
        );
        if prepare_weights && let Some(path) = engine.prepare_tts_weights().await? {
            println!("     {}", path.display());
        }
        for voice in &voices {
            let path = engine.ensure_voice(voice).await?;
            println!("voice {voice}\n     {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The default of `KyutaiModelConfig::default_voice` (a DSM voice).
fn config_default_voice() -> String {
    KyutaiModelConfig::default().default_voice
}

/// `kyutai export-voice`: a Pocket TTS voice state, written in the reference's format.
async fn export_voice(
    config: KyutaiModelConfig,
    voice: &str,
    output: &std::path::Path,
) -> Result<ExitCode, MoshiError> {
    if !matches!(config.tts_family(), TtsFamily::Pocket(_)) {
        return Err(MoshiError::InvalidConfig(
            "export-voice writes Pocket TTS voice states: add --tts-model pocket (or \
             pocket:LANGUAGE)"
                .into(),
        ));
    }
    // A voice state holds the flow transformer's keys and values of the voice prompt: written
    // for other programs (the `pocket-tts` package loads it), it comes from the published
    // weights, not from a quantized copy.
    let config = config.tts_weights(Weights::F32);
    let engine = KyutaiEngine::with_config(config.on_progress(say_when_waiting)).await?;
    let state = engine.pocket_voice(voice).await?;
    state.save(output)?;
    println!("{}", output.display());
    Ok(ExitCode::SUCCESS)
}

/// Says on stderr that another process is downloading a file we need, so that a wait on the
/// cross-process lock never looks like a hang (progress bars print their own line).
fn say_when_waiting(event: &ProgressEvent) {
    if let ProgressEvent::Waiting { repo, file } = event
        && !std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        eprintln!("waiting: another process is downloading `{file}` of `{repo}`");
    }
}

/// Prints a fetched model: `<label> <repo> @ <commit>`, then one indented path per file.
fn print_model(
    label: &str,
    repo: &str,
    commit: &str,
    files: &[&std::path::PathBuf],
    extra: Option<&std::path::Path>,
) {
    println!("{label} {repo} @ {commit}");
    for path in files.iter().map(|p| p.as_path()).chain(extra) {
        println!("     {}", path.display());
    }
}

fn cache(config: KyutaiModelConfig, rehash: bool) -> Result<ExitCode, MoshiError> {
    let manager = fluent_voice_kyutai::KyutaiModelManager::with_config(config)?;
    println!("cache {}", manager.settings().cache_dir.display());
    let files = manager.cached_files(rehash);
    let mut current = None;
    for file in &files {
        if current != Some((&file.repo, &file.commit)) {
            println!("{} @ {}", file.repo, file.commit);
            current = Some((&file.repo, &file.commit));
        }
        let size = file
            .size
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        println!("  {:<12} {:>12}  {}", file.state.label(), size, file.file);
    }
    let bad = files.iter().filter(|f| f.state.is_bad()).count();
    let discarded = files
        .iter()
        .filter(|f| f.state == fluent_voice_kyutai::models::FileState::Discarded)
        .count();
    if discarded > 0 {
        eprintln!(
            "error: {discarded} derived file(s) (quantized weights) were damaged and are removed; \
             the next load that needs them builds them again"
        );
    }
    if bad > 0 {
        eprintln!(
            "error: {bad} cached file(s) are corrupt or missing; run `kyutai download` to fetch them again"
        );
    }
    if bad + discarded > 0 {
        return Ok(ExitCode::FAILURE);
    }
    if files.is_empty() {
        println!("(empty)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `kyutai transcribe`.
mod transcribe {
    use std::io::Write;
    use std::path::PathBuf;
    use std::process::ExitCode;

    use fluent_voice_kyutai::voice::{SpeechSource, SttConversation, SttConversationBuilder};
    use fluent_voice_kyutai::{KyutaiEngine, KyutaiModelConfig, MoshiError};
    use futures::StreamExt;

    #[derive(Clone, Copy, clap::ValueEnum)]
    pub enum Format {
        Text,
        Json,
        Srt,
    }

    pub async fn run(
        config: KyutaiModelConfig,
        audio: PathBuf,
        format: Format,
    ) -> Result<ExitCode, MoshiError> {
        let engine = KyutaiEngine::with_config(config).await?;
        let conversation = engine
            .stt()
            .with_source(SpeechSource::from_file(audio))
            .listen()
            .await?;
        let mut out = std::io::stdout().lock();
        let _ = match format {
            Format::Text => {
                // Printed as recognised, so that a long file shows progress.
                let mut words = conversation.into_stream();
                let mut sep = "";
                while let Some(word) = words.next().await {
                    let _ = write!(out, "{sep}{}", word?.text);
                    let _ = out.flush();
                    sep = " ";
                }
                writeln!(out)
            }
            Format::Json => writeln!(
                out,
                "{}",
                serde_json::json!(conversation.transcript().await?)
            ),
            Format::Srt => write!(out, "{}", conversation.transcript().await?.to_srt()),
        };
        Ok(ExitCode::SUCCESS)
    }
}

/// `kyutai say`.
mod say {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    use fluent_voice_kyutai::audio::{WavFormat, streaming_wav_header, write_wav};
    use fluent_voice_kyutai::voice::{
        Speaker, Transcript, TranscriptionSegment, TtsConversation, TtsConversationBuilder,
        VoiceError,
    };
    use fluent_voice_kyutai::{KyutaiEngine, KyutaiModelConfig, MoshiError, text_channel};
    use futures::StreamExt;

    pub struct Options {
        pub timings: Option<PathBuf>,
        pub voice: Option<String>,
        pub seed: Option<u64>,
        pub temperature: Option<f32>,
        pub cfg_coef: Option<f32>,
    }

    /// Where the text comes from.
    enum Text {
        Whole(String),
        /// Standard input, read as it arrives.
        Stdin,
    }

    fn read_text(text: Option<String>, file: Option<PathBuf>) -> Result<Text, MoshiError> {
        match (text, file) {
            (Some(text), _) => Ok(Text::Whole(text)),
            (None, Some(path)) if path.as_os_str() == "-" => Ok(Text::Stdin),
            (None, Some(path)) => {
                let bytes = std::fs::read(&path)
                    .map_err(|e| MoshiError::io("could not read the text file", &path, e))?;
                String::from_utf8(bytes).map(Text::Whole).map_err(|_| {
                    MoshiError::InvalidInput(format!("{} is not UTF-8 text", path.display()))
                })
            }
            (None, None) => Err(MoshiError::InvalidInput(
                "give a text to say, or -f FILE (-f - for standard input)".into(),
            )),
        }
    }

    /// Reads standard input on a thread of its own, handing on each piece as it arrives (whole
    /// UTF-8 characters only; a character split between two reads waits for its end).
    fn stdin_pieces() -> fluent_voice_kyutai::TextStream {
        let (tx, text) = text_channel();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = [0u8; 4096];
            let mut held: Vec<u8> = Vec::new();
            loop {
                let n = match stdin.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                held.extend_from_slice(&buffer[..n]);
                let valid = match std::str::from_utf8(&held) {
                    Ok(text) => text.len(),
                    Err(e) if e.error_len().is_none() => e.valid_up_to(),
                    // Not UTF-8: take what can be read, replacing the rest.
                    Err(_) => held.len(),
                };
                let piece = String::from_utf8_lossy(&held[..valid]).into_owned();
                held.drain(..valid);
                if tx.send(piece).is_err() {
                    break;
                }
            }
            if !held.is_empty() {
                let _ = tx.send(String::from_utf8_lossy(&held).into_owned());
            }
        });
        text
    }

    pub async fn run(
        config: KyutaiModelConfig,
        text: Option<String>,
        file: Option<PathBuf>,
        output: PathBuf,
        options: Options,
    ) -> Result<ExitCode, MoshiError> {
        let text = read_text(text, file)?;
        let engine = KyutaiEngine::with_config(config).await?;
        let mut speaker = Speaker::speaker("kyutai");
        if let Text::Whole(text) = &text {
            speaker = speaker.speak(text.as_str());
        }
        if let Some(voice) = options.voice {
            speaker = speaker.with_voice(voice);
        }
        let mut builder = engine.tts().with_speaker(speaker.build());
        if let Some(seed) = options.seed {
            builder = builder.seed(seed);
        }
        if let Some(t) = options.temperature {
            builder = builder.temperature(t);
        }
        if let Some(c) = options.cfg_coef {
            builder = builder.cfg_coef(c);
        }
        let conversation = match text {
            Text::Whole(_) => builder.synthesize().await?,
            Text::Stdin => builder.synthesize_stream(stdin_pieces()).await?,
        };
        let mut stream = conversation.into_stream();
        let to_stdout = output.as_os_str() == "-";
        let mut stdout = std::io::stdout().lock();
        let stdout_error =
            |e: std::io::Error| MoshiError::io("could not write to", "standard output", e);
        let mut samples = Vec::new();
        let mut words: Vec<TranscriptionSegment> = Vec::new();
        let sample_rate = fluent_voice_kyutai::SAMPLE_RATE;
        if to_stdout {
            stdout
                .write_all(&streaming_wav_header(sample_rate, 1))
                .map_err(stdout_error)?;
            stdout.flush().map_err(stdout_error)?;
        }
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            words.extend(chunk.words.iter().cloned());
            total += chunk.samples.len();
            if to_stdout {
                // As it is made, so that a player starts at once.
                stdout
                    .write_all(&chunk.to_pcm16_bytes())
                    .map_err(stdout_error)?;
                stdout.flush().map_err(stdout_error)?;
            } else {
                samples.extend_from_slice(chunk.samples());
            }
        }
        if total == 0 {
            // Only streamed text can get here (a whole text is checked before synthesis).
            return Err(MoshiError::InvalidInput(
                "nothing to say: the text held no words".into(),
            ));
        }
        if !to_stdout {
            write_wav(&output, &samples, sample_rate, 1, WavFormat::Pcm16)?;
        }
        if let Some(path) = &options.timings {
            write_timings(path, words, (total as u64) * 1000 / u64::from(sample_rate))?;
        }
        let shown = if to_stdout {
            "standard output".into()
        } else {
            output.display().to_string()
        };
        eprintln!(
            "wrote {shown} ({:.2} s of audio)",
            total as f64 / f64::from(sample_rate)
        );
        Ok(ExitCode::SUCCESS)
    }

    /// `--timings FILE`: JSON, or SRT for a `.srt` file.
    fn write_timings(
        path: &Path,
        words: Vec<TranscriptionSegment>,
        duration_ms: u64,
    ) -> Result<(), MoshiError> {
        let srt = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("srt"));
        let text = if srt {
            Transcript::from_words(words, duration_ms).to_srt()
        } else {
            serde_json::to_string_pretty(&words).map_err(|e| {
                MoshiError::from(VoiceError::other_caused_by(
                    "could not write the timings",
                    e,
                ))
            })? + "\n"
        };
        std::fs::write(path, text)
            .map_err(|e| MoshiError::io("could not write the timings to", path, e))
    }
}

#[cfg(feature = "server")]
mod serve {
    //! `kyutai serve`: flags and the optional TOML file into a `ServerConfig`, then the server
    //! until SIGINT/SIGTERM.

    use std::net::IpAddr;
    use std::path::PathBuf;
    use std::process::ExitCode;

    use clap::Args;
    use fluent_voice_kyutai::models::{KyutaiModelConfig, Weights};
    use fluent_voice_kyutai::server::{Server, ServerConfig, ServerFile, shutdown_signal};
    use fluent_voice_kyutai::{KyutaiEngine, MoshiError};

    #[derive(Args)]
    pub struct Options {
        /// A TOML file with the same settings (flags win over it).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The address to listen on [default: 127.0.0.1].
        #[arg(long)]
        addr: Option<IpAddr>,
        /// The port [default: 8080].
        #[arg(long)]
        port: Option<u16>,
        /// Streams served at once by each endpoint [default: 8].
        #[arg(long)]
        batch_size: Option<usize>,
        /// How the language models' weights are held: f32, f16, bf16, q8 or q4 (default: q8
        /// on the CPU, bf16 on GPUs).
        #[arg(long, value_name = "f32|f16|bf16|q8|q4")]
        weights: Option<String>,
        /// An accepted API key (repeatable); clients send it in the `kyutai-api-key` header
        /// or as `?auth_id=`. Without any key, every client is accepted.
        #[arg(long = "api-key", value_name = "KEY")]
        api_keys: Vec<String>,
        /// A file of accepted API keys, one per line.
        #[arg(long, value_name = "FILE")]
        api_keys_file: Option<PathBuf>,
        /// Fetch and load the models on first use instead of at start.
        #[arg(long)]
        lazy: bool,
        /// Do not serve speech-to-text.
        #[arg(long)]
        no_asr: bool,
        /// Do not serve text-to-speech.
        #[arg(long)]
        no_tts: bool,
        /// Audio codebooks the 1.6B TTS generates [default: 24, as Kyutai's TTS server, or all
        /// of a model with fewer]; 32 is the 1.6B's all, as `kyutai say` speaks.
        #[arg(long = "n-q", value_name = "N")]
        n_q: Option<usize>,
        /// The voice of every TTS route when a client names none (a file of the voices
        /// repository for the 1.6B, `vctk/p226_023.wav`; a Pocket voice name, `jean`). The
        /// server checks it at start, as it checks the models.
        #[arg(long, value_name = "NAME")]
        voice: Option<String>,
    }

    fn weights(name: &str) -> Result<Weights, MoshiError> {
        name.parse()
            .map_err(|e: String| MoshiError::InvalidInput(e))
    }

    pub async fn run(
        mut models: KyutaiModelConfig,
        common: super::Common,
        options: Options,
    ) -> Result<ExitCode, MoshiError> {
        log::set_logger(&LOGGER).map_err(|e| MoshiError::InvalidInput(e.to_string()))?;
        log::set_max_level(log::LevelFilter::Info);
        let file = match &options.config {
            Some(path) => ServerFile::read(path)?,
            None => ServerFile::default(),
        };
        // The file's model settings, where no flag gave one.
        if common.tts_repo.is_none()
            && let Some(repo) = &file.tts_repo
        {
            models = models.tts_repo(repo);
        }
        if common.stt_repo.is_none()
            && let Some(repo) = &file.stt_repo
        {
            models = models.stt_repo(repo);
        }
        if common.voices_repo.is_none()
            && let Some(repo) = &file.voices_repo
        {
            models = models.voices_repo(repo);
        }
        if common.cache_dir.is_none()
            && let Some(dir) = &file.cache_dir
        {
            models = models.cache_dir(dir);
        }
        if !common.offline && file.offline == Some(true) {
            models = models.offline(true);
        }
        if let Some(voice) = options.voice.as_ref().or(file.default_voice.as_ref()) {
            models = models.default_voice(voice);
        }
        if let Some(name) = options.weights.as_ref().or(file.weights.as_ref()) {
            models = models.weights(weights(name)?);
        }

        let mut config = file.apply(ServerConfig::default())?;
        config.addr = options.addr.unwrap_or(config.addr);
        config.port = options.port.unwrap_or(config.port);
        config.batch_size = options.batch_size.unwrap_or(config.batch_size);
        config.api_keys.extend(options.api_keys);
        if let Some(path) = &options.api_keys_file {
            config = config.api_keys_file(path)?;
        }
        if let Some(n) = options.n_q.or(file.n_q) {
            config = config.tts_n_q(n);
        }
        config.lazy |= options.lazy;
        config.asr &= !options.no_asr;
        config.tts &= !options.no_tts;
        config.validate()?;
        models = config.engine_config(models);

        if config.lazy {
            log::info!(target: "kyutai::server", "models are loaded on first use (--lazy)");
        } else {
            log::info!(target: "kyutai::server", "fetching and loading the models");
        }
        let engine = KyutaiEngine::with_config(models).await?;
        let server = Server::bind(config.clone(), engine).await?;
        if server.is_open() {
            log::warn!(
                target: "kyutai::server",
                "no API key configured: every client is accepted (give --api-key KEY)"
            );
        }
        log::info!(
            target: "kyutai::server",
            "listening on http://{} (batch size {} per endpoint{}{})",
            server.local_addr(),
            config.batch_size,
            if config.asr { ", /api/asr-streaming" } else { "" },
            if config.tts { ", /api/tts_streaming" } else { "" },
        );
        server.run(shutdown_signal()).await?;
        log::info!(target: "kyutai::server", "stopped");
        Ok(ExitCode::SUCCESS)
    }

    /// One line per record on standard error: the server's own at info and up, other
    /// crates' warnings and errors.
    struct StderrLogger;

    static LOGGER: StderrLogger = StderrLogger;

    impl log::Log for StderrLogger {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::Level::Warn || metadata.target().starts_with("kyutai")
        }

        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                eprintln!("{:<5} {}", record.level(), record.args());
            }
        }

        fn flush(&self) {}
    }
}
