//! Pocket TTS, Kyutai's 100M-parameter text-to-speech made for CPUs (the `pocket-tts` 4.0.1
//! Python package is the reference): a flow language model that makes one continuous 32-dim
//! latent per 80 ms frame, and a continuous Mimi that turns latents into 24 kHz audio.
//!
//! The layout follows the reference's: [`config`] (the YAML), [`text`] (preparation and
//! chunking), [`tokenizer`], [`flow_lm`] and its [`head`], [`mimi`], [`voice`] (voice states)
//! and [`model`] (the generation rules). The transformer inside the flow LM and Mimi is the
//! crate's shared one (`src/layers/`).

pub mod config;
mod conv;
pub mod files;
pub mod flow_lm;
pub mod head;
pub mod mimi;
pub mod model;
pub mod noise;
pub mod prompt_audio;
pub(crate) mod speech;
pub mod text;
pub mod tokenizer;
pub mod voice;

use std::path::Path;

pub use config::PocketConfig;
pub use files::PocketFiles;
pub use model::{ChunkTrace, GenerateSettings, PocketModel};
pub use voice::VoiceState;

/// A Pocket TTS model an engine loaded, with the files it came from.
pub struct LoadedPocket {
    /// Where its files are, and whether cloning is on.
    pub files: PocketFiles,
    /// The model.
    pub model: PocketModel,
    /// How the flow transformer's weights are held.
    pub weights: crate::models::Weights,
}

impl LoadedPocket {
    /// The voice state in `path`: a `.safetensors` voice state, or audio to clone (cut at 30 s).
    pub fn voice_from_file(&self, path: &Path) -> crate::Result<VoiceState> {
        if path.extension().is_some_and(|e| e == "safetensors") {
            return VoiceState::load(path, self.model.device());
        }
        // As the reference: without the gated weights cloning is off, whatever the open
        // weights hold.
        if !self.model.can_clone() || self.files.cloning_off.is_some() {
            return Err(self.cloning_off());
        }
        let (samples, rate) = prompt_audio::read_audio(path)?;
        let target = self.model.sample_rate() as u32;
        let prompt = prompt_audio::prepare_prompt(&samples, rate, target, true)?;
        let sampling = GenerateSettings::defaults(self.model.config()).sampling;
        // The prompt pass samples a latent the reference throws away: its noise is not used.
        self.model
            .voice_from_prompt(&prompt, &mut noise::Seeded::new(0), &sampling)
    }

    /// The error of a cloning request when the weights have no encoder.
    pub fn cloning_off(&self) -> crate::MoshiError {
        let why = self
            .files
            .cloning_off
            .clone()
            .unwrap_or_else(|| "these weights have no Mimi encoder".into());
        crate::MoshiError::Unsupported(format!(
            "voice cloning is off for this Pocket TTS model: {why}. A predefined voice (alba, \
             marius, estelle, ...) or a .safetensors voice state works without it"
        ))
    }
}
