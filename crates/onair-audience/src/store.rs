//! The audience service's tables, on SQLite or PostgreSQL: each slot's peak
//! and its viewers minute by minute. Writes only ever raise a figure, so
//! two processes recording the same slot (one taking over the duty from
//! another) can't lower what the other wrote.

use onair_kit::store::{Backend, Db, Migration, StoreError};
use sqlx::{Any, Row};

/// The audience service's schema on SQLite, in order.
pub const SQLITE_MIGRATIONS: &[Migration] = &[
    SLOTS_MIGRATION,
    POLLS_MIGRATION,
    Migration {
        version: 3,
        description: "ballots kept by poll and voter alone",
        sql: crate::polls::SQLITE_BALLOTS_BY_KEY_SQL,
    },
];

/// The audience service's schema on PostgreSQL, in order.
pub const POSTGRES_MIGRATIONS: &[Migration] = &[
    SLOTS_MIGRATION,
    POLLS_MIGRATION,
    Migration {
        version: 3,
        description: "ballots kept by poll and voter alone (SQLite only)",
        sql: crate::polls::POSTGRES_BALLOTS_BY_KEY_SQL,
    },
];

/// The audience service's schema for `backend`.
pub fn migrations(backend: Backend) -> &'static [Migration] {
    match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    }
}

const SLOTS_MIGRATION: Migration = Migration {
    version: 1,
    description: "each slot's viewers: its peak and its minutes",
    sql: "CREATE TABLE audience_slots (
            slot_id TEXT PRIMARY KEY,
            channel_id TEXT NOT NULL,
            peak BIGINT NOT NULL,
            peak_time_ms BIGINT NOT NULL
          );
          CREATE TABLE audience_slot_minutes (
            slot_id TEXT NOT NULL,
            minute_ms BIGINT NOT NULL,
            viewers BIGINT NOT NULL,
            PRIMARY KEY (slot_id, minute_ms)
          );",
};

const POLLS_MIGRATION: Migration = Migration {
    version: 2,
    description: "polls, their options and their ballots",
    sql: crate::polls::MIGRATION_SQL,
};

/// What is known of a slot's audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotAudience {
    /// The slot.
    pub slot_id: String,
    /// Its channel.
    pub channel_id: String,
    /// The most viewers at once while it was on air.
    pub peak: i64,
    /// When the peak was first reached, in Unix milliseconds.
    pub peak_time_ms: i64,
    /// The most viewers at once in each minute it had viewers: the
    /// minute's start in Unix milliseconds, and the count, oldest first.
    pub minutes: Vec<(i64, i64)>,
}

/// The slot audience tables.
#[derive(Clone)]
pub struct AudienceStore {
    db: Db,
}

/// The length of a history bucket.
pub const MINUTE_MS: i64 = 60_000;

impl AudienceStore {
    /// Opens the tables in `db` (the slots' and the polls'), creating them
    /// if needed.
    pub async fn open(db: Db) -> Result<AudienceStore, StoreError> {
        db.migrate("audience", migrations(db.backend())).await?;
        Ok(AudienceStore { db })
    }

    /// The database, for the polls' tables.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Records that `slot_id` (on `channel_id`) had `viewers` at `at_ms`:
    /// raises the slot's peak and the minute's figure if this is more.
    pub async fn record(
        &self,
        slot_id: &str,
        channel_id: &str,
        viewers: i64,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let minute_ms = at_ms - at_ms.rem_euclid(MINUTE_MS);
        let mut transaction = self.db.pool().begin().await?;
        sqlx::query::<Any>(
            "INSERT INTO audience_slots (slot_id, channel_id, peak, peak_time_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (slot_id) DO UPDATE SET
               peak_time_ms = CASE WHEN excluded.peak > audience_slots.peak
                                   THEN excluded.peak_time_ms ELSE audience_slots.peak_time_ms END,
               peak = CASE WHEN excluded.peak > audience_slots.peak
                           THEN excluded.peak ELSE audience_slots.peak END",
        )
        .bind(slot_id)
        .bind(channel_id)
        .bind(viewers)
        .bind(at_ms)
        .execute(&mut *transaction)
        .await?;
        sqlx::query::<Any>(
            "INSERT INTO audience_slot_minutes (slot_id, minute_ms, viewers)
             VALUES ($1, $2, $3)
             ON CONFLICT (slot_id, minute_ms) DO UPDATE SET
               viewers = CASE WHEN excluded.viewers > audience_slot_minutes.viewers
                              THEN excluded.viewers ELSE audience_slot_minutes.viewers END",
        )
        .bind(slot_id)
        .bind(minute_ms)
        .bind(viewers)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The slot's peak so far; 0 for a slot with no record.
    pub async fn peak(&self, slot_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query::<Any>("SELECT peak FROM audience_slots WHERE slot_id = $1")
            .bind(slot_id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map_or(0, |row| row.get::<i64, _>(0)))
    }

    /// Everything recorded of a slot; `None` for a slot nobody watched.
    pub async fn slot(&self, slot_id: &str) -> Result<Option<SlotAudience>, StoreError> {
        let Some(row) = sqlx::query::<Any>(
            "SELECT channel_id, peak, peak_time_ms FROM audience_slots WHERE slot_id = $1",
        )
        .bind(slot_id)
        .fetch_optional(self.db.pool())
        .await?
        else {
            return Ok(None);
        };
        let minutes = sqlx::query::<Any>(
            "SELECT minute_ms, viewers FROM audience_slot_minutes
             WHERE slot_id = $1 ORDER BY minute_ms",
        )
        .bind(slot_id)
        .fetch_all(self.db.pool())
        .await?
        .iter()
        .map(|row| (row.get::<i64, _>(0), row.get::<i64, _>(1)))
        .collect();
        Ok(Some(SlotAudience {
            slot_id: slot_id.to_owned(),
            channel_id: row.get(0),
            peak: row.get(1),
            peak_time_ms: row.get(2),
            minutes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ballots_cast_before_the_move_to_keyed_ballots_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("audience.db"))
            .await
            .unwrap();
        db.migrate("audience", &SQLITE_MIGRATIONS[..2])
            .await
            .unwrap();
        for (voter, option) in [("ann", "1"), ("bob", "2"), ("cat", "1")] {
            sqlx::query::<Any>(
                "INSERT INTO audience_ballots (poll_id, voter, option_id, cast_time_ms)
                 VALUES ('poll', $1, $2, 7)",
            )
            .bind(voter)
            .bind(option)
            .execute(db.pool())
            .await
            .unwrap();
        }

        AudienceStore::open(db.clone()).await.unwrap();

        let tally: Vec<(String, i64)> = sqlx::query::<Any>(
            "SELECT option_id, COUNT(*) FROM audience_ballots WHERE poll_id = 'poll'
             GROUP BY option_id ORDER BY option_id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
        assert_eq!(tally, [("1".to_owned(), 2), ("2".to_owned(), 1)]);
        // The table is its key alone now: it has no rowid.
        let rowid = sqlx::query::<Any>("SELECT rowid FROM audience_ballots")
            .fetch_all(db.pool())
            .await;
        assert!(rowid.is_err(), "the ballots still have a rowid");
        // And a second ballot of a voter still meets the key.
        let again = sqlx::query::<Any>(
            "INSERT INTO audience_ballots (poll_id, voter, option_id, cast_time_ms)
             VALUES ('poll', 'ann', '2', 8)",
        )
        .execute(db.pool())
        .await;
        assert!(again.is_err(), "{again:?}");
    }
}
