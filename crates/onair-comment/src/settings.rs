//! A channel's chat settings (what its moderators decide) and the comment
//! service's own settings (what the station operator configures).

use std::sync::Arc;
use std::time::Duration;

use onair_kit::abuse::{AddressRate, TrustedPeers};
use onair_kit::config::{ConfigError, Key, Section, Settings, count_within, milliseconds_within};
use onair_proto::comment::v1 as pb;

use crate::error::CommentError;
use crate::text::BlockedTerms;

/// The most blocked terms a channel may list.
pub const MAX_BLOCKED_TERMS: usize = 1000;
/// The longest blocked term, in characters.
pub const MAX_BLOCKED_TERM_CHARS: usize = 100;
/// The longest slow mode: one comment a day would be no chat at all.
pub const MAX_SLOW_MODE_SECONDS: i32 = 3600;
/// The longest time a user's earlier comments are remembered for the
/// duplicate check.
pub const MAX_DUPLICATE_WINDOW_SECONDS: i32 = 3600;

/// What the comment service is configured with.
#[derive(Debug, Clone)]
pub struct CommentServiceSettings {
    /// The longest comment, in characters.
    pub max_body_chars: usize,
    /// How long a user (ban, trust score, role) is trusted without asking the
    /// user service again; a ban lands within this time even if the bus
    /// message announcing it is lost.
    pub user_cache_ttl: Duration,
    /// How long what is on air (and a channel's chat settings) is trusted
    /// without hearing of a change on the bus.
    pub channel_cache_ttl: Duration,
    /// Comments written to the database in one transaction at most: the
    /// writer takes what is waiting, up to this, so one commit serves many
    /// posts when many arrive together.
    pub write_batch: usize,
    /// Comments that may wait for the writer; posts beyond this wait to be
    /// queued, which slows the posters rather than growing memory.
    pub write_queue: usize,
    /// A character repeated more than this many times in a row holds the
    /// comment for review as spam (0 turns the rule off).
    pub spam_max_repeated_characters: usize,
    /// Trust points a user gains when a moderator approves their comment.
    pub trust_on_approve: i32,
    /// Trust points a user loses when a moderator rejects their comment.
    pub trust_on_reject: i32,
    /// Trust points a user loses when a comment others reported is rejected
    /// or hidden (the report is upheld).
    pub trust_on_upheld_report: i32,
    /// The most queued comments `WatchModerationQueue` sends before the live
    /// ones.
    pub queue_backlog: usize,
    /// Comments one client address may post on one channel, whichever
    /// accounts post them (off by default here; the station sets it).
    pub comments_per_ip: AddressRate,
    /// Whose word on a client's address is believed (`rpc.trusted_peers`).
    pub trusted_peers: TrustedPeers,
}

impl Section for CommentServiceSettings {
    const KEYS: &'static [Key] = &[
        Key::with_default("comment.max_chars", "200"),
        Key::with_default("comment.user_cache_ms", "1000"),
        Key::with_default("comment.per_ip_per_minute", "240"),
        Key::with_default("comment.burst_per_ip", "40"),
    ];

    fn read(settings: &Settings) -> Result<Self, ConfigError> {
        let layers = settings.layers();
        Ok(CommentServiceSettings {
            max_body_chars: layers.required(
                "comment.max_chars",
                "a whole number of characters from 1 to 10000",
                count_within(1..=10_000),
            )?,
            user_cache_ttl: layers.required(
                "comment.user_cache_ms",
                "a whole number of milliseconds from 0 to 60000",
                milliseconds_within(0..=60_000),
            )?,
            comments_per_ip: layers
                .address_rate("comment.per_ip_per_minute", "comment.burst_per_ip")?,
            trusted_peers: settings.trusted_peers.clone(),
            ..CommentServiceSettings::default()
        })
    }
}

impl Default for CommentServiceSettings {
    fn default() -> Self {
        CommentServiceSettings {
            max_body_chars: 200,
            user_cache_ttl: Duration::from_secs(1),
            channel_cache_ttl: Duration::from_secs(5),
            write_batch: 512,
            write_queue: 16_384,
            spam_max_repeated_characters: 40,
            trust_on_approve: 2,
            trust_on_reject: 5,
            trust_on_upheld_report: 10,
            queue_backlog: 1000,
            comments_per_ip: AddressRate::default(),
            trusted_peers: TrustedPeers::none(),
        }
    }
}

/// A channel's chat settings, checked, with the blocked terms compiled.
#[derive(Debug, Clone)]
pub struct ChatRules {
    /// The channel's chat settings, as stored.
    pub settings: pb::ChatSettings,
    /// The settings' blocked terms, compiled for matching.
    pub blocked_terms: Arc<BlockedTerms>,
}

impl ChatRules {
    /// Compiles the blocked terms of `settings`.
    pub fn new(settings: pb::ChatSettings) -> ChatRules {
        let blocked_terms = Arc::new(BlockedTerms::new(&settings.blocked_terms));
        ChatRules {
            settings,
            blocked_terms,
        }
    }
}

/// The settings of a channel whose moderators have not set any.
pub fn default_chat_settings(channel_id: &str) -> pb::ChatSettings {
    pb::ChatSettings {
        channel_id: channel_id.to_owned(),
        comments_enabled: true,
        slow_mode_seconds: 0,
        blocked_terms: Vec::new(),
        hold_below_trust_score: 20,
        shadow_below_trust_score: 5,
        display_rate_per_second: 30,
        links_allowed: false,
        duplicate_window_seconds: 30,
        max_comments_per_minute: 20,
        report_threshold: 3,
    }
}

/// Checks settings sent by a moderator, saying which field is out of range.
pub fn check_chat_settings(settings: &pb::ChatSettings) -> Result<(), CommentError> {
    let in_range = |field: &str, value: i32, low: i32, high: i32| {
        if (low..=high).contains(&value) {
            Ok(())
        } else {
            Err(CommentError::InvalidArgument(format!(
                "{field} is {value}; it must be from {low} to {high}"
            )))
        }
    };
    in_range(
        "slowModeSeconds",
        settings.slow_mode_seconds,
        0,
        MAX_SLOW_MODE_SECONDS,
    )?;
    in_range(
        "holdBelowTrustScore",
        settings.hold_below_trust_score,
        0,
        101,
    )?;
    in_range(
        "shadowBelowTrustScore",
        settings.shadow_below_trust_score,
        0,
        101,
    )?;
    in_range(
        "displayRatePerSecond",
        settings.display_rate_per_second,
        0,
        100_000,
    )?;
    in_range(
        "duplicateWindowSeconds",
        settings.duplicate_window_seconds,
        0,
        MAX_DUPLICATE_WINDOW_SECONDS,
    )?;
    in_range(
        "maxCommentsPerMinute",
        settings.max_comments_per_minute,
        0,
        100_000,
    )?;
    if settings.report_threshold == 0 {
        return Err(CommentError::InvalidArgument(
            "reportThreshold is missing or 0: a PUT replaces every chat setting, so send them all (GET returns the current ones)"
                .to_owned(),
        ));
    }
    in_range("reportThreshold", settings.report_threshold, 1, 1000)?;
    if settings.blocked_terms.len() > MAX_BLOCKED_TERMS {
        return Err(CommentError::InvalidArgument(format!(
            "blockedTerms has {} terms; the most is {MAX_BLOCKED_TERMS}",
            settings.blocked_terms.len()
        )));
    }
    for term in &settings.blocked_terms {
        let length = term.chars().count();
        if length == 0 || length > MAX_BLOCKED_TERM_CHARS {
            return Err(CommentError::InvalidArgument(format!(
                "blocked term {term:?} is {length} characters long; terms are 1 to {MAX_BLOCKED_TERM_CHARS}"
            )));
        }
        if term.chars().any(char::is_control) {
            return Err(CommentError::InvalidArgument(format!(
                "blocked term {term:?} contains a control character"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        check_chat_settings(&default_chat_settings("news")).expect("defaults pass their own check");
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let mut settings = default_chat_settings("news");
        settings.slow_mode_seconds = -1;
        let error = check_chat_settings(&settings).expect_err("negative slow mode");
        assert!(error.to_string().contains("slowModeSeconds"), "{error}");

        let mut settings = default_chat_settings("news");
        settings.blocked_terms = vec![String::new()];
        assert!(check_chat_settings(&settings).is_err());

        let mut settings = default_chat_settings("news");
        settings.report_threshold = 0;
        assert!(check_chat_settings(&settings).is_err());
    }
}
