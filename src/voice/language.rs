//! [`Language`]: which language to speak or to expect.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A spoken language, identified by its ISO 639 code.
///
/// English and French have their own variants because they are the languages speech engines
/// most commonly offer and code matches on them; every other language is
/// [`Other`](Self::Other) with its lowercase ISO 639 code. Engines decide which languages they
/// support and answer [`VoiceError::Unsupported`](crate::voice::VoiceError::Unsupported) for the
/// rest, so this type never has to change when an engine gains a language.
///
/// Parse rather than build [`Other`](Self::Other) by hand: parsing normalises case, drops
/// region subtags (`en-US` is English) and maps `"en"`/`"fr"` to their variants, so that two
/// values for the same language compare equal.
///
/// ```rust
/// use fluent_voice_kyutai::voice::Language;
///
/// assert_eq!("en".parse::<Language>().unwrap(), Language::English);
/// assert_eq!("fr-FR".parse::<Language>().unwrap(), Language::French);
/// assert_eq!("French".parse::<Language>().unwrap(), Language::French);
/// let german: Language = "DE".parse().unwrap();
/// assert_eq!(german, Language::Other("de".into()));
/// assert_eq!(german.code(), "de");
/// assert_eq!(Language::English.to_string(), "en");
/// assert!("not a language".parse::<Language>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Language {
    /// English (`en`).
    English,
    /// French (`fr`).
    French,
    /// Any other language, by its lowercase ISO 639 code (`"de"`, `"es"`, `"deu"`).
    Other(String),
}

impl Language {
    /// The ISO 639 code: `"en"`, `"fr"`, or the code held by [`Other`](Self::Other).
    pub fn code(&self) -> &str {
        match self {
            Self::English => "en",
            Self::French => "fr",
            Self::Other(code) => code,
        }
    }

    /// The English name of the language, for the languages this type names.
    pub fn english_name(&self) -> Option<&'static str> {
        match self {
            Self::English => Some("English"),
            Self::French => Some("French"),
            Self::Other(_) => None,
        }
    }

    /// Parses a language code or name; the same as [`str::parse`].
    ///
    /// Accepted: ISO 639-1 or 639-2 codes in any case, optionally followed by subtags
    /// (`en-US`, `fr_CA`, `pt-BR`; the subtags are dropped), and the names `english`,
    /// `french`, `français`.
    pub fn from_code(code: &str) -> Result<Self, ParseLanguageError> {
        code.parse()
    }
}

impl fmt::Display for Language {
    /// Writes the ISO 639 code, so that `to_string()` and `parse()` round-trip.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Language {
    type Err = ParseLanguageError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let trimmed = input.trim();
        let lower = trimmed.to_lowercase();
        match lower.as_str() {
            "english" => return Ok(Self::English),
            "french" | "français" | "francais" => return Ok(Self::French),
            _ => {}
        }

        let mut subtags = lower.split(['-', '_']);
        let primary = subtags.next().unwrap_or_default();
        let primary_ok =
            (2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_lowercase());
        let rest_ok = subtags
            .clone()
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !primary_ok || !rest_ok {
            return Err(ParseLanguageError {
                input: trimmed.to_owned(),
            });
        }

        Ok(match primary {
            "en" | "eng" => Self::English,
            "fr" | "fra" | "fre" => Self::French,
            other => Self::Other(other.to_owned()),
        })
    }
}

impl From<Language> for String {
    fn from(language: Language) -> Self {
        match language {
            Language::Other(code) => code,
            known => known.code().to_owned(),
        }
    }
}

impl TryFrom<String> for Language {
    type Error = ParseLanguageError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl TryFrom<&str> for Language {
    type Error = ParseLanguageError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// The text given to [`Language::from_str`] is not a language code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{input}\" is not a language code; use an ISO 639 code such as \"en\", \"fr\" or \"de\"")]
pub struct ParseLanguageError {
    input: String,
}

impl ParseLanguageError {
    /// The text that failed to parse (trimmed).
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl From<ParseLanguageError> for crate::voice::VoiceError {
    fn from(err: ParseLanguageError) -> Self {
        Self::InvalidInput(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_codes_and_names() {
        for s in [
            "en", "EN", " en ", "eng", "en-US", "en_gb", "English", "ENGLISH",
        ] {
            assert_eq!(s.parse::<Language>(), Ok(Language::English), "{s}");
        }
        for s in [
            "fr",
            "FR",
            "fra",
            "fre",
            "fr-FR",
            "fr_CA",
            "french",
            "Français",
            "francais",
        ] {
            assert_eq!(s.parse::<Language>(), Ok(Language::French), "{s}");
        }
        assert_eq!("de".parse(), Ok(Language::Other("de".into())));
        assert_eq!("pt-BR".parse(), Ok(Language::Other("pt".into())));
        assert_eq!("deu".parse(), Ok(Language::Other("deu".into())));
        assert_eq!(
            "zh-Hant-TW".parse(),
            Ok(Language::Other("zh".into())),
            "script and region subtags are dropped"
        );
    }

    #[test]
    fn rejects_what_is_not_a_code() {
        for s in [
            "",
            "e",
            "german",
            "e1",
            "en-",
            "en--us",
            "en-toolongsubtag",
            "日本",
        ] {
            let err = s.parse::<Language>().unwrap_err();
            assert_eq!(err.input(), s.trim());
            assert!(err.to_string().contains("is not a language code"), "{err}");
        }
    }

    #[test]
    fn code_display_and_parse_round_trip() {
        for lang in [
            Language::English,
            Language::French,
            Language::Other("es".into()),
        ] {
            assert_eq!(lang.to_string(), lang.code());
            assert_eq!(lang.code().parse::<Language>(), Ok(lang.clone()));
            assert_eq!(Language::from_code(lang.code()), Ok(lang));
        }
        assert_eq!(Language::English.english_name(), Some("English"));
        assert_eq!(Language::Other("es".into()).english_name(), None);
    }

    #[test]
    fn serializes_as_code() {
        assert_eq!(serde_json::to_string(&Language::French).unwrap(), "\"fr\"");
        assert_eq!(
            serde_json::from_str::<Language>("\"en-US\"").unwrap(),
            Language::English
        );
        assert!(serde_json::from_str::<Language>("\"??\"").is_err());
    }

    #[test]
    fn converts_into_voice_error() {
        let err: crate::voice::VoiceError = "x".parse::<Language>().unwrap_err().into();
        assert!(matches!(err, crate::voice::VoiceError::InvalidInput(_)));
    }
}
