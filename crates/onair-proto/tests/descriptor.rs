//! The embedded descriptor set keeps the HTTP annotations that the gateway serves.

use prost_reflect::{DescriptorPool, Value};

fn http_rule(pool: &DescriptorPool, service: &str, method: &str) -> prost_reflect::DynamicMessage {
    let http_extension = pool
        .get_extension_by_name("google.api.http")
        .expect("google.api.http is in the descriptor set");
    let method = pool
        .get_service_by_name(service)
        .expect("service is in the descriptor set")
        .methods()
        .find(|candidate| candidate.name() == method)
        .expect("method is in the service");
    let options = method.options();
    let rule = options.get_extension(&http_extension);
    match rule.as_ref() {
        Value::Message(message) => message.clone(),
        other => panic!("http rule is not a message: {other:?}"),
    }
}

fn string_field(message: &prost_reflect::DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn create_user_is_a_post_with_the_whole_body() {
    let pool = DescriptorPool::decode(onair_proto::FILE_DESCRIPTOR_SET).unwrap();
    let rule = http_rule(&pool, "onair.user.v1.UserService", "CreateUser");
    assert_eq!(string_field(&rule, "post"), "/v1/users");
    assert_eq!(string_field(&rule, "body"), "*");
}

#[test]
fn timetable_has_an_all_channel_binding() {
    let pool = DescriptorPool::decode(onair_proto::FILE_DESCRIPTOR_SET).unwrap();
    let rule = http_rule(&pool, "onair.media.v1.MediaService", "GetTimetable");
    assert_eq!(
        string_field(&rule, "get"),
        "/v1/channels/{channel_id}/timetable"
    );
    let additional = rule.get_field_by_name("additional_bindings").unwrap();
    let bindings = additional.as_list().unwrap();
    assert_eq!(bindings.len(), 1);
    let binding = bindings[0].as_message().unwrap();
    assert_eq!(string_field(binding, "get"), "/v1/timetable");
}

#[test]
fn every_public_path_of_the_api_is_annotated() {
    let pool = DescriptorPool::decode(onair_proto::FILE_DESCRIPTOR_SET).unwrap();
    let http_extension = pool.get_extension_by_name("google.api.http").unwrap();
    let mut paths = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http_extension) {
                continue;
            }
            let rule = options.get_extension(&http_extension);
            let rule = rule.as_message().unwrap();
            for verb in ["get", "put", "post", "delete", "patch"] {
                let path = string_field(rule, verb);
                if !path.is_empty() {
                    paths.push(format!("{} {path}", verb.to_uppercase()));
                }
            }
        }
    }
    for expected in [
        "POST /v1/users",
        "GET /v1/users/me",
        "PATCH /v1/users/me",
        "GET /.well-known/jwks.json",
        "POST /v1/users/{user_id}:ban",
        "POST /v1/users/{user_id}:unban",
        "GET /v1/channels",
        "GET /v1/channels/{channel_id}",
        "POST /v1/channels",
        "POST /v1/programs",
        "GET /v1/programs/{program_id}",
        "POST /v1/channels/{channel_id}/slots",
        "GET /v1/channels/{channel_id}/timetable",
        "GET /v1/channels/{channel_id}/now",
        "POST /v1/channels/{channel_id}/comments",
        "GET /v1/slots/{slot_id}/comments",
        "POST /v1/comments/{comment_id}:report",
        "GET /v1/moderation/queue",
        "POST /v1/comments/{comment_id}:approve",
        "POST /v1/comments/{comment_id}:reject",
        "POST /v1/comments/{comment_id}:hide",
        "PUT /v1/channels/{channel_id}/chatSettings",
        "GET /v1/channels/{channel_id}/viewers",
        "POST /v1/channels/{channel_id}/heartbeat",
        "POST /v1/slots/{slot_id}/polls",
        "GET /v1/polls/{poll_id}",
        "POST /v1/polls/{poll_id}/votes",
        "POST /v1/shares",
        "GET /v1/shares/{code}",
        "GET /v1/comments/{comment_id}",
    ] {
        assert!(
            paths.iter().any(|path| path == expected),
            "{expected} has no google.api.http rule"
        );
    }
}
