//! Schedule imports: every item is checked against the rules, against the
//! other items and against what is stored, and only a flawless set is
//! applied. The checks here are pure (no I/O), so they can run on a blocking
//! thread and be tested alone; the service loads what they need inside the
//! import's transaction (`ImportSchedule`, in the service's
//! `schedule_import`), and [`crate::schedule_file`] reads the files.

use std::collections::{HashMap, HashSet};

use onair_proto::media::v1 as pb;

use crate::error::MediaError;
use crate::model::{
    self, ChannelRecord, MAX_CHANNEL_NUMBER, ProgramRecord, SlotRecord, check_slot_against_program,
    check_slot_times, format_millis,
};
use crate::store::WriteLock;

/// A slot of the import before its references are resolved.
#[derive(Debug, Clone)]
struct SlotDraft {
    line: i32,
    /// Complete but for `live` and `comments_enabled`, which depend on the
    /// program and the channel.
    record: SlotRecord,
    /// Whether the file named the id (a generated one cannot collide).
    id_given: bool,
    /// The file's comment setting; unset means the channel's.
    comments_enabled: Option<bool>,
}

/// The items of an import, each checked on its own, with their lines.
#[derive(Debug, Default)]
pub struct CheckedItems {
    channels: Vec<(i32, ChannelRecord)>,
    programs: Vec<(i32, ProgramRecord)>,
    slots: Vec<SlotDraft>,
    /// What is wrong with single items: missing fields, bad ids and times.
    errors: Vec<pb::ImportError>,
}

/// What an import will write, once every check has passed.
#[derive(Debug, Default)]
pub struct ImportPlan {
    /// Channels to insert or replace, with whether each is new.
    pub channels: Vec<(ChannelRecord, bool)>,
    /// Programs to insert or replace.
    pub programs: Vec<ProgramRecord>,
    /// Slots to insert.
    pub slots: Vec<SlotRecord>,
}

/// What the store holds that an import's checks need; loaded inside the
/// import's transaction, under the locks of [`CheckedItems::locks`].
#[derive(Debug, Default)]
pub struct StoredContext {
    /// Every channel: numbers are unique across the station.
    pub channels: HashMap<String, ChannelRecord>,
    /// The stored programs the import names.
    pub programs: HashMap<String, ProgramRecord>,
    /// The stored slots the import names (as ids or as rebroadcast originals).
    pub slots: HashMap<String, SlotRecord>,
    /// Per channel, the stored slots around the import's slots on it.
    pub nearby_slots: HashMap<String, Vec<SlotRecord>>,
    /// Per program whose duration the import lengthens, a stored upcoming slot
    /// that would then be too short.
    pub short_slots: HashMap<String, SlotRecord>,
}

fn error(line: i32, message: impl Into<String>) -> pb::ImportError {
    pb::ImportError {
        line,
        message: message.into(),
    }
}

/// Checks each item on its own. Never fails as a whole: what is wrong goes
/// into the result's errors, so the caller hears about every line at once.
pub fn check_items(items: Vec<pb::ImportScheduleItem>, now_ms: i64) -> CheckedItems {
    let mut checked = CheckedItems::default();
    for item in items {
        let line = item.line;
        match item.item {
            Some(pb::import_schedule_item::Item::Channel(channel)) => {
                match model::channel_from_proto(&channel, now_ms) {
                    Ok(record) if channel.id.is_empty() => checked.errors.push(error(
                        line,
                        format!(
                            "channel {:?} has no id: give it one so slots can name it",
                            record.name
                        ),
                    )),
                    Ok(record) => checked.channels.push((line, record)),
                    Err(problem) => checked.errors.push(error(line, problem.to_string())),
                }
            }
            Some(pb::import_schedule_item::Item::Program(program)) => {
                match model::program_from_proto(&program, now_ms) {
                    Ok(record) if program.id.is_empty() => checked.errors.push(error(
                        line,
                        format!(
                            "program {:?} has no id: give it one so slots can name it",
                            record.title
                        ),
                    )),
                    Ok(record) => checked.programs.push((line, record)),
                    Err(problem) => checked.errors.push(error(line, problem.to_string())),
                }
            }
            Some(pb::import_schedule_item::Item::Slot(slot)) => {
                match slot_draft(&slot, line, now_ms) {
                    Ok(draft) => checked.slots.push(draft),
                    Err(problem) => checked.errors.push(error(line, problem.to_string())),
                }
            }
            None => checked.errors.push(error(
                line,
                "the item is empty: it must be a channel, a program or a slot",
            )),
        }
    }
    checked
}

fn slot_draft(slot: &pb::Slot, line: i32, now_ms: i64) -> Result<SlotDraft, MediaError> {
    model::require_id("slot channel_id", &slot.channel_id)?;
    model::require_id("slot program_id", &slot.program_id)?;
    if !slot.repeat_of_slot_id.is_empty() {
        model::validate_id("repeat_of_slot_id", &slot.repeat_of_slot_id)?;
    }
    let start_time_ms = model::timestamp_to_millis("slot start_time", slot.start_time.as_ref())?;
    let end_time_ms = model::timestamp_to_millis("slot end_time", slot.end_time.as_ref())?;
    check_slot_times(start_time_ms, end_time_ms)?;
    let id = model::given_or_new_id("slot id", &slot.id)?;
    Ok(SlotDraft {
        line,
        record: SlotRecord {
            id,
            channel_id: slot.channel_id.clone(),
            program_id: slot.program_id.clone(),
            start_time_ms,
            end_time_ms,
            live: slot.live,
            repeat_of_slot_id: slot.repeat_of_slot_id.clone(),
            cut: slot.cut,
            comments_enabled: true,
            create_time_ms: now_ms,
            update_time_ms: now_ms,
        },
        id_given: !slot.id.is_empty(),
        comments_enabled: slot.comments_enabled,
    })
}

impl CheckedItems {
    /// The locks the import's transaction takes: the schedule of every channel
    /// it puts slots on, and channel numbers when it defines channels.
    pub fn locks(&self) -> Vec<WriteLock> {
        let mut locks: Vec<WriteLock> = self
            .slots
            .iter()
            .map(|draft| WriteLock::Channel(draft.record.channel_id.clone()))
            .collect();
        if !self.channels.is_empty() {
            locks.push(WriteLock::ChannelNumbers);
        }
        locks.sort();
        locks.dedup();
        locks
    }

    /// Program ids the import defines or names.
    pub fn program_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .programs
            .iter()
            .map(|(_, program)| program.id.clone())
            .chain(
                self.slots
                    .iter()
                    .map(|draft| draft.record.program_id.clone()),
            )
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Stored slot ids the import may name: given slot ids (to refuse taken
    /// ones) and rebroadcast originals.
    pub fn slot_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for draft in &self.slots {
            if draft.id_given {
                ids.push(draft.record.id.clone());
            }
            if !draft.record.repeat_of_slot_id.is_empty() {
                ids.push(draft.record.repeat_of_slot_id.clone());
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// Per channel, the range [earliest start, latest end) of the import's
    /// slots on it, in which stored slots must be looked at for overlaps.
    pub fn slot_ranges(&self) -> Vec<(String, i64, i64)> {
        let mut ranges: HashMap<&str, (i64, i64)> = HashMap::new();
        for draft in &self.slots {
            let record = &draft.record;
            let range = ranges
                .entry(record.channel_id.as_str())
                .or_insert((record.start_time_ms, record.end_time_ms));
            range.0 = range.0.min(record.start_time_ms);
            range.1 = range.1.max(record.end_time_ms);
        }
        let mut list: Vec<(String, i64, i64)> = ranges
            .into_iter()
            .map(|(channel_id, (start, end))| (channel_id.to_owned(), start, end))
            .collect();
        list.sort();
        list
    }

    /// Programs the import redefines with a longer duration than stored: their
    /// upcoming stored slots must still fit.
    pub fn lengthened_programs(
        &self,
        stored: &HashMap<String, ProgramRecord>,
    ) -> Vec<(String, i64)> {
        let mut lengthened = Vec::new();
        for (_, program) in &self.programs {
            if let Some(before) = stored.get(&program.id)
                && program.duration_ms > before.duration_ms
            {
                lengthened.push((program.id.clone(), program.duration_ms));
            }
        }
        lengthened
    }

    /// How many items passed their own checks.
    pub fn len(&self) -> usize {
        self.channels.len() + self.programs.len() + self.slots.len()
    }

    /// Whether no item passed its own checks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks the items against each other and against the store, and says what
/// to write; or every error, by line.
pub fn plan(
    checked: CheckedItems,
    stored: &StoredContext,
) -> Result<ImportPlan, Vec<pb::ImportError>> {
    let CheckedItems {
        channels,
        programs,
        slots,
        mut errors,
    } = checked;
    let mut plan = ImportPlan::default();

    let final_channels = plan_channels(channels, stored, &mut plan, &mut errors);
    let final_programs = plan_programs(programs, stored, &mut plan, &mut errors);
    plan_slots(
        slots,
        stored,
        &final_channels,
        &final_programs,
        &mut plan,
        &mut errors,
    );

    if errors.is_empty() {
        return Ok(plan);
    }
    errors.sort_by_key(|error| error.line);
    Err(errors)
}

/// Channels: ids unique in the file; numbers unique across the station once
/// the import is applied; number 0 keeps a stored channel's number or takes
/// the next free one. Returns every channel as it will be.
fn plan_channels(
    channels: Vec<(i32, ChannelRecord)>,
    stored: &StoredContext,
    plan: &mut ImportPlan,
    errors: &mut Vec<pb::ImportError>,
) -> HashMap<String, ChannelRecord> {
    let mut final_channels = stored.channels.clone();
    let mut defined_on: HashMap<String, i32> = HashMap::new();
    let mut accepted: Vec<(i32, ChannelRecord, bool)> = Vec::new();
    for (line, mut channel) in channels {
        if let Some(first) = defined_on.get(&channel.id) {
            errors.push(error(
                line,
                format!("channel {} is already defined on line {first}", channel.id),
            ));
            continue;
        }
        defined_on.insert(channel.id.clone(), line);
        let existing = stored.channels.get(&channel.id);
        if let Some(existing) = existing {
            channel.create_time_ms = existing.create_time_ms;
            if channel.number == 0 {
                channel.number = existing.number;
            }
        }
        final_channels.insert(channel.id.clone(), channel.clone());
        accepted.push((line, channel, existing.is_none()));
    }

    // Numbers: first the ones given, then the next free ones for the rest.
    let mut owners: HashMap<i64, String> = HashMap::new();
    for channel in final_channels.values() {
        if channel.number > 0 && !defined_on.contains_key(&channel.id) {
            owners.insert(channel.number, channel.id.clone());
        }
    }
    let mut highest = final_channels
        .values()
        .map(|channel| channel.number)
        .max()
        .unwrap_or(0);
    for (line, channel, _) in &mut accepted {
        if channel.number == 0 {
            continue;
        }
        match owners.get(&channel.number) {
            Some(owner) if owner != &channel.id => errors.push(error(
                *line,
                format!(
                    "channel number {} is taken by channel {owner}",
                    channel.number
                ),
            )),
            _ => {
                owners.insert(channel.number, channel.id.clone());
            }
        }
    }
    for (line, channel, _) in &mut accepted {
        if channel.number != 0 {
            continue;
        }
        highest += 1;
        if highest > MAX_CHANNEL_NUMBER {
            errors.push(error(*line, "no channel number is free"));
            continue;
        }
        channel.number = highest;
        final_channels.insert(channel.id.clone(), channel.clone());
    }
    for (_, channel, created) in accepted {
        plan.channels.push((channel, created));
    }
    final_channels
}

/// Programs: ids unique in the file; a program lengthened by the import must
/// still fit its upcoming stored slots. Returns the programs the import's
/// slots may name, as they will be.
fn plan_programs(
    programs: Vec<(i32, ProgramRecord)>,
    stored: &StoredContext,
    plan: &mut ImportPlan,
    errors: &mut Vec<pb::ImportError>,
) -> HashMap<String, ProgramRecord> {
    let mut final_programs = stored.programs.clone();
    let mut defined_on: HashMap<String, i32> = HashMap::new();
    for (line, mut program) in programs {
        if let Some(first) = defined_on.get(&program.id) {
            errors.push(error(
                line,
                format!("program {} is already defined on line {first}", program.id),
            ));
            continue;
        }
        defined_on.insert(program.id.clone(), line);
        if let Some(existing) = stored.programs.get(&program.id) {
            program.create_time_ms = existing.create_time_ms;
        }
        if let Some(short) = stored.short_slots.get(&program.id) {
            errors.push(error(
                line,
                format!(
                    "program {} would last {} but stored {} is shorter and not cut",
                    program.id,
                    model::describe_length(program.duration_ms),
                    short.describe()
                ),
            ));
            continue;
        }
        final_programs.insert(program.id.clone(), program.clone());
        plan.programs.push(program);
    }
    final_programs
}

/// A slot on a channel's timeline, for the overlap sweep.
struct Interval {
    start_time_ms: i64,
    end_time_ms: i64,
    /// The line of an imported slot; `None` for a stored one.
    line: Option<i32>,
    /// Index into the imported slots, for an imported one.
    draft: Option<usize>,
    /// For messages about a stored slot.
    description: String,
}

/// Slots: ids unique and free, channel and program known, rebroadcasts of the
/// same program, not shorter than the program unless cut, and no overlaps
/// with each other or with stored slots.
fn plan_slots(
    slots: Vec<SlotDraft>,
    stored: &StoredContext,
    channels: &HashMap<String, ChannelRecord>,
    programs: &HashMap<String, ProgramRecord>,
    plan: &mut ImportPlan,
    errors: &mut Vec<pb::ImportError>,
) {
    let mut file_slots: HashMap<String, (i32, String)> = HashMap::new();
    for draft in &slots {
        if draft.id_given && !file_slots.contains_key(&draft.record.id) {
            file_slots.insert(
                draft.record.id.clone(),
                (draft.line, draft.record.program_id.clone()),
            );
        }
    }

    let mut accepted: Vec<SlotDraft> = Vec::with_capacity(slots.len());
    let mut seen_ids: HashSet<String> = HashSet::new();
    for mut draft in slots {
        let record = &draft.record;
        let line = draft.line;
        if !seen_ids.insert(record.id.clone()) {
            errors.push(error(
                line,
                format!("slot id {} is used twice in the import", record.id),
            ));
            continue;
        }
        if draft.id_given && stored.slots.contains_key(&record.id) {
            errors.push(error(
                line,
                format!(
                    "slot {} already exists: an import only adds slots; move or delete it with UpdateSlot or DeleteSlot",
                    record.id
                ),
            ));
            continue;
        }
        let Some(channel) = channels.get(&record.channel_id) else {
            errors.push(error(
                line,
                format!(
                    "no channel with id {:?} in the import or the station",
                    record.channel_id
                ),
            ));
            continue;
        };
        let Some(program) = programs.get(&record.program_id) else {
            errors.push(error(
                line,
                format!(
                    "no program with id {:?} in the import or the station",
                    record.program_id
                ),
            ));
            continue;
        };
        if !record.repeat_of_slot_id.is_empty() {
            let original_program = match stored.slots.get(&record.repeat_of_slot_id) {
                Some(original) => Some(original.program_id.clone()),
                None => file_slots
                    .get(&record.repeat_of_slot_id)
                    .map(|(_, program_id)| program_id.clone()),
            };
            match original_program {
                None => {
                    errors.push(error(
                        line,
                        format!(
                            "repeat_of_slot_id names slot {:?}, which is neither in the import nor in the station",
                            record.repeat_of_slot_id
                        ),
                    ));
                    continue;
                }
                Some(original_program) if original_program != record.program_id => {
                    errors.push(error(
                        line,
                        format!(
                            "a rebroadcast repeats the same program: slot {} plays program {original_program}, not {}",
                            record.repeat_of_slot_id, record.program_id
                        ),
                    ));
                    continue;
                }
                Some(_) => {}
            }
        }
        if let Err(problem) = check_slot_against_program(record, program) {
            errors.push(error(line, problem.to_string()));
            continue;
        }
        draft.record.live = draft.record.live || program.live;
        draft.record.comments_enabled = draft.comments_enabled.unwrap_or(channel.comments_enabled);
        accepted.push(draft);
    }

    let overlapping = overlapping_drafts(&accepted, stored, errors);
    for (index, draft) in accepted.into_iter().enumerate() {
        if !overlapping.contains(&index) {
            plan.slots.push(draft.record);
        }
    }
}

/// Finds the imported slots that overlap another imported slot or a stored
/// one, reports each once, and returns their indices.
fn overlapping_drafts(
    drafts: &[SlotDraft],
    stored: &StoredContext,
    errors: &mut Vec<pb::ImportError>,
) -> HashSet<usize> {
    let mut timelines: HashMap<&str, Vec<Interval>> = HashMap::new();
    for (index, draft) in drafts.iter().enumerate() {
        timelines
            .entry(draft.record.channel_id.as_str())
            .or_default()
            .push(Interval {
                start_time_ms: draft.record.start_time_ms,
                end_time_ms: draft.record.end_time_ms,
                line: Some(draft.line),
                draft: Some(index),
                description: String::new(),
            });
    }
    for (channel_id, nearby) in &stored.nearby_slots {
        let Some(timeline) = timelines.get_mut(channel_id.as_str()) else {
            continue;
        };
        for slot in nearby {
            timeline.push(Interval {
                start_time_ms: slot.start_time_ms,
                end_time_ms: slot.end_time_ms,
                line: None,
                draft: None,
                description: format!("stored {}", slot.describe()),
            });
        }
    }

    let mut overlapping = HashSet::new();
    for (channel_id, timeline) in timelines.iter_mut() {
        timeline.sort_by_key(|interval| (interval.start_time_ms, interval.end_time_ms));
        // The interval reaching furthest so far: whatever starts before its
        // end overlaps it.
        let mut furthest: Option<usize> = None;
        for current in 0..timeline.len() {
            if let Some(previous) = furthest {
                if timeline[current].start_time_ms < timeline[previous].end_time_ms {
                    report_overlap(
                        channel_id,
                        timeline,
                        previous,
                        current,
                        &mut overlapping,
                        errors,
                    );
                }
                if timeline[current].end_time_ms > timeline[previous].end_time_ms {
                    furthest = Some(current);
                }
            } else {
                furthest = Some(current);
            }
        }
    }
    overlapping
}

fn describe_interval(interval: &Interval) -> String {
    match interval.line {
        Some(line) => format!(
            "the slot on line {line} ({} to {})",
            format_millis(interval.start_time_ms),
            format_millis(interval.end_time_ms)
        ),
        None => interval.description.clone(),
    }
}

fn report_overlap(
    channel_id: &str,
    timeline: &[Interval],
    previous: usize,
    current: usize,
    overlapping: &mut HashSet<usize>,
    errors: &mut Vec<pb::ImportError>,
) {
    // Report on the later imported slot, naming the one it runs into; a
    // stored slot is never reported, only named.
    let (reported, named) = match (timeline[current].draft, timeline[previous].draft) {
        (Some(_), _) => (current, previous),
        (None, Some(_)) => (previous, current),
        (None, None) => return,
    };
    let Some(draft) = timeline[reported].draft else {
        return;
    };
    if !overlapping.insert(draft) {
        return;
    }
    errors.push(error(
        timeline[reported].line.unwrap_or_default(),
        format!(
            "the slot overlaps {} on channel {channel_id}",
            describe_interval(&timeline[named])
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stored_slot;

    const MINUTE: i64 = 60_000;

    fn timestamp(millis: i64) -> prost_types::Timestamp {
        onair_kit::clock::timestamp_from_millis(millis)
    }

    fn slot_item(line: i32, id: &str, start: i64, end: i64) -> pb::ImportScheduleItem {
        pb::ImportScheduleItem {
            line,
            item: Some(pb::import_schedule_item::Item::Slot(pb::Slot {
                id: id.to_owned(),
                channel_id: "news".to_owned(),
                program_id: "p".to_owned(),
                start_time: Some(timestamp(start)),
                end_time: Some(timestamp(end)),
                ..Default::default()
            })),
        }
    }

    fn context() -> StoredContext {
        let mut stored = StoredContext::default();
        stored.channels.insert(
            "news".to_owned(),
            ChannelRecord {
                id: "news".to_owned(),
                number: 1,
                name: "News".to_owned(),
                logo_url: String::new(),
                group: String::new(),
                slate_asset_id: String::new(),
                comments_enabled: false,
                create_time_ms: 0,
                update_time_ms: 0,
            },
        );
        stored.programs.insert(
            "p".to_owned(),
            ProgramRecord {
                id: "p".to_owned(),
                title: "P".to_owned(),
                duration_ms: 30 * MINUTE,
                ..ProgramRecord::default()
            },
        );
        stored
    }

    #[test]
    fn overlaps_in_the_file_and_with_the_store_are_reported_by_line() {
        let items = vec![
            slot_item(3, "a", 0, 30 * MINUTE),
            slot_item(7, "b", 20 * MINUTE, 50 * MINUTE),
            slot_item(11, "c", 60 * MINUTE, 90 * MINUTE),
        ];
        let mut stored = context();
        stored.nearby_slots.insert(
            "news".to_owned(),
            vec![stored_slot("old", 80 * MINUTE, 110 * MINUTE)],
        );
        let errors = plan(check_items(items, 0), &stored).unwrap_err();
        let lines: Vec<i32> = errors.iter().map(|error| error.line).collect();
        assert_eq!(lines, vec![7, 11], "{errors:?}");
        assert!(errors[0].message.contains("line 3"), "{errors:?}");
        assert!(errors[1].message.contains("stored slot old"), "{errors:?}");
    }

    #[test]
    fn a_clean_file_plans_every_slot_with_the_channel_defaults() {
        let items = vec![
            slot_item(1, "a", 0, 30 * MINUTE),
            slot_item(2, "", 30 * MINUTE, 60 * MINUTE),
        ];
        let plan = plan(check_items(items, 0), &context()).unwrap();
        assert_eq!(plan.slots.len(), 2);
        assert!(plan.slots.iter().all(|slot| !slot.comments_enabled));
    }

    #[test]
    fn short_slots_and_unknown_references_are_reported() {
        let mut short = slot_item(4, "a", 0, 10 * MINUTE);
        let mut unknown = slot_item(9, "b", 60 * MINUTE, 90 * MINUTE);
        if let Some(pb::import_schedule_item::Item::Slot(slot)) = &mut unknown.item {
            slot.program_id = "nope".to_owned();
        }
        let empty = pb::ImportScheduleItem {
            line: 12,
            item: None,
        };
        let errors = plan(
            check_items(vec![short.clone(), unknown, empty], 0),
            &context(),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].message.contains("cut"), "{errors:?}");
        assert!(errors[1].message.contains("\"nope\""), "{errors:?}");
        if let Some(pb::import_schedule_item::Item::Slot(slot)) = &mut short.item {
            slot.cut = true;
        }
        assert!(plan(check_items(vec![short], 0), &context()).is_ok());
    }
}
