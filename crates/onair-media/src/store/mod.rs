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
//!
//! The pieces: `statements` holds the SQL, built once from the column
//! lists; `rows` turns records into bound values and rows back into
//! records; `reads` the reads by id both the pool and a transaction make;
//! `schedule_write` the write transaction.

mod reads;
mod rows;
mod schedule_write;
mod statements;

use std::collections::HashMap;

use onair_kit::store::{Backend, Db, Migration, StoreError};
use sqlx::Row;

use crate::model::{ChannelRecord, ProgramRecord, SlotRecord};
use reads::{
    fetch_all_channels, fetch_channel, fetch_channels, fetch_program, fetch_programs, fetch_slot,
    fetch_slots,
};
use rows::{
    JsonProgram, JsonSlot, channel_at, program_at, program_from_json, slot_at, slot_from_json,
};
use statements::{NOW_NEXT_ALL, SLOTS_JSON, STATEMENTS, TIMETABLE_JSON, now_next_statement};

pub use schedule_write::ScheduleWrite;

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
        Ok(ScheduleWrite::new(tx))
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
}
