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
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        order.truncate(k);
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
