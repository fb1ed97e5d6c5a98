//! The share links and their opens, on SQLite or PostgreSQL.
//!
//! One row per link. A person who shares the same thing twice gets the same
//! link back, so a target's share count is how many people shared it, and
//! pressing the button again and again adds nothing.

use onair_kit::store::{Db, Migration, StoreError};
use sqlx::{Any, Row};

/// The share service's schema, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "share links and their opens",
    sql: "CREATE TABLE share_links (
        code TEXT PRIMARY KEY,
        target_kind TEXT NOT NULL,
        target_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        slot_id TEXT NOT NULL,
        vpos_ms BIGINT NOT NULL,
        creator_id TEXT NOT NULL,
        create_time_ms BIGINT NOT NULL,
        opens BIGINT NOT NULL DEFAULT 0
      );
      CREATE UNIQUE INDEX share_links_once
        ON share_links (creator_id, target_kind, target_id, vpos_ms);
      CREATE INDEX share_links_by_target ON share_links (target_id);
      CREATE INDEX share_links_by_creator ON share_links (creator_id, create_time_ms);",
}];

/// What a link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A channel: the link plays what is on air.
    Channel,
    /// A slot, from a moment of it.
    Slot,
    /// A comment, at its moment of its slot.
    Comment,
}

impl TargetKind {
    /// The kind's name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Channel => "channel",
            TargetKind::Slot => "slot",
            TargetKind::Comment => "comment",
        }
    }

    fn parse(text: &str) -> Option<TargetKind> {
        match text {
            "channel" => Some(TargetKind::Channel),
            "slot" => Some(TargetKind::Slot),
            "comment" => Some(TargetKind::Comment),
            _ => None,
        }
    }
}

/// A share link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    /// The code in `/s/{code}`.
    pub code: String,
    /// What it points at.
    pub kind: TargetKind,
    /// The id of what it points at.
    pub target_id: String,
    /// The channel of the target.
    pub channel_id: String,
    /// The slot of a slot's or a comment's link; empty for a channel's.
    pub slot_id: String,
    /// Where in the slot it starts, in milliseconds from the slot's start.
    pub vpos_ms: i64,
    /// Who made it.
    pub creator_id: String,
    /// When, in Unix milliseconds.
    pub create_time_ms: i64,
}

/// A target's share figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCounts {
    /// The target.
    pub target_id: String,
    /// How many links were made of it (one per person).
    pub shares: i64,
    /// How often they were opened.
    pub opens: i64,
}

/// The share links table.
#[derive(Clone)]
pub struct ShareStore {
    db: Db,
}

const COLUMNS: &str =
    "code, target_kind, target_id, channel_id, slot_id, vpos_ms, creator_id, create_time_ms";

impl ShareStore {
    /// Opens the table in `db`, creating it if needed.
    pub async fn open(db: Db) -> Result<ShareStore, StoreError> {
        db.migrate("share", MIGRATIONS).await?;
        Ok(ShareStore { db })
    }

    /// Stores `link` unless its creator already has a link to the same
    /// place, and returns the link that stands, with whether it is new. The
    /// caller draws the code; `None` means it was taken (draw another).
    pub async fn insert(
        &self,
        link: &ShareRecord,
    ) -> Result<Option<(ShareRecord, bool)>, StoreError> {
        let inserted = sqlx::query::<Any>(sqlx::AssertSqlSafe(format!(
            "INSERT INTO share_links ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT DO NOTHING"
        )))
        .bind(&link.code)
        .bind(link.kind.as_str())
        .bind(&link.target_id)
        .bind(&link.channel_id)
        .bind(&link.slot_id)
        .bind(link.vpos_ms)
        .bind(&link.creator_id)
        .bind(link.create_time_ms)
        .execute(self.db.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Some((link.clone(), true)));
        }
        Ok(self
            .same_place(link)
            .await?
            .map(|existing| (existing, false)))
    }

    /// The link its creator made before to the same place as `link`.
    pub async fn same_place(&self, link: &ShareRecord) -> Result<Option<ShareRecord>, StoreError> {
        let row = sqlx::query::<Any>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM share_links
             WHERE creator_id = $1 AND target_kind = $2 AND target_id = $3 AND vpos_ms = $4"
        )))
        .bind(&link.creator_id)
        .bind(link.kind.as_str())
        .bind(&link.target_id)
        .bind(link.vpos_ms)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(record_of).transpose()
    }

    /// How many links `creator_id` made at or after `since_ms`, and when the
    /// oldest of them was made.
    pub async fn made_since(
        &self,
        creator_id: &str,
        since_ms: i64,
    ) -> Result<(i64, Option<i64>), StoreError> {
        let row = sqlx::query::<Any>(
            "SELECT COUNT(*), MIN(create_time_ms) FROM share_links
             WHERE creator_id = $1 AND create_time_ms >= $2",
        )
        .bind(creator_id)
        .bind(since_ms)
        .fetch_one(self.db.pool())
        .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// The link with `code`, if there is one.
    pub async fn get(&self, code: &str) -> Result<Option<ShareRecord>, StoreError> {
        let row = sqlx::query::<Any>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM share_links WHERE code = $1"
        )))
        .bind(code)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(record_of).transpose()
    }

    /// The share figures of each of `target_ids` that has a link, in no
    /// particular order.
    pub async fn counts(&self, target_ids: &[String]) -> Result<Vec<TargetCounts>, StoreError> {
        if target_ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=target_ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT target_id, COUNT(*), CAST(COALESCE(SUM(opens), 0) AS BIGINT) FROM share_links
             WHERE target_id IN ({}) GROUP BY target_id",
            placeholders.join(", ")
        );
        // Only placeholders are written into the statement; the ids are bound.
        let mut query = sqlx::query::<Any>(sqlx::AssertSqlSafe(sql));
        for id in target_ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        Ok(rows
            .iter()
            .map(|row| TargetCounts {
                target_id: row.get(0),
                shares: row.get(1),
                opens: row.get(2),
            })
            .collect())
    }

    /// Adds the opens counted of each link, in one transaction.
    pub async fn add_opens(&self, opens: &[(String, i64)]) -> Result<(), StoreError> {
        if opens.is_empty() {
            return Ok(());
        }
        let mut transaction = self.db.pool().begin().await?;
        for (code, count) in opens {
            sqlx::query::<Any>("UPDATE share_links SET opens = opens + $1 WHERE code = $2")
                .bind(*count)
                .bind(code)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}

fn record_of(row: &sqlx::any::AnyRow) -> Result<ShareRecord, StoreError> {
    let kind: String = row.get(1);
    let kind = TargetKind::parse(&kind)
        .ok_or_else(|| StoreError::Query(format!("share link of unknown kind {kind:?}")))?;
    Ok(ShareRecord {
        code: row.get(0),
        kind,
        target_id: row.get(2),
        channel_id: row.get(3),
        slot_id: row.get(4),
        vpos_ms: row.get(5),
        creator_id: row.get(6),
        create_time_ms: row.get(7),
    })
}
