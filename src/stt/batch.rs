//! The STT side of a batch ([`crate::batch`]): the language model is built batched (the `moshi`
//! crate's batched transformer keeps a KV cache and a position per batch item), and one
//! `asr::State` of `batch_size` items runs on the batch's thread. Each step, the slots that have
//! audio codes ready run and the others are masked out (they do not advance); a new
//! conversation's item is reset first.
//!
//! Mimi, small next to the language model, is not batched: each conversation encodes its audio
//! with a Mimi of its own (the `moshi` 0.6.4 batched Mimi does not fully reset an item, so a
//! reused slot would not start clean), on its own thread, and submits the codes.
//!
//! Batching pays when the batched matrix products cost less than one per conversation. With
//! candle's CPU kernels, f32 products of 2 rows cost about 2.4 times one row, and of 8 rows about
//! 2.6 times (so 8 conversations in one batch cost a third of 8 alone), while its quantized
//! products cost one row per conversation whatever the batch. So the default batch is one
//! conversation, with a batch (and its loop) per conversation, as many as run at once; a server
//! of many streams sets a larger [`Batching::batch_size`](crate::batch::Batching).

use std::sync::Arc;

use candle_core::{Device, Tensor};
use moshi::asr::{AsrMsg, State};

use crate::batch::Stepper;
use crate::error::MoshiError;

/// What one step gave one slot.
#[derive(Debug, Default)]
pub(crate) struct SlotStep {
    /// The `asr::State`'s messages for this slot (words, word ends, its voice-activity
    /// probabilities).
    pub msgs: Vec<AsrMsg>,
    /// The text token the slot's model picked at the previous step (the `asr::State` exposes a
    /// step's token as the next step's input), `None` at the slot's first step.
    pub previous_text_token: Option<u32>,
}

/// A batch's `asr::State` (`batch_size` items, its language model batched) and its device.
pub(crate) struct SttStepper {
    pub state: State,
    pub device: Device,
}

/// A slot of an STT batch.
pub(crate) type Slot = crate::batch::Slot<SttStepper>;

impl Stepper for SttStepper {
    /// The audio codes (one per codebook) of the slot's next 80 ms.
    type Input = Vec<u32>;
    type Output = SlotStep;

    fn step(
        &mut self,
        frames: Vec<Option<Vec<u32>>>,
        resets: &[bool],
    ) -> Result<Vec<Option<SlotStep>>, MoshiError> {
        let size = self.state.batch_size();
        let per_slot = step(&mut self.state, &self.device, size, &frames, resets)?;
        Ok(per_slot
            .into_iter()
            .zip(&frames)
            .map(|(out, frame)| frame.as_ref().map(|_| out))
            .collect())
    }
}

/// One batched step: resets the new slots, runs the slots with a frame, sorts the messages by
/// slot.
fn step(
    state: &mut State,
    device: &Device,
    size: usize,
    frames: &[Option<Vec<u32>>],
    resets: &[bool],
) -> Result<Vec<SlotStep>, MoshiError> {
    let inference = |e: candle_core::Error| MoshiError::Inference {
        message: e.to_string(),
        source: Some(Arc::new(e)),
    };
    for (index, _) in resets.iter().enumerate().filter(|(_, r)| **r) {
        state.reset_batch_idx(index).map_err(inference)?;
    }
    let codebooks = frames.iter().flatten().map(Vec::len).next().unwrap_or(0);
    let mut codes = vec![0u32; size * codebooks];
    for (index, frame) in frames.iter().enumerate() {
        if let Some(frame) = frame {
            codes[index * codebooks..(index + 1) * codebooks].copy_from_slice(frame);
        }
    }
    let active: Vec<bool> = frames.iter().map(Option::is_some).collect();
    let mask = moshi::StreamMask::new(active.clone(), device).map_err(inference)?;
    let codes = Tensor::from_vec(codes, (size, codebooks, 1), device).map_err(inference)?;
    let previous = std::cell::RefCell::new(vec![None; size]);
    let msgs = state
        .step_tokens(&codes, None, &mask, |items, _, _| {
            let mut previous = previous.borrow_mut();
            for (index, item) in items.iter().enumerate() {
                if active[index] && !item.is_first_step() {
                    previous[index] = Some(item.text_token());
                }
            }
        })
        .map_err(inference)?;
    let mut per_slot: Vec<SlotStep> = previous
        .into_inner()
        .into_iter()
        .map(|previous_text_token| SlotStep {
            msgs: Vec::new(),
            previous_text_token,
        })
        .collect();
    for msg in msgs {
        match msg {
            AsrMsg::Word { batch_idx, .. } | AsrMsg::EndWord { batch_idx, .. } => {
                per_slot[batch_idx].msgs.push(msg)
            }
            AsrMsg::Step { step_idx, prs } => {
                for (index, slot) in per_slot.iter_mut().enumerate() {
                    if active[index] {
                        slot.msgs.push(AsrMsg::Step {
                            step_idx,
                            prs: prs.iter().map(|head| vec![head[index]]).collect(),
                        });
                    }
                }
            }
        }
    }
    Ok(per_slot)
}
