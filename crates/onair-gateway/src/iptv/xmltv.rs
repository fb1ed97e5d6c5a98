//! The XMLTV guide: every channel, then every programme by channel and
//! start, its elements in the order the DTD requires, text escaped for XML.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use jiff::tz::TimeZone;
use onair_proto::media::v1 as pb;

/// A channel's XMLTV id, also its playlist `tvg-id`.
pub(super) fn xmltv_id(channel_id: &str, domain: &str) -> String {
    format!("{channel_id}.{domain}")
}

/// An XMLTV document and how many programmes it lists.
pub(super) struct Guide {
    pub(super) xml: String,
    pub(super) programmes: usize,
}

/// Roughly how many bytes one programme takes, to size the buffer once.
const PROGRAMME_BYTES: usize = 480;

/// The XMLTV guide of consecutive timetables: every channel, then every
/// programme by channel and start. A slot that crosses from one day into the
/// next is listed once.
pub(super) fn write_guide(timetables: &[pb::Timetable], xmltv_domain: &str) -> Guide {
    let entries: usize = timetables
        .iter()
        .flat_map(|timetable| timetable.channels.iter())
        .map(|channel| channel.entries.len())
        .sum();
    let mut xml = String::with_capacity(1024 + entries * PROGRAMME_BYTES);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str("<!DOCTYPE tv SYSTEM \"xmltv.dtd\">\n");
    xml.push_str("<tv generator-info-name=\"onair\">\n");

    // Every day lists every channel, in the same order.
    let channels: Vec<&pb::Channel> = timetables
        .first()
        .map(|timetable| {
            timetable
                .channels
                .iter()
                .filter_map(|channel| channel.channel.as_ref())
                .collect()
        })
        .unwrap_or_default();
    for channel in &channels {
        write_channel(&mut xml, channel, xmltv_domain);
    }

    let days: Vec<HashMap<&str, &pb::ChannelTimetable>> = timetables
        .iter()
        .map(|timetable| {
            timetable
                .channels
                .iter()
                .filter_map(|day| Some((day.channel.as_ref()?.id.as_str(), day)))
                .collect()
        })
        .collect();
    // Every channel's slots start at the same few instants: each is written
    // out once.
    let mut times = XmltvTimes::default();
    let mut programmes = 0;
    for channel in &channels {
        let id = xmltv_id(&channel.id, xmltv_domain);
        let mut listed: HashSet<&str> = HashSet::new();
        for day in &days {
            let Some(day) = day.get(channel.id.as_str()) else {
                continue;
            };
            for entry in &day.entries {
                let (Some(slot), Some(program)) = (&entry.slot, &entry.program) else {
                    continue;
                };
                if !listed.insert(slot.id.as_str()) {
                    continue;
                }
                write_programme(&mut xml, &mut times, &id, slot, program);
                programmes += 1;
            }
        }
    }
    xml.push_str("</tv>\n");
    Guide { xml, programmes }
}

fn write_channel(xml: &mut String, channel: &pb::Channel, xmltv_domain: &str) {
    xml.push_str("  <channel id=\"");
    escape_xml(xml, &xmltv_id(&channel.id, xmltv_domain));
    xml.push_str("\">\n    <display-name>");
    escape_xml(xml, &channel.name);
    xml.push_str("</display-name>\n");
    let _ = writeln!(xml, "    <display-name>{}</display-name>", channel.number);
    if !channel.logo_url.is_empty() {
        xml.push_str("    <icon src=\"");
        escape_xml(xml, &channel.logo_url);
        xml.push_str("\"/>\n");
    }
    xml.push_str("  </channel>\n");
}

/// One programme, its elements in the order the XMLTV DTD requires.
fn write_programme(
    xml: &mut String,
    times: &mut XmltvTimes,
    channel_id: &str,
    slot: &pb::Slot,
    program: &pb::Program,
) {
    xml.push_str("  <programme start=\"");
    xml.push_str(times.get(slot.start_time.as_ref()));
    xml.push_str("\" stop=\"");
    xml.push_str(times.get(slot.end_time.as_ref()));
    xml.push_str("\" channel=\"");
    escape_xml(xml, channel_id);
    xml.push_str("\">\n    <title>");
    escape_xml(xml, &program.title);
    xml.push_str("</title>\n");
    if !program.description.trim().is_empty() {
        xml.push_str("    <desc>");
        escape_xml(xml, &program.description);
        xml.push_str("</desc>\n");
    }
    for genre in &program.genres {
        xml.push_str("    <category>");
        escape_xml(xml, genre);
        xml.push_str("</category>\n");
    }
    if !program.artwork_url.is_empty() {
        xml.push_str("    <icon src=\"");
        escape_xml(xml, &program.artwork_url);
        xml.push_str("\"/>\n");
    }
    if !slot.repeat_of_slot_id.is_empty() {
        xml.push_str("    <previously-shown/>\n");
    }
    if !program.rating.is_empty() {
        xml.push_str("    <rating>\n      <value>");
        escape_xml(xml, &program.rating);
        xml.push_str("</value>\n    </rating>\n");
    }
    xml.push_str("  </programme>\n");
}

/// Instants written in XMLTV's format, by unix second.
#[derive(Default)]
struct XmltvTimes {
    written: HashMap<i64, String>,
}

impl XmltvTimes {
    fn get(&mut self, time: Option<&prost_types::Timestamp>) -> &str {
        let seconds = time.map(|time| time.seconds).unwrap_or_default();
        self.written.entry(seconds).or_insert_with(|| {
            let mut text = String::with_capacity(20);
            write_xmltv_time(&mut text, time);
            text
        })
    }
}

/// `YYYYMMDDhhmmss +0000`, XMLTV's time format, in UTC.
fn write_xmltv_time(xml: &mut String, time: Option<&prost_types::Timestamp>) {
    let seconds = time.map(|time| time.seconds).unwrap_or_default();
    let instant = jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let civil = TimeZone::UTC.to_datetime(instant);
    let _ = write!(
        xml,
        "{:04}{:02}{:02}{:02}{:02}{:02} +0000",
        civil.year(),
        civil.month(),
        civil.day(),
        civil.hour(),
        civil.minute(),
        civil.second()
    );
}

/// Escapes text for XML content and attribute values, and leaves out the
/// characters XML 1.0 cannot carry at all (most control characters).
fn escape_xml(xml: &mut String, text: &str) {
    // Most text has nothing to escape: copied at once.
    if !text.bytes().any(needs_care) {
        xml.push_str(text);
        return;
    }
    for character in text.chars() {
        match character {
            '&' => xml.push_str("&amp;"),
            '<' => xml.push_str("&lt;"),
            '>' => xml.push_str("&gt;"),
            '"' => xml.push_str("&quot;"),
            '\'' => xml.push_str("&apos;"),
            '\t' | '\n' | '\r' => xml.push(character),
            character if is_xml_char(character) => xml.push(character),
            _ => {}
        }
    }
}

/// Whether a byte of UTF-8 text may need escaping or leaving out: markup,
/// control characters, and the first byte of U+FFFE and U+FFFF.
fn needs_care(byte: u8) -> bool {
    matches!(byte, b'&' | b'<' | b'>' | b'"' | b'\'' | 0xEF)
        || (byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r'))
}

/// XML 1.0's `Char` production, less the whitespace controls handled above.
fn is_xml_char(character: char) -> bool {
    matches!(character,
        '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timestamp(seconds: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn xml_escaping_covers_markup_and_drops_what_xml_cannot_carry() {
        let mut xml = String::new();
        escape_xml(&mut xml, "Tom & Jerry <\"live\"> 'now'\u{1}\u{FFFE}\n日本");
        assert_eq!(
            xml,
            "Tom &amp; Jerry &lt;&quot;live&quot;&gt; &apos;now&apos;\n日本"
        );
    }

    #[test]
    fn xmltv_times_are_utc_with_an_offset() {
        let mut xml = String::new();
        // 2025-04-01T05:00:00+09:00
        write_xmltv_time(&mut xml, Some(&timestamp(1_743_451_200)));
        assert_eq!(xml, "20250331200000 +0000");
    }

    #[test]
    fn a_slot_across_two_days_is_listed_once() {
        let channel = pb::Channel {
            id: "news".to_owned(),
            number: 1,
            name: "News".to_owned(),
            ..pb::Channel::default()
        };
        let entry = pb::TimetableEntry {
            slot: Some(pb::Slot {
                id: "late".to_owned(),
                channel_id: "news".to_owned(),
                start_time: Some(timestamp(86_400 - 1800)),
                end_time: Some(timestamp(86_400 + 1800)),
                ..pb::Slot::default()
            }),
            program: Some(pb::Program {
                title: "Late News".to_owned(),
                ..pb::Program::default()
            }),
        };
        let day = pb::Timetable {
            channels: vec![pb::ChannelTimetable {
                channel: Some(channel),
                entries: vec![entry],
            }],
            ..pb::Timetable::default()
        };
        let guide = write_guide(&[day.clone(), day], "onair");
        assert_eq!(guide.programmes, 1);
        assert_eq!(guide.xml.matches("<programme ").count(), 1);
        assert!(guide.xml.contains("<channel id=\"news.onair\">"));
    }
}
