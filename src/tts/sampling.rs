//! Token sampling as the reference's `sample_token` does it (`moshi/utils/sampling.py`): greedy
//! (`argmax`, first maximum on ties, like `torch.argmax`) when the temperature is 0, else
//! `softmax(logits / temperature)`, the `top_k` most likely tokens, and one of them drawn by the
//! reference's `multinomial`: an `Exp(1)` variable per candidate, and the candidate with the
//! largest `probability / variable` wins (the "exponential race", which picks each candidate
//! with its probability).
//!
//! The `Exp(1)` variables come from a splitmix64 stream seeded with the conversation's seed, so
//! that the same seed gives the same tokens, and so that the Python reference, given the same
//! variables, draws the same tokens (`tools/parity/tts/make_reference.py` feeds them to the
//! reference's own `multinomial`; `tests/tts_parity.rs` compares).

/// A seeded sampler for one conversation.
pub struct Sampler {
    state: u64,
}

/// Index of the first maximum (`torch.argmax` semantics); NaNs never win.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best
}

impl Sampler {
    /// A sampler whose draws are fixed by `seed`.
    pub fn new(seed: u64) -> Sampler {
        Sampler { state: seed }
    }

    /// splitmix64: small, fast, and easy to write again in the reference's language.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An `Exp(1)` variable, `-ln(u)` with `u` uniform in `(0, 1]` (53 bits), as f32.
    fn exponential(&mut self) -> f32 {
        let u = ((self.next_u64() >> 11) + 1) as f64 * (-53f64).exp2();
        (-u.ln()) as f32
    }

    /// Picks a token: greedy for `temperature <= 0`, else top-`top_k` sampling (all tokens for
    /// `top_k` 0, as the reference's `top_k` of 0).
    ///
    /// ```
    /// use fluent_voice_kyutai::internals::tts::sampling::Sampler;
    /// let mut sampler = Sampler::new(7);
    /// assert_eq!(sampler.sample(&[0.1, 3.0, 0.2], 0.0, 10), 1);
    /// // With top_k = 1, sampling is greedy whatever the temperature.
    /// assert_eq!(sampler.sample(&[0.1, 3.0, 0.2], 0.8, 1), 1);
    /// ```
    pub fn sample(&mut self, logits: &[f32], temperature: f64, top_k: usize) -> usize {
        if temperature <= 0.0 || logits.len() <= 1 {
            return argmax(logits);
        }
        // `torch.softmax(logits / temp)` in f32.
        let temperature = temperature as f32;
        let scaled: Vec<f32> = logits.iter().map(|&l| l / temperature).collect();
        let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = scaled.iter().map(|&x| (x - max).exp()).collect();
        let total: f32 = exps.iter().sum();
        let probs: Vec<f32> = exps.iter().map(|&e| e / total).collect();
        // `torch.topk`: the k most likely, most likely first (ties by index); with `top_k` 0,
        // every token in index order (the reference's `multinomial(probs)`). A selection, then
        // a sort of those k only, instead of sorting the whole vocabulary (2048 audio, 8000
        // text logits): the same order as a full sort.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        if top_k > 0 {
            let by_prob = |a: &usize, b: &usize| probs[*b].total_cmp(&probs[*a]).then(a.cmp(b));
            if top_k < order.len() {
                order.select_nth_unstable_by(top_k - 1, by_prob);
                order.truncate(top_k);
            }
            order.sort_unstable_by(by_prob);
        }
        // `multinomial`: argmax of probability / Exp(1), one variable per candidate in order.
        let race: Vec<f32> = order
            .iter()
            .map(|&i| probs[i] / self.exponential())
            .collect();
        order[argmax(&race)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-k order as a full sort of the vocabulary gives it.
    fn top_k_sorted(probs: &[f32], top_k: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        order.truncate(top_k);
        order
    }

    /// `Sampler::sample` with the full sort, drawing from `sampler`'s generator.
    fn sample_sorted(
        sampler: &mut Sampler,
        logits: &[f32],
        temperature: f64,
        top_k: usize,
    ) -> usize {
        let t = temperature as f32;
        let max = logits
            .iter()
            .map(|&l| l / t)
            .fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|&l| (l / t - max).exp()).collect();
        let total: f32 = exps.iter().sum();
        let probs: Vec<f32> = exps.iter().map(|&e| e / total).collect();
        let order = top_k_sorted(&probs, top_k);
        let race: Vec<f32> = order
            .iter()
            .map(|&i| probs[i] / sampler.exponential())
            .collect();
        order[argmax(&race)]
    }

    #[test]
    fn partial_selection_draws_what_a_full_sort_draws() {
        let mut values = Sampler::new(3);
        for (vocab, top_k) in [(2048, 250), (8000, 25), (10, 10), (10, 3)] {
            // Coarse values, so that ties (broken by index) occur.
            let logits: Vec<f32> = (0..vocab)
                .map(|_| {
                    ((values.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 40.0).round() / 4.0
                })
                .collect();
            let mut ours = Sampler::new(11);
            let mut reference = Sampler::new(11);
            for _ in 0..200 {
                assert_eq!(
                    ours.sample(&logits, 0.8, top_k),
                    sample_sorted(&mut reference, &logits, 0.8, top_k)
                );
            }
        }
    }
}
