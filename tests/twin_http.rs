//! The HTTP entity API of spec/twin.md §5 and the routes of §6, end to end: a real mosquitto,
//! the agent in-process, requests over real sockets, and a test client asserting exactly what
//! each write published (and that failed writes published nothing), plus what the broker
//! retains once an answer arrived (§5.1 acknowledged writes).

mod common;

use chrono::Utc;
use common::agent::{AGENT_REGISTRATION, AGENT_TOPIC};
use common::http;
use common::http::{
    agent_time, assert_error, assert_json, assert_no_content, assert_text, take_received,
};
use common::mqtt::msgs;
use common::twin::{System, Watch};
use reqwest::Method;
use serde_json::{json, Value};

const FRESH_LISTING: &str = r#"[{"@topic-id":"device/main//","@type":"device"},{"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}]"#;
const KEY_RULE: &str = "Keys that are empty, containing '/' or starting with '@' are not allowed";

/// POSTs a registration and asserts the 201.
async fn post(rig: &System, body: Value) {
    let response = http::post_json(&rig.entities(""), &body).await;
    let id = body["@topic-id"].as_str().unwrap_or_default();
    assert_eq!(response.status, 201, "POST {id}: {}", response.text());
}

/// Sends `method` with a raw body and no content type.
async fn raw(method: Method, url: &str, body: &str) -> http::Response {
    http::request(method, url, body.to_owned()).await
}

/// Valid JSON of 1 MiB + 1 byte: `prefix`, then `fill` repeated, then `suffix`.
fn padded(prefix: &str, fill: char, suffix: &str) -> String {
    let n = 1024 * 1024 + 1 - prefix.len() - suffix.len();
    format!("{prefix}{}{suffix}", fill.to_string().repeat(n))
}

fn post_with_type(
    url: &str,
    content_type: &str,
    body: impl Into<bytes::Bytes>,
) -> reqwest::RequestBuilder {
    http::client()
        .post(url)
        .header("content-type", content_type)
        .body(body.into())
}

// ---- probes and the start state --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_agent_lists_the_main_device_and_its_own_service() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    assert_text(&http::get(&rig.entities("")).await, 200, FRESH_LISTING);
    assert_text(
        &http::get(&rig.entities("/device/main//")).await,
        200,
        r#"{"@topic-id":"device/main//","@type":"device"}"#,
    );
    assert_text(
        &http::get(&rig.entities("/device/main/service/edge-agent")).await,
        200,
        r#"{"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}"#,
    );
    assert_eq!(rig.published().await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_answer_alive_and_ready_and_allow_only_reads() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    assert_json(
        &http::get(&rig.url("/healthz")).await,
        200,
        &json!({"status":"alive"}),
    );
    assert_json(
        &http::get(&rig.url("/readyz")).await,
        200,
        &json!({"status":"ready"}),
    );
    for (method, path) in [(Method::POST, "/healthz"), (Method::PUT, "/readyz")] {
        let response = raw(method.clone(), &rig.url(path), "{}").await;
        assert_error(&response, 405, "Method Not Allowed");
        assert_eq!(
            response.header("allow"),
            Some("GET, HEAD"),
            "{method} {path}"
        );
    }
}

// ---- paths (§5.2) and methods (§5.3) -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_paths_are_split_on_slashes_then_percent_decoded() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    post(
        &rig,
        json!({"@topic-id":"device/child01//","@type":"child-device"}),
    )
    .await;
    post(
        &rig,
        json!({"@topic-id":"device/child 01","@type":"child-device"}),
    )
    .await;
    rig.published().await;

    let child01 =
        r#"{"@topic-id":"device/child01//","@parent":"device/main//","@type":"child-device"}"#;
    for path in ["/device/child01", "/device/child01/", "/device/child01//"] {
        assert_text(&http::get(&rig.entities(path)).await, 200, child01);
    }
    assert_text(
        &http::get(&rig.entities("/device/child%2001")).await,
        200,
        r#"{"@topic-id":"device/child 01//","@parent":"device/main//","@type":"child-device"}"#,
    );
    assert_json(
        &http::get(&rig.entities("/device/child01///twin")).await,
        200,
        &json!({}),
    );

    let mqtt = "An entity topic identifier must be a valid MQTT topic";
    let cases = [
        ("/device", 404, "Not Found".to_owned()),
        ("/", 404, "Not Found".to_owned()),
        ("/device/child01///", 404, "Not Found".to_owned()),
        // Channel paths need all four id segments: this is the entity `device/x/twin/`.
        (
            "/device/x/twin",
            404,
            "Entity with topic id: device/x/twin/ not found".to_owned(),
        ),
        (
            "/device/child01///twin/a/b",
            400,
            format!("Invalid twin key: 'a/b'. {KEY_RULE}"),
        ),
        (
            "/device/child01///twin/a%2Fb",
            400,
            format!("Invalid twin key: 'a/b'. {KEY_RULE}"),
        ),
        (
            "/device/child01///twin/",
            400,
            format!("Invalid twin key: ''. {KEY_RULE}"),
        ),
        (
            "/device/child01///cmd/restart",
            404,
            "Actions on channel: cmd are not supported".to_owned(),
        ),
        (
            "/a/b/c/d/e",
            404,
            "Actions on channel: e are not supported".to_owned(),
        ),
        (
            "/device/child01///state/x",
            404,
            "Actions on channel: state are not supported".to_owned(),
        ),
        (
            "/device/child01///config/a/b",
            404,
            "Actions on channel: config are not supported".to_owned(),
        ),
        ("/device/+//", 400, mqtt.to_owned()),
        ("/device/%2B//", 400, mqtt.to_owned()),
        ("/device/%23", 400, mqtt.to_owned()),
        // A decoded segment containing `/` is an invalid topic id (§5.2).
        ("/device%2Fx/y", 400, mqtt.to_owned()),
        (
            "///",
            400,
            "An entity topic identifier must have at least one non-empty segment".to_owned(),
        ),
        (
            "/a/b/c/d/e/f",
            404,
            "Actions on channel: e are not supported".to_owned(),
        ),
    ];
    for (path, status, message) in cases {
        let response = http::get(&rig.entities(path)).await;
        assert_eq!(response.status, status, "GET {path}: {}", response.text());
        assert_error(&response, status, &message);
    }
    for path in ["/te/v1", "/te/v1/entitiesx", "/nope"] {
        assert_error(&http::get(&rig.url(path)).await, 404, "Not Found");
    }
    assert_eq!(rig.published().await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_are_not_allowed_and_the_answer_lists_the_allowed_ones() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    rig.bus
        .publish("te/device/main///config", r#"{"port":1883}"#, true)
        .await;
    http::get_until(&rig.entities("/device/main///config/port"), |r| {
        r.status == 200
    })
    .await;
    rig.published().await;

    let cases = [
        (Method::DELETE, "", "GET, HEAD, POST"),
        (Method::PUT, "", "GET, HEAD, POST"),
        (Method::PUT, "/device/main", "GET, HEAD, PATCH, DELETE"),
        (Method::POST, "/device/main//", "GET, HEAD, PATCH, DELETE"),
        (
            Method::PATCH,
            "/device/main///twin",
            "GET, HEAD, PUT, DELETE",
        ),
        (
            Method::POST,
            "/device/main///twin/k",
            "GET, HEAD, PUT, DELETE",
        ),
        (
            Method::PATCH,
            "/device/main///twin/k",
            "GET, HEAD, PUT, DELETE",
        ),
        (Method::POST, "/device/main///config", "GET, HEAD"),
        (Method::PUT, "/device/main///config", "GET, HEAD"),
        (Method::PUT, "/device/main///config/port", "GET, HEAD"),
        (Method::DELETE, "/device/main///config/port", "GET, HEAD"),
        (Method::DELETE, "/device/main///state", "GET, HEAD"),
        (Method::PUT, "/device/main///state", "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let response = raw(method.clone(), &rig.entities(path), r#"{"k":1}"#).await;
        assert_error(&response, 405, "Method Not Allowed");
        assert_eq!(response.header("allow"), Some(allow), "{method} {path}");
    }
    let response = raw(Method::POST, &rig.url("/te/v1/state"), "{}").await;
    assert_error(&response, 405, "Method Not Allowed");
    assert_eq!(response.header("allow"), Some("GET, HEAD"));

    assert_eq!(rig.published().await, vec![]);
    assert_json(
        &http::get(&rig.entities("/device/main///config")).await,
        200,
        &json!({"port":1883}),
    );
    assert_json(
        &http::get(&rig.entities("/device/main///twin")).await,
        200,
        &json!({}),
    );
    assert_text(&http::get(&rig.entities("")).await, 200, FRESH_LISTING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_one_mebibyte_is_refused_and_one_of_exactly_one_mebibyte_is_accepted() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    let limit = 1024 * 1024;
    // A JSON string of exactly 1 MiB, quotes included.
    let at_limit = format!("\"{}\"", "x".repeat(limit - 2));
    let over_limit = format!("\"{}\"", "x".repeat(limit - 1));
    assert_eq!((at_limit.len(), over_limit.len()), (1_048_576, 1_048_577));

    let url = rig.entities("/device/main///twin/big");
    let response = raw(Method::PUT, &url, &at_limit).await;
    assert_eq!((response.status, response.text()), (200, at_limit.as_str()));
    let published = rig.published().await;
    assert!(
        published == vec![("te/device/main///twin/big".to_owned(), at_limit.clone())],
        "expected one publication of the 1 MiB value, got {} messages",
        published.len()
    );

    let too_large = "Failed to buffer the request body: length limit exceeded";
    let url = rig.entities("/device/main///twin/bigger");
    assert_error(&raw(Method::PUT, &url, &over_limit).await, 413, too_large);
    let url = rig.entities("/device/main///twin");
    let map = padded(r#"{"k":""#, 'x', r#""}"#);
    assert_error(&raw(Method::PUT, &url, &map).await, 413, too_large);
    let entity = padded(
        r#"{"@topic-id":"device/big//","@type":"child-device","x":""#,
        'x',
        r#""}"#,
    );
    let response = http::send(post_with_type(
        &rig.entities(""),
        "application/json",
        entity,
    ))
    .await;
    assert_error(&response, 413, too_large);
    let patch = padded(r#"{"@parent":"device/main//""#, ' ', "}");
    let url = rig.entities("/device/main/service/edge-agent");
    assert_error(&raw(Method::PATCH, &url, &patch).await, 413, too_large);

    assert_eq!(rig.published().await, vec![]);
    assert_error(
        &http::get(&rig.entities("/device/main///twin/bigger")).await,
        404,
        "Entity twin data for entity: device/main// with fragment key: bigger not found",
    );
    assert_error(
        &http::get(&rig.entities("/device/big//")).await,
        404,
        "Entity with topic id: device/big// not found",
    );
}

// ---- POST (§5.5) ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_registers_once_then_conflicts_and_refuses_bad_bodies() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    let url = rig.entities("");
    let body = json!({"@topic-id":"device/c7//","@type":"child-device","name":"c7"});

    assert_text(
        &http::post_json(&url, &body).await,
        201,
        r#"{"@topic-id":"device/c7//"}"#,
    );
    assert_eq!(
        rig.published().await,
        msgs(&[
            (
                "te/device/c7//",
                r#"{"@parent":"device/main//","@type":"child-device","name":"c7"}"#
            ),
            ("te/device/c7///twin/name", r#""c7""#),
        ])
    );
    assert_error(
        &http::post_json(&url, &body).await,
        409,
        "An entity with topic id: device/c7// is already registered",
    );
    assert_error(
        &raw(Method::POST, &url, &body.to_string()).await,
        415,
        "Expected request with `Content-Type: application/json`",
    );
    assert_error(
        &http::send(post_with_type(&url, "text/plain", body.to_string())).await,
        415,
        "Expected request with `Content-Type: application/json`",
    );

    let response = http::post_json(&url, &json!({"type":"child-device"})).await;
    assert_eq!(
        (response.status, response.header("content-type")),
        (422, Some("application/json"))
    );
    let error = response.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(response.json(), json!({"error": error}));
    assert!(
        error.starts_with("Failed to deserialize the JSON body into the target type: ")
            && error.contains("missing field `@topic-id`"),
        "{error}"
    );

    assert_error(
        &http::send(post_with_type(&url, "application/json", "{")).await,
        400,
        "Failed to parse the request body as JSON: EOF while parsing an object at line 1 column 1",
    );
    let refusals = [
        (
            json!({"@topic-id":"device/main//","@type":"device"}),
            409,
            "An entity with topic id: device/main// is already registered",
        ),
        (
            json!({"@topic-id":"device/c8//","@type":"device"}),
            400,
            "The main device was already registered at topic device/main//",
        ),
        (
            json!({"@topic-id":"device/c8//","@type":"child-device","@parent":"device/c8//"}),
            400,
            "Entity: 'device/c8//' can not be its own parent",
        ),
        (
            json!({"@topic-id":"device/c8//","@type":"child-device","@parent":"device/main/service/edge-agent"}),
            400,
            "Entity: 'device/main/service/edge-agent' can not be a parent of 'device/c8//' because it is a service. Only devices can be parents",
        ),
        (
            json!({"@topic-id":"device/c8//","@type":"child-device","a/b":1}),
            400,
            "Invalid twin key: 'a/b'. Keys that are empty, containing '/' or starting with '@' are not allowed",
        ),
    ];
    for (body, status, message) in refusals {
        assert_error(&http::post_json(&url, &body).await, status, message);
    }

    assert_eq!(rig.published().await, vec![]);
    assert_text(
        &http::get(&url).await,
        200,
        r#"[{"@topic-id":"device/main//","@type":"device"},{"@topic-id":"device/c7//","@parent":"device/main//","@type":"child-device"},{"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}]"#,
    );
    assert_json(
        &http::get(&rig.entities("/device/c7///twin")).await,
        200,
        &json!({"name":"c7"}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_a_service_of_an_unknown_device_is_refused_naming_the_missing_parent() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    assert_error(
        &http::post_json(
            &rig.entities(""),
            &json!({"@topic-id":"device/ghost2/service/svc","@type":"service"}),
        )
        .await,
        400,
        "The specified parent \"device/ghost2//\" does not exist in the entity store",
    );
    assert_eq!(rig.published().await, vec![]);
    assert_text(&http::get(&rig.entities("")).await, 200, FRESH_LISTING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_registration_carries_its_resolved_parent_and_drops_unknown_at_keys() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    post(
        &rig,
        json!({"@topic-id":"device/c9","@type":"child-device"}),
    )
    .await;
    let body = json!({"@topic-id":"device/c9/service/svc","@type":"service","@custom":1,"@id":"svc-1","@health":"device/c9/service/svc","version":"1.0"});
    assert_text(
        &http::post_json(&rig.entities(""), &body).await,
        201,
        r#"{"@topic-id":"device/c9/service/svc"}"#,
    );
    assert_eq!(
        rig.published().await,
        msgs(&[
            (
                "te/device/c9//",
                r#"{"@parent":"device/main//","@type":"child-device"}"#
            ),
            (
                "te/device/c9/service/svc",
                r#"{"@health":"device/c9/service/svc","@id":"svc-1","@parent":"device/c9//","@type":"service","version":"1.0"}"#
            ),
            ("te/device/c9/service/svc/twin/version", r#""1.0""#),
        ])
    );
    assert_text(
        &http::get(&rig.entities("/device/c9/service/svc")).await,
        200,
        r#"{"@topic-id":"device/c9/service/svc","@parent":"device/c9//","@type":"service","@id":"svc-1","@health":"device/c9/service/svc"}"#,
    );
}

// ---- acknowledged writes (§5.1) ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publications_of_a_write_are_retained_on_the_broker_when_its_answer_arrives() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;

    let response = http::put_json(&rig.entities("/device/main///twin/k"), &json!(1)).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        rig.retained("te/device/main///twin/k").await,
        msgs(&[("te/device/main///twin/k", "1")])
    );

    let body = json!({"@topic-id":"device/c7//","@type":"child-device","name":"c7"});
    assert_eq!(http::post_json(&rig.entities(""), &body).await.status, 201);
    assert_eq!(
        rig.retained("te/device/c7/#").await,
        msgs(&[
            (
                "te/device/c7//",
                r#"{"@parent":"device/main//","@type":"child-device","name":"c7"}"#
            ),
            ("te/device/c7///twin/name", r#""c7""#),
        ])
    );

    post(
        &rig,
        json!({"@topic-id":"device/c8//","@type":"child-device"}),
    )
    .await;
    let patch = json!({"@parent":"device/c8//"});
    assert_eq!(
        http::patch_json(&rig.entities("/device/c7"), &patch)
            .await
            .status,
        200
    );
    assert_eq!(
        rig.retained("te/device/c7//").await,
        msgs(&[(
            "te/device/c7//",
            r#"{"@parent":"device/c8//","@type":"child-device"}"#
        )])
    );

    assert_eq!(http::delete(&rig.entities("/device/c8")).await.status, 200);
    assert_eq!(rig.retained("te/device/c7/#").await, vec![]);
    assert_eq!(rig.retained("te/device/c8/#").await, vec![]);

    assert_no_content(&http::delete(&rig.entities("/device/main///twin/k")).await);
    assert_eq!(rig.retained("te/device/main///twin/#").await, vec![]);
}

// ---- DELETE (§4.8, §5.6) ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_child_removes_its_subtree_bottom_up_and_answers_with_its_metadata() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    post(
        &rig,
        json!({"@topic-id":"device/child0//","@type":"child-device"}),
    )
    .await;
    post(
        &rig,
        json!({"@topic-id":"device/child00//","@type":"child-device","@parent":"device/child0//"}),
    )
    .await;
    post(&rig, json!({"@topic-id":"device/child000//","@type":"child-device","@parent":"device/child00//"})).await;
    post(
        &rig,
        json!({"@topic-id":"device/child000/service/service0","@type":"service"}),
    )
    .await;
    post(
        &rig,
        json!({"@topic-id":"device/child1//","@type":"child-device"}),
    )
    .await;
    let response = http::put_json(&rig.entities("/device/child00///twin/x"), &json!(9)).await;
    assert_eq!(response.status, 200);
    rig.published().await;

    assert_text(
        &http::delete(&rig.entities("/device/child0")).await,
        200,
        concat!(
            r#"[{"@topic-id":"device/child0//","@parent":"device/main//","@type":"child-device"},"#,
            r#"{"@topic-id":"device/child00//","@parent":"device/child0//","@type":"child-device"},"#,
            r#"{"@topic-id":"device/child000//","@parent":"device/child00//","@type":"child-device"},"#,
            r#"{"@topic-id":"device/child000/service/service0","@parent":"device/child000//","@type":"service"}]"#,
        ),
    );
    assert_eq!(
        rig.published().await,
        msgs(&[
            ("te/device/child00///twin/x", ""),
            ("te/device/child000/service/service0", ""),
            ("te/device/child000//", ""),
            ("te/device/child00//", ""),
            ("te/device/child0//", ""),
        ])
    );
    let others: Vec<(String, String)> = rig
        .retained("te/#")
        .await
        .into_iter()
        .filter(|(topic, _)| !topic.starts_with(AGENT_TOPIC))
        .collect();
    assert_eq!(
        others,
        msgs(&[(
            "te/device/child1//",
            r#"{"@parent":"device/main//","@type":"child-device"}"#
        )])
    );
    for id in ["device/child0//", "device/child00//", "device/child000//"] {
        assert_error(
            &http::get(&rig.entities(&format!("/{id}"))).await,
            404,
            &format!("Entity with topic id: {id} not found"),
        );
    }
    assert_text(
        &http::get(&rig.entities("")).await,
        200,
        r#"[{"@topic-id":"device/main//","@type":"device"},{"@topic-id":"device/child1//","@parent":"device/main//","@type":"child-device"},{"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}]"#,
    );

    // #24: an unknown id, or one deleted already, is a 204 that publishes nothing.
    assert_no_content(&http::delete(&rig.entities("/device/nope//")).await);
    assert_no_content(&http::delete(&rig.entities("/device/child0//")).await);
    assert_eq!(rig.published().await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_device_and_the_agent_service_cannot_be_deleted_or_patched() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    assert_error(
        &http::delete(&rig.entities("/device/main//")).await,
        400,
        "The main device can not be deregistered",
    );
    let managed = "The entity: device/main/service/edge-agent is managed by edge-agent and can not be modified";
    let agent = rig.entities("/device/main/service/edge-agent");
    assert_error(&http::delete(&agent).await, 400, managed);
    assert_error(
        &http::patch_json(&agent, &json!({"@parent":"device/main//"})).await,
        400,
        managed,
    );
    assert_eq!(rig.published().await, vec![]);
    assert_text(&http::get(&rig.entities("")).await, 200, FRESH_LISTING);
    assert_eq!(
        rig.retained(AGENT_TOPIC).await,
        msgs(&[(AGENT_TOPIC, AGENT_REGISTRATION)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_child_stays_deleted_when_the_agent_restarts_with_the_broker_down() {
    let mut rig = System::start_watching(Watch::FromReady, |_| {}).await;
    post(
        &rig,
        json!({"@topic-id":"device/child1//","@type":"child-device"}),
    )
    .await;
    assert_text(
        &http::delete(&rig.entities("/device/child1//")).await,
        200,
        r#"[{"@topic-id":"device/child1//","@parent":"device/main//","@type":"child-device"}]"#,
    );

    rig.agent.stop().await;
    rig.broker.stop().await;
    rig.agent.relaunch().await;
    let readyz = http::get_until(&rig.url("/readyz"), |r| r.status == 503).await;
    let body = readyz.json();
    assert_eq!(body["status"], "disconnected", "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty())
            && body.as_object().map(|o| o.len()) == Some(2),
        "{body}"
    );
    assert_error(
        &http::get(&rig.entities("/device/child1//")).await,
        404,
        "Entity with topic id: device/child1// not found",
    );
    assert_text(&http::get(&rig.entities("")).await, 200, FRESH_LISTING);
}

// ---- PATCH (§5.6) -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patching_the_parent_moves_the_subtree_and_republishes_the_registration_from_metadata() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    post(
        &rig,
        json!({"@topic-id":"device/child_a//","@type":"child-device"}),
    )
    .await;
    post(
        &rig,
        json!({"@topic-id":"device/child_b//","@type":"child-device"}),
    )
    .await;
    post(
        &rig,
        json!({"@topic-id":"device/child_a/service/tedge-agent","@type":"service"}),
    )
    .await;
    rig.register(
        "device/child_aa//",
        r#"{"@type":"child-device","@parent":"device/child_b//","name":"aa"}"#,
    )
    .await;
    rig.register(
        "device/child_aaa//",
        r#"{"@type":"child-device","@parent":"device/child_aa//"}"#,
    )
    .await;
    rig.published().await;

    let url = rig.entities("/device/child_aa");
    let moved =
        r#"{"@topic-id":"device/child_aa//","@parent":"device/child_a//","@type":"child-device"}"#;
    assert_text(
        &http::patch_json(&url, &json!({"@parent":"device/child_a//"})).await,
        200,
        moved,
    );
    assert_eq!(
        rig.published().await,
        msgs(&[(
            "te/device/child_aa//",
            r#"{"@parent":"device/child_a//","@type":"child-device"}"#
        )])
    );
    let meta = |id: &str, parent: &str, etype: &str| {
        format!(r#"{{"@topic-id":"{id}","@parent":"{parent}","@type":"{etype}"}}"#)
    };
    assert_text(
        &http::get(&rig.entities("?root=device/child_a//")).await,
        200,
        &format!(
            "[{},{},{},{}]",
            meta("device/child_a//", "device/main//", "child-device"),
            meta(
                "device/child_a/service/tedge-agent",
                "device/child_a//",
                "service"
            ),
            meta("device/child_aa//", "device/child_a//", "child-device"),
            meta("device/child_aaa//", "device/child_aa//", "child-device"),
        ),
    );
    assert_json(
        &http::get(&rig.entities("?parent=device/child_b//")).await,
        200,
        &json!([]),
    );
    assert_json(
        &http::get(&rig.entities("/device/child_aa///twin")).await,
        200,
        &json!({"name":"aa"}),
    );

    // The same parent again changes nothing, so nothing is published; `null` is "not given".
    assert_text(
        &http::patch_json(&url, &json!({"@parent":"device/child_a//","@health":null})).await,
        200,
        moved,
    );
    assert_text(&http::patch_json(&url, &json!({})).await, 200, moved);
    assert_eq!(rig.published().await, vec![]);

    assert_text(
        &http::patch_json(
            &url,
            &json!({"@health":"device/child_a/service/tedge-agent"}),
        )
        .await,
        200,
        r#"{"@topic-id":"device/child_aa//","@parent":"device/child_a//","@type":"child-device","@health":"device/child_a/service/tedge-agent"}"#,
    );
    assert_eq!(
        rig.published().await,
        msgs(&[(
            "te/device/child_aa//",
            r#"{"@health":"device/child_a/service/tedge-agent","@parent":"device/child_a//","@type":"child-device"}"#
        )])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_that_break_the_tree_rules_are_refused_and_change_nothing() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    for body in [
        json!({"@topic-id":"device/child_x//","@type":"child-device"}),
        json!({"@topic-id":"device/child_x/service/service0","@type":"service"}),
        json!({"@topic-id":"device/child_xx//","@type":"child-device","@parent":"device/child_x//"}),
        json!({"@topic-id":"device/child_xxx//","@type":"child-device","@parent":"device/child_xx//"}),
        json!({"@topic-id":"device/child_xy//","@type":"child-device","@parent":"device/child_x//"}),
        json!({"@topic-id":"device/child_y//","@type":"child-device"}),
    ] {
        post(&rig, body).await;
    }
    rig.published().await;
    let before = http::get(&rig.entities("")).await;
    assert_eq!(before.status, 200);

    let cases = [
        ("device/child_x//", json!({"@parent":"device/child_x//"}), 400, "Entity: 'device/child_x//' can not be its own parent"),
        ("device/child_xy//", json!({"@parent":"device/child_x/service/service0"}), 400, "Entity: 'device/child_x/service/service0' can not be a parent of 'device/child_xy//' because it is a service. Only devices can be parents"),
        ("device/main//", json!({"@parent":"device/child_x//"}), 400, "The parent of main device can not be updated"),
        ("device/child_x//", json!({"@parent":"device/child_xxx//"}), 400, "Entity: 'device/child_xxx//' can not be a parent of 'device/child_x//' because 'device/child_xxx//' is a descendent of 'device/child_x//'"),
        ("device/child_y//", json!({"@type":"service"}), 400, "unknown field `@type`, expected `@parent` or `@health` at line 1 column 8"),
        ("device/child_y//", json!({"@parent":"device/unknown//"}), 400, "The specified parent \"device/unknown//\" does not exist in the entity store"),
        ("device/child_y//", json!({"@health":"device/unknown//"}), 400, "The specified health endpoint: device/unknown// does not exist in the entity store"),
        ("device/child_y//", json!({"@health":"device/child_x//"}), 400, "Entity: 'device/child_x//' can not be a health endpoint of 'device/child_y//' because it is not a service. Only services can be health endpoints"),
        // All checks run before anything is applied: a valid parent does not slip through.
        ("device/child_y//", json!({"@parent":"device/child_x//","@health":"device/unknown//"}), 400, "The specified health endpoint: device/unknown// does not exist in the entity store"),
        ("device/child_y//", json!({"@parent":"a/b/c/d/e"}), 400, "An entity topic identifier has at most 4 segments"),
        ("device/nope//", json!({"@parent":"device/main//"}), 404, "The specified entity: device/nope// does not exist in the entity store"),
    ];
    for (id, body, status, message) in cases {
        let response = http::patch_json(&rig.entities(&format!("/{id}")), &body).await;
        assert_eq!(
            response.status,
            status,
            "PATCH {id} {body}: {}",
            response.text()
        );
        assert_error(&response, status, message);
    }
    assert_eq!(rig.published().await, vec![]);
    assert_text(&http::get(&rig.entities("")).await, 200, before.text());
    assert_text(
        &http::get(&rig.entities("/device/child_y//")).await,
        200,
        r#"{"@topic-id":"device/child_y//","@parent":"device/main//","@type":"child-device"}"#,
    );
}

// ---- listing (§5.4) and state listing (§6.2) ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_walk_the_tree_breadth_first_with_children_in_byte_order() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    for body in [
        json!({"@topic-id":"device/child0//","@type":"child-device"}),
        json!({"@topic-id":"device/child01//","@type":"child-device","@parent":"device/child0//"}),
        json!({"@topic-id":"device/child00//","@type":"child-device","@parent":"device/child0//"}),
        json!({"@topic-id":"device/child001//","@type":"child-device","@parent":"device/child00//"}),
        json!({"@topic-id":"device/child000//","@type":"child-device","@parent":"device/child00//"}),
        // `/` sorts before `0`: this service comes before child000 among child00's children.
        json!({"@topic-id":"device/child00/service/s","@type":"service"}),
    ] {
        post(&rig, body).await;
    }
    let ids = |response: &http::Response| -> Vec<String> {
        assert_eq!(response.status, 200, "{}", response.text());
        response
            .json()
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["@topic-id"].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let cases: [(&str, &[&str]); 7] = [
        (
            "",
            &[
                "device/main//",
                "device/child0//",
                "device/main/service/edge-agent",
                "device/child00//",
                "device/child01//",
                "device/child00/service/s",
                "device/child000//",
                "device/child001//",
            ],
        ),
        (
            "?root=device/child0//",
            &[
                "device/child0//",
                "device/child00//",
                "device/child01//",
                "device/child00/service/s",
                "device/child000//",
                "device/child001//",
            ],
        ),
        (
            "?root=device/child0&type=child-device",
            &[
                "device/child0//",
                "device/child00//",
                "device/child01//",
                "device/child000//",
                "device/child001//",
            ],
        ),
        (
            "?parent=device/child00//",
            &[
                "device/child00/service/s",
                "device/child000//",
                "device/child001//",
            ],
        ),
        (
            "?parent=device/child00//&type=service",
            &["device/child00/service/s"],
        ),
        ("?type=device", &["device/main//"]),
        (
            "?type=service&unknown=1",
            &["device/main/service/edge-agent", "device/child00/service/s"],
        ),
    ];
    for (query, expected) in cases {
        let listing = http::get(&rig.entities(query)).await;
        assert_eq!(ids(&listing), expected, "GET /te/v1/entities{query}");
        let states = http::get(&rig.url(&format!("/te/v1/state{query}"))).await;
        assert_eq!(ids(&states), expected, "GET /te/v1/state{query}");
    }
    assert_text(
        &http::get(&rig.entities("?parent=device/child0//")).await,
        200,
        r#"[{"@topic-id":"device/child00//","@parent":"device/child0//","@type":"child-device"},{"@topic-id":"device/child01//","@parent":"device/child0//","@type":"child-device"}]"#,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_are_validated_the_same_way_on_both_listing_routes() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    let cases = [
        (
            "?root=device/a//&parent=device/b//",
            "The provided parameters: root and parent are mutually exclusive. Use either one.",
        ),
        ("?type=main", "Invalid entity type: main"),
        (
            "?parent=an/invalid/topic/id/",
            "An entity topic identifier has at most 4 segments",
        ),
        (
            "?root=device/%2B//",
            "An entity topic identifier must be a valid MQTT topic",
        ),
    ];
    for (query, message) in cases {
        for route in ["/te/v1/entities", "/te/v1/state"] {
            let response = http::get(&rig.url(&format!("{route}{query}"))).await;
            assert_eq!(
                response.status,
                400,
                "GET {route}{query}: {}",
                response.text()
            );
            assert_error(&response, 400, message);
        }
    }
    assert_text(
        &http::get(&rig.entities("?root=&parent=&type=")).await,
        200,
        FRESH_LISTING,
    );
    for query in ["?root=device/nope//", "?parent=device/nope//"] {
        assert_text(&http::get(&rig.entities(query)).await, 200, "[]");
        assert_text(
            &http::get(&rig.url(&format!("/te/v1/state{query}"))).await,
            200,
            "[]",
        );
    }
}

// ---- twin routes (§5.7) -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_twin_publishes_the_removed_and_changed_keys_in_key_order() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    let url = rig.entities("/device/main///twin");

    let first = json!({"maintainer":"J","mode":true,"window":5});
    assert_json(&http::put_json(&url, &first).await, 200, &first);
    assert_eq!(
        rig.published().await,
        msgs(&[
            ("te/device/main///twin/maintainer", r#""J""#),
            ("te/device/main///twin/mode", "true"),
            ("te/device/main///twin/window", "5"),
        ])
    );

    let second = json!({"last":"2025-01-01","maintainer":"J","mode":false});
    assert_json(&http::put_json(&url, &second).await, 200, &second);
    assert_eq!(
        rig.published().await,
        msgs(&[
            ("te/device/main///twin/last", r#""2025-01-01""#),
            ("te/device/main///twin/mode", "false"),
            ("te/device/main///twin/window", ""),
        ])
    );
    assert_json(&http::get(&url).await, 200, &second);

    // `null` members mean "absent"; the answer still echoes the body.
    let third = json!({"last":null,"maintainer":"J","mode":false});
    assert_json(&http::put_json(&url, &third).await, 200, &third);
    assert_eq!(
        rig.published().await,
        msgs(&[("te/device/main///twin/last", "")])
    );
    assert_json(
        &http::get(&url).await,
        200,
        &json!({"maintainer":"J","mode":false}),
    );
    assert_eq!(
        rig.retained("te/device/main///twin/+").await,
        msgs(&[
            ("te/device/main///twin/maintainer", r#""J""#),
            ("te/device/main///twin/mode", "false"),
        ])
    );

    assert_no_content(&http::delete(&url).await);
    assert_eq!(
        rig.published().await,
        msgs(&[
            ("te/device/main///twin/maintainer", ""),
            ("te/device/main///twin/mode", ""),
        ])
    );
    assert_no_content(&http::delete(&url).await);
    assert_eq!(rig.published().await, vec![]);
    assert_json(&http::get(&url).await, 200, &json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_a_twin_key_twice_publishes_once_and_deleting_it_twice_clears_once() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    let url = rig.entities("/device/main///twin/maintenance_window");
    let topic = "te/device/main///twin/maintenance_window";

    for expected in [msgs(&[(topic, "5")]), vec![]] {
        assert_text(&http::put_json(&url, &json!(5)).await, 200, "5");
        assert_eq!(rig.published().await, expected);
    }
    assert_text(&http::get(&url).await, 200, "5");
    for expected in [msgs(&[(topic, "")]), vec![]] {
        assert_no_content(&http::delete(&url).await);
        assert_eq!(rig.published().await, expected);
    }
    assert_error(
        &http::get(&url).await,
        404,
        "Entity twin data for entity: device/main// with fragment key: maintenance_window not found",
    );

    // `null` deletes the key and is still echoed.
    assert_text(
        &http::put_json(&url, &json!({"a":[1,2]})).await,
        200,
        r#"{"a":[1,2]}"#,
    );
    assert_eq!(rig.published().await, msgs(&[(topic, r#"{"a":[1,2]}"#)]));
    assert_text(&http::put_json(&url, &Value::Null).await, 200, "null");
    assert_eq!(rig.published().await, msgs(&[(topic, "")]));
    assert_text(&http::put_json(&url, &Value::Null).await, 200, "null");
    assert_eq!(rig.published().await, vec![]);
    assert_eq!(rig.retained(topic).await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_writes_with_invalid_keys_or_bodies_are_refused_and_change_nothing() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    let twin = rig.entities("/device/main///twin");
    let key = rig.entities("/device/main///twin/k");
    assert_text(&http::put_json(&key, &json!(0)).await, 200, "0");
    rig.published().await;

    let at = format!("Invalid twin key: '@x'. {KEY_RULE}");
    let cases = [
        (Method::PUT, twin.clone(), r#"{"@x":1}"#, 400, at.clone()),
        // The first invalid key in byte order is named: `@` sorts before `a`.
        (
            Method::PUT,
            twin.clone(),
            r#"{"ok":1,"a/b":2,"@x":3}"#,
            400,
            at.clone(),
        ),
        (
            Method::PUT,
            twin.clone(),
            r#"{"":1}"#,
            400,
            format!("Invalid twin key: ''. {KEY_RULE}"),
        ),
        (
            Method::PUT,
            twin.clone(),
            "true",
            400,
            "invalid type: boolean `true`, expected a map at line 1 column 4".to_owned(),
        ),
        (
            Method::PUT,
            key.clone(),
            "true true",
            400,
            "trailing characters at line 1 column 6".to_owned(),
        ),
        (
            Method::PUT,
            key.clone(),
            "",
            400,
            "EOF while parsing a value at line 1 column 0".to_owned(),
        ),
        (
            Method::PUT,
            rig.entities("/device/main///twin/@x"),
            "1",
            400,
            at.clone(),
        ),
        (
            Method::DELETE,
            rig.entities("/device/main///twin/@x"),
            "",
            400,
            at.clone(),
        ),
        (
            Method::GET,
            rig.entities("/device/main///twin/@x"),
            "",
            400,
            at,
        ),
        (
            Method::PATCH,
            twin.clone(),
            "{}",
            405,
            "Method Not Allowed".to_owned(),
        ),
        (
            Method::PUT,
            rig.entities("/device/nope///twin/k"),
            "1",
            404,
            "The specified entity: device/nope// does not exist in the entity store".to_owned(),
        ),
        (
            Method::PUT,
            rig.entities("/device/nope///twin"),
            "{}",
            404,
            "The specified entity: device/nope// does not exist in the entity store".to_owned(),
        ),
        (
            Method::DELETE,
            rig.entities("/device/nope///twin"),
            "",
            404,
            "The specified entity: device/nope// does not exist in the entity store".to_owned(),
        ),
        (
            Method::GET,
            rig.entities("/device/nope///twin/k"),
            "",
            404,
            "The specified entity: device/nope// does not exist in the entity store".to_owned(),
        ),
    ];
    for (method, url, body, status, message) in cases {
        let response = raw(method.clone(), &url, body).await;
        assert_eq!(
            response.status,
            status,
            "{method} {url} {body:?}: {}",
            response.text()
        );
        assert_error(&response, status, &message);
    }
    assert_eq!(rig.published().await, vec![]);
    assert_json(&http::get(&twin).await, 200, &json!({"k":0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_routes_serve_the_last_accepted_document_with_json_types() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    let config = rig.entities("/device/main///config");
    assert_json(&http::get(&config).await, 200, &json!({}));
    rig.bus
        .publish(
            "te/device/main///config",
            r#"{"port":1883,"host":"broker","tls":false}"#,
            true,
        )
        .await;
    http::get_until(&config, |r| r.body.as_ref() != b"{}").await;
    assert_json(
        &http::get(&config).await,
        200,
        &json!({"port":1883,"host":"broker","tls":false}),
    );
    assert_text(
        &http::get(&rig.entities("/device/main///config/port")).await,
        200,
        "1883",
    );
    assert_text(
        &http::get(&rig.entities("/device/main///config/host")).await,
        200,
        r#""broker""#,
    );
    assert_error(
        &http::get(&rig.entities("/device/main///config/nope")).await,
        404,
        "Configuration value for entity: device/main// with key: nope not found",
    );
    assert_error(
        &http::get(&rig.entities("/device/nope///config")).await,
        404,
        "The specified entity: device/nope// does not exist in the entity store",
    );
}

// ---- state documents (§6.1) -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_document_gathers_everything_the_twin_knows_about_an_entity() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    let from = Utc::now();
    rig.register(
        "device/child1//",
        r#"{"@type":"child-device","@id":"gw:device:child1","@health":"device/child1/service/tedge-agent","name":"child1","type":"RPi"}"#,
    )
    .await;
    let health = r#"{"pid":1234,"status":"up","time":1714676361.361}"#;
    let messages = [
        (
            "te/device/child1/service/tedge-agent",
            r#"{"@type":"service"}"#,
            true,
        ),
        (
            "te/device/child1a//",
            r#"{"@type":"child-device","@parent":"device/child1//"}"#,
            true,
        ),
        (
            "te/device/child1///config",
            r#"{"port":1883,"host":"broker"}"#,
            true,
        ),
        ("te/device/child1///status/health", health, true),
        ("te/device/child1///cmd/restart", "{}", true),
        (
            "te/device/child1///cmd/log_upload",
            r#"{"types":["mosquitto"]}"#,
            true,
        ),
        (
            "te/device/child1///cmd/restart/c8y-mapper-17",
            r#"{"status":"executing"}"#,
            true,
        ),
        (
            "te/device/child1///m/environment",
            r#"{"time":"2021-04-30T17:03:14.123+02:00","current":{"L1":9.5,"L2":10.3},"temperature":25}"#,
            false,
        ),
        (
            "te/device/child1///a/high_temp",
            r#"{"severity":"major","text":"Too hot","time":"2024-05-02T19:10:00Z"}"#,
            true,
        ),
        (
            "te/device/child1///e/login",
            r#"{"text":"user bob","time":"2024-05-02T19:11:00.5Z"}"#,
            false,
        ),
        (
            "te/device/child1///e/login",
            r#"{"text":"user alice","time":1714676400}"#,
            false,
        ),
    ];
    for (topic, payload, retain) in messages {
        rig.bus.publish(topic, payload.to_owned(), retain).await;
    }
    // The agent applies one connection's messages in order: the last one is the barrier.
    let url = rig.entities("/device/child1///state");
    let response = http::get_until(&url, |r| {
        r.status == 200 && r.json()["events"]["login"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let to = Utc::now();

    let text = response.text().to_owned();
    let members = [
        "@topic-id",
        "@type",
        "@parent",
        "@id",
        "@health",
        "twin",
        "config",
        "health",
        "capabilities",
        "measurements",
        "alarms",
        "events",
        "commands",
        "children",
    ];
    let positions: Vec<Option<usize>> = members
        .iter()
        .map(|m| text.find(&format!("\"{m}\":")))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        "members out of the §6.1 order: {text}"
    );

    let mut state = response.json();
    take_received(&mut state["health"]["received"], from, to);
    take_received(&mut state["alarms"]["high_temp"]["received"], from, to);
    take_received(&mut state["events"]["login"][0]["received"], from, to);
    take_received(&mut state["events"]["login"][1]["received"], from, to);
    let l = |value: f64| json!({"value": value, "time": "2021-04-30T15:03:14.123Z"});
    let child1 = json!({
        "@topic-id": "device/child1//",
        "@type": "child-device",
        "@parent": "device/main//",
        "@id": "gw:device:child1",
        "@health": "device/child1/service/tedge-agent",
        "twin": {"name": "child1", "type": "RPi"},
        "config": {"port": 1883, "host": "broker"},
        "health": {"status": "up", "raw": health, "received": "<received>"},
        "capabilities": {"log_upload": {"types": ["mosquitto"]}, "restart": {}},
        "measurements": {"environment": {
            "current": {"L1": l(9.5), "L2": l(10.3)},
            "temperature": {"value": 25, "time": "2021-04-30T15:03:14.123Z"}
        }},
        "alarms": {"high_temp": {
            "payload": {"severity": "major", "text": "Too hot"},
            "time": "2024-05-02T19:10:00.000Z",
            "received": "<received>"
        }},
        "events": {"login": [
            {"payload": {"text": "user alice"}, "time": "2024-05-02T19:00:00.000Z", "received": "<received>"},
            {"payload": {"text": "user bob"}, "time": "2024-05-02T19:11:00.500Z", "received": "<received>"}
        ]},
        "commands": {"restart": {"c8y-mapper-17": {"status": "executing"}}},
        "children": ["device/child1/service/tedge-agent", "device/child1a//"]
    });
    assert_eq!(state, child1);
    // Integers stay integers (§6.1 series).
    assert!(text.contains(r#""temperature":{"value":25,"#), "{text}");

    let leaf = |id: &str, etype: &str| {
        json!({"@topic-id": id, "@type": etype, "@parent": "device/child1//", "twin": {},
               "config": {}, "health": null, "capabilities": {}, "measurements": {}, "alarms": {},
               "events": {}, "commands": {}, "children": []})
    };
    let states = http::get(&rig.url("/te/v1/state?root=device/child1//")).await;
    assert_eq!(states.status, 200);
    let mut states = states.json();
    take_received(&mut states[0]["health"]["received"], from, to);
    take_received(&mut states[0]["alarms"]["high_temp"]["received"], from, to);
    take_received(&mut states[0]["events"]["login"][0]["received"], from, to);
    take_received(&mut states[0]["events"]["login"][1]["received"], from, to);
    assert_eq!(
        states,
        json!([
            child1,
            leaf("device/child1/service/tedge-agent", "service"),
            leaf("device/child1a//", "child-device")
        ])
    );

    assert_error(
        &http::get(&rig.entities("/device/nope///state")).await,
        404,
        "Entity with topic id: device/nope// not found",
    );
    // The state route needs all four id segments: this is the entity `device/child1/state/`.
    assert_error(
        &http::get(&rig.entities("/device/child1/state")).await,
        404,
        "Entity with topic id: device/child1/state/ not found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_services_state_shows_its_own_up_health() {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    // The agent applies its own `up` message when the broker echoes it, after becoming ready.
    let url = rig.entities("/device/main/service/edge-agent/state");
    let state = http::get_until(&url, |r| {
        r.status == 200 && r.json()["health"]["status"] == "up"
    })
    .await
    .json();
    let raw = state["health"]["raw"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let health: Value = serde_json::from_str(&raw).unwrap_or_default();
    assert_eq!(
        (&health["pid"], &health["status"]),
        (&json!(std::process::id()), &json!("up")),
        "{state}"
    );
    agent_time(state["health"]["received"].as_str().unwrap_or_default());
    assert_eq!(
        state,
        json!({
            "@topic-id": "device/main/service/edge-agent", "@type": "service",
            "@parent": "device/main//", "twin": {"name": "edge-agent", "type": "service"},
            "config": {}, "health": {"status": "up", "raw": raw, "received": state["health"]["received"]},
            "capabilities": {}, "measurements": {}, "alarms": {}, "events": {}, "commands": {},
            "children": []
        })
    );
}

/// A time member of a state document, parsed (asserting the §1 format).
#[track_caller]
fn time_of(value: &Value) -> chrono::DateTime<Utc> {
    agent_time(
        value
            .as_str()
            .unwrap_or_else(|| panic!("not a time: {value}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_state_document_tells_since_when_how_often_and_when_last_its_bridge_went_down() {
    let mut rig = System::start_watching(Watch::FromReady, |_| {}).await;
    let bridge = "device/main/service/mosquitto-c8y-bridge";
    let topic = format!("te/{bridge}/status/health");
    let url = rig.entities(&format!("/{bridge}/state"));
    let expected = |state: &Value, status: &str, since: &Value, flaps: u64, last_down: &Value| {
        json!({
            "@topic-id": bridge, "@type": "service", "@parent": "device/main//",
            "twin": {"name": "mosquitto-c8y-bridge"}, "config": {},
            "health": {"status": status, "raw": if status == "up" { "1" } else { "0" },
                       "received": state["health"]["received"]},
            "since": since, "flaps": flaps, "last_down": last_down,
            "capabilities": {}, "measurements": {}, "alarms": {}, "events": {}, "commands": {},
            "children": []
        })
    };

    // The first status (it auto-registers the service) counts as a change.
    let from = Utc::now();
    rig.publish(&topic, "1", true).await;
    rig.caught_up().await;
    let response = http::get(&url).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text().to_owned();
    let positions: Vec<Option<usize>> = ["health", "since", "flaps", "last_down", "capabilities"]
        .iter()
        .map(|m| text.find(&format!("\"{m}\":")))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        "the bridge members are not right after health: {text}"
    );
    let state = response.json();
    let up1 = state["health"]["received"].clone();
    take_received(&mut up1.clone(), from, Utc::now());
    assert_eq!(state, expected(&state, "up", &up1, 0, &Value::Null));

    rig.publish(&topic, "0", true).await;
    rig.caught_up().await;
    let state = http::get(&url).await.json();
    let down = state["health"]["received"].clone();
    assert!(time_of(&down) >= time_of(&up1), "{state}");
    assert_eq!(state, expected(&state, "down", &down, 1, &down));

    rig.publish(&topic, "1", true).await;
    rig.caught_up().await;
    let state = http::get(&url).await.json();
    let up2 = state["health"]["received"].clone();
    assert!(time_of(&up2) >= time_of(&down), "{state}");
    assert_eq!(state, expected(&state, "up", &up2, 1, &down));
    let listed = http::get(&rig.url(&format!("/te/v1/state?root={bridge}"))).await;
    assert_eq!((listed.status, listed.json()), (200, json!([state])));

    // The same status again (as after a reconnect of the bridge's broker) is not a change.
    rig.publish(&topic, "1", true).await;
    rig.caught_up().await;
    let state = http::get(&url).await.json();
    assert!(
        time_of(&state["health"]["received"]) >= time_of(&up2),
        "{state}"
    );
    assert_eq!(state, expected(&state, "up", &up2, 1, &down));

    // Another service's state document is as before: no bridge members.
    rig.publish(
        "te/device/main/service/app/status/health",
        r#"{"status":"down"}"#,
        true,
    )
    .await;
    rig.caught_up().await;
    let app = http::get(&rig.entities("/device/main/service/app/state"))
        .await
        .json();
    let mut members: Vec<&str> = app
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    members.sort_unstable();
    let mut standard = vec![
        "@topic-id",
        "@type",
        "@parent",
        "twin",
        "config",
        "health",
        "capabilities",
        "measurements",
        "alarms",
        "events",
        "commands",
        "children",
    ];
    standard.sort_unstable();
    assert_eq!(members, standard, "{app}");
    assert_eq!(app["health"]["status"], "down");

    // `since` and `last_down` are persisted; `flaps` counts since the agent started. The broker
    // delivers the retained `1` to the restarted agent again, which is not a change either.
    rig.restart_agent().await;
    rig.caught_up().await;
    let state = http::get(&rig.entities(&format!("/{bridge}/state")))
        .await
        .json();
    assert!(
        time_of(&state["health"]["received"]) >= time_of(&up2),
        "{state}"
    );
    assert_eq!(state, expected(&state, "up", &up2, 0, &down));
}

// ---- limits and the write gate (§5.1, §9) ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_new_entities_with_507_but_existing_ones_still_update() {
    // A limit of 3 (the main device and the agent service count) stands in for the 100000 of
    // example #41: the rule is the same, without registering 100000 entities.
    let rig = System::start_watching(Watch::FromReady, |cfg| cfg.twin.max_entities = 3).await;
    let url = rig.entities("");
    post(
        &rig,
        json!({"@topic-id":"device/c1//","@type":"child-device"}),
    )
    .await;
    rig.published().await;

    let full = "The entity store is full: the limit of 3 entities has been reached";
    let c2 = json!({"@topic-id":"device/c2//","@type":"child-device","name":"c2"});
    assert_error(&http::post_json(&url, &c2).await, 507, full);
    assert_eq!(rig.published().await, vec![]);
    assert_error(
        &http::get(&rig.entities("/device/c2")).await,
        404,
        "Entity with topic id: device/c2// not found",
    );

    assert_text(
        &http::put_json(&rig.entities("/device/c1///twin/k"), &json!(1)).await,
        200,
        "1",
    );
    assert_eq!(
        rig.published().await,
        msgs(&[("te/device/c1///twin/k", "1")])
    );

    assert_eq!(http::delete(&rig.entities("/device/c1")).await.status, 200);
    rig.published().await;
    assert_eq!(http::post_json(&url, &c2).await.status, 201);
    assert_eq!(
        rig.published().await,
        msgs(&[
            (
                "te/device/c2//",
                r#"{"@parent":"device/main//","@type":"child-device","name":"c2"}"#
            ),
            ("te/device/c2///twin/name", r#""c2""#),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused_with_503_while_the_broker_is_down_and_reads_are_still_served() {
    let mut rig = System::start_watching(Watch::FromReady, |_| {}).await;
    post(
        &rig,
        json!({"@topic-id":"device/c1//","@type":"child-device"}),
    )
    .await;
    let key = rig.entities("/device/main///twin/k");
    assert_text(&http::put_json(&key, &json!(0)).await, 200, "0");
    let listing = http::get(&rig.entities("")).await.text().to_owned();
    let state = http::get(&rig.entities("/device/main///state"))
        .await
        .json();

    rig.broker.stop().await;
    let readyz = http::get_until(&rig.url("/readyz"), |r| {
        r.status == 503 && r.json()["status"] == "disconnected"
    })
    .await;
    assert_eq!(readyz.header("content-type"), Some("application/json"));

    let writes = [
        (Method::PUT, key.clone(), "1"),
        (Method::DELETE, key.clone(), ""),
        (Method::PUT, rig.entities("/device/main///twin"), "{}"),
        (Method::DELETE, rig.entities("/device/main///twin"), ""),
        (
            Method::PATCH,
            rig.entities("/device/c1"),
            r#"{"@parent":"device/main//"}"#,
        ),
        (Method::DELETE, rig.entities("/device/c1"), ""),
    ];
    for (method, url, body) in writes {
        let response = raw(method.clone(), &url, body).await;
        assert_unavailable(&response, &format!("{method} {url}"));
    }
    let post = http::post_json(
        &rig.entities(""),
        &json!({"@topic-id":"device/c2//","@type":"child-device"}),
    )
    .await;
    assert_unavailable(&post, "POST");

    assert_text(&http::get(&key).await, 200, "0");
    assert_text(&http::get(&rig.entities("")).await, 200, &listing);
    assert_json(
        &http::get(&rig.entities("/device/main///state")).await,
        200,
        &state,
    );
    assert_json(
        &http::get(&rig.url("/healthz")).await,
        200,
        &json!({"status":"alive"}),
    );
}

/// §5.1 write gate: 503 `The entity store is not ready: <reason>` with `Retry-After: 1`.
#[track_caller]
fn assert_unavailable(response: &http::Response, what: &str) {
    assert_eq!(
        (
            response.status,
            response.header("retry-after"),
            response.header("content-type")
        ),
        (503, Some("1"), Some("application/json")),
        "{what}: {}",
        String::from_utf8_lossy(&response.body)
    );
    let body = response.json();
    let message = body["error"].as_str().unwrap_or_default();
    let reason = message
        .strip_prefix("The entity store is not ready: ")
        .unwrap_or_default();
    assert!(
        !reason.is_empty() && body.as_object().map(|o| o.len()) == Some(1),
        "{what}: {body}"
    );
}
