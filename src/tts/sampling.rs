//! Token sampling as the reference's `sample_token` does it: greedy (`argmax`, first maximum on
//! ties, like `torch.argmax`) when the temperature is 0, else top-k sampling from
//! `softmax(logits / temperature)`, drawn from a seeded RNG so that the same seed gives the same
//! tokens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A seeded sampler for one conversation.
pub struct Sampler {
    rng: StdRng,
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
        Sampler {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Picks a token: greedy for `temperature <= 0`, else top-`top_k` sampling.
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
        let k = if top_k == 0 {
            logits.len()
        } else {
            top_k.min(logits.len())
        };
        // The k largest, in decreasing order (ties by index): a selection, then a sort of
        // those k only, instead of sorting the whole vocabulary (2048 audio, 8000 text logits).
        let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
        let mut order: Vec<usize> = (0..logits.len()).collect();
        if k < order.len() {
            order.select_nth_unstable_by(k - 1, by_logit);
            order.truncate(k);
        }
        order.sort_unstable_by(by_logit);
        let max = logits[order[0]] as f64;
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - max) / temperature).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut draw = self.rng.random::<f64>() * total;
        for (w, &i) in weights.iter().zip(&order) {
            if draw < *w {
                return i;
            }
            draw -= w;
        }
        *order.last().expect("k >= 1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sampler as it was with a full sort of the vocabulary.
    fn sample_sorted(rng: &mut StdRng, logits: &[f32], temperature: f64, top_k: usize) -> usize {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        order.truncate(top_k.min(logits.len()));
        let max = logits[order[0]] as f64;
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - max) / temperature).exp())
            .collect();
        let mut draw = rng.random::<f64>() * weights.iter().sum::<f64>();
        for (w, &i) in weights.iter().zip(&order) {
            if draw < *w {
                return i;
            }
            draw -= w;
        }
        *order.last().unwrap()
    }

    #[test]
    fn partial_selection_draws_what_a_full_sort_draws() {
        let mut values = StdRng::seed_from_u64(3);
        for (vocab, top_k) in [(2048, 250), (8000, 25), (10, 10), (10, 3)] {
            // Coarse values, so that ties (broken by index) occur.
            let logits: Vec<f32> = (0..vocab)
                .map(|_| (values.random::<f32>() * 40.0).round() / 4.0)
                .collect();
            let mut ours = Sampler::new(11);
            let mut reference = StdRng::seed_from_u64(11);
            for _ in 0..200 {
                assert_eq!(
                    ours.sample(&logits, 0.8, top_k),
                    sample_sorted(&mut reference, &logits, 0.8, top_k)
                );
            }
        }
    }
}
