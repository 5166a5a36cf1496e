//! Fetches one file of a repository into a hub cache with [`KyutaiModelManager::fetch_file`], and
//! reports how long it took. Used by `tools/bench/compare_python_download.py` (timings against
//! Python's `hf_hub_download`) and by `tools/hub_parity/python_cache_layout.py` (a cache written
//! by us, then read by Python offline).
//!
//! ```text
//! cargo run --release --example fetch_file -- --endpoint URL --cache DIR --repo org/name \
//!     --file PATH [--revision REV] [--no-verify] [--offline]
//! ```
//!
//! Prints one line on stdout, `key=value` pairs separated by spaces, for scripts to parse:
//! `elapsed_s=<seconds of the fetch_file call> bytes=<file size> from_cache=<bool>
//! commit=<sha> path=<snapshot path>`. The timer covers the call only, not the process start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use fluent_voice_kyutai::models::ProgressMode;
use fluent_voice_kyutai::{KyutaiModelConfig, KyutaiModelManager};

#[derive(Parser)]
#[command(about = "Fetch one file of a hub repository into a cache, timed")]
struct Args {
    /// The hub endpoint, e.g. `http://127.0.0.1:PORT` from the `test_hub` example.
    #[arg(long)]
    endpoint: String,
    /// The hub cache directory (what `HF_HUB_CACHE` would name).
    #[arg(long)]
    cache: PathBuf,
    /// The repository, `org/name`.
    #[arg(long)]
    repo: String,
    /// The file's path inside the repository.
    #[arg(long)]
    file: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Skip the sha256 check of the download (what Python and `hf-hub` do), to measure its cost.
    #[arg(long)]
    no_verify: bool,
    /// Never touch the network: serve from the cache or fail.
    #[arg(long)]
    offline: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Everything is given explicitly, so that `HF_*` variables of the shell cannot change what is
    // measured; the progress bar is off because it would be part of the timing.
    let config = KyutaiModelConfig::default()
        .endpoint(&args.endpoint)
        .cache_dir(&args.cache)
        .offline(args.offline)
        .verify_downloads(!args.no_verify)
        .progress(ProgressMode::Quiet);
    let manager = match KyutaiModelManager::with_config(config) {
        Ok(manager) => manager,
        Err(error) => {
            eprintln!("fetch_file: {error}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let fetched = match manager
        .fetch_file(&args.repo, &args.revision, &args.file)
        .await
    {
        Ok(fetched) => fetched,
        Err(error) => {
            eprintln!("fetch_file: {error}");
            return ExitCode::FAILURE;
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&fetched.path).map_or(0, |m| m.len());
    println!(
        "elapsed_s={elapsed:.6} bytes={bytes} from_cache={} commit={} path={}",
        fetched.from_cache,
        fetched.commit,
        fetched.path.display()
    );
    ExitCode::SUCCESS
}
