//! Field masks: which fields an update changes, named by the mask (in the
//! proto's snake_case or the JSON API's lowerCamelCase), or without a mask
//! the fields the message sets.

use onair_proto::media::v1 as pb;

/// A field-mask path in the proto's snake_case, also when sent in the JSON
/// API's lowerCamelCase.
fn snake_case(path: &str) -> String {
    let mut snake = String::with_capacity(path.len() + 4);
    for character in path.chars() {
        if character.is_ascii_uppercase() {
            snake.push('_');
            snake.push(character.to_ascii_lowercase());
        } else {
            snake.push(character);
        }
    }
    snake
}

/// The fields an update changes: the mask's paths, or without a mask the
/// fields the message sets (proto3 cannot tell "false" from "unset" there, so
/// clearing a flag needs a mask).
pub(super) fn mask_paths(
    mask: Option<prost_types::FieldMask>,
    implicit: impl FnOnce() -> Vec<&'static str>,
) -> Vec<String> {
    match mask {
        Some(mask) if !mask.paths.is_empty() => {
            mask.paths.iter().map(|path| snake_case(path)).collect()
        }
        _ => implicit().into_iter().map(str::to_owned).collect(),
    }
}

pub(super) fn implicit_slot_paths(slot: &pb::Slot) -> Vec<&'static str> {
    let mut paths = Vec::new();
    if slot.start_time.is_some() {
        paths.push("start_time");
    }
    if slot.end_time.is_some() {
        paths.push("end_time");
    }
    if !slot.program_id.is_empty() {
        paths.push("program_id");
    }
    if slot.live {
        paths.push("live");
    }
    if slot.cut {
        paths.push("cut");
    }
    if slot.comments_enabled.is_some() {
        paths.push("comments_enabled");
    }
    if !slot.repeat_of_slot_id.is_empty() {
        paths.push("repeat_of_slot_id");
    }
    paths
}

pub(super) fn implicit_channel_paths(channel: &pb::Channel) -> Vec<&'static str> {
    let mut paths = Vec::new();
    if channel.number != 0 {
        paths.push("number");
    }
    if !channel.name.is_empty() {
        paths.push("name");
    }
    if !channel.logo_url.is_empty() {
        paths.push("logo_url");
    }
    if !channel.group.is_empty() {
        paths.push("group");
    }
    if !channel.slate_asset_id.is_empty() {
        paths.push("slate_asset_id");
    }
    if channel.comments_enabled.is_some() {
        paths.push("comments_enabled");
    }
    paths
}

pub(super) fn implicit_program_paths(program: &pb::Program) -> Vec<&'static str> {
    let mut paths = Vec::new();
    if !program.title.is_empty() {
        paths.push("title");
    }
    if !program.description.is_empty() {
        paths.push("description");
    }
    if !program.genres.is_empty() {
        paths.push("genres");
    }
    if program.duration.is_some() {
        paths.push("duration");
    }
    if !program.rating.is_empty() {
        paths.push("rating");
    }
    if !program.artwork_url.is_empty() {
        paths.push("artwork_url");
    }
    if !program.asset_id.is_empty() {
        paths.push("asset_id");
    }
    if program.live {
        paths.push("live");
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_paths_accept_json_names() {
        let mask = prost_types::FieldMask {
            paths: vec!["startTime".to_owned(), "end_time".to_owned()],
        };
        assert_eq!(
            mask_paths(Some(mask), Vec::new),
            vec!["start_time".to_owned(), "end_time".to_owned()]
        );
    }
}
