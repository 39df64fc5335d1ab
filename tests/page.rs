//! The live twin page (issue #7) in a real browser: a real mosquitto, the agent in-process, and
//! headless chromium (tests/common/browser.rs) loading `GET /`. Assertions read the rendered DOM;
//! every wait polls it with a timeout. Each test also checks that the page raised no JavaScript
//! error, and the first saves a screenshot under `target/test-artifacts/`.

mod common;

use std::time::Duration;

use common::browser::{artifact_path, Browser, WAIT};
use common::twin::{System, Watch};
use serde_json::json;

const CHILD: &str = "device/child1//";

/// The text of the selected entity's row of `series` (`type/name`), or `null`.
fn series_value(series: &str) -> String {
    format!(
        "document.querySelector('#detail-body tr[data-series=\"{series}\"] .value')?.textContent ?? null"
    )
}

/// How many points the sparkline of `series` draws, or `null`.
fn series_points(series: &str) -> String {
    format!(
        "document.querySelector('#detail-body tr[data-series=\"{series}\"] polyline')?.dataset.points ?? null"
    )
}

/// The text of the agent or broker indicator (`agent-status`, `broker-status`) when its state
/// is `state` (`ok`, `bad`, `pending`), else `null`.
fn indicator(id: &str, state: &str) -> String {
    format!(
        "(e => e.dataset.state === '{state}' ? e.textContent : null)(document.getElementById('{id}'))"
    )
}

/// A system with `device/child1//`, its temperature 21.5 and its `major` alarm, all applied.
async fn system_with_a_hot_child() -> System {
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    rig.register(CHILD, r#"{"@type":"child-device"}"#).await;
    rig.publish(
        "te/device/child1///m/environment",
        r#"{"temperature":21.5}"#,
        false,
    )
    .await;
    rig.publish(
        "te/device/child1///a/high_temp",
        r#"{"severity":"major","text":"Too hot"}"#,
        true,
    )
    .await;
    rig.caught_up().await;
    let (status, state) = rig.get("/te/v1/entities/device/child1///state").await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(
        state["measurements"]["environment"]["temperature"]["value"],
        json!(21.5)
    );
    assert_eq!(
        state["alarms"]["high_temp"]["payload"],
        json!({"severity":"major","text":"Too hot"})
    );
    rig
}

/// Opens the page and waits until the tree shows `device/child1//`.
async fn open_page(rig: &System) -> Browser {
    let browser = Browser::launch().await;
    browser.open(&rig.url("/")).await;
    browser
        .wait_for(
            "child1 in the entity tree",
            WAIT,
            &format!("!!document.querySelector('#tree [role=treeitem][data-key=\"{CHILD}\"]')"),
        )
        .await;
    browser
}

fn assert_no_errors(browser: &Browser, allowed: impl Fn(&str) -> bool) {
    let errors: Vec<String> = browser
        .errors()
        .into_iter()
        .filter(|e| !allowed(e))
        .collect();
    assert!(
        errors.is_empty(),
        "the page reported errors:\n{}\nchromium's stderr:\n{}",
        errors.join("\n"),
        browser.stderr_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_child_its_measurement_and_alarm_and_follows_new_measurements() {
    let rig = system_with_a_hot_child().await;
    let browser = open_page(&rig).await;

    // Select the child with a click on its tree item.
    browser
        .evaluate(&format!(
            "document.querySelector('#tree [role=treeitem][data-key=\"{CHILD}\"] .label').click()"
        ))
        .await;
    browser
        .wait_for(
            "child1 selected",
            WAIT,
            &format!(
                "document.querySelector('#tree [aria-selected=true]')?.dataset.key === '{CHILD}'"
            ),
        )
        .await;
    browser
        .wait_for(
            "the temperature 21.5",
            WAIT,
            &format!("{} === '21.5'", series_value("environment/temperature")),
        )
        .await;
    let alarm = browser
        .wait_for(
            "the major alarm",
            WAIT,
            "document.querySelector('#detail-body tr[data-alarm=\"high_temp\"]')?.innerText ?? null",
        )
        .await;
    let alarm = alarm.as_str().unwrap_or_default().to_lowercase();
    assert!(
        alarm.contains("major") && alarm.contains("too hot"),
        "{alarm}"
    );
    assert_eq!(
        browser
            .evaluate("document.querySelector('#detail-body tr[data-alarm=\"high_temp\"]').dataset.severity")
            .await,
        json!("major")
    );
    browser
        .wait_for(
            "the agent and the broker shown as connected",
            WAIT,
            &format!(
                "{} && {}",
                indicator("agent-status", "ok"),
                indicator("broker-status", "ok")
            ),
        )
        .await;

    // A new measurement reaches the page through the change stream, without a reload.
    browser.evaluate("window.notReloaded = true").await;
    rig.publish(
        "te/device/child1///m/environment",
        r#"{"temperature":23.25}"#,
        false,
    )
    .await;
    browser
        .wait_for(
            "the temperature 23.25",
            WAIT,
            &format!("{} === '23.25'", series_value("environment/temperature")),
        )
        .await;
    browser
        .wait_for(
            "a sparkline of 2 points",
            WAIT,
            &format!("{} === '2'", series_points("environment/temperature")),
        )
        .await;
    assert_eq!(
        browser.evaluate("window.notReloaded === true").await,
        json!(true)
    );

    let path = artifact_path("page.png");
    browser.screenshot(&path).await;
    println!("screenshot: {}", path.display());
    browser.viewport(390, 844, true).await;
    let phone = artifact_path("page-phone.png");
    browser.screenshot(&phone).await;
    println!("screenshot (phone): {}", phone.display());

    assert_no_errors(&browser, |_| false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_is_navigable_with_the_keyboard() {
    let rig = system_with_a_hot_child().await;
    let browser = open_page(&rig).await;
    // The main device is selected first; its children are shown, services after devices.
    browser
        .wait_for(
            "the main device selected",
            WAIT,
            "document.querySelector('#tree [aria-selected=true]')?.dataset.key === 'device/main//'",
        )
        .await;
    browser
        .evaluate("document.querySelector('#tree [tabindex=\"0\"]').focus()")
        .await;
    browser.press("ArrowDown").await;
    assert_eq!(
        browser.evaluate("document.activeElement.dataset.key").await,
        json!(CHILD)
    );
    browser.press("Enter").await;
    browser
        .wait_for(
            "child1 selected by the keyboard",
            WAIT,
            &format!("{} === '21.5'", series_value("environment/temperature")),
        )
        .await;
    // Left goes back to the parent, which collapses on a second Left.
    browser.press("ArrowLeft").await;
    assert_eq!(
        browser.evaluate("document.activeElement.dataset.key").await,
        json!("device/main//")
    );
    browser.press("ArrowLeft").await;
    assert_eq!(
        browser
            .evaluate("document.activeElement.getAttribute('aria-expanded')")
            .await,
        json!("false")
    );
    browser.press("ArrowRight").await;
    browser.press(" ").await;
    assert_eq!(
        browser
            .evaluate("document.querySelector('#tree [aria-selected=true]').dataset.key")
            .await,
        json!("device/main//")
    );
    assert_no_errors(&browser, |_| false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_when_the_broker_and_then_the_agent_are_lost() {
    let mut rig = system_with_a_hot_child().await;
    let browser = open_page(&rig).await;
    browser
        .wait_for(
            "the broker shown as connected",
            WAIT,
            &indicator("broker-status", "ok"),
        )
        .await;

    rig.broker.stop().await;
    let shown = browser
        .wait_for(
            "the broker shown as disconnected",
            Duration::from_secs(20),
            &indicator("broker-status", "bad"),
        )
        .await;
    let (status, ready) = rig.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    let shown = shown.as_str().unwrap_or_default();
    assert!(shown.contains("disconnected"), "{shown}");
    assert_eq!(
        browser
            .evaluate("document.getElementById('agent-status').dataset.state")
            .await,
        json!("ok"),
        "the agent itself is still reachable"
    );

    rig.broker.start_again().await;
    rig.agent.wait_ready().await;
    browser
        .wait_for(
            "the broker shown as connected again",
            Duration::from_secs(20),
            &indicator("broker-status", "ok"),
        )
        .await;

    rig.agent.stop().await;
    browser
        .wait_for(
            "the agent shown as lost",
            Duration::from_secs(20),
            &indicator("agent-status", "bad"),
        )
        .await;
    // Polling /readyz while the broker is down is answered 503, and the lost agent refuses
    // connections: the browser logs both as failed loads. Anything else is a fault.
    assert_no_errors(&browser, |e| {
        e.starts_with("log (network)")
            && (e.contains("/readyz")
                || e.contains("/te/v1/")
                || e.contains("ERR_CONNECTION_REFUSED"))
    });
}
