//! The comment service's tables, on SQLite or PostgreSQL.
//!
//! New comments are written by one [`CommentWriter`] task that commits what
//! is waiting in one transaction (group commit): a post is acknowledged only
//! after its transaction commits, and under load one commit serves hundreds
//! of posts instead of each paying for its own.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use onair_kit::clock::timestamp_from_millis;
use std::sync::LazyLock;

use onair_kit::store::{Backend, Db, Migration, StoreError};
use onair_proto::comment::v1 as pb;
use prost::Message as _;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};
use tokio::sync::{mpsc, oneshot};

/// The comment service's schema, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "comments, reports and chat settings",
        sql: "CREATE TABLE comments (
            id TEXT PRIMARY KEY,
            channel_id TEXT NOT NULL,
            slot_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            display_name TEXT NOT NULL,
            body TEXT NOT NULL,
            vpos_ms BIGINT NOT NULL,
            create_time_ms BIGINT NOT NULL,
            status BIGINT NOT NULL,
            reason TEXT NOT NULL,
            report_count BIGINT NOT NULL,
            in_queue BIGINT NOT NULL,
            update_time_ms BIGINT NOT NULL
          );
          -- Replay: one slot's comments in media order.
          CREATE INDEX comments_by_slot_vpos ON comments (slot_id, vpos_ms, id);
          -- The review queue.
          CREATE INDEX comments_in_queue ON comments (in_queue, create_time_ms);
          CREATE TABLE comment_reports (
            comment_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            create_time_ms BIGINT NOT NULL,
            PRIMARY KEY (comment_id, user_id)
          );
          CREATE TABLE comment_chat_settings (
            channel_id TEXT PRIMARY KEY,
            settings TEXT NOT NULL,
            update_time_ms BIGINT NOT NULL
          );",
    },
    Migration {
        version: 2,
        description: "comments' display commands",
        sql: "ALTER TABLE comments ADD COLUMN commands TEXT NOT NULL DEFAULT ''",
    },
];

const COLUMNS: &str = "id, channel_id, slot_id, user_id, display_name, body, vpos_ms, \
                       create_time_ms, status, reason, report_count, in_queue, update_time_ms, \
                       commands";
/// Bound parameters per comment row in an INSERT.
const COLUMN_COUNT: usize = 14;
/// Rows per INSERT statement: far below both engines' limit on bound
/// parameters, large enough that a big batch takes few statements.
const ROWS_PER_INSERT: usize = 200;

/// One comment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentRecord {
    /// The comment's id.
    pub id: String,
    /// The channel it was posted on.
    pub channel_id: String,
    /// The schedule slot that was on air when it was posted.
    pub slot_id: String,
    /// The author's user id.
    pub user_id: String,
    /// The author's name when they posted, so replay needs no user lookups.
    pub display_name: String,
    /// The text, as posted.
    pub body: String,
    /// Its moment in the slot's media, in milliseconds from the start.
    pub vpos_ms: i64,
    /// When it was posted, in Unix milliseconds.
    pub create_time_ms: i64,
    /// Where it stands in moderation.
    pub status: pb::CommentStatus,
    /// Why its status was set, when moderation or a moderator said why.
    pub reason: String,
    /// How many reports viewers have made on it.
    pub report_count: i64,
    /// Waiting for a moderator: held, shadowed, or reported enough.
    pub in_queue: bool,
    /// When it last changed, in Unix milliseconds.
    pub update_time_ms: i64,
    /// Its display commands, canonical and space-separated
    /// ([`crate::commands::canonical`]).
    pub commands: String,
}

impl CommentRecord {
    /// The comment as moderators see it.
    pub fn to_proto(&self) -> pb::Comment {
        pb::Comment {
            id: self.id.clone(),
            channel_id: self.channel_id.clone(),
            slot_id: self.slot_id.clone(),
            user_id: self.user_id.clone(),
            body: self.body.clone(),
            vpos_ms: self.vpos_ms,
            create_time: Some(timestamp_from_millis(self.create_time_ms)),
            status: self.status as i32,
            reason: self.reason.clone(),
            display_name: self.display_name.clone(),
            commands: crate::commands::listed(&self.commands),
        }
    }

    /// The comment as its author sees it: a shadowed comment looks published
    /// to them, as a broadcaster block does, so they don't just post again
    /// under another name.
    pub fn to_author_proto(&self) -> pb::Comment {
        let mut comment = self.to_proto();
        if self.status == pb::CommentStatus::Shadowed {
            comment.status = pb::CommentStatus::Published as i32;
            comment.reason.clear();
        }
        comment
    }

    fn from_page_row(row: PageRow) -> CommentRecord {
        let (
            id,
            channel_id,
            slot_id,
            user_id,
            display_name,
            body,
            vpos_ms,
            create_time_ms,
            status,
            reason,
            report_count,
            in_queue,
            update_time_ms,
            commands,
        ) = row;
        CommentRecord {
            id,
            channel_id,
            slot_id,
            user_id,
            display_name,
            body,
            vpos_ms,
            create_time_ms,
            status: status_of(status),
            reason,
            report_count,
            in_queue: in_queue != 0,
            update_time_ms,
            commands,
        }
    }

    fn from_row(row: &AnyRow) -> Result<CommentRecord, sqlx::Error> {
        Ok(CommentRecord::from_page_row((
            row.try_get("id")?,
            row.try_get("channel_id")?,
            row.try_get("slot_id")?,
            row.try_get("user_id")?,
            row.try_get("display_name")?,
            row.try_get("body")?,
            row.try_get("vpos_ms")?,
            row.try_get("create_time_ms")?,
            row.try_get("status")?,
            row.try_get("reason")?,
            row.try_get("report_count")?,
            row.try_get("in_queue")?,
            row.try_get("update_time_ms")?,
            row.try_get("commands")?,
        )))
    }
}

fn status_of(stored: i64) -> pb::CommentStatus {
    i32::try_from(stored)
        .ok()
        .and_then(|value| pb::CommentStatus::try_from(value).ok())
        .unwrap_or(pb::CommentStatus::Unspecified)
}

/// Where a replay page starts: after this media offset and comment id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayCursor {
    /// The media offset of the last comment already returned, in milliseconds.
    pub vpos_ms: i64,
    /// The id of the last comment already returned; orders comments at the
    /// same offset.
    pub comment_id: String,
}

/// The comment tables.
#[derive(Clone, Debug)]
pub struct CommentStore {
    db: Db,
}

impl CommentStore {
    /// Opens the store, applying migrations.
    pub async fn open(db: Db) -> Result<CommentStore, StoreError> {
        db.migrate("comment", MIGRATIONS).await?;
        Ok(CommentStore { db })
    }

    fn pool(&self) -> &sqlx::AnyPool {
        self.db.pool()
    }

    /// Inserts comments in one transaction.
    pub async fn insert_all(&self, records: &[CommentRecord]) -> Result<(), StoreError> {
        let mut transaction = self.pool().begin().await?;
        for chunk in records.chunks(ROWS_PER_INSERT) {
            let sql = insert_statement(chunk.len());
            let mut query = sqlx::query::<Any>(sqlx::AssertSqlSafe(sql.as_str()));
            for record in chunk {
                query = query
                    .bind(record.id.as_str())
                    .bind(record.channel_id.as_str())
                    .bind(record.slot_id.as_str())
                    .bind(record.user_id.as_str())
                    .bind(record.display_name.as_str())
                    .bind(record.body.as_str())
                    .bind(record.vpos_ms)
                    .bind(record.create_time_ms)
                    .bind(record.status as i64)
                    .bind(record.reason.as_str())
                    .bind(record.report_count)
                    .bind(i64::from(record.in_queue))
                    .bind(record.update_time_ms)
                    .bind(record.commands.as_str());
            }
            query.execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// The comment with this id, if there is one.
    pub async fn get(&self, comment_id: &str) -> Result<Option<CommentRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM comments WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(comment_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|row| CommentRecord::from_row(&row)).transpose()?)
    }

    /// A page of a slot's visible comments in media order: published ones,
    /// and the shadowed ones of `viewer_id` (their author).
    pub async fn replay(
        &self,
        slot_id: &str,
        from_vpos_ms: i64,
        to_vpos_ms: Option<i64>,
        after: Option<&ReplayCursor>,
        viewer_id: &str,
        limit: usize,
    ) -> Result<Vec<CommentRecord>, StoreError> {
        let (after_vpos, after_id) = match after {
            Some(cursor) => (cursor.vpos_ms, cursor.comment_id.as_str()),
            // Before any comment: ids are never empty.
            None => (from_vpos_ms, ""),
        };
        let statement = match self.db.backend() {
            Backend::Sqlite => &*REPLAY_SQLITE,
            Backend::Postgres => &*REPLAY_POSTGRES,
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
            .bind(slot_id)
            .bind(from_vpos_ms)
            .bind(to_vpos_ms.unwrap_or(i64::MAX))
            .bind(after_vpos)
            .bind(after_id)
            .bind(pb::CommentStatus::Published as i64)
            .bind(pb::CommentStatus::Shadowed as i64)
            .bind(viewer_id)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_one(self.pool())
            .await?;
        let page: String = row.try_get("page")?;
        let rows: Vec<PageRow> = serde_json::from_str(&page)
            .map_err(|error| StoreError::Query(format!("a replay page does not parse: {error}")))?;
        let mut records: Vec<CommentRecord> =
            rows.into_iter().map(CommentRecord::from_page_row).collect();
        // Both engines aggregate in the subquery's order in practice, but
        // neither promises it.
        records.sort_by(|left, right| {
            (left.vpos_ms, left.id.as_str()).cmp(&(right.vpos_ms, right.id.as_str()))
        });
        Ok(records)
    }

    /// The comments waiting for a moderator, oldest first.
    pub async fn queue(
        &self,
        channel_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CommentRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match channel_id {
            Some(channel_id) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM comments WHERE in_queue = 1 AND channel_id = $1 \
                     ORDER BY create_time_ms, id LIMIT $2"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(channel_id)
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM comments WHERE in_queue = 1 \
                     ORDER BY create_time_ms, id LIMIT $1"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
        };
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            records.push(CommentRecord::from_row(row)?);
        }
        Ok(records)
    }

    /// Moves a comment from `expected` status to a new one, unless another
    /// moderator moved it first (then `None`: read it again and decide).
    pub async fn decide(
        &self,
        comment_id: &str,
        expected: pb::CommentStatus,
        status: pb::CommentStatus,
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<CommentRecord>, StoreError> {
        let changed = sqlx::query(
            "UPDATE comments SET status = $1, reason = $2, in_queue = 0, update_time_ms = $3 \
             WHERE id = $4 AND status = $5",
        )
        .bind(status as i64)
        .bind(reason)
        .bind(now_ms)
        .bind(comment_id)
        .bind(expected as i64)
        .execute(self.pool())
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        self.get(comment_id).await
    }

    /// Records a viewer's report, once per viewer and comment. Returns the
    /// comment as it now stands, or `None` if this viewer had reported it.
    /// A published comment reaching `threshold` reports joins the queue.
    pub async fn report(
        &self,
        comment_id: &str,
        user_id: &str,
        reason: &str,
        threshold: i64,
        now_ms: i64,
    ) -> Result<Option<CommentRecord>, StoreError> {
        let mut transaction = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO comment_reports (comment_id, user_id, reason, create_time_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(comment_id)
        .bind(user_id)
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if inserted == 0 {
            transaction.rollback().await?;
            return Ok(None);
        }
        sqlx::query(
            "UPDATE comments SET report_count = report_count + 1, \
               in_queue = CASE WHEN status = $1 AND report_count + 1 >= $2 THEN 1 ELSE in_queue END, \
               update_time_ms = $3 \
             WHERE id = $4",
        )
        .bind(pb::CommentStatus::Published as i64)
        .bind(threshold)
        .bind(now_ms)
        .bind(comment_id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        self.get(comment_id).await
    }

    /// What the reporters of a comment said, newest first.
    pub async fn report_reasons(
        &self,
        comment_id: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT reason FROM comment_reports WHERE comment_id = $1 AND reason <> '' \
             ORDER BY create_time_ms DESC LIMIT $2",
        )
        .bind(comment_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        let mut reasons = Vec::with_capacity(rows.len());
        for row in &rows {
            reasons.push(row.try_get("reason")?);
        }
        Ok(reasons)
    }

    /// The channel's stored chat settings, or `None` if it has none stored.
    pub async fn chat_settings(
        &self,
        channel_id: &str,
    ) -> Result<Option<pb::ChatSettings>, StoreError> {
        let row = sqlx::query("SELECT settings FROM comment_chat_settings WHERE channel_id = $1")
            .bind(channel_id)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let encoded: String = row.try_get("settings")?;
        let bytes = STANDARD.decode(encoded).map_err(|error| {
            StoreError::Query(format!(
                "chat settings of channel {channel_id} are not base64: {error}"
            ))
        })?;
        let settings = pb::ChatSettings::decode(bytes.as_slice()).map_err(|error| {
            StoreError::Query(format!(
                "chat settings of channel {channel_id} do not decode: {error}"
            ))
        })?;
        Ok(Some(settings))
    }

    /// Stores the channel's chat settings, replacing any, stamped `now_ms`.
    pub async fn put_chat_settings(
        &self,
        settings: &pb::ChatSettings,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let encoded = STANDARD.encode(settings.encode_to_vec());
        sqlx::query(
            "INSERT INTO comment_chat_settings (channel_id, settings, update_time_ms) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (channel_id) DO UPDATE SET settings = $2, update_time_ms = $3",
        )
        .bind(settings.channel_id.as_str())
        .bind(encoded)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

/// One comment of a replay page, as the database's JSON array of [`COLUMNS`].
type PageRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    i64,
    i64,
    i64,
    String,
);

/// The filter and order of a replay page; `$1` slot, `$2`/`$3` the vpos
/// range, `$4`/`$5` the cursor, `$6`/`$7`/`$8` published or the viewer's own
/// shadowed comments, `$9` the limit.
const REPLAY_FILTER: &str = "FROM comments \
     WHERE slot_id = $1 AND vpos_ms >= $2 AND vpos_ms < $3 \
       AND (vpos_ms > $4 OR (vpos_ms = $4 AND id > $5)) \
       AND (status = $6 OR (status = $7 AND user_id = $8)) \
     ORDER BY vpos_ms, id LIMIT $9";

// A replay page comes back as one JSON value rather than one row per
// comment: the drivers hand rows over one by one (SQLite's through a thread
// hand-off each), which cost ten times the query itself on a page of 500.
static REPLAY_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT json_group_array(json_array({COLUMNS})) AS page \
         FROM (SELECT {COLUMNS} {REPLAY_FILTER})"
    )
});
static REPLAY_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT COALESCE(json_agg(json_build_array({COLUMNS}))::text, '[]') AS page \
         FROM (SELECT {COLUMNS} {REPLAY_FILTER}) AS page_rows"
    )
});

fn insert_statement(rows: usize) -> String {
    let mut sql = format!("INSERT INTO comments ({COLUMNS}) VALUES ");
    let mut parameter = 1;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..COLUMN_COUNT {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&parameter.to_string());
            parameter += 1;
        }
        sql.push(')');
    }
    sql
}

/// A comment waiting to be written, and who to tell when it is.
struct PendingWrite {
    record: CommentRecord,
    written: oneshot::Sender<Result<(), String>>,
}

/// Writes new comments in batches; see the module's documentation.
#[derive(Clone)]
pub struct CommentWriter {
    queue: mpsc::Sender<PendingWrite>,
}

impl CommentWriter {
    /// Starts the writer task. It ends when every handle is dropped.
    pub fn start(store: CommentStore, batch: usize, queue: usize) -> CommentWriter {
        let (sender, receiver) = mpsc::channel(queue.max(1));
        tokio::spawn(write_batches(store, receiver, batch.max(1)));
        CommentWriter { queue: sender }
    }

    /// Stores a comment; returns once its transaction has committed.
    pub async fn write(&self, record: CommentRecord) -> Result<(), StoreError> {
        let (written, done) = oneshot::channel();
        self.queue
            .send(PendingWrite { record, written })
            .await
            .map_err(|_| StoreError::Unavailable("the comment writer has stopped".to_owned()))?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(StoreError::Unavailable(reason)),
            Err(_) => Err(StoreError::Unavailable(
                "the comment writer stopped before writing".to_owned(),
            )),
        }
    }
}

async fn write_batches(
    store: CommentStore,
    mut receiver: mpsc::Receiver<PendingWrite>,
    batch: usize,
) {
    let mut pending = Vec::with_capacity(batch);
    while receiver.recv_many(&mut pending, batch).await > 0 {
        let records: Vec<CommentRecord> =
            pending.iter().map(|write| write.record.clone()).collect();
        let outcome = store.insert_all(&records).await;
        if let Err(error) = &outcome {
            tracing::error!(error = %error, comments = records.len(), "cannot store comments");
        }
        for write in pending.drain(..) {
            let result = match &outcome {
                Ok(()) => Ok(()),
                Err(error) => Err(format!("cannot store the comment: {error}")),
            };
            // The poster may have gone; the comment is stored all the same.
            let _ = write.written.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_statements_number_every_parameter() {
        let sql = insert_statement(2);
        assert!(
            sql.ends_with("($15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)")
        );
        assert_eq!(sql.matches('$').count(), 2 * COLUMN_COUNT);
    }
}
