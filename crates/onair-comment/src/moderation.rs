//! Automatic moderation: the verdict on a comment's text and author, the pace
//! rules (slow mode, duplicates, flood), and the live display's sampling.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use onair_kit::error::RetryLater;

use crate::error::CommentError;
use crate::settings::{ChatRules, MAX_DUPLICATE_WINDOW_SECONDS};
use crate::text;

/// What automatic moderation decided, and why (every verdict but publish
/// says why, for the author's moderators and the audit stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Goes live for everyone.
    Publish,
    /// Waits for a moderator before anyone sees it.
    Hold(String),
    /// Visible to its author only.
    Shadow(String),
    /// Stored for the record, shown to nobody.
    Reject(String),
}

/// The first rule: a blocked term, after folding, rejects the comment.
pub fn blocked_term(rules: &ChatRules, folded_body: &str) -> Option<Verdict> {
    let term = rules.blocked_terms.find(folded_body)?;
    Some(Verdict::Reject(format!(
        "contains the blocked term {term:?}"
    )))
}

/// The rules after pace: links and spam hold a comment for review, then the
/// author's trust score decides between publishing, holding and shadowing.
pub fn judge_content(
    rules: &ChatRules,
    body: &str,
    trust_score: i32,
    spam_max_repeated_characters: usize,
) -> Verdict {
    let settings = &rules.settings;
    if !settings.links_allowed && text::has_link(body) {
        return Verdict::Hold("links are held for review on this channel".to_owned());
    }
    if spam_max_repeated_characters > 0 {
        let run = text::longest_run(body);
        if run > spam_max_repeated_characters {
            return Verdict::Hold(format!(
                "a character repeated {run} times in a row looks like spam"
            ));
        }
    }
    if trust_score < settings.shadow_below_trust_score {
        return Verdict::Shadow(format!(
            "trust score {trust_score} is below the channel's shadow threshold {}",
            settings.shadow_below_trust_score
        ));
    }
    if trust_score < settings.hold_below_trust_score {
        return Verdict::Hold(format!(
            "trust score {trust_score} is below the channel's review threshold {}",
            settings.hold_below_trust_score
        ));
    }
    Verdict::Publish
}

/// A wait in milliseconds as a duration (never negative).
fn wait_of(millis: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// How many of a user's recent comments are remembered per channel, at most.
pub(crate) const MAX_REMEMBERED_POSTS: usize = 256;
/// The flood rule counts comments over this window.
pub(crate) const FLOOD_WINDOW_MS: i64 = 60_000;
/// Shards of the pace table, so posters on different shards don't wait for
/// one lock.
const PACE_SHARDS: usize = 64;

/// What each user posted lately on each channel, for slow mode, duplicates
/// and flood, in the memory of the process that takes the posts: the pace of
/// a station that runs one comment process ([`crate::pace::MemoryPace`]).
/// Several comment processes share [`crate::pace::RedisPace`] instead.
pub struct Pace {
    shards: Vec<Mutex<HashMap<(String, String), RecentPosts>>>,
}

#[derive(Default)]
struct RecentPosts {
    last_post_ms: i64,
    /// (time, hash of the folded body), oldest first.
    posts: VecDeque<(i64, u64)>,
}

/// The limits of one channel, from its chat settings.
#[derive(Debug, Clone, Copy)]
pub struct PaceLimits {
    /// Least time between one user's posts, in milliseconds (slow mode).
    pub slow_mode_ms: i64,
    /// How long a repeat of the user's earlier body counts as a duplicate, in
    /// milliseconds.
    pub duplicate_window_ms: i64,
    /// Most posts one user may make in a minute.
    pub max_per_minute: usize,
}

impl PaceLimits {
    /// The limits in a channel's chat settings, negative values taken as 0.
    pub fn of(rules: &ChatRules) -> PaceLimits {
        let settings = &rules.settings;
        PaceLimits {
            slow_mode_ms: i64::from(settings.slow_mode_seconds.max(0)) * 1000,
            duplicate_window_ms: i64::from(settings.duplicate_window_seconds.max(0)) * 1000,
            max_per_minute: usize::try_from(settings.max_comments_per_minute.max(0)).unwrap_or(0),
        }
    }
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            shards: (0..PACE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }
}

impl Pace {
    fn shard(&self, key: &(String, String)) -> &Mutex<HashMap<(String, String), RecentPosts>> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % PACE_SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// Checks a post against the limits and, if it may go, remembers it. The
    /// check and the record are one step, so two posts sent together can't
    /// both pass slow mode.
    pub fn admit(
        &self,
        channel_id: &str,
        user_id: &str,
        folded_body: &str,
        now_ms: i64,
        limits: PaceLimits,
    ) -> Result<(), CommentError> {
        let key = (channel_id.to_owned(), user_id.to_owned());
        let body_digest = body_digest(folded_body);
        let mut shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let recent = shard.entry(key).or_default();
        if let Some(refusal) = refusal(&recent.posts, body_digest, now_ms, limits) {
            return Err(refusal.into_error(limits));
        }
        recent.last_post_ms = now_ms;
        recent.posts.push_back((now_ms, body_digest));
        let horizon = FLOOD_WINDOW_MS.max(limits.duplicate_window_ms);
        while recent
            .posts
            .front()
            .is_some_and(|(time, _)| now_ms - time >= horizon)
            || recent.posts.len() > MAX_REMEMBERED_POSTS
        {
            recent.posts.pop_front();
        }
        Ok(())
    }

    /// Forgets users who have not posted within the longest window any rule
    /// looks at; run now and then so that the table holds only active users.
    pub fn forget_idle(&self, now_ms: i64) -> usize {
        let horizon = idle_horizon_ms();
        let mut forgotten = 0;
        for shard in &self.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let before = shard.len();
            shard.retain(|_, recent| now_ms - recent.last_post_ms < horizon);
            forgotten += before - shard.len();
        }
        forgotten
    }
}

/// How long after a user's last post no pace rule looks at it any more:
/// the longest window any rule may have.
pub(crate) fn idle_horizon_ms() -> i64 {
    FLOOD_WINDOW_MS
        .max(i64::from(MAX_DUPLICATE_WINDOW_SECONDS) * 1000)
        .max(i64::from(crate::settings::MAX_SLOW_MODE_SECONDS) * 1000)
}

/// Which pace rule refuses a post after `posts` (time and body digest,
/// oldest first), if any: slow mode, then duplicates, then flood.
fn refusal(
    posts: &VecDeque<(i64, u64)>,
    body_digest: u64,
    now_ms: i64,
    limits: PaceLimits,
) -> Option<PaceRefusal> {
    if limits.slow_mode_ms > 0
        && let Some((last_post_ms, _)) = posts.back()
    {
        let since = now_ms - last_post_ms;
        if since < limits.slow_mode_ms {
            return Some(PaceRefusal::SlowMode {
                wait_ms: limits.slow_mode_ms - since,
            });
        }
    }
    if limits.duplicate_window_ms > 0 {
        let earlier = posts.iter().rev().find(|(time, digest)| {
            *digest == body_digest && now_ms - time < limits.duplicate_window_ms
        });
        if let Some((time, _)) = earlier {
            return Some(PaceRefusal::Duplicate {
                age_ms: now_ms - time,
            });
        }
    }
    if limits.max_per_minute > 0 {
        let in_window: Vec<i64> = posts
            .iter()
            .map(|(time, _)| *time)
            .filter(|time| now_ms - time < FLOOD_WINDOW_MS)
            .collect();
        if in_window.len() >= limits.max_per_minute {
            let oldest = in_window[in_window.len() - limits.max_per_minute];
            return Some(PaceRefusal::Flood {
                wait_ms: FLOOD_WINDOW_MS - (now_ms - oldest),
            });
        }
    }
    None
}

/// A pace rule that refused a post, with what its message tells the poster.
/// The memory and the Redis pace boards decide the same refusals, and say
/// them in the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceRefusal {
    /// Slow mode: the poster's last comment is too recent.
    SlowMode {
        /// Milliseconds until the next comment may go.
        wait_ms: i64,
    },
    /// The same (folded) body as a comment still inside the duplicate window.
    Duplicate {
        /// Milliseconds since the earlier comment.
        age_ms: i64,
    },
    /// The flood limit: as many comments in the last minute as allowed.
    Flood {
        /// Milliseconds until the oldest of them leaves the minute.
        wait_ms: i64,
    },
}

impl PaceRefusal {
    /// The refusal as the poster is told it: slow mode and flood as "retry
    /// later" (429, `RESOURCE_EXHAUSTED`), a duplicate as a failed
    /// precondition (400).
    pub fn into_error(self, limits: PaceLimits) -> CommentError {
        match self {
            PaceRefusal::SlowMode { wait_ms } => {
                let wait_seconds = (wait_ms + 999) / 1000;
                CommentError::Limited(RetryLater {
                    message: format!(
                        "slow mode is on: one comment every {} s; wait {wait_seconds} s",
                        limits.slow_mode_ms / 1000
                    ),
                    wait: wait_of(wait_ms),
                })
            }
            PaceRefusal::Duplicate { age_ms } => CommentError::FailedPrecondition(format!(
                "you posted the same comment {} s ago; repeats are refused for {} s",
                age_ms / 1000,
                limits.duplicate_window_ms / 1000
            )),
            PaceRefusal::Flood { wait_ms } => {
                let wait_seconds = (wait_ms + 999) / 1000;
                CommentError::Limited(RetryLater {
                    message: format!(
                        "at most {} comments a minute on this channel; wait {wait_seconds} s",
                        limits.max_per_minute
                    ),
                    wait: wait_of(wait_ms),
                })
            }
        }
    }
}

/// A digest of a folded body that every process computes alike (FNV-1a,
/// 64 bits), so that replicas sharing the pace in Redis recognise each
/// other's duplicates, also across builds.
pub fn body_digest(folded_body: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut digest = OFFSET_BASIS;
    for byte in folded_body.as_bytes() {
        digest ^= u64::from(*byte);
        digest = digest.wrapping_mul(PRIME);
    }
    digest
}

/// Seconds over which a channel's comment rate is averaged.
pub(crate) const RATE_SECONDS: usize = 5;

/// Per channel: how fast comments are published, and which of them the live
/// display shows when that is faster than a person can read.
#[derive(Default)]
pub struct DisplayMeter {
    channels: Mutex<HashMap<String, ChannelMeter>>,
}

#[derive(Default)]
struct ChannelMeter {
    /// The second (unix) the counters below are for.
    second: i64,
    published_this_second: u32,
    shown_this_second: u32,
    /// Published comments in each of the last seconds, newest first.
    history: [u32; RATE_SECONDS],
}

/// Whether one published comment goes live, and what the channel's rate is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisplayDecision {
    /// Whether this comment goes out live.
    pub show: bool,
    /// The channel's recent rate of published comments, per second.
    pub comments_per_second: f64,
    /// The channel posts faster than its display rate, so live shows a sample.
    pub sampled: bool,
}

impl DisplayMeter {
    /// Counts a published comment and decides whether the live display shows
    /// it: at most `cap` a second (0: all).
    pub fn admit(&self, channel_id: &str, now_ms: i64, cap: u32) -> DisplayDecision {
        let second = now_ms.div_euclid(1000);
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let meter = match channels.get_mut(channel_id) {
            Some(meter) => meter,
            None => channels.entry(channel_id.to_owned()).or_default(),
        };
        if meter.second != second {
            let elapsed = usize::try_from(second - meter.second)
                .unwrap_or(RATE_SECONDS)
                .min(RATE_SECONDS);
            meter.history.rotate_right(elapsed);
            meter.history[0] = if elapsed == 1 {
                meter.published_this_second
            } else {
                0
            };
            for older in meter.history.iter_mut().take(elapsed).skip(1) {
                *older = 0;
            }
            meter.second = second;
            meter.published_this_second = 0;
            meter.shown_this_second = 0;
        }
        meter.published_this_second += 1;
        let past: u32 = meter.history.iter().sum();
        let show = cap == 0 || meter.shown_this_second < cap;
        if show {
            meter.shown_this_second += 1;
        }
        DisplayDecision::of(show, meter.published_this_second, past, cap)
    }
}

impl DisplayDecision {
    /// The decision on a comment that is `published_this_second`th this
    /// second, after `past` comments in the seconds before, under `cap`.
    pub(crate) fn of(show: bool, published_this_second: u32, past: u32, cap: u32) -> Self {
        // The average over the last few seconds, this one included.
        let comments_per_second = f64::from(past + published_this_second) / RATE_SECONDS as f64;
        let sampled =
            cap > 0 && (published_this_second > cap || comments_per_second > f64::from(cap));
        DisplayDecision {
            show,
            comments_per_second,
            sampled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::default_chat_settings;

    fn rules(edit: impl FnOnce(&mut onair_proto::comment::v1::ChatSettings)) -> ChatRules {
        let mut settings = default_chat_settings("news");
        edit(&mut settings);
        ChatRules::new(settings)
    }

    #[test]
    fn trust_decides_after_the_text_rules() {
        let rules = rules(|settings| {
            settings.hold_below_trust_score = 20;
            settings.shadow_below_trust_score = 5;
        });
        assert_eq!(judge_content(&rules, "nice", 50, 40), Verdict::Publish);
        assert!(matches!(
            judge_content(&rules, "nice", 10, 40),
            Verdict::Hold(_)
        ));
        assert!(matches!(
            judge_content(&rules, "nice", 2, 40),
            Verdict::Shadow(_)
        ));
        assert!(matches!(
            judge_content(&rules, "buy at cheap.com", 90, 40),
            Verdict::Hold(reason) if reason.contains("links")
        ));
        let links_allowed = rules_with_links();
        assert_eq!(
            judge_content(&links_allowed, "see cheap.com", 90, 40),
            Verdict::Publish
        );
        assert!(matches!(
            judge_content(&rules, &"w".repeat(41), 90, 40),
            Verdict::Hold(reason) if reason.contains("41 times")
        ));
    }

    fn rules_with_links() -> ChatRules {
        rules(|settings| settings.links_allowed = true)
    }

    #[test]
    fn blocked_terms_say_which() {
        let rules = rules(|settings| settings.blocked_terms = vec!["spoiler".to_owned()]);
        let verdict = blocked_term(&rules, &text::fold("S P O I L E R ahead"));
        assert_eq!(
            verdict,
            Some(Verdict::Reject(
                "contains the blocked term \"spoiler\"".to_owned()
            ))
        );
    }

    #[test]
    fn slow_mode_duplicates_and_flood() {
        let pace = Pace::default();
        let slow = PaceLimits {
            slow_mode_ms: 10_000,
            duplicate_window_ms: 0,
            max_per_minute: 0,
        };
        pace.admit("news", "ann", "hi", 0, slow)
            .expect("first post");
        let error = pace
            .admit("news", "ann", "again", 4_000, slow)
            .expect_err("too soon");
        assert!(error.to_string().contains("wait 6 s"), "{error}");
        pace.admit("news", "bob", "hi", 4_000, slow)
            .expect("another user");
        pace.admit("sports", "ann", "hi", 4_000, slow)
            .expect("another channel");
        pace.admit("news", "ann", "later", 10_000, slow)
            .expect("after the wait");

        let duplicates = PaceLimits {
            slow_mode_ms: 0,
            duplicate_window_ms: 30_000,
            max_per_minute: 0,
        };
        pace.admit("news", "cat", "goal", 0, duplicates)
            .expect("first");
        assert!(
            pace.admit("news", "cat", "goal", 5_000, duplicates)
                .is_err()
        );
        pace.admit("news", "cat", "goal", 31_000, duplicates)
            .expect("outside the window");

        let flood = PaceLimits {
            slow_mode_ms: 0,
            duplicate_window_ms: 0,
            max_per_minute: 3,
        };
        for second in 0..3 {
            pace.admit("news", "dan", &format!("m{second}"), second * 1000, flood)
                .expect("within the limit");
        }
        assert!(pace.admit("news", "dan", "m4", 3_000, flood).is_err());
        pace.admit("news", "dan", "m5", 60_000, flood)
            .expect("the first left the window");
        assert_eq!(
            pace.forget_idle(60_000 + 3_600_000),
            5,
            "every poster was idle"
        );
    }

    #[test]
    fn the_display_samples_above_its_cap() {
        let meter = DisplayMeter::default();
        let shown = (0..10)
            .filter(|index| meter.admit("news", 1_000 + index, 4).show)
            .count();
        assert_eq!(shown, 4);
        let decision = meter.admit("news", 1_500, 4);
        assert!(!decision.show);
        assert!(decision.sampled);
        // The next second starts a new allowance, and the rate remembers the burst.
        let next = meter.admit("news", 2_000, 4);
        assert!(next.show);
        assert!(next.comments_per_second >= 2.0, "{next:?}");
        let uncapped = meter.admit("sports", 0, 0);
        assert!(uncapped.show && !uncapped.sampled);
    }
}
