//! Runs the loopback test hub (`tests/support/hub.rs`) as a process, for manual checks and for
//! download benchmarks against the Python `huggingface_hub` (`HF_ENDPOINT=<printed endpoint>`).
//!
//! ```text
//! cargo run --release --example test_hub -- [--port N]
//!     [repo=org/name file=path_in_repo:local_path ...]...
//!     [--serve-dir org/name DIR]...
//!     [--big-file org/name path_in_repo SIZE_MB]...
//!     [--token org/name TOKEN]...
//!     [--tiny-kyutai-repos] [--talkative-stt]
//! ```
//!
//! Everything is published on branch `main` (one commit per repo), then the endpoint is printed as
//! the first line of stdout and the hub serves until the process is killed.
//!
//! `--talkative-stt` publishes (after them) the tiny STT whose text head is scaled so that it
//! produces words (`tests/support/stt_tiny.rs`), under the default STT name: the tiny models'
//! plain STT, with random weights, rarely produces any word.
//!
//! `--tiny-kyutai-repos` publishes the tiny TTS, STT and voices repos of `tests/support/tiny.rs`
//! under the default Kyutai names, exactly as `publish_defaults` in `tests/support/mod.rs` does,
//! so the commits are the ones the integration tests see (commit shas depend only on the repo,
//! the branch and the files). `tools/hub_parity/python_cache_layout.py` relies on this to compare
//! the cache Python writes with ours.

#[path = "../tests/support/hub.rs"]
mod hub;
#[path = "../tests/support/stt_tiny.rs"]
mod stt_tiny;
#[path = "../tests/support/tiny.rs"]
mod tiny;

/// `stt_tiny` finds the tiny-repo builders at `crate::support::tiny`, as in the tests.
mod support {
    pub(crate) use super::tiny;
}

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::exit;
use std::sync::Arc;

use hub::TestHub;

const USAGE: &str = "usage: test_hub [--port N] [repo=org/name file=path:local_path ...]... \
[--serve-dir org/name DIR]... [--big-file org/name path SIZE_MB]... [--token org/name TOKEN]... \
[--tiny-kyutai-repos] [--talkative-stt]";

/// The repositories `--tiny-kyutai-repos` publishes, in `publish_defaults` order (the names of
/// `TTS`, `STT` and `VOICES` in `tests/support/mod.rs`; `tests/python_cache.rs` checks that both
/// give the same commits).
const TINY_KYUTAI_REPOS: [&str; 3] = [
    "kyutai/tts-1.6b-en_fr",
    "kyutai/stt-1b-en_fr-candle",
    "kyutai/tts-voices",
];

/// What the command line asks for.
#[derive(Default)]
struct Plan {
    port: u16,
    /// repo -> (path in repo -> content)
    files: BTreeMap<String, BTreeMap<String, Arc<[u8]>>>,
    tokens: Vec<(String, String)>,
    /// Publish the tiny Kyutai repos first (`--tiny-kyutai-repos`).
    tiny_kyutai_repos: bool,
    /// Then publish the "talkative" tiny STT (which produces words) over the default STT name
    /// (`--talkative-stt`), so that a newcomer's transcript is not empty.
    talkative_stt: bool,
}

fn main() {
    let plan = parse_args(std::env::args().skip(1)).unwrap_or_else(|message| {
        eprintln!("test_hub: {message}\n{USAGE}");
        exit(2);
    });
    let hub = TestHub::start_on_port(plan.port);
    for (repo, token) in &plan.tokens {
        hub.require_token(repo, token);
    }
    if plan.tiny_kyutai_repos {
        publish_tiny_kyutai_repos(&hub);
    }
    if plan.talkative_stt {
        let files = stt_tiny::stt_repo_talkative();
        let files: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
        let commit = hub.publish(TINY_KYUTAI_REPOS[1], "main", &files);
        eprintln!(
            "published the talkative tiny STT to {} at {commit}",
            TINY_KYUTAI_REPOS[1]
        );
    }
    for (repo, files) in &plan.files {
        let files: Vec<(&str, Arc<[u8]>)> = files
            .iter()
            .map(|(path, bytes)| (path.as_str(), Arc::clone(bytes)))
            .collect();
        let commit = hub.publish_shared(repo, "main", &files);
        eprintln!("published {} file(s) to {repo} at {commit}", files.len());
    }

    println!("{}", hub.endpoint());
    std::io::stdout().flush().expect("flush stdout");
    loop {
        std::thread::park();
    }
}

/// Publishes the tiny TTS, STT and voices repos like `publish_defaults`: one commit each on
/// `main`, TTS then STT then voices.
fn publish_tiny_kyutai_repos(hub: &TestHub) {
    let [tts, stt, voices] = TINY_KYUTAI_REPOS;
    let repos = [
        (tts, tiny::tts_repo()),
        (stt, tiny::stt_repo()),
        (voices, tiny::voices_repo(tiny::TTS_SPEAKER_DIM)),
    ];
    for (repo, files) in repos {
        let files: Vec<(&str, Vec<u8>)> = files
            .iter()
            .map(|(path, bytes)| (path.as_str(), bytes.clone()))
            .collect();
        let commit = hub.publish(repo, "main", &files);
        eprintln!("published {} file(s) to {repo} at {commit}", files.len());
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let mut repo: Option<String> = None;
    while let Some(arg) = args.next() {
        let mut next = |what: &str| args.next().ok_or(format!("{arg} needs {what}"));
        match arg.as_str() {
            "--port" => plan.port = next("a port")?.parse().map_err(|e| format!("port: {e}"))?,
            "--serve-dir" => {
                let (repo, dir) = (next("a repo")?, next("a directory")?);
                add_dir(&mut plan, &repo, Path::new(&dir))?;
            }
            "--big-file" => {
                let (repo, path, size) = (next("a repo")?, next("a path")?, next("a size")?);
                let size_mb: usize = size.parse().map_err(|e| format!("size: {e}"))?;
                let bytes = pseudo_random_bytes(size_mb * 1024 * 1024);
                plan.files.entry(repo).or_default().insert(path, bytes);
            }
            "--token" => plan.tokens.push((next("a repo")?, next("a token")?)),
            "--tiny-kyutai-repos" => plan.tiny_kyutai_repos = true,
            "--talkative-stt" => plan.talkative_stt = true,
            _ => {
                if let Some(name) = arg.strip_prefix("repo=") {
                    repo = Some(name.to_string());
                } else if let Some(spec) = arg.strip_prefix("file=") {
                    let repo = repo.clone().ok_or("file= before any repo=")?;
                    let (path, local) = spec.split_once(':').ok_or("file=path:local_path")?;
                    plan.files
                        .entry(repo)
                        .or_default()
                        .insert(path.to_string(), read(Path::new(local))?);
                } else {
                    return Err(format!("unknown argument {arg}"));
                }
            }
        }
    }
    Ok(plan)
}

/// Add every file under `dir` to `repo`, with its path relative to `dir` as path in the repo.
fn add_dir(plan: &mut Plan, repo: &str, dir: &Path) -> Result<(), String> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries =
            std::fs::read_dir(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(dir).expect("under dir");
            let in_repo: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let bytes = read(&path)?;
            plan.files
                .entry(repo.to_string())
                .or_default()
                .insert(in_repo.join("/"), bytes);
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Arc<[u8]>, String> {
    std::fs::read(path)
        .map(Arc::from)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `len` bytes of xorshift64* output: incompressible, the same on every run, in one allocation
/// (collecting an exact-size iterator into an `Arc` does not copy).
fn pseudo_random_bytes(len: usize) -> Arc<[u8]> {
    let mut bytes: Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
    let buffer = Arc::get_mut(&mut bytes).expect("fresh Arc");
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in buffer.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    bytes
}
