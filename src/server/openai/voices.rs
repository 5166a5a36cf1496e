//! OpenAI's voice names, mapped to Kyutai voices so that an app written for OpenAI's voices
//! speaks without changes; any other name is taken as a Kyutai voice, as the library takes it.
//!
//! | OpenAI | Pocket TTS | Kyutai TTS 1.6B (`kyutai/tts-voices`) |
//! |---|---|---|
//! | alloy | alba | expresso/ex03-ex01_happy_001_channel1_334s.wav |
//! | ash | jean | vctk/p225_023.wav |
//! | ballad | paul | unmute-prod-website/default_voice.wav |
//! | coral | fantine | expresso/ex03-ex01_happy_001_channel1_334s.wav |
//! | echo | marius | vctk/p225_023.wav |
//! | fable | george | unmute-prod-website/default_voice.wav |
//! | onyx | javert | vctk/p225_023.wav |
//! | nova | anna | expresso/ex03-ex01_happy_001_channel1_334s.wav |
//! | sage | vera | unmute-prod-website/default_voice.wav |
//! | shimmer | eponine | expresso/ex03-ex01_happy_001_channel1_334s.wav |
//! | verse | michael | vctk/p225_023.wav |
//! | marin | mary | unmute-prod-website/default_voice.wav |
//! | cedar | charles | vctk/p225_023.wav |
//!
//! The Pocket column uses the model's predefined voices, chosen so that OpenAI's male and
//! female voices stay so. The 1.6B column uses three voices Kyutai's own scripts and server
//! name (its Python default, its server default and a VCTK speaker), so that every entry exists
//! in the published voices repository.

use crate::models::TtsFamily;

/// OpenAI's built-in voices (the SDK's `voice` literals), with their Pocket TTS and 1.6B voices.
const TABLE: [(&str, &str, &str); 13] = [
    ("alloy", "alba", HAPPY),
    ("ash", "jean", VCTK),
    ("ballad", "paul", UNMUTE),
    ("coral", "fantine", HAPPY),
    ("echo", "marius", VCTK),
    ("fable", "george", UNMUTE),
    ("onyx", "javert", VCTK),
    ("nova", "anna", HAPPY),
    ("sage", "vera", UNMUTE),
    ("shimmer", "eponine", HAPPY),
    ("verse", "michael", VCTK),
    ("marin", "mary", UNMUTE),
    ("cedar", "charles", VCTK),
];

const HAPPY: &str = "expresso/ex03-ex01_happy_001_channel1_334s.wav";
const UNMUTE: &str = "unmute-prod-website/default_voice.wav";
const VCTK: &str = "vctk/p225_023.wav";

/// The Kyutai voice that `name` stands for with the TTS `family`: OpenAI's names through the
/// table, any other name as it is.
pub(crate) fn kyutai_voice(family: &TtsFamily, name: &str) -> String {
    match TABLE.iter().find(|(openai, _, _)| *openai == name) {
        Some((_, pocket, dsm)) => match family {
            TtsFamily::Pocket(_) => pocket.to_string(),
            _ => dsm.to_string(),
        },
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_names_map_per_family_and_others_pass() {
        let pocket = TtsFamily::Pocket("english".into());
        assert_eq!(kyutai_voice(&pocket, "alloy"), "alba");
        assert_eq!(kyutai_voice(&TtsFamily::Dsm, "ash"), VCTK);
        assert_eq!(
            kyutai_voice(&TtsFamily::Dsm, "vctk/p226.wav"),
            "vctk/p226.wav"
        );
        assert!(TABLE.iter().any(|(openai, _, _)| *openai == "verse"));
        // Every Pocket entry is one of the model's predefined voices.
        for (_, voice, _) in TABLE {
            assert!(
                crate::pocket::config::PREDEFINED_VOICES.contains(&voice),
                "{voice}"
            );
        }
    }
}
