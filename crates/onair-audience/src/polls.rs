//! Polls (votes): a question on a slot with 2 to 8 options, open between
//! two times; one ballot per viewer, which the poll may let them change.
//!
//! The ballots are the truth: one row per poll and voter, so a viewer can't
//! vote twice however many processes take their votes, and a tally is a
//! count of rows. A ballot is taken only while its poll is open, checked in
//! the statement that stores it; closing a poll (by hand or when its close
//! time passes) marks it final in a transaction that waits for the ballots
//! being taken, then stores the final tally. A voter is stored by their
//! presence key, not their id, so the ballots don't say who voted what.
//!
//! Ballots are written by one [`BallotWriter`] task per process that takes
//! what is waiting into one transaction (group commit), one conditional
//! statement per ballot, whose row count is that ballot's verdict: under
//! load one commit serves hundreds of ballots, and a refused ballot refuses
//! only its own caller. A ballot is answered once its transaction commits.
//!
//! Changes reach the live sockets as `poll` events: at once when a poll is
//! created or closed, and for votes at most every [`ANNOUNCE_INTERVAL`] per
//! poll, so a flood of votes costs the sockets a few events a second.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use onair_kit::bus::SharedBus;
use onair_kit::clock::{Clock, format_millis, millis_from_timestamp, timestamp_from_millis};
use onair_kit::events::{LiveEvent, LiveKind, OpsEvent, live_subject, record};
use onair_kit::input::one_line;
use onair_kit::presence::ViewerKey;
use onair_kit::store::{Backend, Db, StoreError};
use onair_proto::audience::v1 as pb;
use prost::Message as _;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Row};
use tokio::sync::{mpsc, oneshot};

use crate::error::AudienceError;

/// The full name of the message of `poll` live events.
pub const POLL_MESSAGE: &str = "onair.audience.v1.Poll";

/// The most options a poll has; the fewest is 2.
pub const MAX_OPTIONS: usize = 8;
/// The longest question, in characters.
pub const MAX_QUESTION_CHARS: usize = 200;
/// The longest option, in characters.
pub const MAX_OPTION_CHARS: usize = 80;
/// The longest a poll may stay open.
pub const MAX_OPEN: Duration = Duration::from_secs(24 * 60 * 60);
/// How often votes are announced on the live sockets, at most, per poll.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(250);
/// Ballots written in one transaction at most, by default.
pub const BALLOT_BATCH: usize = 512;
/// Ballots that may wait for the writer, by default; one more is refused as
/// overload rather than left to wait.
pub const BALLOT_QUEUE: usize = 16_384;

/// The poll tables, after the slot tables.
pub const MIGRATION_SQL: &str = "CREATE TABLE audience_polls (
        id TEXT PRIMARY KEY,
        slot_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        question TEXT NOT NULL,
        open_time_ms BIGINT NOT NULL,
        close_time_ms BIGINT NOT NULL,
        allow_change BIGINT NOT NULL,
        final BIGINT NOT NULL,
        create_time_ms BIGINT NOT NULL
      );
      CREATE INDEX audience_polls_by_slot ON audience_polls (slot_id);
      CREATE INDEX audience_polls_to_close ON audience_polls (final, close_time_ms);
      CREATE TABLE audience_poll_options (
        poll_id TEXT NOT NULL,
        option_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        text TEXT NOT NULL,
        final_votes BIGINT,
        PRIMARY KEY (poll_id, option_id)
      );
      CREATE TABLE audience_ballots (
        poll_id TEXT NOT NULL,
        voter TEXT NOT NULL,
        option_id TEXT NOT NULL,
        cast_time_ms BIGINT NOT NULL,
        PRIMARY KEY (poll_id, voter)
      );
      CREATE INDEX audience_ballots_by_option ON audience_ballots (poll_id, option_id);";

/// On SQLite, the ballots move to a table that is its (poll, voter) key
/// alone (`WITHOUT ROWID`), with no index by option: a batch of ballots
/// writes the pages of one b-tree instead of three. Tallies read the
/// poll's ballots in key order, which the key serves.
pub const SQLITE_BALLOTS_BY_KEY_SQL: &str = "CREATE TABLE audience_ballots_by_key (
        poll_id TEXT NOT NULL,
        voter TEXT NOT NULL,
        option_id TEXT NOT NULL,
        cast_time_ms BIGINT NOT NULL,
        PRIMARY KEY (poll_id, voter)
      ) WITHOUT ROWID;
      INSERT INTO audience_ballots_by_key (poll_id, voter, option_id, cast_time_ms)
        SELECT poll_id, voter, option_id, cast_time_ms FROM audience_ballots;
      DROP TABLE audience_ballots;
      ALTER TABLE audience_ballots_by_key RENAME TO audience_ballots;";

/// On PostgreSQL the ballots stay as they are (a heap table, whose index by
/// option answers the tallies without reading it); the step is recorded so
/// that both engines count the same versions.
pub const POSTGRES_BALLOTS_BY_KEY_SQL: &str = "SELECT 1;";

/// A poll as stored, with its tally.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PollRecord {
    id: String,
    slot_id: String,
    channel_id: String,
    question: String,
    open_time_ms: i64,
    close_time_ms: i64,
    allow_change: bool,
    final_tally: bool,
    /// Option ids and texts, in order, with their votes.
    options: Vec<(String, String, i64)>,
}

impl PollRecord {
    fn to_proto(&self, now_ms: i64, voted_option_id: Option<String>) -> pb::Poll {
        let state = if self.final_tally || now_ms >= self.close_time_ms {
            pb::PollState::Closed
        } else if now_ms < self.open_time_ms {
            pb::PollState::Scheduled
        } else {
            pb::PollState::Open
        };
        pb::Poll {
            id: self.id.clone(),
            slot_id: self.slot_id.clone(),
            question: self.question.clone(),
            options: self
                .options
                .iter()
                .map(|(id, text, votes)| pb::PollOption {
                    id: id.clone(),
                    text: text.clone(),
                    votes: *votes,
                })
                .collect(),
            open_time: Some(timestamp_from_millis(self.open_time_ms)),
            close_time: Some(timestamp_from_millis(self.close_time_ms)),
            allow_change: self.allow_change,
            channel_id: self.channel_id.clone(),
            total_votes: self.options.iter().map(|(_, _, votes)| votes).sum(),
            voted_option_id: voted_option_id.unwrap_or_default(),
            state: state as i32,
        }
    }
}

/// A poll as an operator asks for it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPoll {
    /// The question.
    pub question: String,
    /// The options' texts, in order.
    pub options: Vec<String>,
    /// When it opens, in Unix milliseconds.
    pub open_time_ms: i64,
    /// When it closes, in Unix milliseconds.
    pub close_time_ms: i64,
    /// Whether a viewer may change their vote.
    pub allow_change: bool,
}

impl NewPoll {
    /// Checks what an operator sent: a one-line question, 2 to 8 distinct
    /// one-line options, a close time after the open time (now when none is
    /// given) and at most a day after it, and not already past.
    pub fn check(poll: &pb::Poll, now_ms: i64) -> Result<NewPoll, AudienceError> {
        let invalid = AudienceError::InvalidArgument;
        let question = poll.question.trim();
        check_text("question", question, MAX_QUESTION_CHARS)?;
        let count = poll.options.len();
        if !(2..=MAX_OPTIONS).contains(&count) {
            return Err(invalid(format!(
                "a poll has 2 to {MAX_OPTIONS} options, not {count}"
            )));
        }
        let mut options: Vec<String> = Vec::with_capacity(count);
        for (index, option) in poll.options.iter().enumerate() {
            let text = option.text.trim();
            check_text(&format!("options[{index}].text"), text, MAX_OPTION_CHARS)?;
            if options.iter().any(|seen| seen == text) {
                return Err(invalid(format!(
                    "options[{index}].text {text:?} is given twice"
                )));
            }
            options.push(text.to_owned());
        }
        let open_time_ms = match &poll.open_time {
            Some(open_time) => millis_from_timestamp(Some(open_time)),
            None => now_ms,
        };
        let Some(close_time) = &poll.close_time else {
            return Err(invalid(
                "closeTime is required: when the poll stops taking votes".to_owned(),
            ));
        };
        let close_time_ms = millis_from_timestamp(Some(close_time));
        if close_time_ms <= open_time_ms {
            return Err(invalid("closeTime must be after openTime".to_owned()));
        }
        if close_time_ms <= now_ms {
            return Err(invalid("closeTime has passed already".to_owned()));
        }
        let longest = i64::try_from(MAX_OPEN.as_millis()).unwrap_or(i64::MAX);
        if close_time_ms - open_time_ms > longest {
            return Err(invalid(format!(
                "a poll is open for at most {} hours",
                MAX_OPEN.as_secs() / 3600
            )));
        }
        Ok(NewPoll {
            question: question.to_owned(),
            options,
            open_time_ms,
            close_time_ms,
            allow_change: poll.allow_change,
        })
    }
}

fn check_text(field: &str, text: &str, max_chars: usize) -> Result<(), AudienceError> {
    if text.is_empty() {
        return Err(AudienceError::InvalidArgument(format!(
            "{field} is required"
        )));
    }
    one_line(field, text).map_err(|error| AudienceError::InvalidArgument(error.to_string()))?;
    let length = text.chars().count();
    if length > max_chars {
        return Err(AudienceError::InvalidArgument(format!(
            "{field} is {length} characters long; at most {max_chars} are allowed"
        )));
    }
    Ok(())
}

/// The polls: their tables and their announcements. Cheap to clone.
#[derive(Clone)]
pub struct Polls {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    bus: SharedBus,
    clock: Clock,
    /// Writes the ballots, many to a transaction.
    ballots: BallotWriter,
    /// Polls voted on since they were last announced.
    voted: Mutex<HashSet<String>>,
    /// Each poll as last read: a ballot's answer shows a tally at most
    /// [`ANNOUNCE_INTERVAL`] old (or as old as the read under way) instead
    /// of counting the ballots again for every voter.
    recent: Mutex<HashMap<String, RecentPoll>>,
}

impl Polls {
    /// The polls in `db` (whose tables the audience store made), with the
    /// default bounds of the ballot writer. Starts the writer task, so it is
    /// called within a tokio runtime.
    pub fn new(db: Db, bus: SharedBus, clock: Clock) -> Polls {
        Polls::with_bounds(db, bus, clock, BallotBounds::default())
    }

    /// The polls in `db`, with the ballot writer's bounds given.
    pub fn with_bounds(db: Db, bus: SharedBus, clock: Clock, bounds: BallotBounds) -> Polls {
        let ballots = BallotWriter::start(db.clone(), bounds);
        Polls {
            inner: Arc::new(Inner {
                db,
                bus,
                clock,
                ballots,
                voted: Mutex::new(HashSet::new()),
                recent: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Announces the votes of the last interval, and closes the polls whose
    /// close time passed, until the process stops.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let polls = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(ANNOUNCE_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                polls.close_due().await;
                let voted: Vec<String> = {
                    let mut voted = polls.voted();
                    voted.drain().collect()
                };
                for poll_id in voted {
                    polls.announce(&poll_id).await;
                }
            }
        })
    }

    fn voted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .voted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The station's clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Stores a new poll on `slot_id` (of `channel_id`) and announces it.
    pub async fn create(
        &self,
        slot_id: &str,
        channel_id: &str,
        poll: NewPoll,
        actor_id: &str,
    ) -> Result<pb::Poll, AudienceError> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let now_ms = self.now_ms();
        let mut transaction = self.inner.db.pool().begin().await?;
        sqlx::query::<Any>(
            "INSERT INTO audience_polls (id, slot_id, channel_id, question, open_time_ms,
               close_time_ms, allow_change, final, create_time_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
        )
        .bind(&id)
        .bind(slot_id)
        .bind(channel_id)
        .bind(&poll.question)
        .bind(poll.open_time_ms)
        .bind(poll.close_time_ms)
        .bind(i64::from(poll.allow_change))
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        for (position, text) in poll.options.iter().enumerate() {
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            sqlx::query::<Any>(
                "INSERT INTO audience_poll_options (poll_id, option_id, position, text)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&id)
            .bind((position + 1).to_string())
            .bind(position)
            .bind(text)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        let event = OpsEvent::new(
            "poll.opened",
            actor_id,
            &id,
            "",
            now_ms,
            serde_json::json!({"slotId": slot_id, "channelId": channel_id, "question": poll.question}),
        );
        record(&self.inner.bus, &event).await;
        self.announce(&id).await;
        self.get(&id, None).await
    }

    /// The poll with its tally; the option `voter` chose, if given.
    pub async fn get(
        &self,
        poll_id: &str,
        voter: Option<&ViewerKey>,
    ) -> Result<pb::Poll, AudienceError> {
        let record = self.read(poll_id).await?;
        self.answer(record, poll_id, voter).await
    }

    async fn answer(
        &self,
        record: PollRecord,
        poll_id: &str,
        voter: Option<&ViewerKey>,
    ) -> Result<pb::Poll, AudienceError> {
        let voted = match voter {
            Some(voter) => self.ballot_of(poll_id, voter).await?,
            None => None,
        };
        Ok(record.to_proto(self.now_ms(), voted))
    }

    /// The poll now, then each time it changes, until it closes: its final
    /// tally is the last item.
    pub async fn watch(
        &self,
        poll_id: &str,
    ) -> Result<impl Stream<Item = pb::Poll> + Send + 'static, AudienceError> {
        // The channel never changes, so a recent read names it.
        let channel_id = self.read_recent(poll_id).await?.channel_id;
        let subject = live_subject(&channel_id, LiveKind::Poll);
        let changes = self.inner.bus.subscribe(&subject).await.map_err(|error| {
            AudienceError::Unavailable(format!("cannot follow the poll: {error}"))
        })?;
        // Read once subscribed, so no change falls between the two.
        let first = self.get(poll_id, None).await?;
        let closed = first.state == pb::PollState::Closed as i32;
        let poll_id = poll_id.to_owned();
        let changes = Box::pin(changes.filter_map(move |message| {
            let poll = LiveEvent::decode(&message.subject, &message.payload)
                .and_then(|event| pb::Poll::decode(event.message.value.as_slice()).ok())
                .filter(|poll| poll.id == poll_id);
            std::future::ready(poll)
        }));
        let later =
            futures::stream::unfold((changes, closed), |(mut changes, closed)| async move {
                if closed {
                    return None;
                }
                let poll = changes.next().await?;
                let now_closed = poll.state == pb::PollState::Closed as i32;
                Some((poll, (changes, now_closed)))
            });
        Ok(futures::stream::once(std::future::ready(first)).chain(later))
    }

    /// Takes `voter`'s ballot for `option_id`, if the poll is open and the
    /// voter has not voted (or the poll lets them change their vote).
    pub async fn cast(
        &self,
        poll_id: &str,
        option_id: &str,
        voter: &ViewerKey,
    ) -> Result<pb::Poll, AudienceError> {
        let now_ms = self.now_ms();
        let mut seen = self.read_recent(poll_id).await?;
        let previous = if seen.allow_change {
            self.ballot_of(poll_id, voter).await?
        } else {
            None
        };
        let ballot = Ballot {
            poll_id: poll_id.to_owned(),
            voter: voter.as_str().to_owned(),
            option_id: option_id.to_owned(),
            cast_time_ms: now_ms,
            allow_change: seen.allow_change,
        };
        let taken = self.inner.ballots.take(ballot).await?;
        if !taken {
            return Err(self.why_refused(poll_id, option_id, now_ms).await);
        }
        {
            let mut voted = self.voted();
            if !voted.contains(poll_id) {
                voted.insert(poll_id.to_owned());
            }
        }
        // The tally as last read (at most a quarter second old), with this
        // ballot in it, so the voter sees their vote counted.
        for (id, _, votes) in &mut seen.options {
            if *id == option_id {
                *votes += 1;
            }
            if previous.as_deref() == Some(id.as_str()) {
                *votes = (*votes - 1).max(0);
            }
        }
        Ok(seen.to_proto(now_ms, Some(option_id.to_owned())))
    }

    /// The poll as read within the last [`ANNOUNCE_INTERVAL`], else read
    /// now. One caller reads a poll again at a time; the others meanwhile
    /// take the read before, so a crowd of voters costs one count of the
    /// ballots, not one each.
    async fn read_recent(&self, poll_id: &str) -> Result<PollRecord, AudienceError> {
        {
            let mut recent = self.recent();
            if let Some(entry) = recent.get_mut(poll_id) {
                let fresh = entry.read_at.elapsed() < ANNOUNCE_INTERVAL;
                // A read that takes longer than this (or whose caller went
                // away) is left to another caller.
                let being_read = entry
                    .reread_since
                    .is_some_and(|since| since.elapsed() < ANNOUNCE_INTERVAL);
                if fresh || being_read {
                    return Ok(entry.record.clone());
                }
                entry.reread_since = Some(Instant::now());
            }
        }
        let record = self.read(poll_id).await;
        match record {
            Ok(record) => {
                self.remember(&record);
                Ok(record)
            }
            Err(error) => {
                if let Some(entry) = self.recent().get_mut(poll_id) {
                    entry.reread_since = None;
                }
                Err(error)
            }
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<String, RecentPoll>> {
        self.inner
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `record` as the poll's latest read, for [`Polls::read_recent`].
    fn remember(&self, record: &PollRecord) {
        let mut recent = self.recent();
        recent.retain(|_, entry| entry.read_at.elapsed() < RECENT_KEPT);
        recent.insert(
            record.id.clone(),
            RecentPoll {
                read_at: Instant::now(),
                record: record.clone(),
                reread_since: None,
            },
        );
    }

    /// Why a ballot was not taken: the poll, the option or the window, else
    /// the voter's earlier ballot.
    async fn why_refused(&self, poll_id: &str, option_id: &str, now_ms: i64) -> AudienceError {
        let record = match self.read(poll_id).await {
            Ok(record) => record,
            Err(error) => return error,
        };
        if !record.options.iter().any(|(id, _, _)| id == option_id) {
            return AudienceError::InvalidArgument(format!("the poll has no option {option_id:?}"));
        }
        if record.final_tally || now_ms >= record.close_time_ms {
            return AudienceError::FailedPrecondition(format!(
                "the poll closed at {}; votes are no longer taken",
                format_millis(record.close_time_ms.min(now_ms))
            ));
        }
        if now_ms < record.open_time_ms {
            return AudienceError::FailedPrecondition(format!(
                "the poll opens at {}; vote then",
                format_millis(record.open_time_ms)
            ));
        }
        AudienceError::FailedPrecondition(
            "you have voted in this poll already, and it does not let a vote be changed".to_owned(),
        )
    }

    /// Closes the poll now, if it is not closed already, and stores its
    /// final tally.
    pub async fn close(&self, poll_id: &str, actor_id: &str) -> Result<pb::Poll, AudienceError> {
        self.read(poll_id).await?;
        self.finish(poll_id, actor_id, "closed early").await?;
        self.get(poll_id, None).await
    }

    /// Makes the tally final, at most once: marks the poll final (waiting
    /// for the ballots being taken), counts, stores the counts, announces.
    async fn finish(
        &self,
        poll_id: &str,
        actor_id: &str,
        reason: &str,
    ) -> Result<(), AudienceError> {
        let now_ms = self.now_ms();
        let mut transaction = self.inner.db.pool().begin().await?;
        let marked = sqlx::query::<Any>(
            "UPDATE audience_polls SET final = 1,
               close_time_ms = CASE WHEN close_time_ms > $2 THEN $2 ELSE close_time_ms END
             WHERE id = $1 AND final = 0",
        )
        .bind(poll_id)
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if marked == 0 {
            // Closed already: its tally is final.
            return Ok(());
        }
        sqlx::query::<Any>(
            "UPDATE audience_poll_options SET final_votes = (
               SELECT COUNT(*) FROM audience_ballots
               WHERE audience_ballots.poll_id = audience_poll_options.poll_id
                 AND audience_ballots.option_id = audience_poll_options.option_id)
             WHERE poll_id = $1",
        )
        .bind(poll_id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        let closed = self.read(poll_id).await?;
        let tally: Vec<serde_json::Value> = closed
            .options
            .iter()
            .map(|(id, text, votes)| serde_json::json!({"id": id, "text": text, "votes": votes}))
            .collect();
        let event = OpsEvent::new(
            "poll.closed",
            actor_id,
            poll_id,
            reason,
            now_ms,
            serde_json::json!({"slotId": closed.slot_id, "channelId": closed.channel_id, "options": tally}),
        );
        record(&self.inner.bus, &event).await;
        self.announce(poll_id).await;
        Ok(())
    }

    /// Closes every poll whose close time has passed.
    async fn close_due(&self) {
        let now_ms = self.now_ms();
        let due = sqlx::query::<Any>(
            "SELECT id FROM audience_polls WHERE final = 0 AND close_time_ms <= $1",
        )
        .bind(now_ms)
        .fetch_all(self.inner.db.pool())
        .await;
        let due = match due {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(error = %error, "cannot look for polls to close");
                return;
            }
        };
        for row in due {
            let poll_id: String = row.get(0);
            if let Err(error) = self
                .finish(&poll_id, "audience", "its close time passed")
                .await
            {
                tracing::warn!(poll = %poll_id, error = %error, "cannot close the poll");
            }
        }
    }

    /// Publishes the poll as it stands for its channel's live sockets.
    async fn announce(&self, poll_id: &str) {
        let record = match self.read(poll_id).await {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(poll = %poll_id, error = %error, "cannot read the poll to announce it");
                return;
            }
        };
        self.remember(&record);
        let poll = record.to_proto(self.now_ms(), None);
        let event = LiveEvent::pack(&record.channel_id, LiveKind::Poll, POLL_MESSAGE, &poll);
        if let Err(error) = event.publish(&self.inner.bus).await {
            tracing::warn!(poll = %poll_id, error = %error, "cannot announce the poll");
        }
    }

    /// The poll and its tally: the final one once closed, else a count of
    /// the ballots.
    async fn read(&self, poll_id: &str) -> Result<PollRecord, AudienceError> {
        let pool = self.inner.db.pool();
        let Some(row) = sqlx::query::<Any>(
            "SELECT slot_id, channel_id, question, open_time_ms, close_time_ms, allow_change, final
             FROM audience_polls WHERE id = $1",
        )
        .bind(poll_id)
        .fetch_optional(pool)
        .await?
        else {
            return Err(poll_not_found(poll_id));
        };
        let final_tally = row.get::<i64, _>(6) != 0;
        let options = sqlx::query::<Any>(
            "SELECT option_id, text, final_votes FROM audience_poll_options
             WHERE poll_id = $1 ORDER BY position",
        )
        .bind(poll_id)
        .fetch_all(pool)
        .await?;
        let counted = if final_tally {
            Vec::new()
        } else {
            sqlx::query::<Any>(
                "SELECT option_id, COUNT(*) FROM audience_ballots WHERE poll_id = $1 GROUP BY option_id",
            )
            .bind(poll_id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| (row.get::<String, _>(0), row.get::<i64, _>(1)))
            .collect::<Vec<_>>()
        };
        let options = options
            .iter()
            .map(|option| {
                let id: String = option.get(0);
                let votes = if final_tally {
                    option.get::<Option<i64>, _>(2).unwrap_or(0)
                } else {
                    counted
                        .iter()
                        .find(|(counted_id, _)| *counted_id == id)
                        .map_or(0, |(_, votes)| *votes)
                };
                (id, option.get::<String, _>(1), votes)
            })
            .collect();
        Ok(PollRecord {
            id: poll_id.to_owned(),
            slot_id: row.get(0),
            channel_id: row.get(1),
            question: row.get(2),
            open_time_ms: row.get(3),
            close_time_ms: row.get(4),
            allow_change: row.get::<i64, _>(5) != 0,
            final_tally,
            options,
        })
    }

    async fn ballot_of(
        &self,
        poll_id: &str,
        voter: &ViewerKey,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query::<Any>(
            "SELECT option_id FROM audience_ballots WHERE poll_id = $1 AND voter = $2",
        )
        .bind(poll_id)
        .bind(voter.as_str())
        .fetch_optional(self.inner.db.pool())
        .await?;
        Ok(row.map(|row| row.get(0)))
    }
}

fn poll_not_found(poll_id: &str) -> AudienceError {
    AudienceError::NotFound(format!("no poll with id {poll_id:?}"))
}

/// A poll as last read, for the answers to its ballots.
struct RecentPoll {
    read_at: Instant,
    record: PollRecord,
    /// When a caller started to read the poll again, while it does.
    reread_since: Option<Instant>,
}

/// How long a poll's last read is kept after it is too old to answer with
/// (while its next read is under way, say) before it is forgotten.
const RECENT_KEPT: Duration = Duration::from_secs(60);

/// The bounds of the ballot writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BallotBounds {
    /// Ballots written in one transaction at most: the writer takes what is
    /// waiting, up to this, so one commit serves many voters when many vote
    /// together.
    pub batch: usize,
    /// Ballots that may wait for the writer; a ballot beyond this is refused
    /// at once (`RESOURCE_EXHAUSTED`), so an overloaded station says so
    /// rather than leaving voters waiting.
    pub queue: usize,
}

impl Default for BallotBounds {
    fn default() -> Self {
        BallotBounds {
            batch: BALLOT_BATCH,
            queue: BALLOT_QUEUE,
        }
    }
}

/// One ballot to write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ballot {
    poll_id: String,
    /// The voter's presence key.
    voter: String,
    option_id: String,
    cast_time_ms: i64,
    /// Whether the poll lets a vote be changed: an earlier ballot of the
    /// voter is replaced rather than kept.
    allow_change: bool,
}

/// A ballot waiting to be written, and who to tell its verdict.
struct PendingBallot {
    ballot: Ballot,
    /// Taken (`true`) or refused as things stood (`false`), once committed.
    verdict: oneshot::Sender<Result<bool, StoreError>>,
}

/// Writes ballots in batches; see the module's documentation. Cheap to
/// clone; the task ends when every handle is dropped.
#[derive(Clone)]
struct BallotWriter {
    queue: mpsc::Sender<PendingBallot>,
}

impl BallotWriter {
    /// Starts the writer task.
    fn start(db: Db, bounds: BallotBounds) -> BallotWriter {
        let (sender, receiver) = mpsc::channel(bounds.queue.max(1));
        tokio::spawn(write_ballot_batches(db, receiver, bounds.batch.max(1)));
        BallotWriter { queue: sender }
    }

    /// Writes `ballot`; returns once its transaction has committed, with
    /// whether it was taken.
    async fn take(&self, ballot: Ballot) -> Result<bool, AudienceError> {
        let (verdict, answer) = oneshot::channel();
        let queued = self.queue.try_send(PendingBallot { ballot, verdict });
        match queued {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(AudienceError::ResourceExhausted(format!(
                    "{} ballots are waiting to be written already; vote again in a moment",
                    self.queue.max_capacity()
                )));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(AudienceError::Unavailable(
                    "the ballot writer has stopped".to_owned(),
                ));
            }
        }
        match answer.await {
            Ok(Ok(taken)) => Ok(taken),
            Ok(Err(error)) => Err(AudienceError::Store(error)),
            Err(_) => Err(AudienceError::Unavailable(
                "the ballot writer stopped before writing the ballot".to_owned(),
            )),
        }
    }
}

/// The statements that take ballots, for one engine. Each takes a JSON
/// array of ballots and inserts each one only if its poll is open and has
/// its option, checked in the same statement, and returns the ballots it
/// took: what it does not return was refused. On PostgreSQL the share lock
/// on the poll makes a close wait for the transaction that takes the
/// ballots, and a ballot that comes after the close sees the poll final;
/// on SQLite the one writer at a time does the same.
struct BallotStatements {
    /// A second ballot of the voter is refused (no row changes).
    first_only: String,
    /// A second ballot of the voter replaces the first.
    changeable: String,
}

impl BallotStatements {
    fn for_backend(backend: Backend) -> BallotStatements {
        // The ballots as rows, from the array of `BallotRow` objects in $1.
        let (ballots, lock) = match backend {
            Backend::Postgres => (
                "jsonb_to_recordset($1::jsonb)
                   AS ballot(poll_id TEXT, voter TEXT, option_id TEXT, cast_time_ms BIGINT)",
                " FOR SHARE OF poll",
            ),
            Backend::Sqlite => (
                "(SELECT value ->> 'poll_id' AS poll_id, value ->> 'voter' AS voter,
                    value ->> 'option_id' AS option_id, value ->> 'cast_time_ms' AS cast_time_ms
                  FROM json_each($1)) AS ballot",
                "",
            ),
        };
        let statement = |conflict: &str| {
            format!(
                "INSERT INTO audience_ballots (poll_id, voter, option_id, cast_time_ms)
                 SELECT ballot.poll_id, ballot.voter, ballot.option_id, ballot.cast_time_ms
                 FROM {ballots}
                 WHERE EXISTS (
                   SELECT 1 FROM audience_polls poll
                   JOIN audience_poll_options option ON option.poll_id = poll.id
                   WHERE poll.id = ballot.poll_id AND option.option_id = ballot.option_id
                     AND poll.final = 0 AND poll.open_time_ms <= ballot.cast_time_ms
                     AND poll.close_time_ms > ballot.cast_time_ms{lock})
                 ON CONFLICT (poll_id, voter) {conflict}
                 RETURNING poll_id, voter"
            )
        };
        BallotStatements {
            first_only: statement("DO NOTHING"),
            changeable: statement(
                "DO UPDATE SET option_id = excluded.option_id, cast_time_ms = excluded.cast_time_ms",
            ),
        }
    }

    fn for_polls(&self, allow_change: bool) -> &str {
        if allow_change {
            &self.changeable
        } else {
            &self.first_only
        }
    }
}

/// The ballots as the statements read them: a JSON array of objects.
fn ballots_json(ballots: &[&Ballot]) -> Result<String, StoreError> {
    let encoding =
        |error: serde_json::Error| StoreError::Query(format!("ballots do not encode: {error}"));
    let mut json: Vec<u8> = Vec::with_capacity(ballots.len() * 128);
    json.push(b'[');
    for (position, ballot) in ballots.iter().enumerate() {
        if position > 0 {
            json.push(b',');
        }
        json.extend_from_slice(b"{\"poll_id\":");
        serde_json::to_writer(&mut json, &ballot.poll_id).map_err(encoding)?;
        json.extend_from_slice(b",\"voter\":");
        serde_json::to_writer(&mut json, &ballot.voter).map_err(encoding)?;
        json.extend_from_slice(b",\"option_id\":");
        serde_json::to_writer(&mut json, &ballot.option_id).map_err(encoding)?;
        json.extend_from_slice(b",\"cast_time_ms\":");
        serde_json::to_writer(&mut json, &ballot.cast_time_ms).map_err(encoding)?;
        json.push(b'}');
    }
    json.push(b']');
    String::from_utf8(json)
        .map_err(|error| StoreError::Query(format!("ballots are not UTF-8: {error}")))
}

/// How long the ballot writer keeps its connection with no ballot to write.
const WRITER_IDLE: Duration = Duration::from_millis(250);

/// The writer's connection: kept from one batch to the next while ballots
/// keep coming, so that its page cache stays valid (SQLite drops a
/// connection's cache when another connection has written since), and
/// given back to the pool after [`WRITER_IDLE`] without ballots (a closing
/// pool waits for every connection) or after any failure (its state is
/// then unknown).
struct WriterConnection {
    db: Db,
    kept: Option<PoolConnection<Any>>,
}

impl WriterConnection {
    async fn get(&mut self) -> Result<&mut PoolConnection<Any>, sqlx::Error> {
        let connection = match self.kept.take() {
            Some(connection) => connection,
            None => self.db.pool().acquire().await?,
        };
        Ok(self.kept.insert(connection))
    }

    fn release(&mut self) {
        self.kept = None;
    }
}

async fn write_ballot_batches(db: Db, mut receiver: mpsc::Receiver<PendingBallot>, batch: usize) {
    let statements = BallotStatements::for_backend(db.backend());
    let mut connection = WriterConnection { db, kept: None };
    let mut pending: Vec<PendingBallot> = Vec::with_capacity(batch);
    loop {
        let received = if connection.kept.is_some() {
            match tokio::time::timeout(WRITER_IDLE, receiver.recv_many(&mut pending, batch)).await {
                Ok(received) => received,
                Err(_idle) => {
                    connection.release();
                    continue;
                }
            }
        } else {
            receiver.recv_many(&mut pending, batch).await
        };
        if received == 0 {
            break;
        }
        // Every writer takes ballots in one order, so the transactions of
        // two processes lock ballot rows in the same order and can't
        // deadlock; the sort is stable, so a voter's own ballots keep the
        // order they came in and the first one counts.
        pending.sort_by(|left, right| {
            let left_key = (&left.ballot.poll_id, &left.ballot.voter);
            left_key.cmp(&(&right.ballot.poll_id, &right.ballot.voter))
        });
        let ballots: Vec<&Ballot> = pending.iter().map(|waiting| &waiting.ballot).collect();
        let verdicts = write_ballots(&mut connection, &statements, &ballots).await;
        for (waiting, verdict) in pending.drain(..).zip(verdicts) {
            // The voter may have gone; the ballot stands all the same.
            let _ = waiting.verdict.send(verdict);
        }
    }
}

/// Why a transaction of ballots was not committed.
enum BatchFailure {
    /// No transaction could be begun: nothing was written.
    Begin(StoreError),
    /// A ballot's statement failed; the transaction was rolled back.
    Ballot(StoreError),
    /// The commit failed.
    Commit(StoreError),
}

/// Each ballot's verdict, in order. The ballots go in one transaction; if
/// one of them fails, the transaction is rolled back and each is written
/// in one of its own, so only the failing one fails.
async fn write_ballots(
    connection: &mut WriterConnection,
    statements: &BallotStatements,
    ballots: &[&Ballot],
) -> Vec<Result<bool, StoreError>> {
    let failure = match write_together(connection, statements, ballots).await {
        Ok(taken) => return taken.into_iter().map(Ok).collect(),
        Err(BatchFailure::Ballot(error)) if ballots.len() > 1 => error,
        Err(
            BatchFailure::Ballot(error) | BatchFailure::Begin(error) | BatchFailure::Commit(error),
        ) => {
            tracing::error!(error = %error, ballots = ballots.len(), "cannot store ballots");
            return ballots.iter().map(|_| Err(same_error(&error))).collect();
        }
    };
    tracing::warn!(
        error = %failure,
        ballots = ballots.len(),
        "a ballot failed in its batch; writing the batch's ballots one by one"
    );
    let mut verdicts = Vec::with_capacity(ballots.len());
    for (index, ballot) in ballots.iter().enumerate() {
        match write_together(connection, statements, std::slice::from_ref(ballot)).await {
            Ok(taken) => verdicts.push(Ok(taken.first().copied().unwrap_or(false))),
            Err(BatchFailure::Ballot(error)) => verdicts.push(Err(error)),
            Err(BatchFailure::Begin(error) | BatchFailure::Commit(error)) => {
                // The database itself fails: the rest would fail the same
                // way, each after its own wait.
                tracing::error!(error = %error, ballots = ballots.len() - index, "cannot store ballots");
                for _ in index..ballots.len() {
                    verdicts.push(Err(same_error(&error)));
                }
                break;
            }
        }
    }
    verdicts
}

/// Writes the ballots in one transaction; whether each was taken. Each
/// statement holds one ballot per voter, so what it returns names each
/// verdict; a voter's next ballot in the batch goes in a later statement,
/// which sees the first.
async fn write_together(
    connection: &mut WriterConnection,
    statements: &BallotStatements,
    ballots: &[&Ballot],
) -> Result<Vec<bool>, BatchFailure> {
    let written = write_in_transaction(connection, statements, ballots).await;
    if written.is_err() {
        connection.release();
    }
    written
}

async fn write_in_transaction(
    connection: &mut WriterConnection,
    statements: &BallotStatements,
    ballots: &[&Ballot],
) -> Result<Vec<bool>, BatchFailure> {
    let kept = connection
        .get()
        .await
        .map_err(|error| BatchFailure::Begin(error.into()))?;
    let mut transaction = sqlx::Connection::begin(&mut **kept)
        .await
        .map_err(|error| BatchFailure::Begin(error.into()))?;
    let mut taken = vec![false; ballots.len()];
    let mut left: Vec<usize> = (0..ballots.len()).collect();
    while !left.is_empty() {
        let mut voters: HashSet<(&str, &str)> = HashSet::with_capacity(left.len());
        let mut round = Vec::with_capacity(left.len());
        let mut later = Vec::new();
        for index in left {
            let ballot = ballots[index];
            if voters.insert((ballot.poll_id.as_str(), ballot.voter.as_str())) {
                round.push(index);
            } else {
                later.push(index);
            }
        }
        for allow_change in [false, true] {
            let part: Vec<usize> = round
                .iter()
                .copied()
                .filter(|index| ballots[*index].allow_change == allow_change)
                .collect();
            if part.is_empty() {
                continue;
            }
            let in_part: Vec<&Ballot> = part.iter().map(|index| ballots[*index]).collect();
            let rows = match ballots_json(&in_part) {
                Ok(rows) => rows,
                Err(error) => {
                    let _ = transaction.rollback().await;
                    return Err(BatchFailure::Ballot(error));
                }
            };
            let written =
                sqlx::query::<Any>(sqlx::AssertSqlSafe(statements.for_polls(allow_change)))
                    .bind(rows)
                    .fetch_all(&mut *transaction)
                    .await;
            let returned = match written {
                Ok(returned) => returned,
                Err(error) => {
                    // PostgreSQL refuses anything more in a failed transaction.
                    let _ = transaction.rollback().await;
                    return Err(BatchFailure::Ballot(error.into()));
                }
            };
            let by_voter: HashMap<(&str, &str), usize> = part
                .iter()
                .map(|index| {
                    let ballot = ballots[*index];
                    ((ballot.poll_id.as_str(), ballot.voter.as_str()), *index)
                })
                .collect();
            for row in &returned {
                let poll_id: &str = row
                    .try_get(0)
                    .map_err(|error| BatchFailure::Ballot(error.into()))?;
                let voter: &str = row
                    .try_get(1)
                    .map_err(|error| BatchFailure::Ballot(error.into()))?;
                if let Some(index) = by_voter.get(&(poll_id, voter)) {
                    taken[*index] = true;
                }
            }
        }
        left = later;
    }
    transaction
        .commit()
        .await
        .map_err(|error| BatchFailure::Commit(error.into()))?;
    Ok(taken)
}

/// The error of a whole batch, for each of its ballots.
fn same_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(reason) => StoreError::Unavailable(reason.clone()),
        StoreError::Unstorable(reason) => StoreError::Unstorable(reason.clone()),
        StoreError::Query(reason) => StoreError::Query(reason.clone()),
        other => StoreError::Query(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballot(voter: &str) -> Ballot {
        Ballot {
            poll_id: "poll".to_owned(),
            voter: voter.to_owned(),
            option_id: "1".to_owned(),
            cast_time_ms: 0,
            allow_change: false,
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_a_ballot_at_once() {
        // A writer that takes nothing: its queue of one fills.
        let (sender, mut receiver) = mpsc::channel(1);
        let writer = BallotWriter { queue: sender };
        let waiting = tokio::spawn({
            let writer = writer.clone();
            async move { writer.take(ballot("ann")).await }
        });
        while writer.queue.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = writer.take(ballot("bob")).await;
        assert!(
            matches!(&refused, Err(AudienceError::ResourceExhausted(_))),
            "{refused:?}"
        );
        // The one queued is answered when the writer gets to it.
        let queued = receiver.recv().await.expect("ann's ballot is queued");
        assert_eq!(queued.ballot.voter, "ann");
        queued.verdict.send(Ok(true)).expect("ann waits");
        assert!(waiting.await.expect("ann's call ends").expect("a verdict"));
    }
}
