//! The reads by id that both the pool ([`MediaStore`](super::MediaStore))
//! and a write transaction ([`ScheduleWrite`](super::ScheduleWrite)) make,
//! written once for any executor.

use sqlx::{Any, Executor};

use super::rows::{channel_at, program_at, slot_at};
use super::statements::{
    CHANNEL_COLUMNS, PROGRAM_COLUMNS, STATEMENTS, by_ids_statement, placeholders, slot_select,
};
use crate::model::{ChannelRecord, ProgramRecord, SlotRecord};

pub(super) async fn fetch_channel<'e, E>(
    executor: E,
    id: &str,
) -> Result<Option<ChannelRecord>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query(STATEMENTS.channel_by_id.as_str())
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(|row| channel_at(row, 0)).transpose()
}

pub(super) async fn fetch_all_channels<'e, E>(
    executor: E,
) -> Result<Vec<ChannelRecord>, sqlx::Error>
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

pub(super) async fn fetch_channels<'e, E>(
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

pub(super) async fn fetch_program<'e, E>(
    executor: E,
    id: &str,
) -> Result<Option<ProgramRecord>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query(STATEMENTS.program_by_id.as_str())
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(|row| program_at(row, 0)).transpose()
}

pub(super) async fn fetch_programs<'e, E>(
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

pub(super) async fn fetch_slot<'e, E>(
    executor: E,
    id: &str,
) -> Result<Option<SlotRecord>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query(STATEMENTS.slot_by_id.as_str())
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(|row| slot_at(row, 0)).transpose()
}

pub(super) async fn fetch_slots<'e, E>(
    executor: E,
    ids: &[String],
) -> Result<Vec<SlotRecord>, sqlx::Error>
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
