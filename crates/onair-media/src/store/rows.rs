//! Records to rows and back: the values bound for a record's columns, and
//! the records read from rows and from the JSON pages big reads answer with.

use sqlx::Any;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::model::{ChannelRecord, ProgramRecord, SlotRecord};

/// The bits of the packed slot flags.
const LIVE_FLAG: i64 = 1;
const CUT_FLAG: i64 = 2;
const COMMENTS_FLAG: i64 = 4;

fn bool_from(value: i64) -> bool {
    value != 0
}

fn int_from(value: bool) -> i64 {
    i64::from(value)
}

/// Genres are stored one per line: genres are single-line text (checked on
/// the way in), and this is cheaper to read back than JSON.
fn genres_to_text(genres: &[String]) -> String {
    genres.join("\n")
}

fn genres_from_text(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split('\n').map(str::to_owned).collect()
}

// Rows are read by position: the column lists of the statements fix the
// order, and joined rows put one entity's columns after another's.

pub(super) fn channel_at(row: &AnyRow, at: usize) -> Result<ChannelRecord, sqlx::Error> {
    Ok(ChannelRecord {
        id: row.try_get(at)?,
        number: row.try_get(at + 1)?,
        name: row.try_get(at + 2)?,
        logo_url: row.try_get(at + 3)?,
        group: row.try_get(at + 4)?,
        slate_asset_id: row.try_get(at + 5)?,
        comments_enabled: bool_from(row.try_get(at + 6)?),
        create_time_ms: row.try_get(at + 7)?,
        update_time_ms: row.try_get(at + 8)?,
    })
}

pub(super) fn program_at(row: &AnyRow, at: usize) -> Result<ProgramRecord, sqlx::Error> {
    let genres: String = row.try_get(at + 3)?;
    Ok(ProgramRecord {
        id: row.try_get(at)?,
        title: row.try_get(at + 1)?,
        description: row.try_get(at + 2)?,
        genres: genres_from_text(&genres),
        duration_ms: row.try_get(at + 4)?,
        rating: row.try_get(at + 5)?,
        artwork_url: row.try_get(at + 6)?,
        asset_id: row.try_get(at + 7)?,
        live: bool_from(row.try_get(at + 8)?),
        create_time_ms: row.try_get(at + 9)?,
        update_time_ms: row.try_get(at + 10)?,
    })
}

/// A slot from the columns of [`slot_select`](super::statements::slot_select).
pub(super) fn slot_at(row: &AnyRow, at: usize) -> Result<SlotRecord, sqlx::Error> {
    let flags: i64 = row.try_get(at + 6)?;
    Ok(SlotRecord {
        id: row.try_get(at)?,
        channel_id: row.try_get(at + 1)?,
        program_id: row.try_get(at + 2)?,
        start_time_ms: row.try_get(at + 3)?,
        end_time_ms: row.try_get(at + 4)?,
        live: flags & LIVE_FLAG != 0,
        repeat_of_slot_id: row.try_get(at + 5)?,
        cut: flags & CUT_FLAG != 0,
        comments_enabled: flags & COMMENTS_FLAG != 0,
        create_time_ms: row.try_get(at + 7)?,
        update_time_ms: row.try_get(at + 8)?,
    })
}

/// A program as [`PROGRAM_COLUMNS`](super::statements::PROGRAM_COLUMNS) in a JSON array.
pub(super) type JsonProgram = (
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    i64,
    i64,
);

pub(super) fn program_from_json(program: JsonProgram) -> ProgramRecord {
    let (
        id,
        title,
        description,
        genres,
        duration_ms,
        rating,
        artwork_url,
        asset_id,
        live,
        create_time_ms,
        update_time_ms,
    ) = program;
    ProgramRecord {
        id,
        title,
        description,
        genres: genres_from_text(&genres),
        duration_ms,
        rating,
        artwork_url,
        asset_id,
        live: bool_from(live),
        create_time_ms,
        update_time_ms,
    }
}

/// A slot as the timetable statements put it in a JSON page.
pub(super) type JsonSlot = (String, String, String, i64, i64, String, i64, i64, i64);

pub(super) fn slot_from_json(slot: JsonSlot) -> SlotRecord {
    let (
        id,
        channel_id,
        program_id,
        start_time_ms,
        end_time_ms,
        repeat_of_slot_id,
        flags,
        create_time_ms,
        update_time_ms,
    ) = slot;
    SlotRecord {
        id,
        channel_id,
        program_id,
        start_time_ms,
        end_time_ms,
        live: flags & LIVE_FLAG != 0,
        repeat_of_slot_id,
        cut: flags & CUT_FLAG != 0,
        comments_enabled: flags & COMMENTS_FLAG != 0,
        create_time_ms,
        update_time_ms,
    }
}

pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

pub(super) fn bind_channel<'q>(query: AnyQuery<'q>, channel: &ChannelRecord) -> AnyQuery<'q> {
    query
        .bind(&channel.id)
        .bind(channel.number)
        .bind(&channel.name)
        .bind(&channel.logo_url)
        .bind(&channel.group)
        .bind(&channel.slate_asset_id)
        .bind(int_from(channel.comments_enabled))
        .bind(channel.create_time_ms)
        .bind(channel.update_time_ms)
}

pub(super) fn bind_program<'q>(query: AnyQuery<'q>, program: &ProgramRecord) -> AnyQuery<'q> {
    query
        .bind(&program.id)
        .bind(&program.title)
        .bind(&program.description)
        .bind(genres_to_text(&program.genres))
        .bind(program.duration_ms)
        .bind(&program.rating)
        .bind(&program.artwork_url)
        .bind(&program.asset_id)
        .bind(int_from(program.live))
        .bind(program.create_time_ms)
        .bind(program.update_time_ms)
}

pub(super) fn bind_slot<'q>(query: AnyQuery<'q>, slot: &SlotRecord) -> AnyQuery<'q> {
    query
        .bind(&slot.id)
        .bind(&slot.channel_id)
        .bind(&slot.program_id)
        .bind(slot.start_time_ms)
        .bind(slot.end_time_ms)
        .bind(int_from(slot.live))
        .bind(&slot.repeat_of_slot_id)
        .bind(int_from(slot.cut))
        .bind(int_from(slot.comments_enabled))
        .bind(slot.create_time_ms)
        .bind(slot.update_time_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genres_round_trip() {
        let genres = vec!["News".to_owned(), "Sports".to_owned()];
        assert_eq!(genres_from_text(&genres_to_text(&genres)), genres);
        assert!(genres_from_text(&genres_to_text(&[])).is_empty());
    }
}
