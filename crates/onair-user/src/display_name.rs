//! Display names: what other viewers see next to a user's comments.

use std::fmt;

/// The most characters a display name may have.
pub const MAX_DISPLAY_NAME_CHARS: usize = 32;

/// A display name that is known to be valid: 1 to 32 characters after trimming,
/// with no control characters and nothing invisible that could impersonate
/// another name or hide text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Why a display name was refused; the message tells the viewer how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisplayNameError {
    /// Nothing is left after trimming.
    #[error("display name is empty: give 1 to {MAX_DISPLAY_NAME_CHARS} visible characters")]
    Empty,
    /// More characters than [`MAX_DISPLAY_NAME_CHARS`]; carries the count.
    #[error("display name is {0} characters long; the most allowed is {MAX_DISPLAY_NAME_CHARS}")]
    TooLong(usize),
    /// A control character (newline, escape…), given as its code point.
    #[error("display name contains the control character U+{0:04X}; remove it")]
    Control(u32),
    /// A character that renders as nothing and could fake or hide a name, given
    /// as its code point.
    #[error("display name contains the invisible character U+{0:04X}; remove it")]
    Invisible(u32),
}

impl DisplayName {
    /// Trims a name a viewer typed and checks it, saying what is wrong if it fails.
    pub fn parse(raw: &str) -> Result<DisplayName, DisplayNameError> {
        let trimmed = raw.trim();
        for character in trimmed.chars() {
            if character.is_control() {
                return Err(DisplayNameError::Control(character as u32));
            }
            if is_invisible(character) {
                return Err(DisplayNameError::Invisible(character as u32));
            }
        }
        let length = trimmed.chars().count();
        if length == 0 {
            return Err(DisplayNameError::Empty);
        }
        if length > MAX_DISPLAY_NAME_CHARS {
            return Err(DisplayNameError::TooLong(length));
        }
        Ok(DisplayName(trimmed.to_owned()))
    }

    /// A name for a new viewer who gave none, e.g. `Viewer 4f2a`.
    pub fn generated() -> DisplayName {
        let suffix: u16 = rand::random();
        DisplayName(format!("Viewer {suffix:04x}"))
    }

    /// The name as it is stored and shown.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters that render as nothing (or as blank space that is not a space):
/// format characters, fillers and blanks used to fake empty or look-alike names.
fn is_invisible(character: char) -> bool {
    matches!(
        character as u32,
        0x00AD // soft hyphen
        | 0x034F // combining grapheme joiner
        | 0x061C // Arabic letter mark
        | 0x115F | 0x1160 // Hangul fillers
        | 0x17B4 | 0x17B5 // Khmer inherent vowels
        | 0x180B..=0x180F // Mongolian variation selectors and vowel separator
        | 0x200B..=0x200F // zero-width space, joiners, direction marks
        | 0x2028..=0x202F // separators, embeddings, narrow no-break space
        | 0x205F..=0x206F // medium math space, word joiner, invisible operators
        | 0x2800 // braille blank
        | 0x3164 // Hangul filler
        | 0xFEFF // zero-width no-break space
        | 0xFFA0 // half-width Hangul filler
        | 0xFFF0..=0xFFFB // specials, interlinear annotations
        | 0x1D173..=0x1D17A // musical formatting
        | 0xE0000..=0xE007F // tags
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names_in_any_script() {
        for name in ["Alice", "山田太郎", "  spaced  ", "ゆっくり実況", "Zoë 🎉"] {
            assert!(DisplayName::parse(name).is_ok(), "{name}");
        }
        assert_eq!(DisplayName::parse("  Bob ").unwrap().as_str(), "Bob");
    }

    #[test]
    fn refuses_empty_long_control_and_invisible_names() {
        assert_eq!(DisplayName::parse("   "), Err(DisplayNameError::Empty));
        assert_eq!(
            DisplayName::parse(&"x".repeat(33)),
            Err(DisplayNameError::TooLong(33))
        );
        assert_eq!(
            DisplayName::parse("a\u{7}b"),
            Err(DisplayNameError::Control(7))
        );
        assert_eq!(
            DisplayName::parse("ad\u{200B}min"),
            Err(DisplayNameError::Invisible(0x200B))
        );
        assert_eq!(
            DisplayName::parse("\u{3164}"),
            Err(DisplayNameError::Invisible(0x3164))
        );
        assert_eq!(
            DisplayName::parse("abc\u{202E}gpj"),
            Err(DisplayNameError::Invisible(0x202E))
        );
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert!(DisplayName::parse(&"あ".repeat(32)).is_ok());
    }
}
