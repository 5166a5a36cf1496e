//! [`Speaker`], its builder [`SpeakerBuilder`], and [`VoiceId`]: who says what.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::language::Language;

/// Names a voice an engine can speak with.
///
/// What the string means is the engine's business (a file in a voice repository, a preset
/// name, a cloud voice id); the newtype keeps it from being mixed up with the text to speak,
/// which is also a string.
///
/// ```rust
/// use fluent_voice_kyutai::voice::VoiceId;
///
/// let id = VoiceId::from("expresso/ex03.wav");
/// assert_eq!(id.as_str(), "expresso/ex03.wav");
/// assert_eq!(id.to_string(), "expresso/ex03.wav");
/// assert_eq!(id, VoiceId::new(String::from("expresso/ex03.wav")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VoiceId(pub String);

impl VoiceId {
    /// A voice id from any string.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Takes the string out.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl From<&str> for VoiceId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl From<String> for VoiceId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&String> for VoiceId {
    fn from(id: &String) -> Self {
        Self(id.clone())
    }
}

impl fmt::Display for VoiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for VoiceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets a `HashMap<VoiceId, _>` be looked up with a `&str`.
impl Borrow<str> for VoiceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// One speaker's turn in a text-to-speech conversation: who speaks, with which voice, what.
///
/// A conversation takes one `Speaker` per turn, in order, so a dialogue is a sequence of
/// speakers. Everything but the name and the text is optional: an engine falls back to its
/// default voice, the conversation's language and normal speed.
///
/// Build one with [`Speaker::speaker`]:
///
/// ```rust
/// use fluent_voice_kyutai::voice::{Language, Speaker, VoiceId};
///
/// let narrator = Speaker::speaker("Narrator")
///     .with_voice("expresso/x.wav")
///     .speak("Hello from Rust.")
///     .language(Language::English)
///     .speed(1.1)
///     .build();
/// assert_eq!(narrator.name(), "Narrator");
/// assert_eq!(narrator.voice(), Some(&VoiceId::from("expresso/x.wav")));
/// assert_eq!(narrator.text(), "Hello from Rust.");
/// assert_eq!(narrator.language(), Some(&Language::English));
/// assert_eq!(narrator.speed(), Some(1.1));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Speaker {
    /// A label for the speaker (used in logs and dialogue scripts, not spoken).
    pub name: String,
    /// The voice to speak with; `None` for the engine's default.
    pub voice: Option<VoiceId>,
    /// What to say.
    pub text: String,
    /// The language of `text`; `None` to use the conversation's language.
    pub language: Option<Language>,
    /// A speed factor (1.0 is normal); `None` for normal speed. Engines validate the range.
    pub speed: Option<f32>,
}

impl Speaker {
    /// Starts building a speaker called `name`.
    ///
    /// The upstream fluent-voice spelling, kept so that code written against it reads the same.
    pub fn speaker(name: impl Into<String>) -> SpeakerBuilder {
        SpeakerBuilder::new(name)
    }

    /// The speaker's label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The voice, if one was chosen.
    pub fn voice(&self) -> Option<&VoiceId> {
        self.voice.as_ref()
    }

    /// The text to speak.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The language of the text, if set.
    pub fn language(&self) -> Option<&Language> {
        self.language.as_ref()
    }

    /// The speed factor, if set.
    pub fn speed(&self) -> Option<f32> {
        self.speed
    }

    /// A builder holding this speaker's settings, to derive a variant (another line, same voice).
    ///
    /// ```rust
    /// use fluent_voice_kyutai::voice::Speaker;
    ///
    /// let first = Speaker::speaker("Ann").with_voice("v1").speak("Hi.").build();
    /// let second = first.to_builder().speak("Bye.").build();
    /// assert_eq!(second.voice, first.voice);
    /// assert_eq!(second.text, "Bye.");
    /// ```
    pub fn to_builder(&self) -> SpeakerBuilder {
        SpeakerBuilder {
            speaker: self.clone(),
        }
    }
}

/// Builds a [`Speaker`]; made by [`Speaker::speaker`].
///
/// Every setter takes and returns the builder, so a speaker reads as one expression. Setting a
/// value twice keeps the last one. [`build`](Self::build) cannot fail: checking that a voice
/// exists or a speed is in range needs the engine, which does it when the conversation starts.
///
/// ```rust
/// use fluent_voice_kyutai::voice::{Speaker, SpeakerBuilder};
///
/// let builder: SpeakerBuilder = Speaker::speaker("Bob").speak("first").speak("second");
/// let bob = builder.build();
/// assert_eq!(bob.text, "second");
/// assert_eq!(bob.voice, None);
/// assert_eq!(bob.language, None);
/// assert_eq!(bob.speed, None);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerBuilder {
    speaker: Speaker,
}

impl SpeakerBuilder {
    /// A builder for a speaker called `name`, with no voice, text, language or speed yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            speaker: Speaker {
                name: name.into(),
                voice: None,
                text: String::new(),
                language: None,
                speed: None,
            },
        }
    }

    /// Chooses the voice.
    pub fn with_voice(mut self, voice: impl Into<VoiceId>) -> Self {
        self.speaker.voice = Some(voice.into());
        self
    }

    /// Sets what the speaker says.
    pub fn speak(mut self, text: impl Into<String>) -> Self {
        self.speaker.text = text.into();
        self
    }

    /// Sets the language of the text.
    pub fn language(mut self, language: Language) -> Self {
        self.speaker.language = Some(language);
        self
    }

    /// Sets the speed factor (1.0 is normal).
    pub fn speed(mut self, speed: f32) -> Self {
        self.speaker.speed = Some(speed);
        self
    }

    /// Finishes the speaker.
    pub fn build(self) -> Speaker {
        self.speaker
    }
}

impl From<SpeakerBuilder> for Speaker {
    fn from(builder: SpeakerBuilder) -> Self {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn builder_round_trips_every_field() {
        let speaker = Speaker::speaker("Narrator")
            .with_voice("expresso/x.wav")
            .speak("Hello")
            .language(Language::French)
            .speed(0.8)
            .build();
        assert_eq!(
            speaker,
            Speaker {
                name: "Narrator".into(),
                voice: Some(VoiceId("expresso/x.wav".into())),
                text: "Hello".into(),
                language: Some(Language::French),
                speed: Some(0.8),
            }
        );
        assert_eq!(speaker.to_builder().build(), speaker);
        let via_from: Speaker = Speaker::speaker("Narrator").into();
        assert_eq!(via_from.name(), "Narrator");
        assert_eq!(via_from.text(), "");
    }

    #[test]
    fn last_setting_wins() {
        let speaker = SpeakerBuilder::new("A")
            .with_voice("one")
            .with_voice(String::from("two"))
            .language(Language::English)
            .language(Language::French)
            .build();
        assert_eq!(speaker.voice().map(VoiceId::as_str), Some("two"));
        assert_eq!(speaker.language(), Some(&Language::French));
    }

    #[test]
    fn voice_id_basics() {
        let id = VoiceId::new("v");
        assert_eq!(id.as_str(), "v");
        assert_eq!(id.as_ref(), "v");
        assert_eq!(format!("{id}"), "v");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"v\"");
        let mut map = HashMap::new();
        map.insert(id.clone(), 1);
        assert_eq!(map.get("v"), Some(&1));
        assert_eq!(id.into_inner(), "v");
    }
}
