//! The noise the flow head starts from: `x0 ~ N(0, temp)` (std `sqrt(temp)`), truncated to
//! `[-clamp, clamp]` when `noise_clamp` is set, as `FlowLMModel.forward` draws it.
//!
//! A generation draws once per flow-LM pass, the two prompt passes included (the reference
//! samples a latent from each and discards it), so a [`Replayed`] sequence of the reference's
//! own draws reproduces its output at any temperature.

use std::collections::VecDeque;

use candle_core::Result;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// A source of noise vectors.
pub trait Noise: Send {
    /// `n` values of `N(0, temperature)`, truncated to `[-clamp, clamp]` if `clamp` is set.
    fn draw(&mut self, n: usize, temperature: f64, clamp: Option<f64>) -> Result<Vec<f32>>;
}

/// Noise from a seeded generator: the same seed gives the same audio.
pub struct Seeded(StdRng);

impl Seeded {
    /// Noise seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Seeded(StdRng::seed_from_u64(seed))
    }
}

impl Noise for Seeded {
    fn draw(&mut self, n: usize, temperature: f64, clamp: Option<f64>) -> Result<Vec<f32>> {
        let std = temperature.max(0.0).sqrt();
        Ok((0..n)
            .map(|_| {
                let mut x = std * Distribution::<f64>::sample(&StandardNormal, &mut self.0);
                if let Some(c) = clamp {
                    // Rejection, as a truncated normal is defined; a bound far inside the
                    // distribution ends with the bound itself rather than looping on.
                    let mut tries = 0;
                    while x.abs() > c && tries < 64 {
                        x = std * Distribution::<f64>::sample(&StandardNormal, &mut self.0);
                        tries += 1;
                    }
                    x = x.clamp(-c, c);
                }
                x as f32
            })
            .collect())
    }
}

/// The draws a reference run made, in order (for parity tests at `temp > 0`).
pub struct Replayed(VecDeque<Vec<f32>>);

impl Replayed {
    /// Replays `draws`, one row per draw.
    pub fn new(draws: impl IntoIterator<Item = Vec<f32>>) -> Self {
        Replayed(draws.into_iter().collect())
    }

    /// The draws not used yet.
    pub fn remaining(&self) -> usize {
        self.0.len()
    }
}

impl Noise for Replayed {
    fn draw(&mut self, n: usize, _: f64, _: Option<f64>) -> Result<Vec<f32>> {
        match self.0.pop_front() {
            Some(row) if row.len() == n => Ok(row),
            Some(row) => candle_core::bail!("a recorded draw of {} values, {n} asked", row.len()),
            None => candle_core::bail!("the recorded noise is used up"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_has_the_temperature_as_variance_and_respects_the_clamp() {
        let x = Seeded::new(7).draw(20000, 0.5, None).unwrap();
        let var = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        assert!((var - 0.5).abs() < 0.03, "{var}");
        let y = Seeded::new(7).draw(5000, 0.7, Some(0.3)).unwrap();
        assert!(y.iter().all(|v| v.abs() <= 0.3));
        assert_eq!(
            Seeded::new(1).draw(8, 0.3, None).unwrap(),
            Seeded::new(1).draw(8, 0.3, None).unwrap()
        );
        assert!(
            Seeded::new(1)
                .draw(4, 0.0, None)
                .unwrap()
                .iter()
                .all(|v| *v == 0.0)
        );
    }
}
