//! The TTS side of a batch ([`crate::batch`]): the conversations of a batch submit their
//! generation, and one [`step_many`] steps all of them in one batched forward pass (a row per
//! conversation, two with direct CFG), each at its own position with its own caches, sampler and
//! state machine. A new conversation brings a new generation, so nothing of an earlier one is
//! left in its slot.
//!
//! Mimi is not batched: each conversation decodes its frames with a Mimi of its own, on a thread
//! of its own (see [`crate::pipeline`]).

use std::sync::Arc;

use super::generate::{Generator, step_many};
use super::lm::TtsLm;
use crate::batch::Stepper;
use crate::error::MoshiError;
use crate::error::inference;

/// A batch's language model (shared weights; the states are the generations').
pub(crate) struct TtsStepper {
    pub lm: Arc<TtsLm>,
}

/// A slot of a TTS batch.
pub(crate) type TtsSlot = crate::batch::Slot<TtsStepper>;

impl Stepper for TtsStepper {
    /// The conversation's generation, lent to the loop for the step.
    type Input = Box<Generator>;
    /// The generation back, and the frame its step produced, if any.
    type Output = (Box<Generator>, Option<Vec<i64>>);

    fn step(
        &mut self,
        inputs: Vec<Option<Box<Generator>>>,
        _resets: &[bool],
    ) -> Result<Vec<Option<Self::Output>>, MoshiError> {
        let size = inputs.len();
        let slots: Vec<usize> = (0..size).filter(|&i| inputs[i].is_some()).collect();
        let mut generations: Vec<Box<Generator>> = inputs.into_iter().flatten().collect();
        let frames = {
            let mut rows: Vec<&mut Generator> = generations.iter_mut().map(|g| &mut **g).collect();
            step_many(&self.lm, &mut rows)
                .map_err(|e| inference("running the language model", e))?
        };
        let mut outputs: Vec<Option<Self::Output>> = Vec::new();
        outputs.resize_with(size, || None);
        for ((slot, generation), frame) in slots.into_iter().zip(generations).zip(frames) {
            outputs[slot] = Some((generation, frame));
        }
        Ok(outputs)
    }
}
