//! The SQL the media tables are read and written with, built once from the
//! column lists. One text serves both engines: placeholders are `$n`, which
//! SQLite and PostgreSQL both read as the n-th bound value, and every write
//! binds a record's columns in the order of its list (see [`Table`]).

use std::sync::LazyLock;

use onair_kit::store::Backend;

pub(super) const CHANNEL_COLUMNS: &[&str] = &[
    "id",
    "number",
    "name",
    "logo_url",
    "channel_group",
    "slate_asset_id",
    "comments_enabled",
    "create_time_ms",
    "update_time_ms",
];

pub(super) const PROGRAM_COLUMNS: &[&str] = &[
    "id",
    "title",
    "description",
    "genres",
    "duration_ms",
    "rating",
    "artwork_url",
    "asset_id",
    "live",
    "create_time_ms",
    "update_time_ms",
];

pub(super) const SLOT_COLUMNS: &[&str] = &[
    "id",
    "channel_id",
    "program_id",
    "start_time_ms",
    "end_time_ms",
    "live",
    "repeat_of_slot_id",
    "cut",
    "comments_enabled",
    "create_time_ms",
    "update_time_ms",
];

/// A table as the writes see it: every write binds a record's columns in
/// the order of `columns` (`id` first), so `$n` is always the n-th column,
/// whichever of them a statement uses.
pub(super) struct Table {
    pub(super) name: &'static str,
    pub(super) columns: &'static [&'static str],
    /// What an update or an upsert leaves as stored, besides the id: when a
    /// record was created, and for a slot its channel.
    pub(super) kept: &'static [&'static str],
}

pub(super) const CHANNELS: Table = Table {
    name: "media_channels",
    columns: CHANNEL_COLUMNS,
    kept: &["create_time_ms"],
};

pub(super) const PROGRAMS: Table = Table {
    name: "media_programs",
    columns: PROGRAM_COLUMNS,
    kept: &["create_time_ms"],
};

pub(super) const SLOTS: Table = Table {
    name: "media_slots",
    columns: SLOT_COLUMNS,
    kept: &["channel_id", "create_time_ms"],
};

impl Table {
    /// `INSERT` of `rows` whole records, bound one after the other.
    pub(super) fn insert(&self, rows: usize) -> String {
        let width = self.columns.len();
        let mut values = Vec::with_capacity(rows);
        for index in 0..rows {
            values.push(format!("({})", placeholders(index * width + 1, width)));
        }
        format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.name,
            self.columns.join(", "),
            values.join(", ")
        )
    }

    /// `UPDATE` of every column but the id and the kept ones, by id (`$1`).
    pub(super) fn update(&self) -> String {
        let mut assignments = Vec::with_capacity(self.columns.len());
        for (index, column) in self.changed_columns() {
            assignments.push(format!("{column} = ${}", index + 1));
        }
        format!(
            "UPDATE {} SET {} WHERE id = $1",
            self.name,
            assignments.join(", ")
        )
    }

    /// `INSERT` of one record, or where its id is taken an update of every
    /// column but the id and the kept ones.
    pub(super) fn upsert(&self) -> String {
        let mut assignments = Vec::with_capacity(self.columns.len());
        for (_, column) in self.changed_columns() {
            assignments.push(format!("{column} = excluded.{column}"));
        }
        format!(
            "{} ON CONFLICT (id) DO UPDATE SET {}",
            self.insert(1),
            assignments.join(", ")
        )
    }

    /// The columns a write may change, with their index in `columns`.
    fn changed_columns(&self) -> impl Iterator<Item = (usize, &'static str)> + '_ {
        self.columns
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, column)| *column != "id" && !self.kept.contains(column))
    }
}

/// What a read of slots selects, for a table alias (`"s."`, or `""`): the
/// three flags travel packed in one number, because on a big timetable every
/// value read costs (the `Any` driver copies each one).
pub(super) fn slot_select(prefix: &str) -> String {
    format!(
        "{prefix}id, {prefix}channel_id, {prefix}program_id, {prefix}start_time_ms, \
         {prefix}end_time_ms, {prefix}repeat_of_slot_id, \
         {prefix}live + 2 * {prefix}cut + 4 * {prefix}comments_enabled, \
         {prefix}create_time_ms, {prefix}update_time_ms"
    )
}

/// `$first, $first+1, …` for `count` parameters.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    let mut parts = Vec::with_capacity(count);
    for index in first..first + count {
        parts.push(format!("${index}"));
    }
    parts.join(", ")
}

/// Statements built once from the column lists.
pub(super) struct Statements {
    pub(super) channel_by_id: String,
    pub(super) channel_by_number: String,
    pub(super) channels_all: String,
    pub(super) channels_after: String,
    pub(super) program_by_id: String,
    pub(super) programs_after: String,
    pub(super) slot_by_id: String,
    /// The last slot of a channel starting before an instant (excluding one
    /// slot): since a channel's slots never overlap, it is the only one that
    /// can overlap a range ending at that instant.
    pub(super) slot_before: String,
    pub(super) slot_before_excluding: String,
    /// The slots of one channel near a range: the one straddling its start
    /// and those starting inside it.
    pub(super) slots_near: String,
    pub(super) short_slot_of_program: String,
    pub(super) insert_channel: String,
    pub(super) update_channel: String,
    pub(super) upsert_channel: String,
    pub(super) insert_program: String,
    pub(super) update_program: String,
    pub(super) upsert_program: String,
    pub(super) update_slot: String,
}

pub(super) static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
    let channels = CHANNEL_COLUMNS.join(", ");
    let programs = PROGRAM_COLUMNS.join(", ");
    let slots = slot_select("");
    Statements {
        channel_by_id: format!("SELECT {channels} FROM media_channels WHERE id = $1"),
        channel_by_number: format!("SELECT {channels} FROM media_channels WHERE number = $1"),
        channels_all: format!("SELECT {channels} FROM media_channels ORDER BY number"),
        channels_after: format!(
            "SELECT {channels} FROM media_channels WHERE number > $1 ORDER BY number LIMIT $2"
        ),
        program_by_id: format!("SELECT {programs} FROM media_programs WHERE id = $1"),
        programs_after: format!(
            "SELECT {programs} FROM media_programs WHERE id > $1 ORDER BY id LIMIT $2"
        ),
        slot_by_id: format!("SELECT {slots} FROM media_slots WHERE id = $1"),
        slot_before: format!(
            "SELECT {slots} FROM media_slots WHERE channel_id = $1 AND start_time_ms < $2 \
             ORDER BY start_time_ms DESC LIMIT 1"
        ),
        slot_before_excluding: format!(
            "SELECT {slots} FROM media_slots WHERE channel_id = $1 AND start_time_ms < $2 \
             AND id <> $3 ORDER BY start_time_ms DESC LIMIT 1"
        ),
        slots_near: format!(
            "SELECT {slots} FROM media_slots WHERE channel_id = $1 \
               AND start_time_ms >= $2 AND start_time_ms < $3 \
             UNION ALL \
             SELECT {slots} FROM media_slots WHERE id = (\
               SELECT id FROM media_slots WHERE channel_id = $1 AND start_time_ms < $2 \
               ORDER BY start_time_ms DESC LIMIT 1) AND end_time_ms > $2"
        ),
        short_slot_of_program: format!(
            "SELECT {slots} FROM media_slots WHERE program_id = $1 AND cut = 0 \
             AND end_time_ms > $2 AND end_time_ms - start_time_ms < $3 \
             ORDER BY start_time_ms LIMIT 1"
        ),
        insert_channel: CHANNELS.insert(1),
        update_channel: CHANNELS.update(),
        upsert_channel: CHANNELS.upsert(),
        insert_program: PROGRAMS.insert(1),
        update_program: PROGRAMS.update(),
        upsert_program: PROGRAMS.upsert(),
        update_slot: SLOTS.update(),
    }
});

/// The timetable statement: the slots of every channel (or of one, as `$3`)
/// that overlap [$1, $2), each joined with its program. Two parts: the slots
/// starting inside the range (an index range scan), and per channel the one
/// slot that starts before the range and may run into it (an index seek per
/// channel). Scanning for `end > $1` instead would read the whole future of
/// the schedule.
fn overlapping_statement(columns: &str, one_channel: bool) -> String {
    let (slot_filter, channel_filter) = if one_channel {
        (" AND s.channel_id = $3", " WHERE c.id = $3")
    } else {
        ("", "")
    };
    format!(
        "SELECT {columns} FROM media_slots s \
         WHERE s.start_time_ms >= $1 AND s.start_time_ms < $2{slot_filter} \
         UNION ALL \
         SELECT {columns} FROM media_slots s \
         WHERE s.end_time_ms > $1 AND s.id IN (\
           SELECT (SELECT l.id FROM media_slots l WHERE l.channel_id = c.id \
                   AND l.start_time_ms < $1 ORDER BY l.start_time_ms DESC LIMIT 1) \
           FROM media_channels c{channel_filter})"
    )
}

/// The slot columns under names, for statements that select from a
/// subquery of slots.
const NAMED_SLOT_COLUMNS: &str = "s.id AS id, s.channel_id AS channel_id, \
     s.program_id AS program_id, s.start_time_ms AS start_time_ms, \
     s.end_time_ms AS end_time_ms, s.repeat_of_slot_id AS repeat_of_slot_id, \
     s.live + 2 * s.cut + 4 * s.comments_enabled AS flags, \
     s.create_time_ms AS create_time_ms, s.update_time_ms AS update_time_ms";
const JSON_SLOT_COLUMNS: &str = "id, channel_id, program_id, start_time_ms, end_time_ms, \
     repeat_of_slot_id, flags, create_time_ms, update_time_ms";

/// The timetable statement answering with one JSON array of slots, each an
/// array of [`JSON_SLOT_COLUMNS`]. A timetable is thousands of rows, and the
/// drivers hand rows over one by one (SQLite's through a thread hand-off
/// each), which cost several times the query itself.
fn overlapping_json_statement(backend: Backend, one_channel: bool) -> String {
    let inner = overlapping_statement(NAMED_SLOT_COLUMNS, one_channel);
    match backend {
        Backend::Sqlite => format!(
            "SELECT json_group_array(json_array({JSON_SLOT_COLUMNS})) AS page FROM ({inner})"
        ),
        Backend::Postgres => format!(
            "SELECT COALESCE(json_agg(json_build_array({JSON_SLOT_COLUMNS}))::text, '[]') AS page \
             FROM ({inner}) AS page_slots"
        ),
    }
}

/// The timetable statement: the slots of channel $3 overlapping [$1, $2) as
/// [`overlapping_json_statement`] gives them (`page`), and the programs they
/// play as one JSON array of [`PROGRAM_COLUMNS`] (`programs`), in one row.
fn timetable_json_statement(backend: Backend) -> String {
    let slots = overlapping_json_statement(backend, true);
    let played = overlapping_statement("s.program_id AS program_id", true);
    let columns = PROGRAM_COLUMNS.join(", ");
    let programs = match backend {
        Backend::Sqlite => format!(
            "SELECT json_group_array(json_array({columns})) FROM media_programs \
             WHERE id IN (SELECT program_id FROM ({played}))"
        ),
        Backend::Postgres => format!(
            "SELECT COALESCE(json_agg(json_build_array({columns}))::text, '[]') \
             FROM media_programs WHERE id IN (SELECT program_id FROM ({played}) AS played)"
        ),
    };
    format!("SELECT ({slots}) AS page, ({programs}) AS programs")
}

/// One channel's timetable statement, for SQLite and for PostgreSQL.
pub(super) static TIMETABLE_JSON: LazyLock<[String; 2]> = LazyLock::new(|| {
    [
        timetable_json_statement(Backend::Sqlite),
        timetable_json_statement(Backend::Postgres),
    ]
});

pub(super) static SLOTS_JSON: LazyLock<[[String; 2]; 2]> = LazyLock::new(|| {
    [
        [
            overlapping_json_statement(Backend::Sqlite, false),
            overlapping_json_statement(Backend::Sqlite, true),
        ],
        [
            overlapping_json_statement(Backend::Postgres, false),
            overlapping_json_statement(Backend::Postgres, true),
        ],
    ]
});

/// The now/next statement for every channel, or for channels `$2…`: per
/// channel, the last slot starting at or before `$1` if it has not ended
/// ("now"), and the first slot starting after `$1` ("next"); one statement
/// for any number of channels.
pub(super) fn now_next_statement(channel_count: Option<usize>) -> String {
    let columns = slot_select("s.");
    let channel_filter = match channel_count {
        Some(count) => format!(" WHERE c.id IN ({})", placeholders(2, count)),
        None => String::new(),
    };
    format!(
        "SELECT 'now', {columns} FROM media_slots s \
         WHERE s.end_time_ms > $1 AND s.id IN (\
           SELECT (SELECT l.id FROM media_slots l WHERE l.channel_id = c.id \
                   AND l.start_time_ms <= $1 ORDER BY l.start_time_ms DESC LIMIT 1) \
           FROM media_channels c{channel_filter}) \
         UNION ALL \
         SELECT 'next', {columns} FROM media_slots s \
         WHERE s.id IN (\
           SELECT (SELECT l.id FROM media_slots l WHERE l.channel_id = c.id \
                   AND l.start_time_ms > $1 ORDER BY l.start_time_ms LIMIT 1) \
           FROM media_channels c{channel_filter})"
    )
}

pub(super) static NOW_NEXT_ALL: LazyLock<String> = LazyLock::new(|| now_next_statement(None));

/// `SELECT <columns> FROM <table> WHERE id IN (…)` for a list of ids.
pub(super) fn by_ids_statement(table: &str, columns: &[&str], count: usize) -> String {
    format!(
        "SELECT {} FROM {table} WHERE id IN ({})",
        columns.join(", "),
        placeholders(1, count)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spaces as SQL reads them: any run of them is one.
    fn words(statement: &str) -> String {
        statement.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn writes_are_the_statements_once_spelled_out() {
        let channels = CHANNEL_COLUMNS.join(", ");
        let programs = PROGRAM_COLUMNS.join(", ");
        let slots = SLOT_COLUMNS.join(", ");
        assert_eq!(
            words(&CHANNELS.insert(1)),
            words(&format!(
                "INSERT INTO media_channels ({channels}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
        );
        assert_eq!(
            words(&CHANNELS.update()),
            words(
                "UPDATE media_channels SET number = $2, name = $3, logo_url = $4, \
                 channel_group = $5, slate_asset_id = $6, comments_enabled = $7, \
                 update_time_ms = $9 WHERE id = $1"
            )
        );
        assert_eq!(
            words(&CHANNELS.upsert()),
            words(&format!(
                "INSERT INTO media_channels ({channels}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (id) DO UPDATE SET number = excluded.number, name = excluded.name, \
                 logo_url = excluded.logo_url, channel_group = excluded.channel_group, \
                 slate_asset_id = excluded.slate_asset_id, comments_enabled = excluded.comments_enabled, \
                 update_time_ms = excluded.update_time_ms"
            ))
        );
        assert_eq!(
            words(&PROGRAMS.update()),
            words(
                "UPDATE media_programs SET title = $2, description = $3, genres = $4, \
                 duration_ms = $5, rating = $6, artwork_url = $7, asset_id = $8, live = $9, \
                 update_time_ms = $11 WHERE id = $1"
            )
        );
        assert_eq!(
            words(&PROGRAMS.upsert()),
            words(&format!(
                "INSERT INTO media_programs ({programs}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (id) DO UPDATE SET title = excluded.title, description = excluded.description, \
                 genres = excluded.genres, duration_ms = excluded.duration_ms, rating = excluded.rating, \
                 artwork_url = excluded.artwork_url, asset_id = excluded.asset_id, live = excluded.live, \
                 update_time_ms = excluded.update_time_ms"
            ))
        );
        // A slot's update keeps its channel; every column is bound, so the
        // program is $3 and the update time $11.
        assert_eq!(
            words(&SLOTS.update()),
            words(
                "UPDATE media_slots SET program_id = $3, start_time_ms = $4, end_time_ms = $5, \
                 live = $6, repeat_of_slot_id = $7, cut = $8, comments_enabled = $9, \
                 update_time_ms = $11 WHERE id = $1"
            )
        );
        assert_eq!(
            words(&SLOTS.insert(2)),
            words(&format!(
                "INSERT INTO media_slots ({slots}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11), \
                 ($12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
            ))
        );
    }
}
