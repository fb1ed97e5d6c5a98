//! Roles and bans take effect on the next request: a token's role is held to
//! what the user service says of the user now, over REST and gRPC, and a role
//! change or a ban revokes the refresh tokens issued before it. A real
//! station on port 0, on SQLite and on PostgreSQL.
//!
//! The stations here trust what they read of a user for a minute
//! (`user.cache_ms`), far longer than any test takes: every change seen
//! here arrived through `user.changed`, not by a cache entry expiring.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use onair_proto::comment::v1 as comment;
use onair_proto::comment::v1::comment_service_client::CommentServiceClient;
use onair_proto::user::v1 as pb;
use onair_testkit::on_both_backends;
use onair_testkit::{
    Backend, PATIENCE, TestStation, authorized, create_channel, create_viewer, send,
};
use reqwest::Method;
use serde_json::{Value, json};
use tonic::Code;

/// Long enough that no cached standing expires during a test.
const USER_CACHE: (&str, &str) = ("user.cache_ms", "60000");

/// A user of the station and the credentials they hold.
struct Person {
    id: String,
    access_token: String,
    refresh_token: String,
}

/// A station with a channel `news`, whose caches outlast the test.
async fn station(backend: Backend, extra: &[(&str, &str)]) -> TestStation {
    let mut settings = vec![USER_CACHE];
    settings.extend_from_slice(extra);
    let station = TestStation::start_with(backend, &settings).await;
    create_channel(&station, "news").await;
    station
}

async fn viewer(station: &TestStation, name: &str) -> Person {
    let created = create_viewer(station, name).await;
    Person {
        id: created["user"]["id"].as_str().unwrap().to_owned(),
        access_token: created["accessToken"].as_str().unwrap().to_owned(),
        refresh_token: created["refreshToken"].as_str().unwrap().to_owned(),
    }
}

/// Gives a user a role, as the station's operator.
async fn set_role(station: &TestStation, user_id: &str, role: &str) {
    let (status, user) = send(
        station,
        Method::POST,
        &format!("/v1/users/{user_id}:setRole"),
        Some(&station.operator_key),
        Some(json!({"role": role})),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["role"], role, "{user}");
}

async fn refresh(station: &TestStation, refresh_token: &str) -> (u16, Value) {
    send(
        station,
        Method::POST,
        "/v1/tokens:refresh",
        None,
        Some(json!({"refreshToken": refresh_token})),
    )
    .await
}

/// The role an access token claims.
fn claimed_role(access_token: &str) -> String {
    let payload = access_token.split('.').nth(1).expect("a JWT");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).unwrap();
    claims["role"].as_str().expect("a role claim").to_owned()
}

/// A new user given `role`, who then refreshed into a token of that role.
async fn person_with_role(station: &TestStation, name: &str, role: &str) -> Person {
    let person = viewer(station, name).await;
    set_role(station, &person.id, role).await;
    let (status, token) = refresh(station, &person.refresh_token).await;
    assert_eq!(status, 200, "{token}");
    let access_token = token["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(claimed_role(&access_token), role);
    Person {
        id: person.id,
        access_token,
        refresh_token: token["refreshToken"].as_str().unwrap().to_owned(),
    }
}

async fn ban_over_rest(station: &TestStation, token: &str, user_id: &str) -> (u16, Value) {
    send(
        station,
        Method::POST,
        &format!("/v1/users/{user_id}:ban"),
        Some(token),
        Some(json!({"durationSeconds": "600", "reason": "spam"})),
    )
    .await
}

async fn unban(station: &TestStation, user_id: &str) {
    let (status, user) = send(
        station,
        Method::POST,
        &format!("/v1/users/{user_id}:unban"),
        Some(&station.operator_key),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{user}");
}

/// Turns slow mode on or off on `news` with `token`, over REST.
async fn chat_settings_over_rest(
    station: &TestStation,
    token: &str,
    slow_mode_seconds: i32,
) -> (u16, Value) {
    let (status, mut settings) = send(
        station,
        Method::GET,
        "/v1/channels/news/chatSettings",
        Some(&station.operator_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{settings}");
    settings["slowModeSeconds"] = json!(slow_mode_seconds);
    send(
        station,
        Method::PUT,
        "/v1/channels/news/chatSettings",
        Some(token),
        Some(settings),
    )
    .await
}

async fn ban_over_grpc(
    station: &TestStation,
    token: &str,
    user_id: &str,
) -> Result<pb::User, tonic::Status> {
    let mut users = station.user_client().await;
    let request = pb::BanUserRequest {
        user_id: user_id.to_owned(),
        duration_seconds: 600,
        reason: "spam".to_owned(),
    };
    users
        .ban_user(authorized(request, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn chat_settings_over_grpc(
    station: &TestStation,
    token: &str,
    slow_mode_seconds: i32,
) -> Result<comment::ChatSettings, tonic::Status> {
    let mut comments = CommentServiceClient::new(station.channel().await);
    let current = comments
        .get_chat_settings(comment::GetChatSettingsRequest {
            channel_id: "news".to_owned(),
        })
        .await
        .expect("chat settings are public")
        .into_inner();
    let request = comment::UpdateChatSettingsRequest {
        channel_id: "news".to_owned(),
        chat_settings: Some(comment::ChatSettings {
            slow_mode_seconds,
            ..current
        }),
    };
    comments
        .update_chat_settings(authorized(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// A REST refusal: 403 PermissionDenied whose message says `expected`.
fn assert_denied(status: u16, body: &Value, expected: &str) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], 7, "{body}");
    let message = body["message"].as_str().expect("a message");
    assert!(message.contains(expected), "{message:?} says {expected:?}");
}

/// A gRPC refusal: PermissionDenied whose message says `expected`.
fn assert_denied_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, expected: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(expected),
        "{:?} says {expected:?}",
        status.message()
    );
}

const NOW_A_VIEWER: &str = "your role is now viewer, no longer moderator";

on_both_backends!(
    a_demoted_moderator_is_refused_on_the_next_request,
    a_demoted_operator_cannot_take_the_role_back_or_refresh_into_it,
    a_banned_moderator_cannot_moderate_until_the_ban_ends,
    the_station_operator_cannot_be_banned_and_its_key_keeps_working,
    a_demotion_crosses_nats_to_every_service,
);

async fn a_demoted_moderator_is_refused_on_the_next_request(backend: Backend) {
    let station = station(backend, &[]).await;
    let moderator = person_with_role(&station, "Mod", "MODERATOR").await;
    let target = viewer(&station, "Spammer").await;

    // As a moderator, the token bans and changes chat settings.
    let (status, body) = ban_over_rest(&station, &moderator.access_token, &target.id).await;
    assert_eq!(status, 200, "{body}");
    unban(&station, &target.id).await;
    ban_over_grpc(&station, &moderator.access_token, &target.id)
        .await
        .expect("a moderator bans over gRPC");
    unban(&station, &target.id).await;
    let (status, body) = chat_settings_over_rest(&station, &moderator.access_token, 5).await;
    assert_eq!(status, 200, "{body}");
    chat_settings_over_grpc(&station, &moderator.access_token, 6)
        .await
        .expect("a moderator changes chat settings over gRPC");

    set_role(&station, &moderator.id, "VIEWER").await;

    // The very next request with the same token is refused, everywhere.
    let (status, body) = ban_over_rest(&station, &moderator.access_token, &target.id).await;
    assert_denied(status, &body, NOW_A_VIEWER);
    assert_denied(status, &body, "sign in again (POST /v1/tokens:refresh)");
    assert_denied_status(
        ban_over_grpc(&station, &moderator.access_token, &target.id).await,
        NOW_A_VIEWER,
    );
    let (status, body) = chat_settings_over_rest(&station, &moderator.access_token, 7).await;
    assert_denied(status, &body, NOW_A_VIEWER);
    assert_denied_status(
        chat_settings_over_grpc(&station, &moderator.access_token, 8).await,
        NOW_A_VIEWER,
    );

    // Nothing the refused requests asked for happened.
    let (status, user) = send(
        &station,
        Method::GET,
        &format!("/v1/users/{}", target.id),
        Some(&station.operator_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{user}");
    assert!(user.get("ban").is_none(), "{user}");
    let (status, settings) = send(
        &station,
        Method::GET,
        "/v1/channels/news/chatSettings",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["slowModeSeconds"], 6, "{settings}");

    // The old token still does what a viewer may.
    let (status, me) = send(
        &station,
        Method::GET,
        "/v1/users/me",
        Some(&moderator.access_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["role"], "VIEWER", "{me}");
    station.stop().await;
}

async fn a_demoted_operator_cannot_take_the_role_back_or_refresh_into_it(backend: Backend) {
    let station = station(backend, &[]).await;
    let operator = person_with_role(&station, "Second operator", "OPERATOR").await;
    let (status, channel) = send(
        &station,
        Method::POST,
        "/v1/channels",
        Some(&operator.access_token),
        Some(json!({"id": "sports", "number": 2, "name": "Sports"})),
    )
    .await;
    assert_eq!(status, 201, "an operator creates channels: {channel}");

    set_role(&station, &operator.id, "VIEWER").await;

    // The old token can't give the role back, over REST or gRPC.
    let now_a_viewer = "your role is now viewer, no longer operator";
    let set_own_role = format!("/v1/users/{}:setRole", operator.id);
    let (status, body) = send(
        &station,
        Method::POST,
        &set_own_role,
        Some(&operator.access_token),
        Some(json!({"role": "OPERATOR"})),
    )
    .await;
    assert_denied(status, &body, now_a_viewer);
    let mut users = station.user_client().await;
    let request = pb::SetUserRoleRequest {
        user_id: operator.id.clone(),
        role: pb::Role::Operator as i32,
    };
    assert_denied_status(
        users
            .set_user_role(authorized(request, &operator.access_token))
            .await,
        now_a_viewer,
    );
    // Nor reach any other operator route.
    let (status, body) = send(
        &station,
        Method::POST,
        "/v1/channels",
        Some(&operator.access_token),
        Some(json!({"id": "movies", "number": 3, "name": "Movies"})),
    )
    .await;
    assert_denied(status, &body, now_a_viewer);
    let (status, body) = send(
        &station,
        Method::POST,
        "/v1/programs",
        Some(&operator.access_token),
        Some(json!({"title": "Late Show", "duration": "600s"})),
    )
    .await;
    assert_denied(status, &body, now_a_viewer);
    assert_denied_status(
        users
            .rotate_signing_key(authorized(
                pb::RotateSigningKeyRequest {},
                &operator.access_token,
            ))
            .await,
        now_a_viewer,
    );

    // The refresh token issued before the demotion is exchanged once, for a
    // viewer's token and a new refresh token.
    let (status, token) = refresh(&station, &operator.refresh_token).await;
    assert_eq!(status, 200, "{token}");
    let viewer_token = token["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(claimed_role(&viewer_token), "VIEWER");
    let new_refresh_token = token["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh_token, operator.refresh_token);
    let (status, body) = send(
        &station,
        Method::POST,
        &set_own_role,
        Some(&viewer_token),
        Some(json!({"role": "OPERATOR"})),
    )
    .await;
    assert_denied(
        status,
        &body,
        "this needs the operator role; the caller is a viewer",
    );

    // The old refresh token is spent; the new one goes on working.
    let (status, body) = refresh(&station, &operator.refresh_token).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        onair_testkit::error_message(&body)
            .contains("use the refreshToken that the refresh which replaced it returned"),
        "{body}"
    );
    let (status, token) = refresh(&station, &new_refresh_token).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(
        claimed_role(token["accessToken"].as_str().unwrap()),
        "VIEWER"
    );
    assert_eq!(token["refreshToken"], new_refresh_token.as_str());

    let (status, user) = send(
        &station,
        Method::GET,
        &format!("/v1/users/{}", operator.id),
        Some(&station.operator_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["role"], "VIEWER", "{user}");
    let (status, channel) = send(&station, Method::GET, "/v1/channels/movies", None, None).await;
    assert_eq!(status, 404, "{channel}");
    station.stop().await;
}

async fn a_banned_moderator_cannot_moderate_until_the_ban_ends(backend: Backend) {
    let station = station(backend, &[]).await;
    let moderator = person_with_role(&station, "Mod", "MODERATOR").await;
    let target = viewer(&station, "Spammer").await;
    let (status, body) = chat_settings_over_rest(&station, &moderator.access_token, 5).await;
    assert_eq!(status, 200, "{body}");

    let (status, banned) = send(
        &station,
        Method::POST,
        &format!("/v1/users/{}:ban", moderator.id),
        Some(&station.operator_key),
        Some(json!({"durationSeconds": "60", "reason": "abuse of power"})),
    )
    .await;
    assert_eq!(status, 200, "{banned}");

    let banned_until = "you are banned until";
    let (status, body) = ban_over_rest(&station, &moderator.access_token, &target.id).await;
    assert_denied(status, &body, banned_until);
    assert_denied(status, &body, "this needs the moderator role");
    assert_denied_status(
        ban_over_grpc(&station, &moderator.access_token, &target.id).await,
        banned_until,
    );
    let (status, body) = chat_settings_over_rest(&station, &moderator.access_token, 7).await;
    assert_denied(status, &body, banned_until);
    assert_denied_status(
        chat_settings_over_grpc(&station, &moderator.access_token, 8).await,
        banned_until,
    );

    // A refresh keeps the account and the role, not the privileges.
    let (status, token) = refresh(&station, &moderator.refresh_token).await;
    assert_eq!(status, 200, "{token}");
    let refreshed = token["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(claimed_role(&refreshed), "MODERATOR");
    let (status, body) = chat_settings_over_rest(&station, &refreshed, 7).await;
    assert_denied(status, &body, banned_until);
    let (status, me) = send(
        &station,
        Method::GET,
        "/v1/users/me",
        Some(&refreshed),
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["ban"]["reason"], "abuse of power", "{me}");

    // When the ban ends, the same token moderates again.
    station.clock.advance(Duration::from_secs(61));
    let (status, body) = chat_settings_over_rest(&station, &moderator.access_token, 9).await;
    assert_eq!(status, 200, "{body}");

    // A new, permanent ban lands at once, and so does lifting it.
    let (status, banned) = send(
        &station,
        Method::POST,
        &format!("/v1/users/{}:ban", moderator.id),
        Some(&station.operator_key),
        Some(json!({"durationSeconds": "0", "reason": "again"})),
    )
    .await;
    assert_eq!(status, 200, "{banned}");
    let (status, body) = chat_settings_over_rest(&station, &refreshed, 10).await;
    assert_denied(
        status,
        &body,
        "you are banned, and a banned user acts only as a viewer",
    );
    unban(&station, &moderator.id).await;
    let (status, body) = chat_settings_over_rest(&station, &refreshed, 10).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = ban_over_rest(&station, &refreshed, &target.id).await;
    assert_eq!(status, 200, "{body}");
    station.stop().await;
}

async fn the_station_operator_cannot_be_banned_and_its_key_keeps_working(backend: Backend) {
    let station = station(backend, &[]).await;
    let operator = person_with_role(&station, "Second operator", "OPERATOR").await;
    let (status, body) = ban_over_rest(&station, &operator.access_token, "operator").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        onair_testkit::error_message(&body)
            .contains("the station's operator account cannot be banned"),
        "{body}"
    );

    // The key file's operator demotes and bans the other one, and goes on.
    set_role(&station, &operator.id, "MODERATOR").await;
    let (status, body) = ban_over_rest(&station, &station.operator_key, &operator.id).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = chat_settings_over_rest(&station, &station.operator_key, 3).await;
    assert_eq!(status, 200, "{body}");
    let (status, channel) = send(
        &station,
        Method::POST,
        "/v1/channels",
        Some(&station.operator_key),
        Some(json!({"id": "sports", "number": 2, "name": "Sports"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    station.stop().await;
}

/// With NATS as the bus, the demotion reaches the services through the
/// broker; with a minute of cache, nothing else could make it land.
async fn a_demotion_crosses_nats_to_every_service(backend: Backend) {
    let prefix = onair_testkit::unique_name("roles");
    let nats = onair_testkit::nats_url();
    let station = station(
        backend,
        &[("nats_url", nats.as_str()), ("bus_prefix", prefix.as_str())],
    )
    .await;
    let moderator = person_with_role(&station, "Mod", "MODERATOR").await;
    let (status, body) = chat_settings_over_rest(&station, &moderator.access_token, 5).await;
    assert_eq!(status, 200, "{body}");

    set_role(&station, &moderator.id, "VIEWER").await;

    // The broker delivers in its own time; the deadline only guards a hang.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = chat_settings_over_rest(&station, &moderator.access_token, 6).await;
        if status == 403 {
            assert_denied(status, &body, NOW_A_VIEWER);
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demotion did not reach the comment service within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The user service changed the user itself: its refusal is immediate.
    let target = viewer(&station, "Spammer").await;
    let (status, body) = ban_over_rest(&station, &moderator.access_token, &target.id).await;
    assert_denied(status, &body, NOW_A_VIEWER);
    station.stop().await;
}
