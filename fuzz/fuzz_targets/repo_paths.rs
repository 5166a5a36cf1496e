//! The validation of names that become paths: repository ids (cache folder names, URLs), file
//! paths inside a repository (snapshot paths), overrides and voice names. Whatever passes, joined
//! to the cache, stays inside it.
#![no_main]

use std::path::{Component, Path};

use fluent_voice_kyutai::models::ModelId;
use fluent_voice_kyutai::internals::models::HubCache;
use fluent_voice_kyutai::internals::models::{FileLocation, check_repo_id, check_repo_path};
use libfuzzer_sys::fuzz_target;

/// True when `relative`, joined under a folder, cannot leave it.
fn stays_inside(relative: &str) -> bool {
    Path::new(relative)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if check_repo_path(text).is_ok() {
        assert!(stays_inside(text), "{text:?}");
        let cache = HubCache::new("/cache");
        let snapshot = cache.snapshot_path("o/r", &"a".repeat(40), text);
        assert!(snapshot.starts_with("/cache/models--o--r/snapshots/"));
    }
    if check_repo_id(text).is_ok() {
        let folder = fluent_voice_kyutai::internals::models::repo_folder_name(text);
        assert!(!folder.contains('/') && stays_inside(&folder), "{folder:?}");
        // One folder, one repository: the name reads back to the id it came from.
        let back = folder
            .strip_prefix("models--")
            .unwrap()
            .replacen("--", "/", 1);
        assert_eq!(back, text);
    }
    match FileLocation::parse(text) {
        Ok(FileLocation::InRepo(path)) => assert!(stays_inside(&path)),
        Ok(FileLocation::OtherRepo { path, .. }) => assert!(stays_inside(&path)),
        Ok(FileLocation::Local(path)) => assert!(path.is_absolute()),
        Err(_) => {}
    }
    let id = ModelId {
        sig: "1e68beda".into(),
        epoch: "240".into(),
    };
    if let Ok(name) = fluent_voice_kyutai::internals::models::voice_file_name(text, Some(&id)) {
        assert!(stays_inside(&name), "{name:?}");
    }
});
