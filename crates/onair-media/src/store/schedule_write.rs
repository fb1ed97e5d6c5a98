//! Writes to the schedule: one transaction holding the write locks of what
//! it changes (see [the store's docs](super)), through which every create,
//! change, delete and import goes.

use onair_kit::store::StoreError;
use sqlx::{Any, Row, Transaction};

use super::reads::{
    fetch_all_channels, fetch_channel, fetch_channels, fetch_program, fetch_programs, fetch_slot,
    fetch_slots,
};
use super::rows::{bind_channel, bind_program, bind_slot, channel_at, slot_at};
use super::statements::{SLOTS, STATEMENTS};
use crate::model::{ChannelRecord, ProgramRecord, SlotRecord};

/// How many slots one INSERT statement carries during an import: large enough
/// to make a 30,000-slot import take few round trips, small enough to stay
/// far below both engines' limit on bound parameters.
const SLOT_INSERT_BATCH: usize = 200;

/// A write transaction over the schedule, holding its locks until it commits
/// or is dropped (which rolls it back).
pub struct ScheduleWrite {
    tx: Transaction<'static, Any>,
}

impl ScheduleWrite {
    /// Wraps a transaction that already holds its locks.
    pub(super) fn new(tx: Transaction<'static, Any>) -> ScheduleWrite {
        ScheduleWrite { tx }
    }

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
        for batch in slots.chunks(SLOT_INSERT_BATCH) {
            let statement = SLOTS.insert(batch.len());
            let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
            for slot in batch {
                query = bind_slot(query, slot);
            }
            if !inserted(query.execute(&mut *self.tx).await)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes a slot's program, times and flags; its channel never changes.
    pub async fn update_slot(&mut self, slot: &SlotRecord) -> Result<(), StoreError> {
        bind_slot(sqlx::query(STATEMENTS.update_slot.as_str()), slot)
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
