//! The playout service's tables, on SQLite or PostgreSQL: assets, every
//! segment each channel has aired (what makes sequence numbers survive a
//! restart and what replay plays), stream keys and received live segments.
//!
//! Rows only, never video: the segment files themselves are in
//! [`segment_store`](crate::segment_store), and the in-memory copy of the
//! playable assets' segment lists that the timeline reads is the
//! [`asset_index`](crate::asset_index), loaded from these tables at start.

use onair_kit::store::{Db, Migration};
use onair_proto::playout::v1 as pb;
use sha2::Digest;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::PlayoutError;
use crate::timeline::{Entry, EntryKind, LiveSegment};

/// The playout service's schema, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "assets, aired entries, stream keys, live segments",
    sql: "CREATE TABLE playout_assets (
            id TEXT PRIMARY KEY,
            source_path TEXT NOT NULL,
            state BIGINT NOT NULL,
            duration_ms BIGINT NOT NULL,
            segment_durations_ms TEXT NOT NULL,
            renditions TEXT NOT NULL,
            error TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            create_time_ms BIGINT NOT NULL,
            update_time_ms BIGINT NOT NULL
          );
          CREATE TABLE playout_entries (
            channel_id TEXT NOT NULL,
            media_sequence BIGINT NOT NULL,
            slot_id TEXT NOT NULL,
            kind BIGINT NOT NULL,
            source_id TEXT NOT NULL,
            segment_index BIGINT NOT NULL,
            duration_ms BIGINT NOT NULL,
            pdt_ms BIGINT NOT NULL,
            discontinuity_number BIGINT NOT NULL,
            discontinuity BIGINT NOT NULL,
            PRIMARY KEY (channel_id, media_sequence)
          );
          -- A slot's aired segments in order: replay.
          CREATE INDEX playout_entries_by_slot ON playout_entries (slot_id, media_sequence);
          CREATE TABLE playout_stream_keys (
            key_hash TEXT PRIMARY KEY,
            slot_id TEXT NOT NULL UNIQUE,
            channel_id TEXT NOT NULL,
            create_time_ms BIGINT NOT NULL
          );
          CREATE TABLE playout_live_segments (
            slot_id TEXT NOT NULL,
            sequence BIGINT NOT NULL,
            file TEXT NOT NULL,
            duration_ms BIGINT NOT NULL,
            received_ms BIGINT NOT NULL,
            PRIMARY KEY (slot_id, sequence)
          );",
}];

/// An asset as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetRecord {
    /// The asset's id.
    pub id: String,
    /// The source file it is transcoded from.
    pub source_path: String,
    /// Where the asset is in its life (transcoding, ready, failed).
    pub state: pb::asset::State,
    /// The source's duration as ffprobe reads it.
    pub duration_ms: i64,
    /// Every segment's duration, in order (the same in every rendition,
    /// since they are cut on the same keyframes).
    pub segment_durations_ms: Vec<i64>,
    /// The renditions it was transcoded into, by name.
    pub renditions: Vec<String>,
    /// Why the last transcode failed; empty if it did not.
    pub error: String,
    /// How many transcodes of it have been tried.
    pub attempts: i64,
    /// When it was added, in Unix milliseconds.
    pub create_time_ms: i64,
}

impl AssetRecord {
    /// A new asset, waiting for its first transcode.
    pub fn queued(id: String, source_path: String, duration_ms: i64, now_ms: i64) -> AssetRecord {
        AssetRecord {
            id,
            source_path,
            state: pb::asset::State::Queued,
            duration_ms,
            segment_durations_ms: Vec::new(),
            renditions: Vec::new(),
            error: String::new(),
            attempts: 0,
            create_time_ms: now_ms,
        }
    }

    /// Whether the asset can be aired with every rendition of `ladder_names`.
    pub fn playable(&self, ladder_names: &[String]) -> bool {
        self.state == pb::asset::State::Ready
            && !self.segment_durations_ms.is_empty()
            && ladder_names
                .iter()
                .all(|name| self.renditions.contains(name))
    }
}

/// What a stream key opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeyGrant {
    /// The live slot the key pushes to.
    pub slot_id: String,
    /// The channel of that slot.
    pub channel_id: String,
}

/// The playout tables.
#[derive(Clone, Debug)]
pub struct PlayoutStore {
    db: Db,
}

/// The columns an asset is read from (a macro, so statements stay literals).
macro_rules! asset_columns {
    () => {
        "id, source_path, state, duration_ms, segment_durations_ms, renditions, error, \
         attempts, create_time_ms"
    };
}
/// The columns an entry is read from.
macro_rules! entry_columns {
    () => {
        "media_sequence, slot_id, kind, source_id, segment_index, duration_ms, pdt_ms, \
         discontinuity_number, discontinuity"
    };
}

/// A stream key is stored as its SHA-256: a leaked table does not let
/// anyone push to a channel.
pub fn stream_key_hash(key: &str) -> String {
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

fn asset_from_row(row: &AnyRow) -> Result<AssetRecord, PlayoutError> {
    let durations: String = row.try_get("segment_durations_ms")?;
    let segment_durations_ms: Vec<i64> = serde_json::from_str(&durations)
        .map_err(|error| PlayoutError::Internal(format!("stored segment list: {error}")))?;
    let renditions: String = row.try_get("renditions")?;
    let state: i64 = row.try_get("state")?;
    Ok(AssetRecord {
        id: row.try_get("id")?,
        source_path: row.try_get("source_path")?,
        state: pb::asset::State::try_from(i32::try_from(state).unwrap_or(0))
            .unwrap_or(pb::asset::State::Unspecified),
        duration_ms: row.try_get("duration_ms")?,
        segment_durations_ms,
        renditions: renditions
            .split(',')
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect(),
        error: row.try_get("error")?,
        attempts: row.try_get("attempts")?,
        create_time_ms: row.try_get("create_time_ms")?,
    })
}

fn entry_from_row(row: &AnyRow) -> Result<Entry, PlayoutError> {
    let kind: i64 = row.try_get("kind")?;
    let discontinuity: i64 = row.try_get("discontinuity")?;
    Ok(Entry {
        media_sequence: row.try_get("media_sequence")?,
        slot_id: row.try_get("slot_id")?,
        kind: EntryKind::from_i64(kind),
        source_id: row.try_get("source_id")?,
        segment_index: row.try_get("segment_index")?,
        duration_ms: row.try_get("duration_ms")?,
        pdt_ms: row.try_get("pdt_ms")?,
        discontinuity_number: row.try_get("discontinuity_number")?,
        discontinuity: discontinuity != 0,
    })
}

impl PlayoutStore {
    /// Opens the store, applying its migrations.
    pub async fn open(db: Db) -> Result<PlayoutStore, PlayoutError> {
        db.migrate("playout", MIGRATIONS).await?;
        Ok(PlayoutStore { db })
    }

    /// Stores a new asset; `AlreadyExists` if the id is taken.
    pub async fn insert_asset(&self, asset: &AssetRecord) -> Result<(), PlayoutError> {
        let result = sqlx::query(
            "INSERT INTO playout_assets (id, source_path, state, duration_ms, \
             segment_durations_ms, renditions, error, attempts, create_time_ms, update_time_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(&asset.id)
        .bind(&asset.source_path)
        .bind(asset.state as i64)
        .bind(asset.duration_ms)
        .bind(serde_json::to_string(&asset.segment_durations_ms).unwrap_or_default())
        .bind(asset.renditions.join(","))
        .bind(&asset.error)
        .bind(asset.attempts)
        .bind(asset.create_time_ms)
        .execute(self.db.pool())
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Err(
                PlayoutError::AlreadyExists(format!("an asset with id {:?} exists", asset.id)),
            ),
            Err(error) => Err(error.into()),
        }
    }

    /// Replaces an asset's state, results and error.
    pub async fn update_asset(&self, asset: &AssetRecord, now_ms: i64) -> Result<(), PlayoutError> {
        sqlx::query(
            "UPDATE playout_assets SET state = $2, duration_ms = $3, segment_durations_ms = $4, \
             renditions = $5, error = $6, attempts = $7, update_time_ms = $8 WHERE id = $1",
        )
        .bind(&asset.id)
        .bind(asset.state as i64)
        .bind(asset.duration_ms)
        .bind(serde_json::to_string(&asset.segment_durations_ms).unwrap_or_default())
        .bind(asset.renditions.join(","))
        .bind(&asset.error)
        .bind(asset.attempts)
        .bind(now_ms)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// The asset of that id, if stored.
    pub async fn asset(&self, id: &str) -> Result<Option<AssetRecord>, PlayoutError> {
        let statement = concat!(
            "SELECT ",
            asset_columns!(),
            " FROM playout_assets WHERE id = $1"
        );
        let row = sqlx::query(statement)
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(asset_from_row).transpose()
    }

    /// Assets by id, after `after`, at most `limit`.
    pub async fn assets_page(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<AssetRecord>, PlayoutError> {
        let statement = concat!(
            "SELECT ",
            asset_columns!(),
            " FROM playout_assets WHERE id > $1 ORDER BY id LIMIT $2"
        );
        let rows = sqlx::query(statement)
            .bind(after)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(asset_from_row).collect()
    }

    /// Assets whose transcode has not finished: queued again after a restart.
    pub async fn unfinished_assets(&self) -> Result<Vec<AssetRecord>, PlayoutError> {
        let statement = concat!(
            "SELECT ",
            asset_columns!(),
            " FROM playout_assets WHERE state = $1 OR state = $2 \
             ORDER BY create_time_ms"
        );
        let rows = sqlx::query(statement)
            .bind(pb::asset::State::Queued as i64)
            .bind(pb::asset::State::Transcoding as i64)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(asset_from_row).collect()
    }

    /// The last `count` entries a channel aired, oldest first.
    pub async fn last_entries(
        &self,
        channel_id: &str,
        count: i64,
    ) -> Result<Vec<Entry>, PlayoutError> {
        let statement = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM playout_entries WHERE channel_id = $1 \
             ORDER BY media_sequence DESC LIMIT $2"
        );
        let rows = sqlx::query(statement)
            .bind(channel_id)
            .bind(count)
            .fetch_all(self.db.pool())
            .await?;
        let mut entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        entries.reverse();
        Ok(entries)
    }

    /// Every entry aired in a slot, in order, at most `limit`.
    pub async fn slot_entries(
        &self,
        slot_id: &str,
        limit: i64,
    ) -> Result<Vec<Entry>, PlayoutError> {
        let statement = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM playout_entries WHERE slot_id = $1 \
             ORDER BY media_sequence LIMIT $2"
        );
        let rows = sqlx::query(statement)
            .bind(slot_id)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Records newly aired entries of a channel, all or none.
    pub async fn append_entries(
        &self,
        channel_id: &str,
        entries: &[Entry],
    ) -> Result<(), PlayoutError> {
        let mut transaction = self.db.pool().begin().await?;
        for entry in entries {
            sqlx::query(
                "INSERT INTO playout_entries (channel_id, media_sequence, slot_id, kind, \
                 source_id, segment_index, duration_ms, pdt_ms, discontinuity_number, \
                 discontinuity) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(channel_id)
            .bind(entry.media_sequence)
            .bind(&entry.slot_id)
            .bind(entry.kind as i64)
            .bind(&entry.source_id)
            .bind(entry.segment_index)
            .bind(entry.duration_ms)
            .bind(entry.pdt_ms)
            .bind(entry.discontinuity_number)
            .bind(i64::from(entry.discontinuity))
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Stores a stream key for a slot, replacing the slot's previous key.
    pub async fn put_stream_key(
        &self,
        key: &str,
        grant: &StreamKeyGrant,
        now_ms: i64,
    ) -> Result<(), PlayoutError> {
        let mut transaction = self.db.pool().begin().await?;
        sqlx::query("DELETE FROM playout_stream_keys WHERE slot_id = $1")
            .bind(&grant.slot_id)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "INSERT INTO playout_stream_keys (key_hash, slot_id, channel_id, create_time_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(stream_key_hash(key))
        .bind(&grant.slot_id)
        .bind(&grant.channel_id)
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// What a stream key opens, if it is known.
    pub async fn stream_key(&self, key: &str) -> Result<Option<StreamKeyGrant>, PlayoutError> {
        let row =
            sqlx::query("SELECT slot_id, channel_id FROM playout_stream_keys WHERE key_hash = $1")
                .bind(stream_key_hash(key))
                .fetch_optional(self.db.pool())
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(StreamKeyGrant {
            slot_id: row.try_get("slot_id")?,
            channel_id: row.try_get("channel_id")?,
        }))
    }

    /// A slot's received live segments, in order.
    pub async fn live_segments(&self, slot_id: &str) -> Result<Vec<LiveSegment>, PlayoutError> {
        let rows = sqlx::query(
            "SELECT slot_id, sequence, file, duration_ms, received_ms FROM playout_live_segments \
             WHERE slot_id = $1 ORDER BY sequence",
        )
        .bind(slot_id)
        .fetch_all(self.db.pool())
        .await?;
        let mut segments = Vec::with_capacity(rows.len());
        for row in rows {
            segments.push(LiveSegment {
                slot_id: row.try_get("slot_id")?,
                sequence: row.try_get("sequence")?,
                file: row.try_get("file")?,
                duration_ms: row.try_get("duration_ms")?,
                received_ms: row.try_get("received_ms")?,
            });
        }
        Ok(segments)
    }

    /// Stores received live segments, all of them or none.
    pub async fn append_live_segments(&self, segments: &[LiveSegment]) -> Result<(), PlayoutError> {
        let mut transaction = self.db.pool().begin().await?;
        for segment in segments {
            sqlx::query(
                "INSERT INTO playout_live_segments (slot_id, sequence, file, duration_ms, \
                 received_ms) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&segment.slot_id)
            .bind(segment.sequence)
            .bind(&segment.file)
            .bind(segment.duration_ms)
            .bind(segment.received_ms)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}
