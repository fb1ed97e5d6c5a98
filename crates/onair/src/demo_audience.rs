//! The demo's simulated audience: viewers who comment on whatever their
//! channel is airing, through the same contracts as any app, so a newcomer's
//! live socket and replay have something to show. Comments that the station
//! refuses (a gap with nothing on air, slow mode) are simply not retried.

use std::time::Duration;

use anyhow::Context as _;
use onair_kit::server::ServiceChannels;
use onair_proto::clients::{CommentClient, UserClient};
use onair_proto::comment::v1 as comment;
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
    let mut posted: u64 = 0;
    loop {
        let (pause, viewer, channel_id, body) = {
            let mut random = rand::thread_rng();
            // Exponential gaps: posts arrive like independent viewers'.
            let gap = -random.gen_range(f64::EPSILON..1.0_f64).ln() / COMMENTS_PER_SECOND;
            let viewer = random.gen_range(0..tokens.len());
            let channel_id = channel_ids.choose(&mut random).cloned().unwrap_or_default();
            let phrase = PHRASES.choose(&mut random).copied().unwrap_or("hello");
            (gap, viewer, channel_id, phrase)
        };
        tokio::time::sleep(Duration::from_secs_f64(pause.min(10.0))).await;
        posted += 1;
        let mut request = tonic::Request::new(comment::PostCommentRequest {
            channel_id: channel_id.clone(),
            body: format!("{body} ({posted})"),
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

/// A demo viewer's tokens.
struct Credentials {
    access: String,
    refresh: String,
}
