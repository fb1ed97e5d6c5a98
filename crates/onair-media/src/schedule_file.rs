//! Schedule files (YAML or JSON) into import items, each with the line it
//! stands on, so that the import's errors can point at the file.
//!
//! The format is documented in the crate docs. Both formats go through one
//! YAML 1.2 parser that keeps the position of every node (JSON is YAML's
//! flow style); JSON is first checked by a JSON parser so that a JSON file
//! gets JSON's rules and error messages.

use std::path::Path;

use onair_kit::clock::timestamp_from_millis;
use onair_proto::media::v1 as pb;
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::model::{MAX_PROGRAM_DURATION_MS, duration_from_millis};

/// How a schedule file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// YAML 1.2 (`.yaml`, `.yml`).
    Yaml,
    /// JSON (`.json`).
    Json,
}

impl FileFormat {
    /// The format a file name says: `.yaml`/`.yml` or `.json`.
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "yaml" | "yml" => Some(FileFormat::Yaml),
            "json" => Some(FileFormat::Json),
            _ => None,
        }
    }
}

/// Parses a schedule file into import items in file order: every channel,
/// program and slot with its line. On failure, every problem found, by line.
pub fn parse(
    text: &str,
    format: FileFormat,
) -> Result<Vec<pb::ImportScheduleItem>, Vec<pb::ImportError>> {
    if format == FileFormat::Json
        && let Err(error) = serde_json::from_str::<serde_json::Value>(text)
    {
        return Err(vec![problem(
            line_number(error.line()),
            format!("not valid JSON: {error}"),
        )]);
    }
    let documents = MarkedYaml::load_from_str(text).map_err(|error| {
        vec![problem(
            line_number(error.marker().line()),
            format!("not valid YAML: {}", error.info()),
        )]
    })?;
    let mut documents = documents.into_iter();
    let Some(root) = documents.next() else {
        return Err(vec![problem(
            1,
            "the file is empty: expected channels, programs and slots",
        )]);
    };
    if let Some(extra) = documents.next() {
        return Err(vec![problem(
            line_of(&extra),
            "a schedule file holds one document; this is a second one",
        )]);
    }
    let mut reader = FileReader::default();
    reader.read_root(&root);
    if reader.errors.is_empty() {
        Ok(reader.items)
    } else {
        reader.errors.sort_by_key(|error| error.line);
        Err(reader.errors)
    }
}

fn problem(line: i32, message: impl Into<String>) -> pb::ImportError {
    pb::ImportError {
        line,
        message: message.into(),
    }
}

fn line_number(line: usize) -> i32 {
    i32::try_from(line).unwrap_or(i32::MAX)
}

fn line_of(node: &MarkedYaml) -> i32 {
    line_number(node.span.start.line())
}

/// The node under any tags (`!!str 5` reads as 5's node).
fn untagged<'a, 'input>(node: &'a MarkedYaml<'input>) -> &'a MarkedYaml<'input> {
    let mut current = node;
    while let YamlData::Tagged(_, inner) = &current.data {
        current = inner;
    }
    current
}

/// A scalar as text: strings as they are, numbers as written by Rust.
fn scalar_text(node: &MarkedYaml) -> Option<String> {
    match &untagged(node).data {
        YamlData::Value(Scalar::String(text)) => Some(text.to_string()),
        YamlData::Value(Scalar::Integer(number)) => Some(number.to_string()),
        YamlData::Value(Scalar::FloatingPoint(number)) => Some(number.to_string()),
        YamlData::Representation(text, _, _) => Some(text.to_string()),
        _ => None,
    }
}

/// What kind of value a node is, for messages.
fn kind_of(node: &MarkedYaml) -> &'static str {
    match &untagged(node).data {
        YamlData::Value(Scalar::Null) => "nothing",
        YamlData::Value(Scalar::Boolean(_)) => "true/false",
        YamlData::Value(Scalar::Integer(_)) => "a whole number",
        YamlData::Value(Scalar::FloatingPoint(_)) => "a number",
        YamlData::Value(Scalar::String(_)) | YamlData::Representation(..) => "text",
        YamlData::Sequence(_) => "a list",
        YamlData::Mapping(_) => "a mapping",
        YamlData::Alias(_) => "an alias",
        YamlData::Tagged(..) | YamlData::BadValue => "an unreadable value",
    }
}

#[derive(Default)]
struct FileReader {
    items: Vec<pb::ImportScheduleItem>,
    errors: Vec<pb::ImportError>,
}

/// Which kind of entity a list holds.
#[derive(Clone, Copy)]
enum Section {
    Channels,
    Programs,
    Slots,
}

impl FileReader {
    fn error(&mut self, line: i32, message: impl Into<String>) {
        self.errors.push(problem(line, message));
    }

    fn read_root(&mut self, root: &MarkedYaml) {
        let YamlData::Mapping(sections) = &untagged(root).data else {
            self.error(
                line_of(root),
                format!(
                    "the file must be a mapping with channels, programs and slots, not {}",
                    kind_of(root)
                ),
            );
            return;
        };
        for (key, value) in sections {
            let name = scalar_text(key).unwrap_or_default();
            let section = match name.as_str() {
                "channels" => Section::Channels,
                "programs" => Section::Programs,
                "slots" => Section::Slots,
                _ => {
                    self.error(
                        line_of(key),
                        format!("unknown section {name:?}: expected channels, programs or slots"),
                    );
                    continue;
                }
            };
            match &untagged(value).data {
                YamlData::Sequence(entries) => {
                    for entry in entries {
                        self.read_entry(section, entry);
                    }
                }
                YamlData::Value(Scalar::Null) => {}
                _ => self.error(
                    line_of(value),
                    format!("{name} must be a list, not {}", kind_of(value)),
                ),
            }
        }
    }

    fn read_entry(&mut self, section: Section, entry: &MarkedYaml) {
        let line = line_of(entry);
        let YamlData::Mapping(fields) = &untagged(entry).data else {
            self.error(
                line,
                format!(
                    "each entry must be a mapping of fields, not {}",
                    kind_of(entry)
                ),
            );
            return;
        };
        let before = self.errors.len();
        let item = match section {
            Section::Channels => pb::import_schedule_item::Item::Channel(self.read_channel(fields)),
            Section::Programs => pb::import_schedule_item::Item::Program(self.read_program(fields)),
            Section::Slots => pb::import_schedule_item::Item::Slot(self.read_slot(fields, line)),
        };
        if self.errors.len() == before {
            self.items.push(pb::ImportScheduleItem {
                item: Some(item),
                line,
            });
        }
    }

    fn read_channel(&mut self, fields: &saphyr::AnnotatedMapping<MarkedYaml>) -> pb::Channel {
        let mut channel = pb::Channel::default();
        for (key, value) in fields {
            let name = scalar_text(key).unwrap_or_default();
            match name.as_str() {
                "id" => channel.id = self.text(&name, value),
                "number" => {
                    channel.number = i32::try_from(self.integer(&name, value)).unwrap_or(-1);
                }
                "name" => channel.name = self.text(&name, value),
                "logo_url" | "logoUrl" => channel.logo_url = self.text(&name, value),
                "group" => channel.group = self.text(&name, value),
                "slate_asset_id" | "slateAssetId" => {
                    channel.slate_asset_id = self.text(&name, value);
                }
                "comments_enabled" | "commentsEnabled" => {
                    channel.comments_enabled = Some(self.boolean(&name, value));
                }
                _ => self.unknown_field(key, &name, "a channel", CHANNEL_FIELDS),
            }
        }
        channel
    }

    fn read_program(&mut self, fields: &saphyr::AnnotatedMapping<MarkedYaml>) -> pb::Program {
        let mut program = pb::Program::default();
        for (key, value) in fields {
            let name = scalar_text(key).unwrap_or_default();
            match name.as_str() {
                "id" => program.id = self.text(&name, value),
                "title" => program.title = self.text(&name, value),
                "description" => program.description = self.text(&name, value),
                "genres" => program.genres = self.text_list(&name, value),
                "duration" => {
                    program.duration = Some(duration_from_millis(self.duration(&name, value)))
                }
                "rating" => program.rating = self.text(&name, value),
                "artwork_url" | "artworkUrl" => program.artwork_url = self.text(&name, value),
                "asset_id" | "assetId" => program.asset_id = self.text(&name, value),
                "live" => program.live = self.boolean(&name, value),
                _ => self.unknown_field(key, &name, "a program", PROGRAM_FIELDS),
            }
        }
        program
    }

    fn read_slot(&mut self, fields: &saphyr::AnnotatedMapping<MarkedYaml>, line: i32) -> pb::Slot {
        let mut slot = pb::Slot::default();
        let mut start_ms = None;
        let mut end_ms = None;
        let mut duration_ms = None;
        // A time given but unreadable is already reported; the slot is then
        // not also said to lack it.
        let mut unreadable_time = false;
        for (key, value) in fields {
            let name = scalar_text(key).unwrap_or_default();
            match name.as_str() {
                "id" => slot.id = self.text(&name, value),
                "channel_id" | "channelId" | "channel" => slot.channel_id = self.text(&name, value),
                "program_id" | "programId" | "program" => slot.program_id = self.text(&name, value),
                "start_time" | "startTime" | "start" => {
                    start_ms = self.time(&name, value);
                    unreadable_time |= start_ms.is_none();
                }
                "end_time" | "endTime" | "end" => {
                    end_ms = self.time(&name, value);
                    unreadable_time |= end_ms.is_none();
                }
                "duration" => duration_ms = Some(self.duration(&name, value)),
                "live" => slot.live = self.boolean(&name, value),
                "cut" => slot.cut = self.boolean(&name, value),
                "repeat_of_slot_id" | "repeatOfSlotId" | "repeat_of" => {
                    slot.repeat_of_slot_id = self.text(&name, value);
                }
                "comments_enabled" | "commentsEnabled" => {
                    slot.comments_enabled = Some(self.boolean(&name, value));
                }
                _ => self.unknown_field(key, &name, "a slot", SLOT_FIELDS),
            }
        }
        match (start_ms, end_ms, duration_ms) {
            _ if unreadable_time => {}
            (None, _, _) => self.error(
                line,
                "the slot has no start_time: give an RFC 3339 time such as 2025-04-01T05:00:00+09:00",
            ),
            (Some(_), Some(_), Some(_)) => self.error(
                line,
                "the slot has both end_time and duration: give one",
            ),
            (Some(_), None, None) => self.error(
                line,
                "the slot has no end: give end_time (RFC 3339) or duration (such as 30m)",
            ),
            (Some(start), Some(end), None) => {
                slot.start_time = Some(timestamp_from_millis(start));
                slot.end_time = Some(timestamp_from_millis(end));
            }
            (Some(start), None, Some(length)) => {
                slot.start_time = Some(timestamp_from_millis(start));
                slot.end_time = Some(timestamp_from_millis(start.saturating_add(length)));
            }
        }
        slot
    }

    fn unknown_field(&mut self, key: &MarkedYaml, name: &str, what: &str, known: &str) {
        self.error(
            line_of(key),
            format!("unknown field {name:?} for {what}; known fields: {known}"),
        );
    }

    fn text(&mut self, name: &str, value: &MarkedYaml) -> String {
        if let YamlData::Value(Scalar::Null) = &untagged(value).data {
            return String::new();
        }
        match scalar_text(value) {
            Some(text) => text,
            None => {
                self.error(
                    line_of(value),
                    format!("{name} must be text, not {}", kind_of(value)),
                );
                String::new()
            }
        }
    }

    fn text_list(&mut self, name: &str, value: &MarkedYaml) -> Vec<String> {
        match &untagged(value).data {
            YamlData::Sequence(entries) => {
                let mut texts = Vec::with_capacity(entries.len());
                for entry in entries {
                    texts.push(self.text(name, entry));
                }
                texts
            }
            YamlData::Value(Scalar::Null) => Vec::new(),
            _ => vec![self.text(name, value)],
        }
    }

    fn integer(&mut self, name: &str, value: &MarkedYaml) -> i64 {
        match &untagged(value).data {
            YamlData::Value(Scalar::Integer(number)) => *number,
            _ => {
                self.error(
                    line_of(value),
                    format!("{name} must be a whole number, not {}", kind_of(value)),
                );
                0
            }
        }
    }

    fn boolean(&mut self, name: &str, value: &MarkedYaml) -> bool {
        match &untagged(value).data {
            YamlData::Value(Scalar::Boolean(flag)) => *flag,
            _ => {
                self.error(
                    line_of(value),
                    format!("{name} must be true or false, not {}", kind_of(value)),
                );
                false
            }
        }
    }

    /// A time with an offset, RFC 3339: `2025-04-01T05:00:00+09:00`.
    fn time(&mut self, name: &str, value: &MarkedYaml) -> Option<i64> {
        let text = scalar_text(value).unwrap_or_default();
        match text.trim().parse::<jiff::Timestamp>() {
            Ok(timestamp) => Some(timestamp.as_millisecond()),
            Err(_) => {
                self.error(
                    line_of(value),
                    format!(
                        "{name} {text:?} is not an RFC 3339 time with an offset, such as 2025-04-01T05:00:00+09:00 or 2025-03-31T20:00:00Z"
                    ),
                );
                None
            }
        }
    }

    /// A length: seconds as a number, or text such as `30m`, `1h30m`,
    /// `1800s` or ISO 8601 `PT30M`.
    fn duration(&mut self, name: &str, value: &MarkedYaml) -> i64 {
        let millis = match &untagged(value).data {
            YamlData::Value(Scalar::Integer(seconds)) => seconds.checked_mul(1000),
            _ => scalar_text(value).and_then(|text| {
                text.trim()
                    .parse::<jiff::SignedDuration>()
                    .ok()
                    .and_then(|duration| i64::try_from(duration.as_millis()).ok())
            }),
        };
        match millis {
            Some(millis) if (0..=MAX_PROGRAM_DURATION_MS).contains(&millis) => millis,
            _ => {
                self.error(
                    line_of(value),
                    format!(
                        "{name} must be a length such as 30m, 1h30m or 1800s (or seconds as a number), from 0 to {} hours",
                        MAX_PROGRAM_DURATION_MS / 3_600_000
                    ),
                );
                0
            }
        }
    }
}

const CHANNEL_FIELDS: &str = "id, number, name, logo_url, group, slate_asset_id, comments_enabled";
const PROGRAM_FIELDS: &str =
    "id, title, description, genres, duration, rating, artwork_url, asset_id, live";
const SLOT_FIELDS: &str = "id, channel_id, program_id, start_time, end_time or duration, live, cut, repeat_of_slot_id, comments_enabled";

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
# A small station.
channels:
  - id: news-1
    number: 1
    name: onair News
    group: News
programs:
  - id: morning
    title: Morning News
    genres: [News]
    duration: 30m
  - id: movie
    title: Late Movie
    duration: 1h45m
slots:
  - channel: news-1
    program: morning
    start: 2025-04-01T05:00:00+09:00
    end: 2025-04-01T05:30:00+09:00
  - channel_id: news-1
    program_id: movie
    start_time: 2025-04-02T01:00:00+09:00
    duration: 6300s
";

    fn line_of_item(item: &pb::ImportScheduleItem) -> i32 {
        item.line
    }

    #[test]
    fn yaml_items_keep_their_lines() {
        let items = parse(YAML, FileFormat::Yaml).unwrap();
        let lines: Vec<i32> = items.iter().map(line_of_item).collect();
        assert_eq!(lines, vec![3, 8, 12, 16, 20]);
        let Some(pb::import_schedule_item::Item::Program(movie)) = &items[2].item else {
            panic!("a program: {items:?}");
        };
        assert_eq!(movie.duration.unwrap().seconds, 6300);
        let Some(pb::import_schedule_item::Item::Slot(late)) = &items[4].item else {
            panic!("a slot: {items:?}");
        };
        let start = late.start_time.unwrap().seconds;
        assert_eq!(late.end_time.unwrap().seconds - start, 6300);
    }

    #[test]
    fn the_documented_example_parses() {
        let example = include_str!("../schedule-example.yaml");
        let items = parse(example, FileFormat::Yaml).unwrap();
        let lines: Vec<i32> = items.iter().map(line_of_item).collect();
        assert_eq!(lines, vec![2, 10, 20]);
        let Some(pb::import_schedule_item::Item::Slot(slot)) = &items[2].item else {
            panic!("a slot: {items:?}");
        };
        assert_eq!(slot.id, "morning-0401");
        assert_eq!(slot.comments_enabled, Some(true));
    }

    #[test]
    fn json_items_keep_their_lines_even_with_tabs() {
        let json = "{\n\t\"channels\": [\n\t\t{\"id\": \"news-1\", \"number\": 1, \"name\": \"News\"}\n\t],\n\t\"slots\": [\n\t\t{\n\t\t\t\"channelId\": \"news-1\",\n\t\t\t\"programId\": \"p\",\n\t\t\t\"startTime\": \"2025-04-01T05:00:00Z\",\n\t\t\t\"endTime\": \"2025-04-01T05:30:00Z\"\n\t\t}\n\t]\n}\n";
        let items = parse(json, FileFormat::Json).unwrap();
        let lines: Vec<i32> = items.iter().map(line_of_item).collect();
        assert_eq!(lines, vec![3, 6]);
    }

    #[test]
    fn bad_json_is_reported_with_its_line() {
        let errors = parse(
            "{\n  \"channels\": [\n    {\"id\": }\n  ]\n}",
            FileFormat::Json,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 3, "{errors:?}");
        assert!(
            errors[0].message.starts_with("not valid JSON"),
            "{errors:?}"
        );
    }

    #[test]
    fn every_bad_field_is_reported_by_line() {
        let text = "\
channels:
  - id: news-1
    number: one
    colour: red
slots:
  - channel: news-1
    program: p
    start: tomorrow morning
    end: 2025-04-01T05:30:00
  - channel: news-1
    program: p
    start: 2025-04-01T05:00:00Z
schedule: []
";
        let errors = parse(text, FileFormat::Yaml).unwrap_err();
        let lines: Vec<i32> = errors.iter().map(|error| error.line).collect();
        assert_eq!(lines, vec![3, 4, 8, 9, 10, 13], "{errors:?}");
        assert!(errors[0].message.contains("whole number"), "{errors:?}");
        assert!(
            errors[1].message.contains("unknown field \"colour\""),
            "{errors:?}"
        );
        assert!(errors[2].message.contains("RFC 3339"), "{errors:?}");
        assert!(errors[4].message.contains("no end"), "{errors:?}");
        assert!(errors[5].message.contains("unknown section"), "{errors:?}");
    }

    #[test]
    fn durations_take_the_usual_spellings() {
        let text = "programs:\n  - {id: a, title: A, duration: 30m}\n  - {id: b, title: B, duration: 1800}\n  - {id: c, title: C, duration: PT1H}\n  - {id: d, title: D, duration: 1h 30m}\n";
        let items = parse(text, FileFormat::Yaml).unwrap();
        let mut seconds = Vec::new();
        for item in items {
            if let Some(pb::import_schedule_item::Item::Program(program)) = item.item {
                seconds.push(program.duration.unwrap().seconds);
            }
        }
        assert_eq!(seconds, vec![1800, 1800, 3600, 5400]);
        let errors = parse(
            "programs:\n  - {id: a, title: A, duration: -5m}\n",
            FileFormat::Yaml,
        )
        .unwrap_err();
        assert!(errors[0].message.contains("length"), "{errors:?}");
    }

    #[test]
    fn malformed_input_never_panics() {
        for text in [
            "",
            "- a\n- b\n",
            "channels: 5\n",
            "channels:\n  - 5\n",
            "a: [\n",
            "--- 1\n--- 2\n",
            "channels:\n  - &x {id: a}\n  - *x\n",
            "slots:\n  - {start: !!str 5, end: [], duration: {}}\n",
            "\u{feff}programs: []",
        ] {
            let _ = parse(text, FileFormat::Yaml);
            let _ = parse(text, FileFormat::Json);
        }
        assert_eq!(
            FileFormat::from_path(Path::new("week.YML")),
            Some(FileFormat::Yaml)
        );
        assert_eq!(FileFormat::from_path(Path::new("week.txt")), None);
    }
}
