//! config.json parsing: any bytes give a config or a clear error; every file location taken from
//! a config that parses is a safe path inside a repository, an `hf://` file or an absolute local
//! path; voice file names derived from its `model_id` stay inside the voices repository.
#![no_main]

use std::path::Path;

use fluent_voice_kyutai::models::ModelFile;
use fluent_voice_kyutai::internals::models::{FileLocation, RepoConfig, check_repo_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = RepoConfig::from_bytes(Path::new("config.json"), data) else {
        return;
    };
    for role in [
        ModelFile::LmWeights,
        ModelFile::MimiWeights,
        ModelFile::Tokenizer,
        ModelFile::MimiConfig,
    ] {
        match config.location(role) {
            Ok(Some(FileLocation::InRepo(path))) => assert!(check_repo_path(&path).is_ok()),
            Ok(Some(FileLocation::OtherRepo { path, .. })) => {
                assert!(check_repo_path(&path).is_ok())
            }
            Ok(Some(FileLocation::Local(path))) => assert!(path.is_absolute()),
            Ok(None) | Err(_) => {}
        }
    }
    if let Ok(Some(id)) = config.model_id()
        && let Ok(name) = fluent_voice_kyutai::internals::models::voice_file_name("expresso/a.wav", Some(&id))
    {
        assert!(check_repo_path(&name).is_ok(), "{name}");
    }
});
