//! The media service's tables, on SQLite or PostgreSQL.
//!
//! Reads go straight to the pool. Every write to the schedule goes through a
//! [`ScheduleWrite`]: one transaction that first takes the write locks of the
//! channels it touches, so that "is this time free?" and "put the slot there"
//! happen as one step and two concurrent writers can never both win. On
//! PostgreSQL the locks are transaction-scoped advisory locks, one per
//! channel, so writers to different channels don't wait for each other; on
//! SQLite the transaction starts with `BEGIN IMMEDIATE`, which takes the
//! database's single write lock up front (a deferred `BEGIN` would let two
//! writers read the same free time and then fail on upgrading their lock).

use std::collections::HashMap;
use std::sync::LazyLock;

use onair_kit::store::{Backend, Db, Migration, StoreError};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row, Transaction};

use crate::model::{ChannelRecord, ProgramRecord, SlotRecord};

/// The media service's schema, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "channels, programs and slots",
    sql: "CREATE TABLE media_channels (
            id TEXT PRIMARY KEY,
            number BIGINT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            logo_url TEXT NOT NULL,
            channel_group TEXT NOT NULL,
            slate_asset_id TEXT NOT NULL,
            comments_enabled BIGINT NOT NULL,
            create_time_ms BIGINT NOT NULL,
            update_time_ms BIGINT NOT NULL
          );
          CREATE TABLE media_programs (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            description TEXT NOT NULL,
            genres TEXT NOT NULL,
            duration_ms BIGINT NOT NULL,
            rating TEXT NOT NULL,
            artwork_url TEXT NOT NULL,
            asset_id TEXT NOT NULL,
            live BIGINT NOT NULL,
            create_time_ms BIGINT NOT NULL,
            update_time_ms BIGINT NOT NULL
          );
          CREATE TABLE media_slots (
            id TEXT PRIMARY KEY,
            channel_id TEXT NOT NULL REFERENCES media_channels (id),
            program_id TEXT NOT NULL REFERENCES media_programs (id),
            start_time_ms BIGINT NOT NULL,
            end_time_ms BIGINT NOT NULL,
            live BIGINT NOT NULL,
            repeat_of_slot_id TEXT NOT NULL,
            cut BIGINT NOT NULL,
            comments_enabled BIGINT NOT NULL,
            create_time_ms BIGINT NOT NULL,
            update_time_ms BIGINT NOT NULL,
            CHECK (end_time_ms > start_time_ms)
          );
          -- One channel's schedule in time order: overlap checks, now/next and
          -- one channel's timetable are index seeks. Unique because two slots
          -- of a channel never start together; a last guard under the overlap rule.
          CREATE UNIQUE INDEX media_slots_by_channel_start ON media_slots (channel_id, start_time_ms);
          -- Every channel's slots starting in a range: the all-channel timetable.
          CREATE INDEX media_slots_by_start ON media_slots (start_time_ms);
          -- A program's slots, checked when its duration changes.
          CREATE INDEX media_slots_by_program ON media_slots (program_id);",
}];

/// How many slots one INSERT statement carries during an import: large enough
/// to make a 30,000-slot import take few round trips, small enough to stay
/// far below both engines' limit on bound parameters.
const SLOT_INSERT_BATCH: usize = 200;

const CHANNEL_COLUMNS: &[&str] = &[
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

const PROGRAM_COLUMNS: &[&str] = &[
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

const SLOT_COLUMNS: &[&str] = &[
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

/// What a read of slots selects, for a table alias (`"s."`, or `""`): the
/// three flags travel packed in one number, because on a big timetable every
/// value read costs (the `Any` driver copies each one).
fn slot_select(prefix: &str) -> String {
    format!(
        "{prefix}id, {prefix}channel_id, {prefix}program_id, {prefix}start_time_ms, \
         {prefix}end_time_ms, {prefix}repeat_of_slot_id, \
         {prefix}live + 2 * {prefix}cut + 4 * {prefix}comments_enabled, \
         {prefix}create_time_ms, {prefix}update_time_ms"
    )
}

/// The bits of the packed slot flags.
const LIVE_FLAG: i64 = 1;
const CUT_FLAG: i64 = 2;
const COMMENTS_FLAG: i64 = 4;

/// `$first, $first+1, …` for `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    let mut parts = Vec::with_capacity(count);
    for index in first..first + count {
        parts.push(format!("${index}"));
    }
    parts.join(", ")
}

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

// Rows are read by position: the column lists above fix the order, and
// joined rows put one entity's columns after another's.

fn channel_at(row: &AnyRow, at: usize) -> Result<ChannelRecord, sqlx::Error> {
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

fn program_at(row: &AnyRow, at: usize) -> Result<ProgramRecord, sqlx::Error> {
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

/// A slot from the columns of [`slot_select`].
fn slot_at(row: &AnyRow, at: usize) -> Result<SlotRecord, sqlx::Error> {
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

/// Statements built once from the column lists.
struct Statements {
    channel_by_id: String,
    channel_by_number: String,
    channels_all: String,
    channels_after: String,
    program_by_id: String,
    programs_after: String,
    slot_by_id: String,
    /// The last slot of a channel starting before an instant (excluding one
    /// slot): since a channel's slots never overlap, it is the only one that
    /// can overlap a range ending at that instant.
    slot_before: String,
    slot_before_excluding: String,
    /// The slots of one channel near a range: the one straddling its start
    /// and those starting inside it.
    slots_near: String,
    short_slot_of_program: String,
    insert_channel: String,
    update_channel: String,
    upsert_channel: String,
    insert_program: String,
    update_program: String,
    upsert_program: String,
    update_slot: String,
}

static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
    let channels = CHANNEL_COLUMNS.join(", ");
    let programs = PROGRAM_COLUMNS.join(", ");
    let slots = slot_select("");
    let channel_updates = "number = $2, name = $3, logo_url = $4, channel_group = $5, \
         slate_asset_id = $6, comments_enabled = $7, update_time_ms = $9";
    let program_updates = "title = $2, description = $3, genres = $4, duration_ms = $5, \
         rating = $6, artwork_url = $7, asset_id = $8, live = $9, update_time_ms = $11";
    let upsert_channel_updates = "number = excluded.number, name = excluded.name, \
         logo_url = excluded.logo_url, channel_group = excluded.channel_group, \
         slate_asset_id = excluded.slate_asset_id, comments_enabled = excluded.comments_enabled, \
         update_time_ms = excluded.update_time_ms";
    let upsert_program_updates = "title = excluded.title, description = excluded.description, \
         genres = excluded.genres, duration_ms = excluded.duration_ms, rating = excluded.rating, \
         artwork_url = excluded.artwork_url, asset_id = excluded.asset_id, live = excluded.live, \
         update_time_ms = excluded.update_time_ms";
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
        insert_channel: format!(
            "INSERT INTO media_channels ({channels}) VALUES ({})",
            placeholders(1, CHANNEL_COLUMNS.len())
        ),
        update_channel: format!("UPDATE media_channels SET {channel_updates} WHERE id = $1"),
        upsert_channel: format!(
            "INSERT INTO media_channels ({channels}) VALUES ({}) \
             ON CONFLICT (id) DO UPDATE SET {upsert_channel_updates}",
            placeholders(1, CHANNEL_COLUMNS.len())
        ),
        insert_program: format!(
            "INSERT INTO media_programs ({programs}) VALUES ({})",
            placeholders(1, PROGRAM_COLUMNS.len())
        ),
        update_program: format!("UPDATE media_programs SET {program_updates} WHERE id = $1"),
        upsert_program: format!(
            "INSERT INTO media_programs ({programs}) VALUES ({}) \
             ON CONFLICT (id) DO UPDATE SET {upsert_program_updates}",
            placeholders(1, PROGRAM_COLUMNS.len())
        ),
        update_slot: "UPDATE media_slots SET program_id = $2, start_time_ms = $3, \
             end_time_ms = $4, live = $5, repeat_of_slot_id = $6, cut = $7, \
             comments_enabled = $8, update_time_ms = $9 WHERE id = $1"
            .to_owned(),
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
static TIMETABLE_JSON: LazyLock<[String; 2]> = LazyLock::new(|| {
    [
        timetable_json_statement(Backend::Sqlite),
        timetable_json_statement(Backend::Postgres),
    ]
});

/// A program as [`PROGRAM_COLUMNS`] in a JSON array.
type JsonProgram = (
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

fn program_from_json(program: JsonProgram) -> ProgramRecord {
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

static SLOTS_JSON: LazyLock<[[String; 2]; 2]> = LazyLock::new(|| {
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

/// A slot as [`JSON_SLOT_COLUMNS`] in a JSON page.
type JsonSlot = (String, String, String, i64, i64, String, i64, i64, i64);

fn slot_from_json(slot: JsonSlot) -> SlotRecord {
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

/// The now/next statement for every channel, or for channels `$2…`: per
/// channel, the last slot starting at or before `$1` if it has not ended
/// ("now"), and the first slot starting after `$1` ("next"); one statement
/// for any number of channels.
fn now_next_statement(channel_count: Option<usize>) -> String {
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

static NOW_NEXT_ALL: LazyLock<String> = LazyLock::new(|| now_next_statement(None));

/// Slots with their programs, as timetables and now/next show them. Each
/// program is read once however many slots play it: a day of a channel
/// repeats a few programs many times.
#[derive(Debug, Clone)]
pub struct SlotsWithPrograms<T> {
    /// The slots (or positioned slots), in no particular order.
    pub slots: Vec<T>,
    /// Every program the slots play, by id.
    pub programs: HashMap<String, ProgramRecord>,
}

/// Which of a channel's now/next a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NowNextPosition {
    /// On air at the asked instant.
    Now,
    /// The first slot starting after it.
    Next,
}

/// What a write transaction must hold before it reads what it will change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteLock {
    /// The schedule of one channel: creating, moving or deleting its slots.
    Channel(String),
    /// Channel numbers: creating channels or renumbering them.
    ChannelNumbers,
}

impl WriteLock {
    /// The PostgreSQL advisory lock key: a stable 64-bit hash (FNV-1a) of a
    /// name, so every process derives the same key.
    fn key(&self) -> i64 {
        let name = match self {
            WriteLock::Channel(id) => format!("onair.media.schedule.{id}"),
            WriteLock::ChannelNumbers => "onair.media.channel-numbers".to_owned(),
        };
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }
}

/// The media service's data access.
#[derive(Clone, Debug)]
pub struct MediaStore {
    db: Db,
}

impl MediaStore {
    /// Runs the media service's migrations and returns the store.
    pub async fn open(db: Db) -> Result<MediaStore, StoreError> {
        db.migrate("media", MIGRATIONS).await?;
        Ok(MediaStore { db })
    }

    /// The database, for readiness checks.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Starts a write transaction holding `locks` (see the module docs).
    pub async fn begin_write(&self, locks: &[WriteLock]) -> Result<ScheduleWrite, StoreError> {
        let tx = match self.db.backend() {
            Backend::Sqlite => self.db.pool().begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.db.pool().begin().await?;
                // Always in ascending key order, so two writers that need the
                // same locks cannot deadlock.
                let mut keys: Vec<i64> = locks.iter().map(WriteLock::key).collect();
                keys.sort_unstable();
                keys.dedup();
                for key in keys {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
                tx
            }
        };
        Ok(ScheduleWrite { tx })
    }

    /// The channel with this id, if any.
    pub async fn channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        Ok(fetch_channel(self.db.pool(), id).await?)
    }

    /// The channels with the given ids, in no particular order; unknown ids
    /// are left out.
    pub async fn channels(&self, ids: &[String]) -> Result<Vec<ChannelRecord>, StoreError> {
        Ok(fetch_channels(self.db.pool(), ids).await?)
    }

    /// Every channel, by number.
    pub async fn all_channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        Ok(fetch_all_channels(self.db.pool()).await?)
    }

    /// The ids of the channels with a slot of the program, at any time.
    pub async fn channels_playing(&self, program_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT channel_id FROM media_slots WHERE program_id = $1")
            .bind(program_id)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }

    /// Up to `limit` channels numbered above `after_number`, by number.
    pub async fn channels_after(
        &self,
        after_number: i64,
        limit: i64,
    ) -> Result<Vec<ChannelRecord>, StoreError> {
        let rows = sqlx::query(STATEMENTS.channels_after.as_str())
            .bind(after_number)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        let mut channels = Vec::with_capacity(rows.len());
        for row in &rows {
            channels.push(channel_at(row, 0)?);
        }
        Ok(channels)
    }

    /// The program with this id, if any.
    pub async fn program(&self, id: &str) -> Result<Option<ProgramRecord>, StoreError> {
        Ok(fetch_program(self.db.pool(), id).await?)
    }

    /// The programs with the given ids, in no particular order.
    pub async fn programs(&self, ids: &[String]) -> Result<Vec<ProgramRecord>, StoreError> {
        Ok(fetch_programs(self.db.pool(), ids).await?)
    }

    /// Up to `limit` programs whose id sorts after `after_id`, by id.
    pub async fn programs_after(
        &self,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<ProgramRecord>, StoreError> {
        let rows = sqlx::query(STATEMENTS.programs_after.as_str())
            .bind(after_id)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        let mut programs = Vec::with_capacity(rows.len());
        for row in &rows {
            programs.push(program_at(row, 0)?);
        }
        Ok(programs)
    }

    /// The slot with this id, if any.
    pub async fn slot(&self, id: &str) -> Result<Option<SlotRecord>, StoreError> {
        Ok(fetch_slot(self.db.pool(), id).await?)
    }

    /// The slots with the given ids, in no particular order.
    pub async fn slots(&self, ids: &[String]) -> Result<Vec<SlotRecord>, StoreError> {
        Ok(fetch_slots(self.db.pool(), ids).await?)
    }

    /// The slots of one channel that overlap [start, end), in no particular
    /// order, with their programs: one statement, whatever the number of
    /// slots.
    pub async fn timetable(
        &self,
        channel_id: &str,
        start_time_ms: i64,
        end_time_ms: i64,
    ) -> Result<SlotsWithPrograms<SlotRecord>, StoreError> {
        let row = sqlx::query(TIMETABLE_JSON[self.backend_index()].as_str())
            .bind(start_time_ms)
            .bind(end_time_ms)
            .bind(channel_id)
            .fetch_one(self.db.pool())
            .await?;
        let page: String = row.try_get("page")?;
        let programs: String = row.try_get("programs")?;
        let slots: Vec<JsonSlot> = serde_json::from_str(&page).map_err(|error| {
            StoreError::Query(format!("a timetable page does not parse: {error}"))
        })?;
        let programs: Vec<JsonProgram> = serde_json::from_str(&programs).map_err(|error| {
            StoreError::Query(format!("a timetable's programs do not parse: {error}"))
        })?;
        Ok(SlotsWithPrograms {
            slots: slots.into_iter().map(slot_from_json).collect(),
            programs: programs
                .into_iter()
                .map(|program| {
                    let program = program_from_json(program);
                    (program.id.clone(), program)
                })
                .collect(),
        })
    }

    /// 0 for SQLite, 1 for PostgreSQL: the index of a statement built for each.
    fn backend_index(&self) -> usize {
        match self.db.backend() {
            Backend::Sqlite => 0,
            Backend::Postgres => 1,
        }
    }

    /// The programs the slots play, each read once, in one statement.
    async fn programs_of<'a>(
        &self,
        slots: impl Iterator<Item = &'a SlotRecord>,
    ) -> Result<HashMap<String, ProgramRecord>, StoreError> {
        let mut ids: Vec<String> = slots.map(|slot| slot.program_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let programs = fetch_programs(self.db.pool(), &ids).await?;
        Ok(programs
            .into_iter()
            .map(|program| (program.id.clone(), program))
            .collect())
    }

    /// The slots of one channel (or all) that overlap [start, end), without
    /// programs, in no particular order; one statement.
    pub async fn slots_overlapping(
        &self,
        channel_id: Option<&str>,
        start_time_ms: i64,
        end_time_ms: i64,
    ) -> Result<Vec<SlotRecord>, StoreError> {
        let statement =
            SLOTS_JSON[self.backend_index()][usize::from(channel_id.is_some())].as_str();
        let mut query = sqlx::query(statement).bind(start_time_ms).bind(end_time_ms);
        if let Some(channel_id) = channel_id {
            query = query.bind(channel_id);
        }
        let row = query.fetch_one(self.db.pool()).await?;
        let page: String = row.try_get("page")?;
        let slots: Vec<JsonSlot> = serde_json::from_str(&page).map_err(|error| {
            StoreError::Query(format!("a timetable page does not parse: {error}"))
        })?;
        Ok(slots.into_iter().map(slot_from_json).collect())
    }

    /// Now and next at `now_ms` for the given channels (all when `None`), in
    /// one statement; a channel with neither has no rows.
    pub async fn now_next(
        &self,
        channel_ids: Option<&[String]>,
        now_ms: i64,
    ) -> Result<SlotsWithPrograms<(NowNextPosition, SlotRecord)>, StoreError> {
        let built;
        let statement = match channel_ids {
            Some(ids) => {
                if ids.is_empty() {
                    return Ok(SlotsWithPrograms {
                        slots: Vec::new(),
                        programs: HashMap::new(),
                    });
                }
                built = now_next_statement(Some(ids.len()));
                built.as_str()
            }
            None => NOW_NEXT_ALL.as_str(),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(now_ms);
        for id in channel_ids.unwrap_or_default() {
            query = query.bind(id);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        let mut slots = Vec::with_capacity(rows.len());
        for row in &rows {
            let position: String = row.try_get(0)?;
            let position = if position == "now" {
                NowNextPosition::Now
            } else {
                NowNextPosition::Next
            };
            slots.push((position, slot_at(row, 1)?));
        }
        let programs = self.programs_of(slots.iter().map(|(_, slot)| slot)).await?;
        Ok(SlotsWithPrograms { slots, programs })
    }
}

/// A write transaction over the schedule, holding its locks until it commits
/// or is dropped (which rolls it back).
pub struct ScheduleWrite {
    tx: Transaction<'static, Any>,
}

impl ScheduleWrite {
    /// Makes every change of the transaction visible, at once.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Drops every change of the transaction.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }

    /// The channel with this id, if any, as this transaction sees it.
    pub async fn channel(&mut self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        Ok(fetch_channel(&mut *self.tx, id).await?)
    }

    /// The channels with the given ids, in no particular order.
    pub async fn channels(&mut self, ids: &[String]) -> Result<Vec<ChannelRecord>, StoreError> {
        Ok(fetch_channels(&mut *self.tx, ids).await?)
    }

    /// Every channel, by number.
    pub async fn all_channels(&mut self) -> Result<Vec<ChannelRecord>, StoreError> {
        Ok(fetch_all_channels(&mut *self.tx).await?)
    }

    /// The channel that has this number, if any.
    pub async fn channel_with_number(
        &mut self,
        number: i64,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let row = sqlx::query(STATEMENTS.channel_by_number.as_str())
            .bind(number)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.as_ref().map(|row| channel_at(row, 0)).transpose()?)
    }

    /// The number after the highest one in use.
    pub async fn next_channel_number(&mut self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(number), 0) + 1 AS next FROM media_channels")
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get("next")?)
    }

    /// Inserts a channel; false when its id or number is taken.
    pub async fn insert_channel(&mut self, channel: &ChannelRecord) -> Result<bool, StoreError> {
        let result = bind_channel(sqlx::query(STATEMENTS.insert_channel.as_str()), channel)
            .execute(&mut *self.tx)
            .await;
        inserted(result)
    }

    /// Writes every field of a channel but its id and creation time.
    pub async fn update_channel(&mut self, channel: &ChannelRecord) -> Result<(), StoreError> {
        bind_channel(sqlx::query(STATEMENTS.update_channel.as_str()), channel)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Inserts a channel, or replaces the one with its id (keeping its
    /// creation time).
    pub async fn upsert_channel(&mut self, channel: &ChannelRecord) -> Result<(), StoreError> {
        bind_channel(sqlx::query(STATEMENTS.upsert_channel.as_str()), channel)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The program with this id, if any, as this transaction sees it.
    pub async fn program(&mut self, id: &str) -> Result<Option<ProgramRecord>, StoreError> {
        Ok(fetch_program(&mut *self.tx, id).await?)
    }

    /// The programs with the given ids, in no particular order.
    pub async fn programs(&mut self, ids: &[String]) -> Result<Vec<ProgramRecord>, StoreError> {
        Ok(fetch_programs(&mut *self.tx, ids).await?)
    }

    /// Inserts a program; false when its id is taken.
    pub async fn insert_program(&mut self, program: &ProgramRecord) -> Result<bool, StoreError> {
        let result = bind_program(sqlx::query(STATEMENTS.insert_program.as_str()), program)
            .execute(&mut *self.tx)
            .await;
        inserted(result)
    }

    /// Writes every field of a program but its id and creation time.
    pub async fn update_program(&mut self, program: &ProgramRecord) -> Result<(), StoreError> {
        bind_program(sqlx::query(STATEMENTS.update_program.as_str()), program)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Inserts a program, or replaces the one with its id (keeping its
    /// creation time).
    pub async fn upsert_program(&mut self, program: &ProgramRecord) -> Result<(), StoreError> {
        bind_program(sqlx::query(STATEMENTS.upsert_program.as_str()), program)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The slot with this id, if any, as this transaction sees it.
    pub async fn slot(&mut self, id: &str) -> Result<Option<SlotRecord>, StoreError> {
        Ok(fetch_slot(&mut *self.tx, id).await?)
    }

    /// The slots with the given ids, in no particular order.
    pub async fn slots(&mut self, ids: &[String]) -> Result<Vec<SlotRecord>, StoreError> {
        Ok(fetch_slots(&mut *self.tx, ids).await?)
    }

    /// A slot of `channel_id` that overlaps [start, end), other than
    /// `excluding` (the slot being moved), if there is one.
    pub async fn conflicting_slot(
        &mut self,
        channel_id: &str,
        start_time_ms: i64,
        end_time_ms: i64,
        excluding: Option<&str>,
    ) -> Result<Option<SlotRecord>, StoreError> {
        let row = match excluding {
            Some(excluded_id) => {
                sqlx::query(STATEMENTS.slot_before_excluding.as_str())
                    .bind(channel_id)
                    .bind(end_time_ms)
                    .bind(excluded_id)
                    .fetch_optional(&mut *self.tx)
                    .await?
            }
            None => {
                sqlx::query(STATEMENTS.slot_before.as_str())
                    .bind(channel_id)
                    .bind(end_time_ms)
                    .fetch_optional(&mut *self.tx)
                    .await?
            }
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let candidate = slot_at(&row, 0)?;
        Ok(candidate
            .overlaps(start_time_ms, end_time_ms)
            .then_some(candidate))
    }

    /// The slots of `channel_id` that overlap [start, end).
    pub async fn slots_near(
        &mut self,
        channel_id: &str,
        start_time_ms: i64,
        end_time_ms: i64,
    ) -> Result<Vec<SlotRecord>, StoreError> {
        let rows = sqlx::query(STATEMENTS.slots_near.as_str())
            .bind(channel_id)
            .bind(start_time_ms)
            .bind(end_time_ms)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut slots = Vec::with_capacity(rows.len());
        for row in &rows {
            slots.push(slot_at(row, 0)?);
        }
        Ok(slots)
    }

    /// A slot of the program, not cut and not over by `after_ms`, that is
    /// shorter than `duration_ms`: what a longer program would no longer fit.
    pub async fn short_slot_of_program(
        &mut self,
        program_id: &str,
        duration_ms: i64,
        after_ms: i64,
    ) -> Result<Option<SlotRecord>, StoreError> {
        let row = sqlx::query(STATEMENTS.short_slot_of_program.as_str())
            .bind(program_id)
            .bind(after_ms)
            .bind(duration_ms)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.as_ref().map(|row| slot_at(row, 0)).transpose()?)
    }

    /// Inserts a slot; false when its id (or its start on its channel) is taken.
    pub async fn insert_slot(&mut self, slot: &SlotRecord) -> Result<bool, StoreError> {
        self.insert_slots(std::slice::from_ref(slot)).await
    }

    /// Inserts slots, many per statement; false when an id (or a start on a
    /// channel) is taken, and then the transaction must be dropped.
    pub async fn insert_slots(&mut self, slots: &[SlotRecord]) -> Result<bool, StoreError> {
        let columns = SLOT_COLUMNS.join(", ");
        for batch in slots.chunks(SLOT_INSERT_BATCH) {
            let mut rows = Vec::with_capacity(batch.len());
            for index in 0..batch.len() {
                let first = index * SLOT_COLUMNS.len() + 1;
                rows.push(format!("({})", placeholders(first, SLOT_COLUMNS.len())));
            }
            let statement = format!(
                "INSERT INTO media_slots ({columns}) VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
            for slot in batch {
                query = query
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
                    .bind(slot.update_time_ms);
            }
            if !inserted(query.execute(&mut *self.tx).await)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes a slot's program, times and flags; its channel never changes.
    pub async fn update_slot(&mut self, slot: &SlotRecord) -> Result<(), StoreError> {
        sqlx::query(STATEMENTS.update_slot.as_str())
            .bind(&slot.id)
            .bind(&slot.program_id)
            .bind(slot.start_time_ms)
            .bind(slot.end_time_ms)
            .bind(int_from(slot.live))
            .bind(&slot.repeat_of_slot_id)
            .bind(int_from(slot.cut))
            .bind(int_from(slot.comments_enabled))
            .bind(slot.update_time_ms)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Removes a slot.
    pub async fn delete_slot(&mut self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM media_slots WHERE id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

/// Whether an INSERT went in: `Ok(false)` for a unique-constraint violation
/// (a taken id or number), so the service can say which rule was broken.
fn inserted(result: Result<sqlx::any::AnyQueryResult, sqlx::Error>) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Ok(false),
        Err(error) => Err(StoreError::from(error)),
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

fn bind_channel<'q>(query: AnyQuery<'q>, channel: &ChannelRecord) -> AnyQuery<'q> {
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

fn bind_program<'q>(query: AnyQuery<'q>, program: &ProgramRecord) -> AnyQuery<'q> {
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

async fn fetch_channel<'e, E>(executor: E, id: &str) -> Result<Option<ChannelRecord>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query(STATEMENTS.channel_by_id.as_str())
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(|row| channel_at(row, 0)).transpose()
}

async fn fetch_all_channels<'e, E>(executor: E) -> Result<Vec<ChannelRecord>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let rows = sqlx::query(STATEMENTS.channels_all.as_str())
        .fetch_all(executor)
        .await?;
    let mut channels = Vec::with_capacity(rows.len());
    for row in &rows {
        channels.push(channel_at(row, 0)?);
    }
    Ok(channels)
}

/// `SELECT <columns> FROM <table> WHERE id IN (…)` for a list of ids.
fn by_ids_statement(table: &str, columns: &[&str], count: usize) -> String {
    format!(
        "SELECT {} FROM {table} WHERE id IN ({})",
        columns.join(", "),
        placeholders(1, count)
    )
}

async fn fetch_channels<'e, E>(
    executor: E,
    ids: &[String],
) -> Result<Vec<ChannelRecord>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let statement = by_ids_statement("media_channels", CHANNEL_COLUMNS, ids.len());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
    for id in ids {
        query = query.bind(id);
    }
    let rows = query.fetch_all(executor).await?;
    let mut channels = Vec::with_capacity(rows.len());
    for row in &rows {
        channels.push(channel_at(row, 0)?);
    }
    Ok(channels)
}

async fn fetch_program<'e, E>(executor: E, id: &str) -> Result<Option<ProgramRecord>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query(STATEMENTS.program_by_id.as_str())
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(|row| program_at(row, 0)).transpose()
}

async fn fetch_programs<'e, E>(
    executor: E,
    ids: &[String],
) -> Result<Vec<ProgramRecord>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let statement = by_ids_statement("media_programs", PROGRAM_COLUMNS, ids.len());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
    for id in ids {
        query = query.bind(id);
    }
    let rows = query.fetch_all(executor).await?;
    let mut programs = Vec::with_capacity(rows.len());
    for row in &rows {
        programs.push(program_at(row, 0)?);
    }
    Ok(programs)
}

async fn fetch_slot<'e, E>(executor: E, id: &str) -> Result<Option<SlotRecord>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query(STATEMENTS.slot_by_id.as_str())
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(|row| slot_at(row, 0)).transpose()
}

async fn fetch_slots<'e, E>(executor: E, ids: &[String]) -> Result<Vec<SlotRecord>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let statement = format!(
        "SELECT {} FROM media_slots WHERE id IN ({})",
        slot_select(""),
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
    for id in ids {
        query = query.bind(id);
    }
    let rows = query.fetch_all(executor).await?;
    let mut slots = Vec::with_capacity(rows.len());
    for row in &rows {
        slots.push(slot_at(row, 0)?);
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        let news = WriteLock::Channel("news-1".to_owned());
        assert_eq!(news.key(), WriteLock::Channel("news-1".to_owned()).key());
        assert_ne!(news.key(), WriteLock::Channel("news-2".to_owned()).key());
        assert_ne!(news.key(), WriteLock::ChannelNumbers.key());
    }

    #[test]
    fn genres_round_trip() {
        let genres = vec!["News".to_owned(), "Sports".to_owned()];
        assert_eq!(genres_from_text(&genres_to_text(&genres)), genres);
        assert!(genres_from_text(&genres_to_text(&[])).is_empty());
    }
}
