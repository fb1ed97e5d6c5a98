//! Property-based fuzzing of the whole REST surface from its own
//! `/openapi.json`: schemathesis (PyPI; scripts/test.sh installs it) generates
//! requests for every operation, valid and invalid, and no answer may be a 5xx.

use onair_testkit::{Backend, TestStation};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors() {
    let station = TestStation::start_with(
        Backend::Sqlite,
        &[
            ("gateway.rate_limit_per_ip", "0"),
            ("gateway.rate_limit_per_user", "0"),
        ],
    )
    .await;
    // Some data, so that reads find something as well as nothing.
    let client = reqwest::Client::new();
    let created = client
        .post(station.http_url("/v1/channels"))
        .bearer_auth(&station.operator_key)
        .json(&json!({"id": "news", "number": 1, "name": "News"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);

    let schema = station.http_url("/openapi.json");
    let authorization = format!("Authorization: Bearer {}", station.operator_key);
    let output = tokio::process::Command::new("schemathesis")
        .args([
            "run",
            &schema,
            "--checks",
            "not_a_server_error",
            "--header",
            &authorization,
            "--max-examples",
            "20",
            "--request-timeout",
            "10",
            "--seed",
            "1",
            // Server streams never end by themselves; their routing and
            // errors are covered by the REST tests.
            "--exclude-path-regex",
            "(:watch|/moderation/queue)$",
            "--no-color",
        ])
        // Its cache goes into the station's directory, not the checkout.
        .current_dir(station.dir.path())
        .output()
        .await
        .expect("schemathesis runs (scripts/test.sh installs it: pip install schemathesis)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found server errors:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    station.stop().await;
}
