//! Building the quantized GGUF of a published language model as a derived file of the cache
//! (layout and records: `models::derived`).

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::Scheme;
use super::quantize::{self, FORMAT_VERSION};
use crate::error::{MoshiError, Result};
use crate::models::derived as cache;

pub use crate::models::derived::{DERIVED_DIR, DerivedState, discard, scan, source_identity};

/// A derived file ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The derived file.
    pub path: PathBuf,
    /// True when it was built by this call (the first start with this setting).
    pub built: bool,
}

/// The file name of the derived file of `source_sha256` under `scheme`.
pub fn derived_name(source_sha256: &str, scheme: Scheme) -> String {
    cache::derived_name(source_sha256, scheme.name(), FORMAT_VERSION)
}

/// The quantized GGUF of the LM `source` under `scheme`: the cached one when it is there and
/// intact, else built now (a full read of `source` and seconds of quantization per gigabyte).
/// `local_dir` is the cache folder used for sources outside the cache (the capability's
/// repository folder).
pub fn ensure_quantized(source: &Path, scheme: Scheme, local_dir: &Path) -> Result<Derived> {
    let (source_sha256, dir) = source_identity(source, local_dir)?;
    let path = dir.join(derived_name(&source_sha256, scheme));
    let usable = |path: &Path| -> Result<bool> {
        Ok(cache::check_existing(path, false)?.is_some_and(|s| s != DerivedState::Removed))
    };
    if usable(&path)? {
        return Ok(Derived { path, built: false });
    }
    fs::create_dir_all(&dir).map_err(|e| MoshiError::io("could not create", &dir, e))?;
    let _lock = cache::lock(&path)?;
    if usable(&path)? {
        return Ok(Derived { path, built: false });
    }
    cache::remove_abandoned_builds(&path);
    build(source, &source_sha256, scheme, &path)?;
    Ok(Derived { path, built: true })
}

fn build(source: &Path, source_sha256: &str, scheme: Scheme, path: &Path) -> Result<()> {
    let dir = path.parent().expect("a derived file is in a folder");
    let needed = fs::metadata(source)
        .map_err(|e| MoshiError::io("could not read", source, e))?
        .len();
    // A q8 file is about half its bf16 source; ask for the whole source size to be safe.
    if let Ok(available) = fs4::available_space(dir)
        && available < needed
    {
        return Err(MoshiError::DiskFull {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    let started = std::time::Instant::now();
    let mut writer = BufWriter::with_capacity(1 << 22, cache::temporary_for(path)?);
    let summary = quantize::quantize_file(source, scheme, source_sha256, &mut writer)?;
    let temporary = writer
        .into_inner()
        .map_err(|e| MoshiError::io("could not write", dir, e.into_error()))?;
    quantize::check_gguf(temporary.path())?;
    cache::install(
        temporary,
        path,
        source_sha256,
        scheme.name(),
        FORMAT_VERSION,
    )?;
    log::info!(
        "quantized {} ({}): {} of {} tensors, {} fallbacks, {:.1} s -> {}",
        source.display(),
        scheme.name(),
        summary.quantized,
        summary.tensors,
        summary.fallbacks,
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}
