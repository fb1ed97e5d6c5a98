//! The user service end to end: a real station on port 0, reached over gRPC,
//! on SQLite and on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use onair_kit::auth::{Authenticator, UserServiceCredentials};
use onair_kit::clock::Clock;
use onair_proto::ServiceChannel;
use onair_proto::user::v1 as pb;
use onair_testkit::on_both_backends;
use onair_testkit::{Backend, TestStation, authorized};
use tonic::Code;

async fn new_viewer(station: &TestStation, name: &str) -> pb::CreateUserResponse {
    let mut client = station.user_client().await;
    client
        .create_user(pb::CreateUserRequest {
            display_name: name.to_owned(),
        })
        .await
        .expect("create a viewer")
        .into_inner()
}

async fn promote(station: &TestStation, user_id: &str, role: pb::Role) {
    let mut client = station.user_client().await;
    client
        .set_user_role(authorized(
            pb::SetUserRoleRequest {
                user_id: user_id.to_owned(),
                role: role as i32,
            },
            &station.operator_key,
        ))
        .await
        .expect("the operator sets roles");
}

async fn refreshed_token(station: &TestStation, refresh_token: &str) -> String {
    let mut client = station.user_client().await;
    client
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: refresh_token.to_owned(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .access_token
}

on_both_backends!(
    a_new_viewer_gets_a_token_that_other_services_verify_from_the_jwks,
    a_viewer_without_a_name_gets_one,
    bad_display_names_are_refused_with_a_reason,
    bad_and_expired_tokens_are_refused,
    roles_decide_who_may_do_what,
    bans_last_their_duration_and_can_be_lifted,
    batch_get_users_keeps_order_and_names_the_missing,
    unknown_users_are_not_found,
    trust_scores_move_within_bounds,
    rotated_keys_keep_old_tokens_valid,
);

async fn a_new_viewer_gets_a_token_that_other_services_verify_from_the_jwks(backend: Backend) {
    let station = TestStation::start(backend).await;
    let created = new_viewer(&station, "Alice").await;
    let user = created.user.expect("user");
    assert_eq!(user.display_name, "Alice");
    assert_eq!(user.role, pb::Role::Viewer as i32);
    assert_eq!(user.trust_score, 50);
    assert!(!created.access_token.is_empty());
    assert!(created.refresh_token.starts_with("onair_rt_"));

    let mut client = station.user_client().await;
    let me = client
        .get_me(authorized(pb::GetMeRequest {}, &created.access_token))
        .await
        .expect("the token authenticates")
        .into_inner();
    assert_eq!(me.id, user.id);

    // Another service verifies tokens from the JWKS: one fetch, then no calls.
    let channel = ServiceChannel::remote(station.channel().await);
    let credentials =
        UserServiceCredentials::new(pb::user_service_client::UserServiceClient::new(channel));
    let authenticator = Authenticator::new(Arc::new(credentials), Clock::system());
    for _ in 0..5 {
        let caller = authenticator
            .authenticate_credential(&created.access_token)
            .await
            .expect("verifies from the JWKS");
        assert_eq!(caller.user_id, user.id);
        assert_eq!(caller.role, pb::Role::Viewer);
    }
    let metrics = onair_testkit::metrics_text(&station).await;
    assert!(
        metrics.contains(
            "onair_grpc_server_requests_total{service=\"onair.user.v1.UserService\",method=\"GetJwks\",code=\"OK\"} 1\n"
        ),
        "the JWKS was fetched once for five verifications:\n{metrics}"
    );
    station.stop().await;
}

async fn a_viewer_without_a_name_gets_one(backend: Backend) {
    let station = TestStation::start(backend).await;
    let created = new_viewer(&station, "").await;
    let name = created.user.expect("user").display_name;
    assert!(name.starts_with("Viewer "), "{name}");
    station.stop().await;
}

async fn bad_display_names_are_refused_with_a_reason(backend: Backend) {
    let station = TestStation::start(backend).await;
    let mut client = station.user_client().await;
    let cases = [
        ("   ", "empty"),
        (&"x".repeat(33)[..], "33 characters long"),
        ("bad\u{7}name", "control character"),
        ("ad\u{200B}min", "invisible character U+200B"),
    ];
    for (name, reason) in cases {
        let status = client
            .create_user(pb::CreateUserRequest {
                display_name: name.to_owned(),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}");
        assert!(
            status.message().contains(reason),
            "{name:?}: {}",
            status.message()
        );
    }

    let created = new_viewer(&station, "Bob").await;
    let status = client
        .update_me(authorized(
            pb::UpdateMeRequest {
                user: Some(pb::User {
                    display_name: String::new(),
                    ..Default::default()
                }),
                update_mask: None,
            },
            &created.access_token,
        ))
        .await
        .expect_err("an empty name is refused");
    assert_eq!(status.code(), Code::InvalidArgument);

    let renamed = client
        .update_me(authorized(
            pb::UpdateMeRequest {
                user: Some(pb::User {
                    display_name: "Robert".to_owned(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".to_owned()],
                }),
            },
            &created.access_token,
        ))
        .await
        .expect("a good name is taken")
        .into_inner();
    assert_eq!(renamed.display_name, "Robert");

    let status = client
        .update_me(authorized(
            pb::UpdateMeRequest {
                user: Some(pb::User::default()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["role".to_owned()],
                }),
            },
            &created.access_token,
        ))
        .await
        .expect_err("a viewer cannot change their own role");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("only display_name"),
        "{}",
        status.message()
    );
    station.stop().await;
}

async fn bad_and_expired_tokens_are_refused(backend: Backend) {
    let station = TestStation::start(backend).await;
    let created = new_viewer(&station, "Carol").await;
    let mut client = station.user_client().await;

    let status = client
        .get_me(pb::GetMeRequest {})
        .await
        .expect_err("no credentials");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("missing credentials"),
        "{}",
        status.message()
    );

    let status = client
        .get_me(authorized(pb::GetMeRequest {}, "not.a.token"))
        .await
        .expect_err("garbage");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("invalid access token"),
        "{}",
        status.message()
    );

    // Flip a character of the signature.
    let mut forged = created.access_token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let status = client
        .get_me(authorized(pb::GetMeRequest {}, &forged))
        .await
        .expect_err("forged");
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = client
        .get_me(authorized(pb::GetMeRequest {}, "onair_op_wrong"))
        .await
        .expect_err("unknown API key");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("unknown API key"));

    station.clock.advance(Duration::from_secs(3601));
    let status = client
        .get_me(authorized(pb::GetMeRequest {}, &created.access_token))
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());
    assert!(
        status.message().contains("/v1/tokens:refresh"),
        "{}",
        status.message()
    );

    let fresh = refreshed_token(&station, &created.refresh_token).await;
    client
        .get_me(authorized(pb::GetMeRequest {}, &fresh))
        .await
        .expect("a refreshed token works");

    let status = client
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: "onair_rt_unknown".to_owned(),
        })
        .await
        .expect_err("unknown refresh token");
    assert_eq!(status.code(), Code::Unauthenticated);
    station.stop().await;
}

async fn roles_decide_who_may_do_what(backend: Backend) {
    let station = TestStation::start(backend).await;
    let viewer = new_viewer(&station, "Viewer").await;
    let other = new_viewer(&station, "Other").await;
    let moderator = new_viewer(&station, "Mod").await;
    let mut client = station.user_client().await;

    let operator = client
        .get_me(authorized(pb::GetMeRequest {}, &station.operator_key))
        .await
        .expect("the operator key authenticates")
        .into_inner();
    assert_eq!(operator.role, pb::Role::Operator as i32);

    let moderator_id = moderator.user.clone().unwrap().id;
    let status = client
        .set_user_role(authorized(
            pb::SetUserRoleRequest {
                user_id: moderator_id.clone(),
                role: pb::Role::Moderator as i32,
            },
            &viewer.access_token,
        ))
        .await
        .expect_err("viewers don't set roles");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("needs the operator role"),
        "{}",
        status.message()
    );

    promote(&station, &moderator_id, pb::Role::Moderator).await;
    let moderator_token = refreshed_token(&station, &moderator.refresh_token).await;

    let other_id = other.user.unwrap().id;
    let status = client
        .ban_user(authorized(
            pb::BanUserRequest {
                user_id: other_id.clone(),
                duration_seconds: 60,
                reason: "spam".into(),
            },
            &viewer.access_token,
        ))
        .await
        .expect_err("viewers don't ban");
    assert_eq!(status.code(), Code::PermissionDenied);

    client
        .ban_user(authorized(
            pb::BanUserRequest {
                user_id: other_id.clone(),
                duration_seconds: 60,
                reason: "spam".into(),
            },
            &moderator_token,
        ))
        .await
        .expect("moderators ban viewers");

    let status = client
        .ban_user(authorized(
            pb::BanUserRequest {
                user_id: operator.id.clone(),
                duration_seconds: 0,
                reason: "coup".into(),
            },
            &moderator_token,
        ))
        .await
        .expect_err("moderators don't ban operators");
    assert_eq!(status.code(), Code::PermissionDenied);

    let status = client
        .set_user_role(authorized(
            pb::SetUserRoleRequest {
                user_id: other_id,
                role: 42,
            },
            &station.operator_key,
        ))
        .await
        .expect_err("unknown role");
    assert_eq!(status.code(), Code::InvalidArgument);
    station.stop().await;
}

async fn bans_last_their_duration_and_can_be_lifted(backend: Backend) {
    let station = TestStation::start(backend).await;
    let viewer = new_viewer(&station, "Dave").await;
    let viewer_id = viewer.user.unwrap().id;
    let mut client = station.user_client().await;
    let ban = |duration_seconds: i64| {
        authorized(
            pb::BanUserRequest {
                user_id: viewer_id.clone(),
                duration_seconds,
                reason: "flooding".into(),
            },
            &station.operator_key,
        )
    };
    let get = || {
        authorized(
            pb::GetUserRequest {
                user_id: viewer_id.clone(),
            },
            &station.operator_key,
        )
    };

    let banned = client.ban_user(ban(60)).await.expect("ban").into_inner();
    let details = banned.ban.expect("the user is banned");
    assert_eq!(details.reason, "flooding");
    assert_eq!(details.moderator_id, "operator");
    let created = details.create_time.unwrap().seconds;
    assert_eq!(details.expire_time.unwrap().seconds, created + 60);

    station.clock.advance(Duration::from_secs(61));
    let after = client.get_user(get()).await.unwrap().into_inner();
    assert!(after.ban.is_none(), "a 60 s ban is over after 61 s");

    let permanent = client
        .ban_user(ban(0))
        .await
        .expect("ban for good")
        .into_inner();
    assert!(permanent.ban.as_ref().unwrap().expire_time.is_none());
    station
        .clock
        .advance(Duration::from_secs(10 * 365 * 24 * 3600));
    assert!(
        client
            .get_user(get())
            .await
            .unwrap()
            .into_inner()
            .ban
            .is_some()
    );

    let status = client
        .ban_user(ban(-5))
        .await
        .expect_err("negative duration");
    assert_eq!(status.code(), Code::InvalidArgument);

    let unbanned = client
        .unban_user(authorized(
            pb::UnbanUserRequest {
                user_id: viewer_id.clone(),
            },
            &station.operator_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(unbanned.ban.is_none());
    station.stop().await;
}

async fn batch_get_users_keeps_order_and_names_the_missing(backend: Backend) {
    let station = TestStation::start(backend).await;
    let first = new_viewer(&station, "First").await;
    let second = new_viewer(&station, "Second").await;
    let first_id = first.user.unwrap().id;
    let second_id = second.user.unwrap().id;
    let mut client = station.user_client().await;
    let response = client
        .batch_get_users(authorized(
            pb::BatchGetUsersRequest {
                user_ids: vec![
                    second_id.clone(),
                    "missing".into(),
                    first_id.clone(),
                    second_id.clone(),
                ],
            },
            &first.access_token,
        ))
        .await
        .expect("batch get")
        .into_inner();
    let names: Vec<&str> = response
        .users
        .iter()
        .map(|user| user.display_name.as_str())
        .collect();
    assert_eq!(names, ["Second", "First", "Second"]);
    assert_eq!(response.missing_user_ids, ["missing"]);
    // Viewers don't see each other's moderation details.
    assert_eq!(response.users[0].trust_score, 0);
    assert_eq!(response.users[1].trust_score, 50);

    let too_many = (0..1001).map(|index| index.to_string()).collect();
    let status = client
        .batch_get_users(authorized(
            pb::BatchGetUsersRequest { user_ids: too_many },
            &first.access_token,
        ))
        .await
        .expect_err("too many ids");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("at most 1000"),
        "{}",
        status.message()
    );
    station.stop().await;
}

async fn unknown_users_are_not_found(backend: Backend) {
    let station = TestStation::start(backend).await;
    let mut client = station.user_client().await;
    let status = client
        .get_user(authorized(
            pb::GetUserRequest {
                user_id: "0000nobody".into(),
            },
            &station.operator_key,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("no user with id \"0000nobody\""),
        "{}",
        status.message()
    );
    station.stop().await;
}

async fn trust_scores_move_within_bounds(backend: Backend) {
    let station = TestStation::start(backend).await;
    let viewer = new_viewer(&station, "Eve").await;
    let viewer_id = viewer.user.unwrap().id;
    let mut client = station.user_client().await;
    let adjust = |delta: i32, credential: &str| {
        authorized(
            pb::AdjustTrustScoreRequest {
                user_id: viewer_id.clone(),
                delta,
                reason: "test".into(),
            },
            credential,
        )
    };
    let raised = client
        .adjust_trust_score(adjust(60, &station.operator_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(raised.trust_score, 100);
    let lowered = client
        .adjust_trust_score(adjust(-100, &station.operator_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lowered.trust_score, 0);
    let status = client
        .adjust_trust_score(adjust(-101, &station.operator_key))
        .await
        .expect_err("range");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .adjust_trust_score(adjust(10, &viewer.access_token))
        .await
        .expect_err("viewer");
    assert_eq!(status.code(), Code::PermissionDenied);
    station.stop().await;
}

async fn rotated_keys_keep_old_tokens_valid(backend: Backend) {
    let station = TestStation::start(backend).await;
    let viewer = new_viewer(&station, "Frank").await;
    let mut client = station.user_client().await;
    let before = client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.keys.len(), 1);
    let old_kid = before.keys[0].kid.clone();
    assert_eq!(before.keys[0].kty, "OKP");
    assert_eq!(before.keys[0].crv, "Ed25519");

    let rotated = client
        .rotate_signing_key(authorized(
            pb::RotateSigningKeyRequest {},
            &station.operator_key,
        ))
        .await
        .expect("rotate")
        .into_inner();
    assert_ne!(rotated.kid, old_kid);
    let after = client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let kids: Vec<&str> = after.keys.iter().map(|key| key.kid.as_str()).collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&rotated.kid.as_str()),
        "{kids:?}"
    );

    client
        .get_me(authorized(pb::GetMeRequest {}, &viewer.access_token))
        .await
        .expect("a token signed before the rotation still verifies");
    let fresh = refreshed_token(&station, &viewer.refresh_token).await;
    let header = fresh.split('.').next().unwrap();
    let header = String::from_utf8(URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert!(
        header.contains(&rotated.kid),
        "new tokens use the new key: {header}"
    );
    station.stop().await;
}

#[tokio::test]
async fn the_operator_key_is_written_once_with_owner_only_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let station = TestStation::start(Backend::Sqlite).await;
    let key_path = station.dir.path().join("operator.key");
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first_key = station.operator_key.clone();
    let dir = station.stop().await;

    let restarted = TestStation::start_in(Backend::Sqlite, dir).await;
    assert_eq!(restarted.operator_key, first_key, "a restart keeps the key");
    let mut client = restarted.user_client().await;
    client
        .get_me(authorized(pb::GetMeRequest {}, &first_key))
        .await
        .expect("the key still works after a restart");
    restarted.stop().await;
}

#[tokio::test]
async fn moderation_actions_are_kept_in_the_operations_stream() {
    use futures::StreamExt;
    use onair_kit::bus::{Bus, InProcessBus};

    let station = TestStation::start(Backend::Sqlite).await;
    let viewer = new_viewer(&station, "Grace").await;
    let viewer_id = viewer.user.unwrap().id;
    let mut client = station.user_client().await;
    client
        .ban_user(authorized(
            pb::BanUserRequest {
                user_id: viewer_id.clone(),
                duration_seconds: 300,
                reason: "insults".into(),
            },
            &station.operator_key,
        ))
        .await
        .unwrap();
    let dir = station.stop().await;

    // The embedded bus journals the stream in the data dir: it survives a stop.
    let bus = InProcessBus::new(Some(dir.path().join("bus")));
    let mut events = bus.replay("ops", 1, Some("ops.user.>")).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event")
        .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(event["kind"], "user.banned");
    assert_eq!(event["targetId"], viewer_id.as_str());
    assert_eq!(event["reason"], "insults");
    assert_eq!(event["details"]["durationSeconds"], 300);
}
