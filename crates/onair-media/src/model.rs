//! Channels, programs and slots as the service stores them, how requests
//! become them (with every field checked), and how they become protos.

use onair_kit::clock::timestamp_from_millis;
use onair_proto::media::v1 as pb;

use crate::error::MediaError;

/// The longest id accepted. Ids travel in URLs, bus subjects and IPTV
/// `tvg-id` attributes, so they stay short.
pub const MAX_ID_LEN: usize = 64;
/// The longest channel name, program title, rating or asset id.
pub const MAX_NAME_LEN: usize = 200;
/// The longest program description.
pub const MAX_DESCRIPTION_LEN: usize = 10_000;
/// The longest logo or artwork URL.
pub const MAX_URL_LEN: usize = 2048;
/// The most genres one program may have.
pub const MAX_GENRES: usize = 20;
/// The longest genre, e.g. "Documentary".
pub const MAX_GENRE_LEN: usize = 64;
/// The highest channel number; guides and remote controls show a few digits.
pub const MAX_CHANNEL_NUMBER: i64 = 99_999;

/// A channel as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// A lowercase slug; IPTV apps use it as `tvg-id`.
    pub id: String,
    /// What guides and remote controls show; unique in the station.
    pub number: i64,
    /// The name viewers see.
    pub name: String,
    /// Shown by guides and IPTV apps; may be empty.
    pub logo_url: String,
    /// A genre or group, IPTV's `group-title`; may be empty.
    pub group: String,
    /// What the playout shows in a gap of the schedule.
    pub slate_asset_id: String,
    /// The default for new slots on the channel.
    pub comments_enabled: bool,
    /// When the channel was created, unix ms.
    pub create_time_ms: i64,
    /// When it last changed, unix ms.
    pub update_time_ms: i64,
}

/// A program as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProgramRecord {
    /// A lowercase slug, so schedule files can name it.
    pub id: String,
    /// What guides list.
    pub title: String,
    /// What guides show when a program is opened; may be long.
    pub description: String,
    /// Categories for guides and XMLTV, e.g. "News".
    pub genres: Vec<String>,
    /// 0 when not known (a live program without a planned length); slots of
    /// such a program are not checked against it.
    pub duration_ms: i64,
    /// A content rating such as "TV-PG"; may be empty.
    pub rating: String,
    /// A picture for guides; may be empty.
    pub artwork_url: String,
    /// The video the playout plays; empty until the video pipeline sets it,
    /// or for a live program.
    pub asset_id: String,
    /// Fed by live ingest rather than an asset; its slots are live.
    pub live: bool,
    /// When the program was created, unix ms.
    pub create_time_ms: i64,
    /// When it last changed, unix ms.
    pub update_time_ms: i64,
}

/// A slot as stored: a program on a channel over [start, end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    /// A lowercase slug; comments, polls and replays name the slot by it.
    pub id: String,
    /// The channel it airs on; never changes.
    pub channel_id: String,
    /// What it airs.
    pub program_id: String,
    /// When it starts, unix ms (inclusive).
    pub start_time_ms: i64,
    /// When it ends, unix ms (exclusive): the next slot may start here.
    pub end_time_ms: i64,
    /// Fed by live ingest: the playout splices the encoder's stream in.
    pub live: bool,
    /// Empty unless the slot rebroadcasts another.
    pub repeat_of_slot_id: String,
    /// Allows the slot to be shorter than its program.
    pub cut: bool,
    /// Whether viewers may comment while it airs.
    pub comments_enabled: bool,
    /// When the slot was created, unix ms.
    pub create_time_ms: i64,
    /// When it last changed, unix ms.
    pub update_time_ms: i64,
}

impl SlotRecord {
    /// Whether the slot is on air at `now_ms`: start <= now < end.
    pub fn is_on_air(&self, now_ms: i64) -> bool {
        self.start_time_ms <= now_ms && now_ms < self.end_time_ms
    }

    /// Whether the slot shares any instant with [start, end).
    pub fn overlaps(&self, start_time_ms: i64, end_time_ms: i64) -> bool {
        self.start_time_ms < end_time_ms && start_time_ms < self.end_time_ms
    }

    /// `slot ID (START to END)`, the way error messages name a slot.
    pub fn describe(&self) -> String {
        format!(
            "slot {} ({} to {})",
            self.id,
            format_millis(self.start_time_ms),
            format_millis(self.end_time_ms)
        )
    }
}

pub use onair_kit::clock::format_millis;

/// A fresh id: a UUIDv7 in lowercase hex, so ids sort by creation and are
/// valid slugs.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Checks a client-given id: 1 to 64 lowercase ASCII letters, digits and
/// hyphens, starting and ending with a letter or digit (`news-1`). That makes
/// it safe in URLs, bus subjects and IPTV `tvg-id`s.
pub fn validate_id(field: &str, id: &str) -> Result<(), MediaError> {
    let shape = "use 1 to 64 lowercase letters, digits and hyphens, starting and ending with a letter or digit, e.g. \"news-1\"";
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(MediaError::InvalidArgument(format!(
            "{field} {id:?} is not a valid id: {shape}"
        )));
    }
    let allowed = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-';
    let bytes = id.as_bytes();
    let well_formed = bytes.iter().all(|byte| allowed(*byte))
        && bytes.first().is_some_and(|byte| *byte != b'-')
        && bytes.last().is_some_and(|byte| *byte != b'-');
    if !well_formed {
        return Err(MediaError::InvalidArgument(format!(
            "{field} {id:?} is not a valid id: {shape}"
        )));
    }
    Ok(())
}

/// Checks an id that names an existing entity: required and well-formed.
/// A malformed one cannot exist, so it is refused as an argument error.
pub fn require_id(field: &str, id: &str) -> Result<(), MediaError> {
    if id.is_empty() {
        return Err(MediaError::InvalidArgument(format!("{field} is required")));
    }
    validate_id(field, id)
}

/// A client-given id if there is one (checked), else a fresh one.
pub fn given_or_new_id(field: &str, id: &str) -> Result<String, MediaError> {
    if id.is_empty() {
        return Ok(new_id());
    }
    validate_id(field, id)?;
    Ok(id.to_owned())
}

fn check_text(field: &str, value: &str, max_len: usize) -> Result<(), MediaError> {
    let length = value.chars().count();
    if length > max_len {
        return Err(MediaError::InvalidArgument(format!(
            "{field} is {length} characters long; at most {max_len} are allowed"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(MediaError::InvalidArgument(format!(
            "{field} contains a control character"
        )));
    }
    Ok(())
}

/// Names, titles and URLs end up on one line of a playlist or a guide, where
/// a line or paragraph separator (U+2028, U+2029, NEL) would start a new
/// entry for parsers that split lines at them.
fn check_single_line(field: &str, value: &str, max_len: usize) -> Result<(), MediaError> {
    onair_kit::input::one_line(field, value)
        .map_err(|error| MediaError::InvalidArgument(error.to_string()))?;
    check_text(field, value, max_len)
}

fn check_required(field: &str, value: &str, max_len: usize) -> Result<(), MediaError> {
    if value.trim().is_empty() {
        return Err(MediaError::InvalidArgument(format!(
            "{field} is required and cannot be blank"
        )));
    }
    check_single_line(field, value, max_len)
}

fn check_url(field: &str, value: &str) -> Result<(), MediaError> {
    check_single_line(field, value, MAX_URL_LEN)?;
    if value.is_empty() || value.starts_with("https://") || value.starts_with("http://") {
        return Ok(());
    }
    Err(MediaError::InvalidArgument(format!(
        "{field} {value:?} is not an http or https URL"
    )))
}

fn check_channel_number(number: i64) -> Result<(), MediaError> {
    if !(0..=MAX_CHANNEL_NUMBER).contains(&number) {
        return Err(MediaError::InvalidArgument(format!(
            "channel number {number} is out of range: use 1 to {MAX_CHANNEL_NUMBER}, or 0 to take the next free number"
        )));
    }
    Ok(())
}

fn check_genres(genres: &[String]) -> Result<(), MediaError> {
    if genres.len() > MAX_GENRES {
        return Err(MediaError::InvalidArgument(format!(
            "a program has {} genres; at most {MAX_GENRES} are allowed",
            genres.len()
        )));
    }
    for genre in genres {
        check_required("genre", genre, MAX_GENRE_LEN)?;
    }
    Ok(())
}

/// Checks the fields of a channel that a client sets. `number` 0 means "the
/// next free number" and is resolved by the store.
pub fn check_channel_fields(channel: &ChannelRecord) -> Result<(), MediaError> {
    check_channel_number(channel.number)?;
    check_required("channel name", &channel.name, MAX_NAME_LEN)?;
    check_url("logo_url", &channel.logo_url)?;
    check_single_line("group", &channel.group, MAX_NAME_LEN)?;
    check_single_line("slate_asset_id", &channel.slate_asset_id, MAX_NAME_LEN)
}

/// Checks the fields of a program that a client sets.
pub fn check_program_fields(program: &ProgramRecord) -> Result<(), MediaError> {
    check_required("program title", &program.title, MAX_NAME_LEN)?;
    check_text("description", &program.description, MAX_DESCRIPTION_LEN)?;
    check_genres(&program.genres)?;
    check_single_line("rating", &program.rating, MAX_NAME_LEN)?;
    check_url("artwork_url", &program.artwork_url)?;
    check_single_line("asset_id", &program.asset_id, MAX_NAME_LEN)
}

/// A new channel from a create request (or an import line).
pub fn channel_from_proto(channel: &pb::Channel, now_ms: i64) -> Result<ChannelRecord, MediaError> {
    let record = ChannelRecord {
        id: given_or_new_id("channel id", &channel.id)?,
        number: i64::from(channel.number),
        name: channel.name.trim().to_owned(),
        logo_url: channel.logo_url.trim().to_owned(),
        group: channel.group.trim().to_owned(),
        slate_asset_id: channel.slate_asset_id.trim().to_owned(),
        comments_enabled: channel.comments_enabled.unwrap_or(true),
        create_time_ms: now_ms,
        update_time_ms: now_ms,
    };
    check_channel_fields(&record)?;
    Ok(record)
}

/// A new program from a create request (or an import line).
pub fn program_from_proto(program: &pb::Program, now_ms: i64) -> Result<ProgramRecord, MediaError> {
    let record = ProgramRecord {
        id: given_or_new_id("program id", &program.id)?,
        title: program.title.trim().to_owned(),
        description: program.description.clone(),
        genres: program
            .genres
            .iter()
            .map(|genre| genre.trim().to_owned())
            .collect(),
        duration_ms: duration_to_millis("duration", program.duration.as_ref())?,
        rating: program.rating.trim().to_owned(),
        artwork_url: program.artwork_url.trim().to_owned(),
        asset_id: program.asset_id.trim().to_owned(),
        live: program.live,
        create_time_ms: now_ms,
        update_time_ms: now_ms,
    };
    check_program_fields(&record)?;
    Ok(record)
}

/// The earliest and latest instants the service stores: years 1 to 9999,
/// what RFC 3339 (and so the JSON API) can write.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// A required time field as unix milliseconds (sub-millisecond parts are
/// dropped). Missing or out-of-range times are argument errors naming the
/// field.
pub fn timestamp_to_millis(
    field: &str,
    timestamp: Option<&prost_types::Timestamp>,
) -> Result<i64, MediaError> {
    let Some(timestamp) = timestamp else {
        return Err(MediaError::InvalidArgument(format!(
            "{field} is required: an RFC 3339 time such as 2025-04-01T05:00:00Z"
        )));
    };
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&timestamp.seconds)
        || !(0..1_000_000_000).contains(&timestamp.nanos)
    {
        return Err(MediaError::InvalidArgument(format!(
            "{field} is out of range: expected a time between years 1 and 9999, as RFC 3339 such as 2025-04-01T05:00:00Z"
        )));
    }
    Ok(timestamp.seconds * 1000 + i64::from(timestamp.nanos / 1_000_000))
}

/// The longest program: a week. Longer is a typo, not a broadcast.
pub const MAX_PROGRAM_DURATION_MS: i64 = 7 * 24 * 3_600_000;

/// An optional duration field as milliseconds; unset is 0 ("not known").
pub fn duration_to_millis(
    field: &str,
    duration: Option<&prost_types::Duration>,
) -> Result<i64, MediaError> {
    let Some(duration) = duration else {
        return Ok(0);
    };
    let valid_nanos = (-999_999_999..=999_999_999).contains(&duration.nanos);
    if duration.seconds < 0 || duration.nanos < 0 || !valid_nanos {
        return Err(MediaError::InvalidArgument(format!(
            "{field} must not be negative: give a length such as \"1800s\""
        )));
    }
    let millis = duration
        .seconds
        .checked_mul(1000)
        .and_then(|millis| millis.checked_add(i64::from(duration.nanos / 1_000_000)));
    match millis {
        Some(millis) if millis <= MAX_PROGRAM_DURATION_MS => Ok(millis),
        _ => Err(MediaError::InvalidArgument(format!(
            "{field} is longer than the longest program allowed ({} hours)",
            MAX_PROGRAM_DURATION_MS / 3_600_000
        ))),
    }
}

/// A protobuf duration from milliseconds.
pub fn duration_from_millis(millis: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

impl ChannelRecord {
    /// The channel as the API shows it.
    pub fn to_proto(&self) -> pb::Channel {
        pb::Channel {
            id: self.id.clone(),
            number: i32::try_from(self.number).unwrap_or(i32::MAX),
            name: self.name.clone(),
            logo_url: self.logo_url.clone(),
            group: self.group.clone(),
            slate_asset_id: self.slate_asset_id.clone(),
            comments_enabled: Some(self.comments_enabled),
            create_time: Some(timestamp_from_millis(self.create_time_ms)),
        }
    }
}

impl ProgramRecord {
    /// The program as the API shows it.
    pub fn to_proto(&self) -> pb::Program {
        pb::Program {
            id: self.id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            genres: self.genres.clone(),
            duration: Some(duration_from_millis(self.duration_ms)),
            rating: self.rating.clone(),
            artwork_url: self.artwork_url.clone(),
            asset_id: self.asset_id.clone(),
            live: self.live,
            create_time: Some(timestamp_from_millis(self.create_time_ms)),
        }
    }
}

impl SlotRecord {
    /// The slot as the API shows it.
    pub fn to_proto(&self) -> pb::Slot {
        self.clone().into_proto()
    }

    /// As [`SlotRecord::to_proto`], taking the record.
    pub fn into_proto(self) -> pb::Slot {
        pb::Slot {
            id: self.id,
            channel_id: self.channel_id,
            program_id: self.program_id,
            start_time: Some(timestamp_from_millis(self.start_time_ms)),
            end_time: Some(timestamp_from_millis(self.end_time_ms)),
            live: self.live,
            repeat_of_slot_id: self.repeat_of_slot_id,
            cut: self.cut,
            comments_enabled: Some(self.comments_enabled),
        }
    }
}

/// Checks a slot against its program: a slot may not be shorter than the
/// program unless it is cut, and a rebroadcast repeats the same program.
pub fn check_slot_against_program(
    slot: &SlotRecord,
    program: &ProgramRecord,
) -> Result<(), MediaError> {
    let length_ms = slot.end_time_ms - slot.start_time_ms;
    if !slot.cut && program.duration_ms > 0 && length_ms < program.duration_ms {
        return Err(MediaError::FailedPrecondition(format!(
            "the slot lasts {} but program {} lasts {}: make the slot longer, or set cut to end the program early",
            describe_length(length_ms),
            program.id,
            describe_length(program.duration_ms)
        )));
    }
    Ok(())
}

/// Checks the times of a slot: both set, end after start.
pub fn check_slot_times(start_time_ms: i64, end_time_ms: i64) -> Result<(), MediaError> {
    if end_time_ms <= start_time_ms {
        return Err(MediaError::InvalidArgument(format!(
            "end_time {} must be after start_time {}",
            format_millis(end_time_ms),
            format_millis(start_time_ms)
        )));
    }
    Ok(())
}

/// A length such as "30m" or "1h30m15.5s", for messages.
pub fn describe_length(millis: i64) -> String {
    let seconds_total = millis / 1000;
    let hours = seconds_total / 3600;
    let minutes = (seconds_total % 3600) / 60;
    let seconds = seconds_total % 60;
    let fraction = millis % 1000;
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 || fraction > 0 || text.is_empty() {
        if fraction > 0 {
            text.push_str(&format!("{seconds}.{fraction:03}s"));
        } else {
            text.push_str(&format!("{seconds}s"));
        }
    }
    text
}

/// A stored slot on channel `news` of program `p`, for the tests of what
/// reads stored slots.
#[cfg(test)]
pub(crate) fn stored_slot(id: &str, start: i64, end: i64) -> SlotRecord {
    SlotRecord {
        id: id.to_owned(),
        channel_id: "news".to_owned(),
        program_id: "p".to_owned(),
        start_time_ms: start,
        end_time_ms: end,
        live: false,
        repeat_of_slot_id: String::new(),
        cut: false,
        comments_enabled: true,
        create_time_ms: 0,
        update_time_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lowercase_slugs() {
        for good in ["news-1", "a", "7", "tokyo-mx-2", &new_id()] {
            assert!(validate_id("id", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-news",
            "news-",
            "News",
            "news 1",
            "news.1",
            "ニュース",
            &"a".repeat(65),
        ] {
            assert!(validate_id("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_that_reach_playlists_are_one_line() {
        let channel = |name: &str, group: &str, logo_url: &str| ChannelRecord {
            id: "news-1".to_owned(),
            number: 1,
            name: name.to_owned(),
            logo_url: logo_url.to_owned(),
            group: group.to_owned(),
            slate_asset_id: String::new(),
            comments_enabled: true,
            create_time_ms: 0,
            update_time_ms: 0,
        };
        assert!(check_channel_fields(&channel("News 24", "News", "https://x/logo.png")).is_ok());
        for separator in ["\u{2028}", "\u{2029}", "\u{85}", "\n", "\r"] {
            let name = format!("News{separator}#EXTINF:-1,Fake");
            let refused = check_channel_fields(&channel(&name, "", "")).expect_err("name");
            assert!(refused.to_string().contains("one line"), "{refused}");
            let group = format!("News{separator}");
            assert!(check_channel_fields(&channel("News", &group, "")).is_err());
            let logo = format!("https://x/{separator}logo.png");
            assert!(check_channel_fields(&channel("News", "", &logo)).is_err());
        }
        let program = ProgramRecord {
            id: "p".to_owned(),
            title: "Night\u{2028}News".to_owned(),
            description: "Two\nparagraphs are fine here".to_owned(),
            ..ProgramRecord::default()
        };
        assert!(check_program_fields(&program).is_err());
        let fine = ProgramRecord {
            title: "Night News".to_owned(),
            ..program
        };
        assert!(check_program_fields(&fine).is_ok());
    }

    #[test]
    fn lengths_read_like_durations() {
        assert_eq!(describe_length(1_800_000), "30m");
        assert_eq!(describe_length(5_400_000), "1h30m");
        assert_eq!(describe_length(0), "0s");
        assert_eq!(describe_length(61_500), "1m1.500s");
    }

    #[test]
    fn times_out_of_range_are_refused() {
        let missing = timestamp_to_millis("start_time", None).unwrap_err();
        assert!(missing.to_string().contains("start_time is required"));
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(timestamp_to_millis("end_time", Some(&far)).is_err());
        let bad_nanos = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(timestamp_to_millis("end_time", Some(&bad_nanos)).is_err());
        let fine = prost_types::Timestamp {
            seconds: 1,
            nanos: 500_000_000,
        };
        assert_eq!(timestamp_to_millis("t", Some(&fine)).unwrap(), 1500);
    }

    #[test]
    fn durations_are_checked() {
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert!(duration_to_millis("duration", Some(&negative)).is_err());
        let huge = prost_types::Duration {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(duration_to_millis("duration", Some(&huge)).is_err());
        assert_eq!(duration_to_millis("duration", None).unwrap(), 0);
    }
}
