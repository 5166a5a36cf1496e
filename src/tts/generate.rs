//! Step-by-step generation of audio tokens from entries: `LMGen._step` with the hooks of
//! `TTSModel.generate` (`moshi/models/lm.py`, `tts.py`).
//!
//! Each call to [`Generator::step`] runs the main transformer once, asks the state machine what
//! text token to feed back, runs the depformer for the audio codebooks, and returns a frame
//! (text + audio tokens with the codebook delays undone) once the delays allow.
//!
//! [`step_many`] steps several generations together: each matrix product of the language model
//! takes one row per generation (two with direct CFG), so the weights are read once per step for
//! all of them, which is what a step costs on a CPU. Each generation keeps everything of its own
//! (caches, position, sampler, state machine); a generation stepped alone is the batch of one,
//! through the same code.

use std::collections::VecDeque;

use candle_core::Result;

use super::conditioners::Conditions;
use super::lm::{LmState, TtsLm};
use super::sampling::Sampler;
use super::state_machine::{Entry, State, StateMachine, TokenIds};

/// Sampling settings of one generation.
#[derive(Debug, Clone, Copy)]
pub struct GenerationSettings {
    /// Audio temperature (0 = greedy).
    pub temp: f64,
    /// Text temperature (0 = greedy).
    pub text_temp: f64,
    /// Audio tokens sampled from.
    pub top_k: usize,
    /// Text tokens sampled from.
    pub top_k_text: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// Steps kept after the last word (`final_padding`).
    pub final_padding: usize,
    /// Hard cap on steps (`max_gen_length`).
    pub max_steps: usize,
}

/// One step's record, for tests and debugging: the sampled text token and the one fed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextStep {
    /// The token the model sampled.
    pub sampled: i64,
    /// The token the state machine fed back.
    pub fed: i64,
}

/// Generation of one script.
pub struct Generator {
    lm_state: LmState,
    /// Direct CFG (`Conditions::direct_cfg`): the state of the null-condition pass and the
    /// coefficient. The reference runs both as a batch of 2; each is its own state here.
    guidance: Option<(LmState, f64)>,
    /// Audio prefix (`Conditions::audio_prefix`): text tokens fed instead of the state machine's
    /// (all zero), and per step the audio tokens that replace the generated ones (already
    /// delayed; `UNGENERATED` where the generated token stays), as `TTSModel.generate` hooks do.
    text_prefix: VecDeque<i64>,
    audio_prefix: VecDeque<Vec<i64>>,
    /// With a prefix and direct CFG (`cfg_is_no_prefix`): the null pass sees zero tokens until
    /// this many steps (plus each codebook's delay).
    cfg_masked_until: Option<usize>,
    machine: StateMachine,
    /// The text state machine's state.
    pub state: State,
    sampler: Sampler,
    settings: GenerationSettings,
    /// Ring buffer `[codebook][position]` of generated tokens (`LMGen` cache).
    cache: Vec<Vec<i64>>,
    initial: Vec<i64>,
    delays: Vec<usize>,
    max_delay: usize,
    /// Audio codebooks generated (`dep_q`); the model reads the others as zero tokens.
    generated: usize,
    /// Frames between text and audio (`delay_steps`).
    pub delay_steps: usize,
    offset: usize,
    /// Every step's text tokens.
    pub text_log: Vec<TextStep>,
    /// The text logits of the first [`LOGGED_TEXT_LOGIT_STEPS`] steps, to locate numeric drift
    /// when tokens differ from the reference's (the parity fixtures record the same).
    pub first_text_logits: Vec<Vec<f32>>,
    /// Whether all the text has been given ([`Generator::new`]), or more may come
    /// ([`Generator::streaming`]).
    input_complete: bool,
}

/// Steps whose text logits [`Generator::first_text_logits`] keeps.
pub const LOGGED_TEXT_LOGIT_STEPS: usize = 3;

const UNGENERATED: i64 = -2;

impl Generator {
    /// A generation of `entries` with `conditions`, `delay_steps` frames between text and audio.
    pub fn new(
        lm: &TtsLm,
        entries: Vec<Entry>,
        conditions: &Conditions,
        delay_steps: usize,
        settings: GenerationSettings,
    ) -> Result<Self> {
        let cfg = &lm.cfg;
        let token_ids = TokenIds::new(cfg.text_card as i64 + 1);
        let machine = StateMachine::new(token_ids, cfg.second_stream_ahead);
        let state = machine.new_state(entries);
        let max_delay = cfg.delays.iter().copied().max().unwrap_or(0);
        let positions = max_delay + 2;
        let mut initial = vec![cfg.text_card as i64];
        initial.extend(std::iter::repeat_n(cfg.card as i64, cfg.n_q));
        // An audio prefix holds the codebooks generated (Mimi encodes that many).
        let n_q = cfg.dep_q;
        let (text_prefix, audio_prefix, prefix_frames) = match &conditions.audio_prefix {
            Some(codes) => {
                if codes.len() != n_q || codes.iter().any(|c| c.len() != codes[0].len()) {
                    candle_core::bail!("the audio prefix must have {n_q} codebooks of equal length")
                }
                let frames = codes[0].len();
                let delays: Vec<usize> = cfg.delays[1..].iter().map(|d| d + delay_steps).collect();
                let width = frames + delays.iter().copied().max().unwrap_or(0);
                let columns = (0..width)
                    .map(|t| {
                        (0..n_q)
                            .map(|q| match t.checked_sub(delays[q]) {
                                Some(i) if i < frames => codes[q][i],
                                _ => UNGENERATED,
                            })
                            .collect()
                    })
                    .collect();
                (
                    vec![machine.token_ids.zero; frames].into(),
                    columns,
                    Some(frames),
                )
            }
            None => (VecDeque::new(), VecDeque::new(), None),
        };
        let guidance = match conditions.direct_cfg {
            Some(coef) => Some((lm.new_state(&conditions.null())?, coef)),
            None => None,
        };
        Ok(Generator {
            lm_state: lm.new_state(conditions)?,
            guidance,
            text_prefix,
            audio_prefix,
            cfg_masked_until: match (conditions.direct_cfg, prefix_frames) {
                (Some(_), Some(frames)) => Some(frames + delay_steps),
                _ => None,
            },
            machine,
            state,
            sampler: Sampler::new(settings.seed),
            settings,
            cache: vec![vec![UNGENERATED; positions]; cfg.n_q + 1],
            initial,
            delays: cfg.delays.clone(),
            max_delay,
            generated: cfg.dep_q,
            delay_steps,
            offset: 0,
            text_log: Vec::new(),
            first_text_logits: Vec::new(),
            input_complete: true,
        })
    }

    /// A generation whose text arrives while it runs: give words with
    /// [`push_entries`](Self::push_entries), say when there are no more with
    /// [`close_input`](Self::close_input), and step only while [`ready`](Self::ready).
    pub fn streaming(
        lm: &TtsLm,
        conditions: &Conditions,
        delay_steps: usize,
        settings: GenerationSettings,
    ) -> Result<Self> {
        let mut generator = Self::new(lm, Vec::new(), conditions, delay_steps, settings)?;
        generator.input_complete = false;
        Ok(generator)
    }

    /// Adds words to say, and `extra_steps` to the step cap (their share of the bound).
    pub fn push_entries(&mut self, entries: impl IntoIterator<Item = Entry>, extra_steps: usize) {
        self.state.entries.extend(entries);
        self.settings.max_steps += extra_steps;
    }

    /// No more words will come: the generation may finish.
    pub fn close_input(&mut self) {
        self.input_complete = true;
    }

    /// Whether a step may run now: always once the input is complete, else when the words the
    /// next step may need are here ([`State::ready`]).
    pub fn ready(&self) -> bool {
        self.input_complete || self.state.ready(self.machine.second_stream_ahead)
    }

    /// Steps run so far.
    pub fn steps(&self) -> usize {
        self.offset
    }

    /// True once the text is said and the final padding is generated (or the step cap hit).
    pub fn finished(&self) -> bool {
        if self.offset >= self.settings.max_steps {
            return true;
        }
        match self.state.end_step {
            Some(end) => self.offset >= end + self.delay_steps + self.settings.final_padding,
            None => false,
        }
    }

    /// Runs one step; returns the frame `[text, audio...]` that leaves the delay line, if any.
    pub fn step(&mut self, lm: &TtsLm) -> Result<Option<Vec<i64>>> {
        Ok(step_many(lm, &mut [self])?.pop().flatten())
    }

    /// This step's input tokens (the last generated ones, or the initial ones within the
    /// delays), and with direct CFG those of the null pass.
    fn inputs(&self) -> Result<(Vec<i64>, Option<Vec<i64>>)> {
        let ct = self.cache[0].len();
        let offset = self.offset;
        let input: Vec<i64> = (0..self.cache.len())
            .map(|k| {
                if offset <= self.delays[k] {
                    self.initial[k]
                } else {
                    self.cache[k][offset % ct]
                }
            })
            .collect();
        if input.contains(&UNGENERATED) {
            candle_core::bail!("internal error: an ungenerated token reached the model")
        }
        // Direct CFG as `TTSModel.generate` runs it (`cfg_is_no_text`): the null pass sees no
        // text (zero token once past the initial one) and its text logits are dropped; only the
        // audio logits are guided.
        let null_input = self.guidance.as_ref().map(|_| {
            let mut null_input = input.clone();
            let zero = self.machine.token_ids.zero;
            if let Some(until) = self.cfg_masked_until {
                for (k, token) in null_input.iter_mut().enumerate() {
                    if offset > self.delays[k] && offset <= self.delays[k] + until {
                        *token = zero;
                    }
                }
            }
            if offset > self.delays[0] {
                null_input[0] = zero;
            }
            null_input
        });
        Ok((input, null_input))
    }

    /// Samples the text token from this step's text logits and returns the one to feed back
    /// (the state machine's, or the audio prefix's zero).
    fn take_text(&mut self, text_logits: Vec<f32>) -> i64 {
        let sampled = self.sampler.sample(
            &text_logits,
            self.settings.text_temp,
            self.settings.top_k_text,
        ) as i64;
        if self.first_text_logits.len() < LOGGED_TEXT_LOGIT_STEPS {
            self.first_text_logits.push(text_logits);
        }
        let fed = match self.text_prefix.pop_front() {
            Some(token) => token,
            None => self.machine.process(self.offset, &mut self.state, sampled),
        };
        self.text_log.push(TextStep { sampled, fed });
        fed
    }

    /// Whether this step samples audio tokens (past the text-audio delay).
    fn samples_audio(&self) -> bool {
        self.offset >= self.delay_steps
    }

    /// Samples codebook `cb`'s token from its logits (and the null pass's, with direct CFG).
    fn take_audio(&mut self, mut logits: Vec<f32>, null: Option<&[f32]>) -> i64 {
        if let (Some((_, coef)), Some(null)) = (&self.guidance, null) {
            guide(&mut logits, null, *coef);
        }
        self.sampler
            .sample(&logits, self.settings.temp, self.settings.top_k) as i64
    }

    /// Ends the step: masks the audio tokens still within their delays, applies the audio
    /// prefix, stores the tokens, and returns the frame leaving the delay line, if any.
    fn finish_step(&mut self, fed: i64, mut audio: Vec<i64>) -> Option<Vec<i64>> {
        let offset = self.offset;
        for (q, slot) in audio.iter_mut().enumerate() {
            // Within its delay, or a codebook not generated (fewer than the model's, as
            // `TTSModel(n_q=...)` asks): the zero token, which the model reads as nothing.
            if offset < self.delays[q + 1] + self.delay_steps || q >= self.generated {
                *slot = self.machine.token_ids.zero;
            }
        }
        if let Some(column) = self.audio_prefix.pop_front() {
            for (slot, token) in audio.iter_mut().zip(column) {
                if token != UNGENERATED {
                    *slot = token;
                }
            }
        }
        let ct = self.cache[0].len();
        self.offset += 1;
        let pos = self.offset % ct;
        self.cache[0][pos] = fed;
        for (q, token) in audio.into_iter().enumerate() {
            self.cache[q + 1][pos] = token;
        }
        if self.offset <= self.max_delay {
            return None;
        }
        // The text and the codebooks generated, as `LMGen` returns them.
        let frame = (0..=self.generated)
            .map(|k| self.cache[k][(self.offset - self.max_delay + self.delays[k]) % ct])
            .collect();
        Some(frame)
    }
}

/// The language-model states of some generations, as rows: each generation's own, then its
/// null pass's with direct CFG (the reference runs the two as a batch of 2).
fn row_states<'s>(generations: impl Iterator<Item = &'s mut Generator>) -> Vec<&'s mut LmState> {
    let mut states = Vec::new();
    for generation in generations {
        let Generator {
            lm_state, guidance, ..
        } = generation;
        states.push(lm_state);
        if let Some((null_state, _)) = guidance {
            states.push(null_state);
        }
    }
    states
}

/// Runs one step of each generation, all in one batched forward pass of the language model;
/// returns each one's frame, as [`Generator::step`] would alone.
pub fn step_many(lm: &TtsLm, generations: &mut [&mut Generator]) -> Result<Vec<Option<Vec<i64>>>> {
    // The main transformer: a row per generation, and one per null pass.
    let mut tokens = Vec::new();
    let mut text = Vec::new();
    // For each generation, its row and its null pass's.
    let mut rows: Vec<(usize, Option<usize>)> = Vec::new();
    for generation in generations.iter() {
        let (input, null_input) = generation.inputs()?;
        let row = tokens.len();
        tokens.push(input);
        text.push(true);
        let null_row = null_input.map(|null_input| {
            tokens.push(null_input);
            text.push(false);
            row + 1
        });
        rows.push((row, null_row));
    }
    let (hidden, mut text_logits) = lm.forward_rows(
        &mut row_states(generations.iter_mut().map(|g| &mut **g)),
        &tokens,
        &text,
    )?;
    let fed: Vec<i64> = generations
        .iter_mut()
        .zip(&rows)
        .map(|(generation, &(row, _))| {
            let logits = text_logits[row].take().expect("text logits of a main row");
            generation.take_text(logits)
        })
        .collect();

    // The depformer, for the generations past the text-audio delay, one codebook at a time:
    // the `dep_q` it generates (the model's `n_q`, or fewer).
    let n_q = lm.cfg.n_q;
    let dep_q = lm.cfg.dep_q;
    // Each audible generation's tokens, one per codebook; the others' stay within their delays
    // (`finish_step` masks them).
    let mut audio: Vec<Vec<i64>> = vec![Vec::with_capacity(n_q); generations.len()];
    let audible: Vec<usize> = (0..generations.len())
        .filter(|&g| generations[g].samples_audio())
        .collect();
    if !audible.is_empty() {
        let dep_rows: Vec<u32> = audible
            .iter()
            .flat_map(|&g| std::iter::once(rows[g].0).chain(rows[g].1))
            .map(|r| r as u32)
            .collect();
        let mut dep_input = lm.depformer_input(if dep_rows.len() == tokens.len() {
            hidden
        } else {
            hidden.index_select(
                &candle_core::Tensor::new(dep_rows.as_slice(), hidden.device())?,
                0,
            )?
        });
        let mut prev: Vec<i64> = audible.iter().map(|&g| fed[g]).collect();
        // The audible generations' rows, borrowed anew for each codebook (the tokens sampled in
        // between need the generations themselves).
        fn audible_states<'s>(
            generations: &'s mut [&mut Generator],
            audible: &[usize],
        ) -> Vec<&'s mut LmState> {
            row_states(
                generations
                    .iter_mut()
                    .enumerate()
                    .filter(|(g, _)| audible.contains(g))
                    .map(|(_, generation)| &mut **generation),
            )
        }
        for state in audible_states(generations, &audible) {
            lm.depformer_reset(state);
        }
        for cb in 0..dep_q {
            let prev_rows: Vec<i64> = audible
                .iter()
                .zip(&prev)
                .flat_map(|(&g, &p)| std::iter::once(p).chain(rows[g].1.map(|_| p)))
                .collect();
            let logits = lm.depformer_rows(
                &mut audible_states(generations, &audible),
                cb,
                &prev_rows,
                &mut dep_input,
            )?;
            let mut logits = logits.into_iter();
            for (i, &g) in audible.iter().enumerate() {
                let main = logits.next().expect("a row per generation");
                let null = rows[g].1.map(|_| logits.next().expect("a null row"));
                let token = generations[g].take_audio(main, null.as_deref());
                audio[g].push(token);
                prev[i] = token;
            }
        }
    }
    for tokens in &mut audio {
        tokens.resize(n_q, 0);
    }
    Ok(generations
        .iter_mut()
        .zip(fed)
        .zip(audio)
        .map(|((generation, fed), audio)| generation.finish_step(fed, audio))
        .collect())
}

/// `logits_null + (logits - logits_null) * coef`, in place, in the reference's operation order.
fn guide(logits: &mut [f32], null: &[f32], coef: f64) {
    let coef = coef as f32;
    for (l, &n) in logits.iter_mut().zip(null) {
        *l = n + (*l - n) * coef;
    }
}
