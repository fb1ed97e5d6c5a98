//! Niconico's display commands: how a comment is drawn over the video. A
//! comment may carry one of each kind:
//!
//! - position: `naka` (flows across, the default), `ue` (held at the top),
//!   `shita` (held at the bottom);
//! - size: `big`, `medium` (the default), `small`;
//! - colour, from a fixed palette: `white` (the default), `red`, `pink`,
//!   `orange`, `yellow`, `green`, `cyan`, `blue`, `purple`, `black`.
//!
//! They are stored in one canonical order (position, size, colour) without
//! the defaults, so two ways of asking for the same look read the same.

use crate::error::CommentError;

/// Where a comment is drawn.
pub const POSITIONS: &[&str] = &["naka", "ue", "shita"];
/// How large.
pub const SIZES: &[&str] = &["medium", "big", "small"];
/// In which colour (the palette).
pub const COLOURS: &[&str] = &[
    "white", "red", "pink", "orange", "yellow", "green", "cyan", "blue", "purple", "black",
];
/// The longest list of commands looked at; past it the list is refused
/// whole (one of each kind makes three).
const MAX_COMMANDS: usize = 16;

/// The commands in canonical order, space-separated ("" for all defaults);
/// refuses an unknown command or two of one kind, saying which.
pub fn canonical(commands: &[String]) -> Result<String, CommentError> {
    if commands.len() > MAX_COMMANDS {
        return Err(CommentError::InvalidArgument(format!(
            "commands holds {} display commands; a comment takes at most one position, one size and one colour",
            commands.len()
        )));
    }
    let mut chosen: [Option<&str>; 3] = [None, None, None];
    for command in commands {
        let command = command.trim();
        let kind = [POSITIONS, SIZES, COLOURS]
            .iter()
            .position(|kind| kind.contains(&command));
        let Some(kind) = kind else {
            return Err(CommentError::InvalidArgument(format!(
                "unknown display command {command:?}: a position ({}), a size ({}) or a colour ({})",
                POSITIONS.join(", "),
                SIZES.join(", "),
                COLOURS.join(", ")
            )));
        };
        if let Some(earlier) = chosen[kind] {
            let name = ["position", "size", "colour"][kind];
            return Err(CommentError::InvalidArgument(format!(
                "commands names two of one kind: {earlier:?} and {command:?} are both a {name}"
            )));
        }
        chosen[kind] = Some(command);
    }
    let defaults = [POSITIONS[0], SIZES[0], COLOURS[0]];
    let kept: Vec<&str> = chosen
        .iter()
        .zip(defaults)
        .filter_map(|(command, default)| command.filter(|command| *command != default))
        .collect();
    Ok(kept.join(" "))
}

/// The stored commands as a list.
pub fn listed(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_of(commands: &[&str]) -> Result<String, String> {
        let commands: Vec<String> = commands
            .iter()
            .map(|command| (*command).to_owned())
            .collect();
        canonical(&commands).map_err(|error| error.to_string())
    }

    #[test]
    fn commands_are_kept_in_one_order_without_defaults() {
        assert_eq!(canonical_of(&[]).unwrap(), "");
        assert_eq!(canonical_of(&["red", "big", "ue"]).unwrap(), "ue big red");
        assert_eq!(canonical_of(&["naka", "medium", "white"]).unwrap(), "");
        assert_eq!(canonical_of(&["shita", "small"]).unwrap(), "shita small");
        assert_eq!(listed("ue big red"), ["ue", "big", "red"]);
        assert!(listed("").is_empty());
    }

    #[test]
    fn unknown_or_clashing_commands_are_refused_with_the_reason() {
        let unknown = canonical_of(&["ue", "sparkle"]).unwrap_err();
        assert!(
            unknown.contains("unknown display command \"sparkle\""),
            "{unknown}"
        );
        assert!(
            unknown.contains("ue, shita") || unknown.contains("naka, ue, shita"),
            "{unknown}"
        );
        let twice = canonical_of(&["ue", "shita"]).unwrap_err();
        assert!(twice.contains("both a position"), "{twice}");
        let colours = canonical_of(&["ue", "big", "red", "blue"]).unwrap_err();
        assert!(colours.contains("both a colour"), "{colours}");
        let many = canonical_of(&["ue"; 17]).unwrap_err();
        assert!(many.contains("at most one position"), "{many}");
    }
}
