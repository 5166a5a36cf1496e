//! Model management: configuration, the hub client, the shared cache, verification, progress.

pub(crate) mod cache;
pub(crate) mod config;
pub(crate) mod derived;
mod hub;
mod inventory;
mod lock;
mod manager;
mod paths;
mod progress;
pub(crate) mod repo_config;
pub(crate) mod verify;

pub use config::{
    Device, KyutaiModelConfig, ModelFile, ProgressMode, ResolvedSettings, TtsCodebooks, TtsFamily,
    Weights, WhenBusy,
};
pub use inventory::{CachedFile, FileState};
pub use manager::{FetchedFile, KyutaiModelManager};
pub use paths::{KyutaiModelPaths, SttModelPaths, TtsModelPaths};
pub use progress::{ProgressCallback, ProgressEvent};
pub use repo_config::ModelId;
