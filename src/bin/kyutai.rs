//! `kyutai`: download and inspect Kyutai models from the command line.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fluent_voice_kyutai::models::inventory;
use fluent_voice_kyutai::models::{KyutaiModelConfig, ProgressMode};
use fluent_voice_kyutai::{KyutaiModelManager, MoshiError};

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
    /// TTS model repository.
    #[arg(long, global = true, value_name = "REPO")]
    tts_repo: Option<String>,
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
        config
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
    match cli.command {
        Command::Download {
            tts,
            stt,
            voices,
            force,
        } => download(config.force_download(force), tts, stt, voices).await,
        Command::Cache { verify } => cache(config, verify),
    }
}

async fn download(
    config: KyutaiModelConfig,
    tts: bool,
    stt: bool,
    mut voices: Vec<String>,
) -> Result<ExitCode, MoshiError> {
    let (want_tts, want_stt) = match (tts, stt) {
        (false, false) => (true, true),
        chosen => chosen,
    };
    let want_tts = want_tts || !voices.is_empty();
    if want_tts && voices.is_empty() {
        voices.push(config.default_voice.clone());
    }
    let manager = KyutaiModelManager::with_config(config)?;
    if want_stt {
        let stt = manager.fetch_stt().await?;
        println!("stt  {} @ {}", stt.repo, stt.commit);
        for path in [
            &stt.config,
            &stt.lm_weights,
            &stt.mimi_weights,
            &stt.tokenizer,
        ] {
            println!("     {}", path.display());
        }
        if let Some(path) = &stt.mimi_config {
            println!("     {}", path.display());
        }
    }
    if want_tts {
        let tts = manager.fetch_tts().await?;
        println!("tts  {} @ {}", tts.repo, tts.commit);
        for path in [
            &tts.config,
            &tts.lm_weights,
            &tts.mimi_weights,
            &tts.tokenizer,
        ] {
            println!("     {}", path.display());
        }
        if let Some(path) = &tts.mimi_config {
            println!("     {}", path.display());
        }
        for voice in &voices {
            let path = manager.fetch_voice(&tts, voice).await?;
            println!("voice {voice}\n     {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cache(config: KyutaiModelConfig, rehash: bool) -> Result<ExitCode, MoshiError> {
    let manager = KyutaiModelManager::with_config(config)?;
    let cache = manager.cache();
    println!("cache {}", cache.root().display());
    let files = inventory::scan(cache, rehash);
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
    if bad > 0 {
        eprintln!(
            "error: {bad} cached file(s) are corrupt or missing; run `kyutai download` to fetch them again"
        );
        return Ok(ExitCode::FAILURE);
    }
    if files.is_empty() {
        println!("(empty)");
    }
    Ok(ExitCode::SUCCESS)
}
