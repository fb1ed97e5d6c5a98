//! What a channel airs next: a pure function from the schedule, the assets'
//! segment lists, the slate, the live segments received and the time, to the
//! entries (segments) to append to the channel's live playlist.
//!
//! The rules, which the playlists' guarantees follow from:
//!
//! - Entries are only ever appended, each one starting where the previous one
//!   ended (its program date-time is the previous one's plus its duration),
//!   and an entry is appended once the time reaches its start. The media
//!   sequence counts entries, so a number always names the same segment.
//! - Which item plays is decided at the middle of the next segment: the slot
//!   that covers it, else the slate. A prepared program plays the segment of
//!   its asset that covers that instant, so joining late into a slot (or
//!   starting the station late) lands on the right segment. Slots that start
//!   on the segment grid (a 4 s grid holds every whole minute) start exactly
//!   on time; others start on the next segment boundary.
//! - A program whose asset is not ready, a program that ends before its slot,
//!   a gap, and a live slot whose encoder is silent all play the slate, looped.
//! - An entry that does not continue its predecessor's media (another asset,
//!   a slate loop, a jump) carries a discontinuity; the discontinuity number
//!   counts them and never goes back.
//! - After a long stop (longer than `max_catch_up`) the timeline jumps to the
//!   present with a discontinuity rather than airing the missed time.

use std::collections::HashMap;
use std::sync::Arc;

/// The most entries one call appends, a guard against a tiny live segment
/// duration turning a catch-up into a long loop.
const MAX_ENTRIES_PER_ADVANCE: usize = 10_000;

/// What an entry plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// The channel's slate (a gap, or a slot with nothing to air).
    Slate = 0,
    /// A segment of a prepared program's asset.
    Program = 1,
    /// A segment an encoder pushed for a live slot.
    Live = 2,
}

impl EntryKind {
    /// The kind stored as this number; anything unknown is the slate.
    pub fn from_i64(value: i64) -> EntryKind {
        match value {
            1 => EntryKind::Program,
            2 => EntryKind::Live,
            _ => EntryKind::Slate,
        }
    }
}

/// A live segment an encoder pushed, once its playlist named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSegment {
    /// The live slot it was pushed for.
    pub slot_id: String,
    /// 0, 1, 2… in the order the encoder's playlist listed them.
    pub sequence: i64,
    /// The file name the encoder used (`index3.ts`).
    pub file: String,
    /// Its duration, in milliseconds.
    pub duration_ms: i64,
    /// When it was received, in Unix milliseconds.
    pub received_ms: i64,
}

/// One segment of a channel's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its `EXT-X-MEDIA-SEQUENCE` number on the channel.
    pub media_sequence: i64,
    /// The slot it airs in; empty in a gap.
    pub slot_id: String,
    /// What it airs: a program's, the slate's or a live segment.
    pub kind: EntryKind,
    /// The asset (slate, program) or the live slot whose segment it is.
    pub source_id: String,
    /// The segment's index in its asset, or its live sequence number.
    pub segment_index: i64,
    /// Its duration, in milliseconds.
    pub duration_ms: i64,
    /// When it airs: `EXT-X-PROGRAM-DATE-TIME`.
    pub pdt_ms: i64,
    /// How many discontinuities the channel has had up to and including
    /// this entry.
    pub discontinuity_number: i64,
    /// Whether it does not continue the previous entry's media.
    pub discontinuity: bool,
}

impl Entry {
    /// When it stops airing, in Unix milliseconds.
    pub fn end_ms(&self) -> i64 {
        self.pdt_ms + self.duration_ms
    }
}

/// A slot as the playout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSlot {
    /// The slot's id.
    pub slot_id: String,
    /// When it starts, in Unix milliseconds.
    pub start_ms: i64,
    /// When it ends (exclusive), in Unix milliseconds.
    pub end_ms: i64,
    /// Whether its program is live.
    pub live: bool,
    /// The program's asset; empty for a live program.
    pub asset_id: String,
}

/// Everything the next entries may be made of.
pub struct Sources<'a> {
    /// The channel's slots, by start time.
    pub slots: &'a [ScheduledSlot],
    /// The segment durations of every playable asset, by id.
    pub assets: &'a HashMap<String, Vec<i64>>,
    /// The slate asset, if one is playable.
    pub slate_asset_id: Option<&'a str>,
    /// The live segments received for each live slot, in order.
    pub live: &'a HashMap<String, Arc<Vec<LiveSegment>>>,
}

/// The timeline's bounds.
#[derive(Debug, Clone, Copy)]
pub struct TimelineSettings {
    /// The nominal segment length: the grid slots are placed on.
    pub segment_ms: i64,
    /// How many segments a fresh (or jumped) timeline starts with, so that
    /// its first playlist is full.
    pub window: i64,
    /// The longest stretch of missed time that is aired late rather than
    /// skipped.
    pub max_catch_up_ms: i64,
    /// How long a live slot waits for the encoder's next segment before
    /// airing the slate.
    pub live_wait_ms: i64,
}

/// The next piece of the timeline.
enum Choice {
    Segment {
        slot_id: String,
        kind: EntryKind,
        source_id: String,
        index: i64,
        duration_ms: i64,
    },
    /// Nothing can air yet (a live segment is due, or no slate exists).
    Wait,
}

/// The entries to append after `last` (the channel's newest entry, if any)
/// once the time is `now_ms`.
pub fn advance(
    last: Option<&Entry>,
    sources: &Sources<'_>,
    settings: &TimelineSettings,
    now_ms: i64,
) -> Vec<Entry> {
    let segment_ms = settings.segment_ms.max(1);
    let fresh_start =
        now_ms.div_euclid(segment_ms) * segment_ms - (settings.window - 1) * segment_ms;
    let mut cursor;
    let mut media_sequence;
    let mut discontinuity_number;
    let mut previous: Option<Entry> = last.cloned();
    let mut jumped = false;
    match last {
        None => {
            cursor = fresh_start;
            media_sequence = 0;
            discontinuity_number = 0;
        }
        Some(last) => {
            media_sequence = last.media_sequence + 1;
            discontinuity_number = last.discontinuity_number;
            if now_ms - last.end_ms() > settings.max_catch_up_ms {
                cursor = fresh_start.max(last.end_ms());
                jumped = true;
            } else {
                cursor = last.end_ms();
            }
        }
    }

    let mut entries = Vec::new();
    while cursor <= now_ms && entries.len() < MAX_ENTRIES_PER_ADVANCE {
        let choice = choose(cursor, previous.as_ref(), sources, settings, now_ms);
        let Choice::Segment {
            slot_id,
            kind,
            source_id,
            index,
            duration_ms,
        } = choice
        else {
            break;
        };
        let continues = previous.as_ref().is_some_and(|previous| {
            previous.kind == kind
                && previous.source_id == source_id
                && previous.segment_index + 1 == index
        });
        let discontinuity = previous.is_some() && (jumped || !continues);
        if discontinuity {
            discontinuity_number += 1;
        }
        let entry = Entry {
            media_sequence,
            slot_id,
            kind,
            source_id,
            segment_index: index,
            duration_ms,
            pdt_ms: cursor,
            discontinuity_number,
            discontinuity,
        };
        cursor = entry.end_ms();
        media_sequence += 1;
        jumped = false;
        previous = Some(entry.clone());
        entries.push(entry);
    }
    entries
}

/// What airs from `cursor`.
fn choose(
    cursor: i64,
    previous: Option<&Entry>,
    sources: &Sources<'_>,
    settings: &TimelineSettings,
    now_ms: i64,
) -> Choice {
    // The middle of the coming segment decides, so that a cursor a little
    // off the grid (after live segments) still picks the item it mostly
    // belongs to.
    let probe = cursor + settings.segment_ms / 2;
    let slot = sources
        .slots
        .iter()
        .find(|slot| slot.start_ms <= probe && probe < slot.end_ms);
    let Some(slot) = slot else {
        return slate(String::new(), previous, sources);
    };
    if slot.live {
        return live(slot, cursor, previous, sources, settings, now_ms);
    }
    let Some(durations) = sources.assets.get(&slot.asset_id) else {
        return slate(slot.slot_id.clone(), previous, sources);
    };
    let offset = probe - slot.start_ms;
    let mut start = 0;
    for (index, duration_ms) in durations.iter().enumerate() {
        if offset < start + duration_ms {
            return Choice::Segment {
                slot_id: slot.slot_id.clone(),
                kind: EntryKind::Program,
                source_id: slot.asset_id.clone(),
                index: index as i64,
                duration_ms: *duration_ms,
            };
        }
        start += duration_ms;
    }
    // The program ended before its slot: the slate fills the rest.
    slate(slot.slot_id.clone(), previous, sources)
}

/// The next slate segment: continuing the loop if the slate is playing.
fn slate(slot_id: String, previous: Option<&Entry>, sources: &Sources<'_>) -> Choice {
    let Some(slate_id) = sources.slate_asset_id else {
        return Choice::Wait;
    };
    let Some(durations) = sources.assets.get(slate_id) else {
        return Choice::Wait;
    };
    let next = match previous {
        Some(previous) if previous.kind == EntryKind::Slate && previous.source_id == slate_id => {
            previous.segment_index + 1
        }
        _ => 0,
    };
    let index = if next >= 0 && (next as usize) < durations.len() {
        next
    } else {
        0
    };
    Choice::Segment {
        slot_id,
        kind: EntryKind::Slate,
        source_id: slate_id.to_owned(),
        index,
        duration_ms: durations[index as usize],
    }
}

/// The next segment of a live slot: the encoder's next one, a short wait for
/// it while the encoder is sending, else the slate.
fn live(
    slot: &ScheduledSlot,
    cursor: i64,
    previous: Option<&Entry>,
    sources: &Sources<'_>,
    settings: &TimelineSettings,
    now_ms: i64,
) -> Choice {
    let received: &[LiveSegment] = sources
        .live
        .get(&slot.slot_id)
        .map(|segments| segments.as_slice())
        .unwrap_or(&[]);
    let continuing = previous
        .filter(|previous| previous.kind == EntryKind::Live && previous.source_id == slot.slot_id);
    let next = match continuing {
        Some(previous) => received
            .iter()
            .find(|segment| segment.sequence == previous.segment_index + 1),
        // Joining (the slot starts, or the encoder comes back): the first
        // segment that arrived in the last segment length, not a backlog.
        None => received.iter().find(|segment| {
            segment.received_ms >= cursor - settings.segment_ms && segment.received_ms <= now_ms
        }),
    };
    if let Some(segment) = next {
        return Choice::Segment {
            slot_id: slot.slot_id.clone(),
            kind: EntryKind::Live,
            source_id: slot.slot_id.clone(),
            index: segment.sequence,
            duration_ms: segment.duration_ms,
        };
    }
    let encoder_sending = received
        .last()
        .is_some_and(|segment| segment.received_ms >= now_ms - settings.live_wait_ms);
    if encoder_sending && continuing.is_some() {
        return Choice::Wait;
    }
    slate(slot.slot_id.clone(), previous, sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: i64 = 2_000;

    fn settings() -> TimelineSettings {
        TimelineSettings {
            segment_ms: SEGMENT,
            window: 3,
            max_catch_up_ms: 60_000,
            live_wait_ms: 2_000,
        }
    }

    fn slot(id: &str, start_ms: i64, end_ms: i64, asset_id: &str) -> ScheduledSlot {
        ScheduledSlot {
            slot_id: id.to_owned(),
            start_ms,
            end_ms,
            live: false,
            asset_id: asset_id.to_owned(),
        }
    }

    fn assets() -> HashMap<String, Vec<i64>> {
        let mut assets = HashMap::new();
        assets.insert("program".to_owned(), vec![SEGMENT; 3]);
        assets.insert("slate".to_owned(), vec![SEGMENT; 2]);
        assets
    }

    /// Runs the timeline from nothing to `until`, one call per segment length.
    fn run(sources: &Sources<'_>, from: i64, until: i64) -> Vec<Entry> {
        let mut all: Vec<Entry> = Vec::new();
        let mut now = from;
        while now <= until {
            let appended = advance(all.last(), sources, &settings(), now);
            all.extend(appended);
            now += SEGMENT;
        }
        all
    }

    #[test]
    fn stitches_programs_and_slate_with_discontinuities() {
        let slots = vec![
            slot("a", 10_000, 16_000, "program"),
            // A program shorter than its slot: slate after it.
            slot("b", 16_000, 24_000, "program"),
            // A gap from 24 s to 30 s.
            slot("c", 30_000, 36_000, "program"),
        ];
        let assets = assets();
        let live = HashMap::new();
        let sources = Sources {
            slots: &slots,
            assets: &assets,
            slate_asset_id: Some("slate"),
            live: &live,
        };
        let entries = run(&sources, 10_000, 34_000);
        let plan: Vec<(&str, EntryKind, i64, bool)> = entries
            .iter()
            .map(|entry| {
                (
                    entry.slot_id.as_str(),
                    entry.kind,
                    entry.segment_index,
                    entry.discontinuity,
                )
            })
            .collect();
        use EntryKind::{Program, Slate};
        assert_eq!(
            plan,
            vec![
                // The first window, before slot a: the slate.
                ("", Slate, 0, false),
                ("", Slate, 1, false),
                ("a", Program, 0, true),
                ("a", Program, 1, false),
                ("a", Program, 2, false),
                ("b", Program, 0, true),
                ("b", Program, 1, false),
                ("b", Program, 2, false),
                ("b", Slate, 0, true),
                ("", Slate, 1, false),
                ("", Slate, 0, true),
                ("", Slate, 1, false),
                ("c", Program, 0, true),
                ("c", Program, 1, false),
                ("c", Program, 2, false),
            ]
        );
        for pair in entries.windows(2) {
            assert_eq!(pair[1].pdt_ms, pair[0].end_ms());
            assert_eq!(pair[1].media_sequence, pair[0].media_sequence + 1);
        }
        let slot_c = entries.iter().find(|entry| entry.slot_id == "c").unwrap();
        assert_eq!(slot_c.pdt_ms, 30_000, "a slot on the grid starts on time");
        assert_eq!(entries.last().unwrap().discontinuity_number, 5);
    }

    #[test]
    fn joining_late_lands_on_the_segment_on_air() {
        let slots = vec![slot("a", 0, 6_000, "program")];
        let assets = assets();
        let live = HashMap::new();
        let sources = Sources {
            slots: &slots,
            assets: &assets,
            slate_asset_id: Some("slate"),
            live: &live,
        };
        // Starting at 5 s with a window of 3: segments at 0, 2 and 4 s.
        let entries = advance(None, &sources, &settings(), 5_000);
        let indexes: Vec<i64> = entries.iter().map(|entry| entry.segment_index).collect();
        assert_eq!(indexes, vec![0, 1, 2]);
        assert_eq!(entries[2].pdt_ms, 4_000);
    }

    #[test]
    fn a_long_stop_jumps_with_a_discontinuity() {
        let slots = vec![slot("a", 0, 600_000, "program")];
        let assets = assets();
        let live = HashMap::new();
        let sources = Sources {
            slots: &slots,
            assets: &assets,
            slate_asset_id: Some("slate"),
            live: &live,
        };
        let first = advance(None, &sources, &settings(), 2_000);
        let last = first.last().unwrap();
        let after = advance(Some(last), &sources, &settings(), 300_000);
        assert_eq!(after.len(), 3, "one window, not the missed time");
        assert!(after[0].discontinuity);
        assert_eq!(after[0].media_sequence, last.media_sequence + 1);
        assert_eq!(after[0].discontinuity_number, last.discontinuity_number + 1);
        assert_eq!(after[2].pdt_ms, 300_000);
    }

    #[test]
    fn live_waits_for_the_encoder_then_falls_back_to_the_slate() {
        let mut slots = vec![slot("show", 0, 60_000, "")];
        slots[0].live = true;
        let assets = assets();
        let mut live = HashMap::new();
        let received = (0..2)
            .map(|sequence| LiveSegment {
                slot_id: "show".to_owned(),
                sequence,
                file: format!("index{sequence}.ts"),
                duration_ms: SEGMENT,
                received_ms: 10_000,
            })
            .collect();
        live.insert("show".to_owned(), Arc::new(received));
        let sources = Sources {
            slots: &slots,
            assets: &assets,
            slate_asset_id: Some("slate"),
            live: &live,
        };
        let settings = TimelineSettings {
            live_wait_ms: 4_000,
            ..settings()
        };
        let mut all = advance(None, &sources, &settings, 9_000);
        assert!(all.iter().all(|entry| entry.kind == EntryKind::Slate));
        all.extend(advance(all.last(), &sources, &settings, 10_000));
        all.extend(advance(all.last(), &sources, &settings, 12_000));
        let live_entries: Vec<i64> = all
            .iter()
            .filter(|entry| entry.kind == EntryKind::Live)
            .map(|entry| entry.segment_index)
            .collect();
        assert_eq!(live_entries, vec![0, 1]);
        // The encoder was last heard at 10 s: at 12 s the show waits for it.
        let waiting = advance(all.last(), &sources, &settings, 14_000);
        assert!(waiting.is_empty());
        // At 15 s it has been silent too long: the slate airs.
        let fallback = advance(all.last(), &sources, &settings, 15_000);
        assert_eq!(fallback[0].kind, EntryKind::Slate);
        assert!(fallback[0].discontinuity);
        assert_eq!(fallback[0].slot_id, "show");
    }
}
