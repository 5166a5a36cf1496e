//! Model management: configuration, the hub client, the shared cache, verification, progress.

pub mod cache;
pub mod config;
pub mod hub;
pub mod inventory;
mod lock;
pub mod manager;
pub mod paths;
pub mod progress;
pub mod repo_config;
pub mod verify;

pub use config::{
    DType, Device, KyutaiModelConfig, ModelFile, ProgressCallback, ProgressMode, ResolvedSettings,
};
pub use manager::{FetchedFile, KyutaiModelManager};
pub use paths::{KyutaiModelPaths, SttModelPaths, TtsModelPaths};
pub use progress::ProgressEvent;
pub use repo_config::ModelId;
