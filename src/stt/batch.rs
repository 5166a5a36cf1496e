//! One stepping loop per loaded STT model: the conversations running at the same time share one
//! batched forward pass per 80 ms step.
//!
//! On a CPU a step's cost is reading the language model's weights (gigabytes); a batched step
//! reads them once for every conversation. The language model is built batched (the `moshi`
//! crate's batched transformer keeps a KV cache and a position per batch item), and one
//! `asr::State` of `batch_size` items runs on a thread of its own. A conversation takes a free
//! item (a slot): the slot is reset, so nothing of an earlier conversation remains; each step,
//! the slots that have audio codes ready run and the others are masked out (they do not
//! advance); a slot is freed when its conversation ends or is dropped.
//!
//! Mimi, small next to the language model, is not batched: each conversation encodes its audio
//! with a Mimi of its own (the `moshi` 0.6.4 batched Mimi does not fully reset an item, so a
//! reused slot would not start clean), on its own thread, and submits the codes.
//!
//! A conversation alone is the batch of one, through the same code: there is one path to keep
//! exact (the parity tests run through it).
//!
//! Batching pays when the batched matrix products cost less than one per conversation. With
//! candle's CPU kernels, f32 products of 2 rows cost about 2.4 times one row, and of 8 rows about
//! 2.6 times (so 8 conversations in one batch cost a third of 8 alone), while its quantized
//! products cost one row per conversation whatever the batch. So the default batch is one
//! conversation, with a batch (and its loop) per conversation, as many as run at once; a server
//! of many streams sets a larger [`Batching::batch_size`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use moshi::asr::{AsrMsg, State};
use parking_lot::{Condvar, Mutex};

use crate::error::MoshiError;

/// How long the loop waits, once a slot has a frame ready, for the other active slots to submit
/// theirs, so that they share the step. Small next to a step (tens of ms on a CPU) and to the
/// 80 ms a live stream takes to produce a frame; a live slot whose frame is not there yet simply
/// misses this step and joins the next.
const GATHER: Duration = Duration::from_millis(3);

/// What happens when a conversation starts while every slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenBusy {
    /// Wait for a slot to free up.
    #[default]
    Wait,
    /// Fail at once with [`MoshiError::Busy`].
    Fail,
}

/// How conversations share batched steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Conversations per batched step (a batch's slots).
    pub batch_size: usize,
    /// Conversations at once, in all batches; `None`: no limit (batches are started as needed).
    pub max_conversations: Option<usize>,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            batch_size: 1,
            max_conversations: None,
        }
    }
}

/// The batches of one model: conversations fill a batch's free slots; a new batch (its own
/// loop and attention caches, on the same weights) starts when all are full, up to
/// `max_conversations`. A batch left empty is dropped when another starts.
pub(crate) struct SttBatches {
    batching: Batching,
    new_batch: NewBatch,
    batches: Mutex<Vec<SttBatch>>,
    /// Signalled when any slot of any batch is freed (for conversations waiting for one).
    freed: Arc<Freed>,
}

/// Starts a batch of the given size.
pub(crate) type NewBatch =
    Box<dyn Fn(usize, Arc<Freed>) -> Result<SttBatch, MoshiError> + Send + Sync>;

/// A notification that a slot was freed somewhere.
#[derive(Default)]
pub(crate) struct Freed {
    generation: Mutex<u64>,
    condvar: Condvar,
}

impl Freed {
    fn notify(&self) {
        *self.generation.lock() += 1;
        self.condvar.notify_all();
    }
}

impl SttBatches {
    pub(crate) fn new(batching: Batching, new_batch: NewBatch) -> SttBatches {
        SttBatches {
            batching,
            new_batch,
            batches: Mutex::new(Vec::new()),
            freed: Arc::new(Freed::default()),
        }
    }

    /// `(running, limit)` conversations.
    pub(crate) fn conversations(&self) -> (usize, Option<usize>) {
        let running = self.batches.lock().iter().map(SttBatch::used).sum();
        (running, self.batching.max_conversations)
    }

    /// `(steps, slot-steps)` of all batches.
    pub(crate) fn counters(&self) -> (u64, u64) {
        self.batches
            .lock()
            .iter()
            .map(SttBatch::counters)
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }

    /// A slot: a free one in a running batch, else one in a new batch, else (at the limit) one
    /// freed later, or [`MoshiError::Busy`], as `when_busy` says. Blocking.
    pub(crate) fn acquire(&self, when_busy: WhenBusy) -> Result<Slot, MoshiError> {
        loop {
            let seen = *self.freed.generation.lock();
            {
                let mut batches = self.batches.lock();
                if let Some(slot) = batches.iter().find_map(SttBatch::try_acquire) {
                    return Ok(slot);
                }
                let running: usize = batches.iter().map(SttBatch::used).sum();
                if self
                    .batching
                    .max_conversations
                    .is_none_or(|max| running < max)
                {
                    // Empty batches hold memory (their caches): keep none of them around.
                    batches.retain(|b| b.used() > 0);
                    let batch = (self.new_batch)(self.batching.batch_size, self.freed.clone())?;
                    let slot = batch.try_acquire().expect("a new batch has a free slot");
                    batches.push(batch);
                    return Ok(slot);
                }
                if when_busy == WhenBusy::Fail {
                    return Err(MoshiError::Busy {
                        what: "speech-to-text".into(),
                        slots: running,
                    });
                }
            }
            let mut generation = self.freed.generation.lock();
            if *generation == seen {
                self.freed.condvar.wait(&mut generation);
            }
        }
    }
}

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

/// A slot's exchange with the loop.
#[derive(Default)]
struct SlotCell {
    /// Taken by a conversation.
    taken: bool,
    /// To be reset before its next step (a new conversation).
    reset: bool,
    /// The audio codes (one per codebook) to step, submitted by the conversation.
    frame: Option<Vec<u32>>,
    /// The step's outcome, for the conversation to collect.
    outcome: Option<Result<SlotStep, MoshiError>>,
}

struct Shared {
    cells: Mutex<Vec<SlotCell>>,
    /// Signalled when a frame is submitted, a slot freed, or the loop stops.
    work: Condvar,
    /// Signalled when outcomes are ready or a slot frees up.
    done: Condvar,
    stopping: std::sync::atomic::AtomicBool,
    /// The pool's notification, for slots freed.
    freed: Arc<Freed>,
    /// Steps run, and slot-steps run (for benchmarks and tests).
    steps: std::sync::atomic::AtomicU64,
    slot_steps: std::sync::atomic::AtomicU64,
}

/// One batch: its loop, its slots. Dropping it stops its loop.
pub(crate) struct SttBatch {
    shared: Arc<Shared>,
}

impl SttBatch {
    /// Starts the loop over `state` (an `asr::State` of `batch_size` items, its language model
    /// batched).
    pub(crate) fn start(state: State, device: Device, freed: Arc<Freed>) -> SttBatch {
        let size = state.batch_size();
        let shared = Arc::new(Shared {
            cells: Mutex::new((0..size).map(|_| SlotCell::default()).collect()),
            work: Condvar::new(),
            done: Condvar::new(),
            stopping: false.into(),
            freed,
            steps: 0.into(),
            slot_steps: 0.into(),
        });
        let loop_shared = shared.clone();
        std::thread::Builder::new()
            .name("kyutai-stt-batch".into())
            .spawn(move || run(loop_shared, state, device))
            .expect("the STT batch thread starts");
        SttBatch { shared }
    }

    /// Slots taken now.
    pub(crate) fn used(&self) -> usize {
        self.shared.cells.lock().iter().filter(|c| c.taken).count()
    }

    /// `(steps, slot-steps)` run so far: their ratio is the mean batch.
    pub(crate) fn counters(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.shared.steps.load(Relaxed),
            self.shared.slot_steps.load(Relaxed),
        )
    }

    /// Takes a free slot (reset before its first step), if there is one.
    pub(crate) fn try_acquire(&self) -> Option<Slot> {
        let mut cells = self.shared.cells.lock();
        let index = cells.iter().position(|c| !c.taken)?;
        cells[index] = SlotCell {
            taken: true,
            reset: true,
            ..SlotCell::default()
        };
        Some(Slot {
            shared: self.shared.clone(),
            index,
        })
    }
}

impl Drop for SttBatch {
    fn drop(&mut self) {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _cells = self.shared.cells.lock();
        self.shared.work.notify_all();
    }
}

/// One conversation's item of the batch; freed when dropped.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    index: usize,
}

impl Slot {
    /// Runs one language-model step on `codes` (one audio token per codebook, Mimi's for the
    /// slot's next 80 ms) with the other slots that have theirs ready; blocks until it has run.
    pub(crate) fn step(&self, codes: Vec<u32>) -> Result<SlotStep, MoshiError> {
        let mut cells = self.shared.cells.lock();
        cells[self.index].frame = Some(codes);
        self.shared.work.notify_all();
        loop {
            if let Some(outcome) = cells[self.index].outcome.take() {
                return outcome;
            }
            if self
                .shared
                .stopping
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return Err(MoshiError::Inference {
                    message: "the speech-to-text model was unloaded".into(),
                    source: None,
                });
            }
            self.shared.done.wait(&mut cells);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut cells = self.shared.cells.lock();
        cells[self.index] = SlotCell::default();
        self.shared.done.notify_all();
        self.shared.work.notify_all();
        drop(cells);
        self.shared.freed.notify();
    }
}

/// The loop: gather the submitted frames, step the batch with the others masked out, hand each
/// slot its messages.
fn run(shared: Arc<Shared>, mut state: State, device: Device) {
    let size = state.batch_size();
    loop {
        // Wait for a frame, then briefly for the other taken slots' frames.
        let (frames, resets) = {
            let mut cells = shared.cells.lock();
            let mut first_seen: Option<Instant> = None;
            loop {
                if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    shared.done.notify_all();
                    return;
                }
                let ready = cells.iter().filter(|c| c.frame.is_some()).count();
                let taken = cells.iter().filter(|c| c.taken).count();
                if ready > 0 {
                    let started = *first_seen.get_or_insert_with(Instant::now);
                    let waited = started.elapsed();
                    if ready == taken || waited >= GATHER {
                        break;
                    }
                    shared.work.wait_for(&mut cells, GATHER - waited);
                } else {
                    first_seen = None;
                    shared.work.wait(&mut cells);
                }
            }
            let frames: Vec<Option<Vec<u32>>> = cells.iter_mut().map(|c| c.frame.take()).collect();
            let resets: Vec<bool> = cells
                .iter_mut()
                .map(|c| std::mem::take(&mut c.reset))
                .collect();
            (frames, resets)
        };
        let outcome = step(&mut state, &device, size, &frames, &resets);
        let mut cells = shared.cells.lock();
        match outcome {
            Ok(mut per_slot) => {
                let active = frames.iter().filter(|f| f.is_some()).count() as u64;
                use std::sync::atomic::Ordering::Relaxed;
                shared.steps.fetch_add(1, Relaxed);
                shared.slot_steps.fetch_add(active, Relaxed);
                for (index, frame) in frames.iter().enumerate() {
                    // A slot freed (and perhaps taken again) meanwhile gets nothing.
                    if frame.is_some() && cells[index].taken && !cells[index].reset {
                        cells[index].outcome = Some(Ok(std::mem::take(&mut per_slot[index])));
                    }
                }
            }
            Err(error) => {
                for (index, frame) in frames.iter().enumerate() {
                    if frame.is_some() && cells[index].taken {
                        cells[index].outcome = Some(Err(error.clone()));
                    }
                }
            }
        }
        shared.done.notify_all();
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
