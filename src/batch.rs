//! Batches of conversations that share one batched forward pass per 80 ms step, for both
//! models: the conversations running at the same time on one engine take the slots of a batch,
//! and one loop per batch steps, each time, every slot whose conversation has its input ready.
//!
//! On a CPU a step's cost is reading the language model's weights (gigabytes); a batched step
//! reads them once for every conversation. A conversation takes a free slot (the model side
//! resets it, so nothing of an earlier conversation remains); each step, the slots with input
//! ready run and the others do not advance; a slot is freed when its conversation ends or is
//! dropped. A conversation alone is the batch of one, through the same code: there is one path
//! to keep exact (the parity tests run through it).
//!
//! What a step does is the model's ([`Stepper`]: the STT's `asr::State`, the TTS's generations);
//! this module holds what both share: slots, the gathering of inputs, the pool of batches, and
//! what happens when every slot is taken ([`WhenBusy`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::MoshiError;

/// How long the loop waits, once a slot has its input ready, for the other active slots to
/// submit theirs, so that they share the step. Small next to a step (tens of ms on a CPU) and to
/// the 80 ms a live stream takes to produce a frame; a slot whose input is not there yet simply
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

/// One batch's model side: what a batched step does.
pub(crate) trait Stepper: Send + 'static {
    /// What a conversation submits for a step.
    type Input: Send + 'static;
    /// What a step gives a conversation.
    type Output: Send + 'static;

    /// Runs one batched step. `inputs[i]` is slot `i`'s input, `None` for a slot that does not
    /// step this time; `resets[i]` says that slot `i` has a new conversation since its last
    /// step. Returns an output for each slot that had an input.
    fn step(
        &mut self,
        inputs: Vec<Option<Self::Input>>,
        resets: &[bool],
    ) -> Result<Vec<Option<Self::Output>>, MoshiError>;
}

/// The batches of one model: conversations fill a batch's free slots; a new batch (its own
/// loop and state, on the same weights) starts when all are full, up to `max_conversations`. A
/// batch left empty is dropped when another starts.
pub(crate) struct Batches<S: Stepper> {
    /// What the model runs ("speech-to-text"), for [`MoshiError::Busy`].
    what: &'static str,
    batching: Batching,
    new_stepper: NewStepper<S>,
    batches: Mutex<Vec<Batch<S>>>,
    /// Signalled when any slot of any batch is freed (for conversations waiting for one).
    freed: Arc<Freed>,
}

/// Makes the model side of a batch of the given size.
pub(crate) type NewStepper<S> = Box<dyn Fn(usize) -> Result<S, MoshiError> + Send + Sync>;

/// A notification that a slot was freed somewhere.
#[derive(Default)]
struct Freed {
    generation: Mutex<u64>,
    condvar: Condvar,
}

impl Freed {
    fn notify(&self) {
        *self.generation.lock() += 1;
        self.condvar.notify_all();
    }
}

impl<S: Stepper> Batches<S> {
    pub(crate) fn new(
        what: &'static str,
        batching: Batching,
        new_stepper: NewStepper<S>,
    ) -> Batches<S> {
        Batches {
            what,
            batching,
            new_stepper,
            batches: Mutex::new(Vec::new()),
            freed: Arc::new(Freed::default()),
        }
    }

    /// `(running, limit)` conversations.
    pub(crate) fn conversations(&self) -> (usize, Option<usize>) {
        let running = self.batches.lock().iter().map(Batch::used).sum();
        (running, self.batching.max_conversations)
    }

    /// `(steps, slot-steps)` of all batches.
    pub(crate) fn counters(&self) -> (u64, u64) {
        self.batches
            .lock()
            .iter()
            .map(Batch::counters)
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }

    /// A slot: a free one in a running batch, else one in a new batch, else (at the limit) one
    /// freed later, or [`MoshiError::Busy`], as `when_busy` says. Blocking.
    pub(crate) fn acquire(&self, when_busy: WhenBusy) -> Result<Slot<S>, MoshiError> {
        loop {
            let seen = *self.freed.generation.lock();
            {
                let mut batches = self.batches.lock();
                if let Some(slot) = batches.iter().find_map(Batch::try_acquire) {
                    return Ok(slot);
                }
                let running: usize = batches.iter().map(Batch::used).sum();
                if self
                    .batching
                    .max_conversations
                    .is_none_or(|max| running < max)
                {
                    // Empty batches hold memory (their caches): keep none of them around.
                    batches.retain(|b| b.used() > 0);
                    let size = self.batching.batch_size.max(1);
                    let stepper = (self.new_stepper)(size)?;
                    let batch = Batch::start(self.what, stepper, size, self.freed.clone());
                    let slot = batch.try_acquire().expect("a new batch has a free slot");
                    batches.push(batch);
                    return Ok(slot);
                }
                if when_busy == WhenBusy::Fail {
                    return Err(MoshiError::Busy {
                        what: self.what.into(),
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

/// A slot's exchange with the loop.
struct SlotCell<I, O> {
    /// Taken by a conversation.
    taken: bool,
    /// A new conversation, not yet stepped.
    reset: bool,
    /// The input to step, submitted by the conversation.
    input: Option<I>,
    /// The step's outcome, for the conversation to collect.
    outcome: Option<Result<O, MoshiError>>,
}

impl<I, O> Default for SlotCell<I, O> {
    fn default() -> Self {
        SlotCell {
            taken: false,
            reset: false,
            input: None,
            outcome: None,
        }
    }
}

struct Shared<S: Stepper> {
    what: &'static str,
    cells: Mutex<Vec<SlotCell<S::Input, S::Output>>>,
    /// Signalled when an input is submitted, a slot freed, or the loop stops.
    work: Condvar,
    /// Signalled when outcomes are ready or a slot frees up.
    done: Condvar,
    stopping: AtomicBool,
    /// The pool's notification, for slots freed.
    freed: Arc<Freed>,
    /// Steps run, and slot-steps run (for benchmarks and tests).
    steps: AtomicU64,
    slot_steps: AtomicU64,
}

/// One batch: its loop, its slots. Dropping it stops its loop.
struct Batch<S: Stepper> {
    shared: Arc<Shared<S>>,
}

impl<S: Stepper> Batch<S> {
    /// Starts the loop over `stepper`, with `size` slots.
    fn start(what: &'static str, stepper: S, size: usize, freed: Arc<Freed>) -> Batch<S> {
        let shared = Arc::new(Shared {
            what,
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
            .name("kyutai-batch".into())
            .spawn(move || run(loop_shared, stepper))
            .expect("the batch thread starts");
        Batch { shared }
    }

    /// Slots taken now.
    fn used(&self) -> usize {
        self.shared.cells.lock().iter().filter(|c| c.taken).count()
    }

    /// `(steps, slot-steps)` run so far: their ratio is the mean batch.
    fn counters(&self) -> (u64, u64) {
        (
            self.shared.steps.load(Ordering::Relaxed),
            self.shared.slot_steps.load(Ordering::Relaxed),
        )
    }

    /// Takes a free slot (reset before its first step), if there is one.
    fn try_acquire(&self) -> Option<Slot<S>> {
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

impl<S: Stepper> Drop for Batch<S> {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _cells = self.shared.cells.lock();
        self.shared.work.notify_all();
    }
}

/// One conversation's item of the batch; freed when dropped.
pub(crate) struct Slot<S: Stepper> {
    shared: Arc<Shared<S>>,
    index: usize,
}

impl<S: Stepper> Slot<S> {
    /// Runs one step on `input` with the other slots that have theirs ready; blocks until it
    /// has run.
    pub(crate) fn step(&self, input: S::Input) -> Result<S::Output, MoshiError> {
        let mut cells = self.shared.cells.lock();
        cells[self.index].input = Some(input);
        self.shared.work.notify_all();
        loop {
            if let Some(outcome) = cells[self.index].outcome.take() {
                return outcome;
            }
            if self.shared.stopping.load(Ordering::SeqCst) {
                return Err(MoshiError::Inference {
                    message: format!("the {} model was unloaded", self.shared.what),
                    source: None,
                });
            }
            self.shared.done.wait(&mut cells);
        }
    }
}

impl<S: Stepper> Drop for Slot<S> {
    fn drop(&mut self) {
        let mut cells = self.shared.cells.lock();
        cells[self.index] = SlotCell::default();
        self.shared.done.notify_all();
        self.shared.work.notify_all();
        drop(cells);
        self.shared.freed.notify();
    }
}

/// The loop: gather the submitted inputs, step the batch with them, hand each slot its output.
fn run<S: Stepper>(shared: Arc<Shared<S>>, mut stepper: S) {
    loop {
        // Wait for an input, then briefly for the other taken slots' inputs.
        let (inputs, resets) = {
            let mut cells = shared.cells.lock();
            let mut first_seen: Option<Instant> = None;
            loop {
                if shared.stopping.load(Ordering::SeqCst) {
                    shared.done.notify_all();
                    return;
                }
                let ready = cells.iter().filter(|c| c.input.is_some()).count();
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
            let inputs: Vec<Option<S::Input>> = cells.iter_mut().map(|c| c.input.take()).collect();
            let resets: Vec<bool> = cells
                .iter_mut()
                .map(|c| std::mem::take(&mut c.reset))
                .collect();
            (inputs, resets)
        };
        let stepped: Vec<bool> = inputs.iter().map(Option::is_some).collect();
        let outcome = stepper.step(inputs, &resets);
        let mut cells = shared.cells.lock();
        match outcome {
            Ok(mut per_slot) => {
                let active = stepped.iter().filter(|s| **s).count() as u64;
                shared.steps.fetch_add(1, Ordering::Relaxed);
                shared.slot_steps.fetch_add(active, Ordering::Relaxed);
                for (index, stepped) in stepped.iter().enumerate() {
                    // A slot freed (and perhaps taken again) meanwhile gets nothing.
                    let output = per_slot.get_mut(index).and_then(Option::take);
                    if let Some(output) =
                        output.filter(|_| *stepped && cells[index].taken && !cells[index].reset)
                    {
                        cells[index].outcome = Some(Ok(output));
                    }
                }
            }
            Err(error) => {
                for (index, stepped) in stepped.iter().enumerate() {
                    if *stepped && cells[index].taken {
                        cells[index].outcome = Some(Err(error.clone()));
                    }
                }
            }
        }
        shared.done.notify_all();
    }
}
