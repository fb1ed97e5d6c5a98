//! The demo's simulated audience: viewers who each watch a channel (and
//! now and then zap to another), heartbeat as a player does, and comment on
//! whatever their channel is airing, through the same contracts as any app,
//! so a newcomer's live socket, viewer counts and replay have something to
//! show. A viewer who zaps to a channel shares it, and a friend opens the
//! link, so the share counts have something to show too. Comments that the station refuses (a gap with nothing on air, slow
//! mode) are simply not retried.

use std::time::Duration;

use anyhow::Context as _;
use onair_kit::server::ServiceChannels;
use onair_proto::audience::v1 as audience;
use onair_proto::clients::{AudienceClient, CommentClient, ShareClient, UserClient};
use onair_proto::comment::v1 as comment;
use onair_proto::share::v1 as share;
use onair_proto::user::v1 as user;
use rand::Rng as _;
use rand::seq::SliceRandom as _;

/// The viewers' names.
const VIEWERS: &[&str] = &[
    "Aiko", "Ben", "Chen", "Dara", "Emi", "Farid", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena",
];

/// What the viewers say; a running number keeps repeats apart.
const PHRASES: &[&str] = &[
    "good evening everyone",
    "what a picture",
    "きたー！",
    "wwwww",
    "this part is my favourite",
    "who else is watching from home?",
    "8888888",
    "the colours on this test pattern though",
    "いいね",
    "first time here, hello!",
    "turn it up!",
    "can't wait for the next show",
];

/// Comments the whole audience posts a second, on average.
const COMMENTS_PER_SECOND: f64 = 2.0;

/// How often each viewer heartbeats: within the station's default
/// heartbeat interval.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(20);

/// One comment in this many carries display commands.
const DRESSED_ONE_IN: u32 = 6;

/// The display commands the viewers use.
const STYLES: &[&[&str]] = &[
    &["red"],
    &["ue", "yellow"],
    &["shita", "cyan"],
    &["big", "pink"],
    &["small", "green"],
    &["ue", "big", "orange"],
];

/// One comment in this many comes after the viewer zapped to another channel.
const ZAP_ONE_IN: u32 = 25;

/// Posts comments on the demo's channels until aborted.
pub async fn run(channels: ServiceChannels, channel_ids: Vec<String>) -> anyhow::Result<()> {
    let mut users = UserClient::new(channels.channel(onair_kit::config::ServiceRole::User));
    let mut tokens = Vec::with_capacity(VIEWERS.len());
    for name in VIEWERS {
        let created = users
            .create_user(user::CreateUserRequest {
                display_name: (*name).to_owned(),
            })
            .await
            .with_context(|| format!("cannot create the demo viewer {name}"))?
            .into_inner();
        tokens.push(Credentials {
            access: created.access_token,
            refresh: created.refresh_token,
        });
    }
    let mut comments =
        CommentClient::new(channels.channel(onair_kit::config::ServiceRole::Comment));
    let mut audience =
        AudienceClient::new(channels.channel(onair_kit::config::ServiceRole::Audience));
    let mut shares = ShareClient::new(channels.channel(onair_kit::config::ServiceRole::Share));
    let mut watching: Vec<String> = {
        let mut random = rand::thread_rng();
        (0..tokens.len())
            .map(|_| channel_ids.choose(&mut random).cloned().unwrap_or_default())
            .collect()
    };
    let mut last_heartbeats: Option<std::time::Instant> = None;
    let mut posted: u64 = 0;
    loop {
        if last_heartbeats.is_none_or(|at| at.elapsed() >= HEARTBEAT_EVERY) {
            heartbeat_all(&mut audience, &tokens, &watching).await;
            last_heartbeats = Some(std::time::Instant::now());
        }
        let (pause, viewer, zap_to, body, commands) = {
            let mut random = rand::thread_rng();
            // Exponential gaps: posts arrive like independent viewers'.
            let gap = -random.gen_range(f64::EPSILON..1.0_f64).ln() / COMMENTS_PER_SECOND;
            let viewer = random.gen_range(0..tokens.len());
            let zap_to = random
                .gen_ratio(1, ZAP_ONE_IN)
                .then(|| channel_ids.choose(&mut random).cloned())
                .flatten();
            let phrase = PHRASES.choose(&mut random).copied().unwrap_or("hello");
            // Now and then a viewer dresses a comment up, as on Niconico.
            let commands: &[&str] = if random.gen_ratio(1, DRESSED_ONE_IN) {
                STYLES.choose(&mut random).copied().unwrap_or(&[])
            } else {
                &[]
            };
            (gap, viewer, zap_to, phrase, commands)
        };
        tokio::time::sleep(Duration::from_secs_f64(pause.min(10.0))).await;
        if let Some(channel_id) = zap_to {
            // The old channel forgets the viewer once their heartbeat runs out.
            watching[viewer] = channel_id;
            heartbeat_all(
                &mut audience,
                &tokens[viewer..=viewer],
                &watching[viewer..=viewer],
            )
            .await;
            share_channel(&mut shares, &tokens[viewer], &watching[viewer]).await;
        }
        let channel_id = watching[viewer].clone();
        posted += 1;
        let mut request = tonic::Request::new(comment::PostCommentRequest {
            channel_id: channel_id.clone(),
            body: format!("{body} ({posted})"),
            commands: commands
                .iter()
                .map(|command| (*command).to_owned())
                .collect(),
        });
        let Ok(authorization) = format!("Bearer {}", tokens[viewer].access).parse() else {
            continue;
        };
        request
            .metadata_mut()
            .insert("authorization", authorization);
        match comments.post_comment(request).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                // Access tokens are short-lived; a real app refreshes too.
                let refreshed = users
                    .refresh_access_token(user::RefreshAccessTokenRequest {
                        refresh_token: tokens[viewer].refresh.clone(),
                    })
                    .await
                    .context("cannot refresh a demo viewer's access token")?
                    .into_inner();
                tokens[viewer].access = refreshed.access_token;
                if !refreshed.refresh_token.is_empty() {
                    tokens[viewer].refresh = refreshed.refresh_token;
                }
            }
            Err(status) => {
                tracing::debug!(channel_id, error = %status, "a demo comment was refused");
            }
        }
    }
}

/// Tells the audience service that each viewer watches their channel. A
/// refusal (an expired token, refreshed at the viewer's next comment) is
/// logged and tried again at the next round.
async fn heartbeat_all(audience: &mut AudienceClient, tokens: &[Credentials], watching: &[String]) {
    for (credentials, channel_id) in tokens.iter().zip(watching) {
        let mut request = tonic::Request::new(audience::HeartbeatRequest {
            channel_id: channel_id.clone(),
        });
        let Ok(authorization) = format!("Bearer {}", credentials.access).parse() else {
            continue;
        };
        request
            .metadata_mut()
            .insert("authorization", authorization);
        if let Err(status) = audience.heartbeat(request).await {
            tracing::debug!(channel_id, error = %status, "a demo heartbeat was refused");
        }
    }
}

/// Shares `channel_id` as the viewer (the same link each time they share
/// it again), and opens the link as the friend they sent it to would.
async fn share_channel(shares: &mut ShareClient, credentials: &Credentials, channel_id: &str) {
    let mut request = tonic::Request::new(share::CreateShareRequest {
        target: Some(share::create_share_request::Target::ChannelId(
            channel_id.to_owned(),
        )),
        vpos_ms: 0,
    });
    let Ok(authorization) = format!("Bearer {}", credentials.access).parse() else {
        return;
    };
    request
        .metadata_mut()
        .insert("authorization", authorization);
    let code = match shares.create_share(request).await {
        Ok(link) => link.into_inner().code,
        Err(status) => {
            tracing::debug!(channel_id, error = %status, "a demo share was refused");
            return;
        }
    };
    if let Err(status) = shares.open_share(share::OpenShareRequest { code }).await {
        tracing::debug!(channel_id, error = %status, "a demo share link did not open");
    }
}

/// A demo viewer's tokens.
struct Credentials {
    access: String,
    refresh: String,
}
