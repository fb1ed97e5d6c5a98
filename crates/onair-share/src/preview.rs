//! What a share link's page shows: a title, a description, a picture of the
//! program and where the link sends a person, made from the media and
//! comment services and kept for [`ShareSettings::page_ttl`], so that a link
//! shared to thousands costs those services one call a few seconds.
//!
//! - A channel's page shows the channel and what is on air on it.
//! - A slot's page shows its program.
//! - A comment's page quotes the comment, while it is published (a comment a
//!   moderator removes leaves its page within the ttl).
//!
//! The picture is the card the playout takes of the program's asset when it
//! transcodes it (`/images/assets/{assetId}/card.jpg`), else the program's
//! artwork, else the station's card.
//!
//! [`ShareSettings::page_ttl`]: crate::ShareSettings::page_ttl

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onair_kit::clock::{Clock, timestamp_from_millis};
use onair_proto::clients::{CommentClient, MediaClient};
use onair_proto::comment::v1 as comment;
use onair_proto::media::v1 as media;
use onair_proto::share::v1 as pb;

use crate::error::ShareError;
use crate::links::{component, intents};
use crate::store::{ShareRecord, TargetKind};

/// The most pages kept; past it, pages that are due are dropped, then all.
const MAX_PAGES: usize = 10_000;
/// The longest title a page carries, in characters.
const MAX_TITLE_CHARS: usize = 100;
/// The longest description a page carries, in characters.
const MAX_DESCRIPTION_CHARS: usize = 200;

/// Makes and keeps the pages of share links.
pub struct Previews {
    media: MediaClient,
    comments: CommentClient,
    public_url: String,
    clock: Clock,
    ttl: Duration,
    pages: Mutex<HashMap<String, (Duration, Arc<pb::SharePage>)>>,
}

impl Previews {
    /// Pages under `public_url`, from these services, kept for `ttl`.
    pub fn new(
        media: MediaClient,
        comments: CommentClient,
        public_url: String,
        clock: Clock,
        ttl: Duration,
    ) -> Previews {
        Previews {
            media,
            comments,
            public_url,
            clock,
            ttl,
            pages: Mutex::new(HashMap::new()),
        }
    }

    /// The page of `code` if one made less than the ttl ago is kept.
    pub fn kept(&self, code: &str) -> Option<Arc<pb::SharePage>> {
        let now = self.clock.monotonic();
        let pages = self
            .pages
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (made, page) = pages.get(code)?;
        (now.saturating_sub(*made) < self.ttl).then(|| page.clone())
    }

    /// The page of `link`, as kept or made now.
    pub async fn page(&self, link: &ShareRecord) -> Result<Arc<pb::SharePage>, ShareError> {
        if let Some(page) = self.kept(&link.code) {
            return Ok(page);
        }
        let page = Arc::new(self.make(link).await?);
        let now = self.clock.monotonic();
        let mut pages = self
            .pages
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if pages.len() >= MAX_PAGES {
            let ttl = self.ttl;
            pages.retain(|_, (made, _)| now.saturating_sub(*made) < ttl);
            if pages.len() >= MAX_PAGES {
                pages.clear();
            }
        }
        pages.insert(link.code.clone(), (now, page.clone()));
        Ok(page)
    }

    /// The share link as the API shows it, with `text` in its intents.
    pub fn share(&self, link: &ShareRecord, text: &str) -> pb::Share {
        let url = format!("{}/s/{}", self.public_url, link.code);
        let target = match link.kind {
            TargetKind::Channel => pb::share::Target::ChannelId(link.target_id.clone()),
            TargetKind::Slot => pb::share::Target::SlotId(link.target_id.clone()),
            TargetKind::Comment => pb::share::Target::CommentId(link.target_id.clone()),
        };
        pb::Share {
            code: link.code.clone(),
            intents: Some(intents(&url, text)),
            url,
            target: Some(target),
            create_time: Some(timestamp_from_millis(link.create_time_ms)),
            vpos_ms: link.vpos_ms,
        }
    }

    async fn make(&self, link: &ShareRecord) -> Result<pb::SharePage, ShareError> {
        let channel = self.channel(&link.channel_id).await?;
        let (title, description, program) = match link.kind {
            TargetKind::Channel => {
                let now = self.now_on(&link.channel_id).await?;
                let description = match &now {
                    Some(program) => joined(
                        &format!("Now on air: {}.", program.title),
                        &program.description,
                    ),
                    None => format!("{} is off air now.", channel.name),
                };
                (channel.name.clone(), description, now)
            }
            TargetKind::Slot => {
                let program = self.program_of_slot(&link.slot_id).await?;
                let description = joined(&format!("On {}.", channel.name), &program.description);
                (program.title.clone(), description, Some(program))
            }
            TargetKind::Comment => {
                let comment = self.comment(&link.target_id).await?;
                let program = self.program_of_slot(&link.slot_id).await?;
                let description = format!(
                    "A comment on {} ({}) at {}.",
                    program.title,
                    channel.name,
                    clock_time(link.vpos_ms)
                );
                (format!("“{}”", comment.body), description, Some(program))
            }
        };
        let share = self.share(link, &title);
        Ok(pb::SharePage {
            title: shortened(&title, MAX_TITLE_CHARS),
            description: shortened(&description, MAX_DESCRIPTION_CHARS),
            image_url: self.image_of(program.as_ref()),
            watch_url: self.watch_url(link),
            share: Some(share),
        })
    }

    /// The player at the link's place: the channel, and the slot and the
    /// moment of a slot's or a comment's link.
    fn watch_url(&self, link: &ShareRecord) -> String {
        let mut url = format!(
            "{}/?channel={}",
            self.public_url,
            component(&link.channel_id)
        );
        if !link.slot_id.is_empty() {
            url.push_str(&format!(
                "&slot={}&vposMs={}",
                component(&link.slot_id),
                link.vpos_ms
            ));
        }
        if link.kind == TargetKind::Comment {
            url.push_str(&format!("&comment={}", component(&link.target_id)));
        }
        url
    }

    fn image_of(&self, program: Option<&media::Program>) -> String {
        match program {
            Some(program) if !program.asset_id.is_empty() => format!(
                "{}/images/assets/{}/card.jpg",
                self.public_url,
                component(&program.asset_id)
            ),
            Some(program)
                if program.artwork_url.starts_with("https://")
                    || program.artwork_url.starts_with("http://") =>
            {
                program.artwork_url.clone()
            }
            _ => format!("{}/images/station/card.jpg", self.public_url),
        }
    }

    async fn channel(&self, channel_id: &str) -> Result<media::Channel, ShareError> {
        let mut client = self.media.clone();
        let request = media::GetChannelRequest {
            channel_id: channel_id.to_owned(),
        };
        Ok(client
            .get_channel(request)
            .await
            .map_err(|status| ShareError::from_peer("media", &status))?
            .into_inner())
    }

    /// The channel's slot, for a new link to it.
    pub async fn slot(&self, slot_id: &str) -> Result<media::Slot, ShareError> {
        let mut client = self.media.clone();
        let request = media::GetSlotRequest {
            slot_id: slot_id.to_owned(),
        };
        Ok(client
            .get_slot(request)
            .await
            .map_err(|status| ShareError::from_peer("media", &status))?
            .into_inner())
    }

    /// Checks that the channel exists, for a new link to it.
    pub async fn check_channel(&self, channel_id: &str) -> Result<(), ShareError> {
        self.channel(channel_id).await.map(|_| ())
    }

    /// The comment, as anyone sees it: only a published one exists.
    pub async fn comment(&self, comment_id: &str) -> Result<comment::Comment, ShareError> {
        let mut client = self.comments.clone();
        let request = comment::GetCommentRequest {
            comment_id: comment_id.to_owned(),
        };
        Ok(client
            .get_comment(request)
            .await
            .map_err(|status| ShareError::from_peer("comment", &status))?
            .into_inner())
    }

    async fn program_of_slot(&self, slot_id: &str) -> Result<media::Program, ShareError> {
        let slot = self.slot(slot_id).await?;
        let mut client = self.media.clone();
        let request = media::GetProgramRequest {
            program_id: slot.program_id,
        };
        Ok(client
            .get_program(request)
            .await
            .map_err(|status| ShareError::from_peer("media", &status))?
            .into_inner())
    }

    async fn now_on(&self, channel_id: &str) -> Result<Option<media::Program>, ShareError> {
        let mut client = self.media.clone();
        let request = media::GetNowNextRequest {
            channel_id: channel_id.to_owned(),
        };
        let now_next = client
            .get_now_next(request)
            .await
            .map_err(|status| ShareError::from_peer("media", &status))?
            .into_inner();
        Ok(now_next.now.and_then(|entry| entry.program))
    }
}

/// `first`, then `rest` after a space when there is any.
fn joined(first: &str, rest: &str) -> String {
    if rest.trim().is_empty() {
        first.to_owned()
    } else {
        format!("{first} {}", rest.trim())
    }
}

/// `text` cut to `max_chars` characters, with an ellipsis when cut.
fn shortened(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars.saturating_sub(1)) {
        Some((end, _)) if text[end..].chars().nth(1).is_some() => format!("{}…", &text[..end]),
        _ => text.to_owned(),
    }
}

/// `vpos_ms` as a player shows it: `m:ss`, or `h:mm:ss` past an hour.
fn clock_time(vpos_ms: i64) -> String {
    let seconds = vpos_ms.max(0) / 1000;
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{minutes}:{seconds:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        assert_eq!(shortened("abcdef", 6), "abcdef");
        assert_eq!(shortened("abcdefg", 6), "abcde…");
        assert_eq!(shortened("ライブ配信中です", 4), "ライブ…");
        assert_eq!(shortened("", 4), "");
    }

    #[test]
    fn moments_read_as_a_player_shows_them() {
        assert_eq!(clock_time(0), "0:00");
        assert_eq!(clock_time(61_500), "1:01");
        assert_eq!(clock_time(3_725_000), "1:02:05");
    }
}
