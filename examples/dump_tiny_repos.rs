//! Writes the tiny repositories of `tests/support/` to a directory, byte for byte what the tests
//! publish on the loopback hub, so that the Python reference can load the very same files:
//!
//! ```text
//! cargo run --example dump_tiny_repos -- /tmp/tiny
//! ```
//!
//! | folder | builder | read by |
//! |---|---|---|
//! | `tts`, `stt`, `voices` | `tiny::tts_repo`, `tiny::stt_repo`, `tiny::voices_repo` | `tools/fixtures/check_tiny_repos.py`, `tools/parity/tts/make_reference.py` |
//! | `tts_direct_cfg`, `tts_prefix`, `prefix_voice` | `tiny::tts_repo_direct_cfg`, `tiny::tts_repo_prefix`, the prefix voices (`tiny::prefix_voice_wav*`) | `tools/parity/tts/make_cfg_reference.py` |
//! | `stt_talkative`, `stt_talkative_prefix` | `stt_tiny::stt_repo_talkative`, `stt_tiny::stt_repo_talkative_with_prefix` | `tools/parity/stt/stt_reference.py` |
//!
//! An example rather than a test: it asserts nothing, it only writes files.

#[path = "../tests/support/stt_tiny.rs"]
mod stt_tiny;
#[path = "../tests/support/tiny.rs"]
mod tiny;
/// `stt_tiny` reaches the builders as `crate::support::tiny`, as in the tests.
mod support {
    pub(crate) use super::tiny;
}

use std::path::{Path, PathBuf};

fn write_repo(root: &Path, name: &str, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    for (path, bytes) in files {
        let path = root.join(name).join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        std::fs::write(path, bytes)?;
    }
    println!("{}", root.join(name).display());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let Some(root) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: cargo run --example dump_tiny_repos -- DIR");
        std::process::exit(2);
    };
    let repos = [
        ("tts", tiny::tts_repo()),
        ("stt", tiny::stt_repo()),
        ("voices", tiny::voices_repo(tiny::TTS_SPEAKER_DIM)),
        ("tts_direct_cfg", tiny::tts_repo_direct_cfg()),
        ("tts_prefix", tiny::tts_repo_prefix()),
        (
            "prefix_voice",
            vec![
                ("voice.wav".to_string(), tiny::prefix_voice_wav()),
                (
                    "other_voice.wav".to_string(),
                    tiny::prefix_voice_wav_with_period(30),
                ),
            ],
        ),
        ("stt_talkative", stt_tiny::stt_repo_talkative()),
        (
            "stt_talkative_prefix",
            stt_tiny::stt_repo_talkative_with_prefix(tiny::STT_PREFIX_SECONDS),
        ),
    ];
    for (name, files) in &repos {
        write_repo(&root, name, files)?;
    }
    Ok(())
}
