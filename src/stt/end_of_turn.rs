//! End of turn: when a speaker has finished talking, from the STT model's voice-activity heads.
//!
//! Kyutai's 1B STT predicts, at every 80 ms step, the probability that the speaker pauses
//! within each of four horizons. The rule here is the one Kyutai's voice agent, Unmute, applies
//! to them (`unmute/stt/speech_to_text.py`, `unmute/unmute_handler.py`): skip the first steps
//! (the estimate is unsettled), smooth the probability of one horizon with an exponential moving
//! average that may rise and fall at different speeds, and end the turn when it passes a
//! threshold while the user is speaking, that is, once a word has been heard since the last end
//! of turn.

/// The end-of-turn rule's settings; the default is Unmute's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndOfTurnSettings {
    /// Which horizon's pause probability is watched (Unmute: 2, the third of four).
    pub head: usize,
    /// The smoothed probability above which the turn ends (Unmute: 0.6).
    pub threshold: f32,
    /// Seconds for the average to cover half the way up to a higher value (Unmute: 0.01).
    pub attack_seconds: f64,
    /// Seconds for the average to cover half the way down to a lower value (Unmute: 0.01).
    pub release_seconds: f64,
    /// Steps at the start that are not used (Unmute: 12, about a second).
    pub skip_first_steps: usize,
}

impl Default for EndOfTurnSettings {
    fn default() -> Self {
        EndOfTurnSettings {
            head: 2,
            threshold: 0.6,
            attack_seconds: 0.01,
            release_seconds: 0.01,
            skip_first_steps: 12,
        }
    }
}

impl EndOfTurnSettings {
    /// Checks the values (a negative time or a threshold outside `[0, 1]` cannot work).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let positive = |t: f64| t.is_finite() && t > 0.0;
        if !(self.threshold.is_finite() && (0.0..=1.0).contains(&self.threshold)) {
            return Err(format!(
                "the end-of-turn threshold must be in [0, 1], not {}",
                self.threshold
            ));
        }
        if !positive(self.attack_seconds) || !positive(self.release_seconds) {
            return Err("the end-of-turn attack and release times must be positive".into());
        }
        Ok(())
    }
}

/// Seconds per model step.
const STEP_SECONDS: f64 = 0.08;

/// The state of the rule for one audio stream.
#[derive(Debug, Clone)]
pub(crate) struct EndOfTurn {
    settings: EndOfTurnSettings,
    /// The smoothed pause probability; Unmute starts it at 1 (a pause).
    average: f64,
    steps: usize,
    /// A word has been heard since the last end of turn (the user is speaking).
    speaking: bool,
}

impl EndOfTurn {
    pub(crate) fn new(settings: EndOfTurnSettings) -> EndOfTurn {
        EndOfTurn {
            settings,
            average: 1.0,
            steps: 0,
            speaking: false,
        }
    }

    /// A word was recognised.
    pub(crate) fn on_word(&mut self) {
        self.speaking = true;
    }

    /// One step's pause probabilities; true when the turn ends at this step.
    pub(crate) fn on_step(&mut self, pause_probabilities: &[f32]) -> bool {
        self.steps += 1;
        if self.steps <= self.settings.skip_first_steps {
            return false;
        }
        let Some(&value) = pause_probabilities.get(self.settings.head) else {
            return false;
        };
        let value = f64::from(value);
        let half_life = if value > self.average {
            self.settings.attack_seconds
        } else {
            self.settings.release_seconds
        };
        let alpha = 1.0 - (-STEP_SECONDS / half_life * std::f64::consts::LN_2).exp();
        self.average = (1.0 - alpha) * self.average + alpha * value;
        if self.speaking && self.average > f64::from(self.settings.threshold) {
            self.speaking = false;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rule: &mut EndOfTurn, p: f32) -> bool {
        rule.on_step(&[0.0, 0.0, p, 0.0])
    }

    #[test]
    fn the_turn_ends_once_after_speech_when_the_pause_is_likely() {
        let mut rule = EndOfTurn::new(EndOfTurnSettings::default());
        // The first 12 steps are not used, whatever they say.
        rule.on_word();
        for _ in 0..12 {
            assert!(!step(&mut rule, 1.0));
        }
        // Speaking: low pause probability.
        assert!(!step(&mut rule, 0.1));
        assert!(!step(&mut rule, 0.2));
        // A pause: the turn ends, once.
        assert!(step(&mut rule, 0.9));
        assert!(!step(&mut rule, 0.95));
        // Silence without words does not end another turn.
        assert!(!step(&mut rule, 0.1));
        assert!(!step(&mut rule, 0.9));
        // New words, then a pause: a new turn ends.
        rule.on_word();
        assert!(!step(&mut rule, 0.2));
        assert!(step(&mut rule, 0.8));
    }

    #[test]
    fn smoothing_follows_the_half_lives() {
        let settings = EndOfTurnSettings {
            attack_seconds: 0.08,
            release_seconds: 0.16,
            skip_first_steps: 0,
            ..EndOfTurnSettings::default()
        };
        let mut rule = EndOfTurn::new(settings);
        step(&mut rule, 0.0); // one step of release (half-life two steps): 1 -> 1 - (1 - 2^-1/2)
        assert!(
            (rule.average - 0.5f64.sqrt()).abs() < 1e-9,
            "{}",
            rule.average
        );
        let before = rule.average;
        step(&mut rule, 1.0); // one step of attack (half-life one step): half the way up
        assert!((rule.average - (before + (1.0 - before) / 2.0)).abs() < 1e-9);
        assert!(settings.validate().is_ok());
        let bad = EndOfTurnSettings {
            threshold: 1.5,
            ..settings
        };
        assert!(bad.validate().is_err());
    }
}
