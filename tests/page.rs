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

/// The text of the selected entity's row of `series` (`type/name`), or `null`. Parenthesized:
/// `a ?? null === b` would be `a ?? (null === b)`, and `a ?? b && c` is a syntax error.
fn series_value(series: &str) -> String {
    format!(
        "(document.querySelector('#detail-body tr[data-series=\"{series}\"] .value')?.textContent ?? null)"
    )
}

/// How many points the sparkline of `series` draws, or `null`.
fn series_points(series: &str) -> String {
    format!(
        "(document.querySelector('#detail-body tr[data-series=\"{series}\"] polyline')?.dataset.points ?? null)"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_of_ten_thousand_children_is_drawn_lazily() {
    const CHILDREN: usize = 10_000;
    let rig = System::start_watching(Watch::FromReady, |_| {}).await;
    for i in 0..CHILDREN {
        rig.input
            .publish(
                &format!("te/device/c{i}//"),
                r#"{"@type":"child-device"}"#,
                true,
            )
            .await;
    }
    common::twin::caught_up_within(&rig.broker, Duration::from_secs(120)).await;

    let browser = Browser::launch().await;
    let started = std::time::Instant::now();
    browser.open(&rig.url("/")).await;
    let more = browser
        .wait_for(
            "the first page of the main device's children",
            Duration::from_secs(30),
            "document.querySelector('#tree .more .label')?.textContent ?? null",
        )
        .await;
    println!(
        "{CHILDREN} children: tree first drawn {} ms after navigation",
        started.elapsed().as_millis()
    );
    // The main device, 200 children and the "show more" item; the agent's own service is a
    // child too, after the devices.
    assert_eq!(more, json!("Show 200 more (9,801 not shown)"));
    let items = "document.querySelectorAll('#tree [role=treeitem]').length";
    assert_eq!(browser.evaluate(items).await, json!(202));

    browser
        .evaluate("document.querySelector('#tree .more .label').click()")
        .await;
    assert_eq!(browser.evaluate(items).await, json!(402));

    // Selecting a child far down the list draws enough of the list to show it.
    browser
        .evaluate("location.hash = '#' + encodeURIComponent('device/c9999//')")
        .await;
    browser
        .wait_for(
            "c9999 selected and drawn",
            WAIT,
            "document.querySelector('#tree [aria-selected=true]')?.dataset.key === 'device/c9999//'",
        )
        .await;
    // Only the target's page is drawn (between "show earlier" and "show more"), not every
    // child before it.
    let drawn = browser.evaluate(items).await.as_u64().unwrap_or_default();
    assert!(drawn < 1_000, "{drawn} items drawn to show one child");
    assert_eq!(
        browser
            .evaluate(
                "(r => r.top >= 0 && r.bottom <= innerHeight)(document.querySelector('#tree [aria-selected=true]').getBoundingClientRect())"
            )
            .await,
        json!(true),
        "c9999 scrolled into view"
    );
    assert_eq!(
        browser
            .evaluate("document.querySelector('#tree .more.earlier .label')?.textContent ?? null")
            .await,
        json!("Show 200 earlier (9,800 not shown)")
    );
    assert_eq!(
        browser
            .evaluate("document.querySelector('#tree [aria-selected=true]').getAttribute('aria-posinset')")
            .await,
        json!("10000")
    );
    // "Show earlier" draws the page before it, above it.
    browser
        .evaluate("document.querySelector('#tree .more.earlier .label').click()")
        .await;
    assert_eq!(browser.evaluate(items).await, json!(drawn + 200));

    // The filter lists matches flat, at most 200.
    browser
        .evaluate(
            "(f => { f.value = 'c99'; f.dispatchEvent(new Event('input')); })(document.getElementById('filter'))",
        )
        .await;
    assert_eq!(browser.evaluate(items).await, json!(111));

    // A burst of changes all over the twin is applied in batches, and the page keeps up.
    let started = std::time::Instant::now();
    for i in 0..2_000 {
        rig.input
            .publish_qos0(
                &format!("te/device/c{}///m/load", i * 7 % CHILDREN),
                format!(r#"{{"v":{i}}}"#),
                false,
            )
            .await;
    }
    rig.input
        .publish("te/device/c9999///m/load", r#"{"v":12345}"#, false)
        .await;
    browser
        .wait_for(
            "the last of 2,000 changes",
            Duration::from_secs(30),
            &format!("{} === '12345'", series_value("load/v")),
        )
        .await;
    println!(
        "2,000 changes over {CHILDREN} entities shown within {} ms",
        started.elapsed().as_millis()
    );
    assert_no_errors(&browser, |_| false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_events_capabilities_operations_health_and_bridges_follow_live() {
    let rig = system_with_a_hot_child().await;
    let browser = open_page(&rig).await;
    browser
        .evaluate(&format!(
            "location.hash = '#' + encodeURIComponent('{CHILD}')"
        ))
        .await;
    browser
        .wait_for(
            "child1 selected",
            WAIT,
            &format!("{} === '21.5'", series_value("environment/temperature")),
        )
        .await;
    browser.evaluate("window.notReloaded = true").await;

    let bridge = "te/device/main/service/mosquitto-c8y-bridge";
    rig.register(
        "device/main/service/mosquitto-c8y-bridge",
        r#"{"@type":"service"}"#,
    )
    .await;
    for (topic, payload, retain) in [
        (
            "te/device/child1///twin/name",
            r#""Child <b>one</b>""#,
            true,
        ),
        (
            "te/device/child1///e/login",
            r#"{"text":"user bob"}"#,
            false,
        ),
        ("te/device/child1///cmd/restart", "{}", true),
        (
            "te/device/child1///cmd/restart/c8y-1",
            r#"{"status":"executing"}"#,
            true,
        ),
        (
            "te/device/child1///a/fire",
            r#"{"severity":"critical","text":"Fire"}"#,
            true,
        ),
        (
            "te/device/child1///m/power",
            r#"{"current":{"L1":9.5,"L2":10.25}}"#,
            false,
        ),
        (
            "te/device/child1///status/health",
            r#"{"status":"up"}"#,
            true,
        ),
        (&format!("{bridge}/status/health"), "1", true),
        (&format!("{bridge}/status/health"), "0", true),
    ] {
        rig.publish(topic, payload.to_owned(), retain).await;
    }
    let detail = "document.getElementById('detail-body').innerText";
    let text = browser
        .wait_for(
            "the new twin fragment, event, capability, operation and health",
            WAIT,
            &format!(
                "(t => ['Child <b>one</b>', 'user bob', 'restart', 'c8y-1', 'executing', 'up']
                    .every(s => t.includes(s)) ? t : null)({detail})"
            ),
        )
        .await;
    assert!(text.as_str().is_some_and(|t| !t.contains("null")), "{text}");
    // Alarms are listed by severity: the critical one first.
    assert_eq!(
        browser
            .evaluate("[...document.querySelectorAll('#detail-body tr[data-alarm]')].map(tr => tr.dataset.severity)")
            .await,
        json!(["critical", "major"])
    );
    assert_eq!(
        browser.evaluate(&series_value("power/current/L2")).await,
        json!("10.25")
    );
    // The bridge went down after being up: one flap, with its last down time.
    let row = "document.querySelector('#bridges-body tr[data-bridge=\"device/main/service/mosquitto-c8y-bridge\"]')";
    let shown = browser
        .wait_for(
            "the bridge down with one flap",
            WAIT,
            &format!(
                "(r => r && r.cells[1].innerText === 'down' && r.cells[3].innerText === '1' \
                  && r.cells[4].innerText !== '–' ? r.innerText : null)({row})"
            ),
        )
        .await;
    assert!(
        shown
            .as_str()
            .is_some_and(|t| t.contains("mosquitto-c8y-bridge")),
        "{shown}"
    );
    let (_, state) = rig
        .get("/te/v1/entities/device/main/service/mosquitto-c8y-bridge/state")
        .await;
    assert_eq!(state["flaps"], json!(1), "{state}");

    // Clearing the alarm and the command removes them.
    rig.publish("te/device/child1///a/fire", "", true).await;
    rig.publish("te/device/child1///cmd/restart/c8y-1", "", true)
        .await;
    browser
        .wait_for(
            "the cleared alarm and command gone",
            WAIT,
            "document.querySelectorAll('#detail-body tr[data-alarm]').length === 1 \
             && !document.querySelector('#detail-body tr[data-command]')",
        )
        .await;
    assert_eq!(
        browser.evaluate("window.notReloaded === true").await,
        json!(true)
    );
    let path = artifact_path("page-live.png");
    browser.screenshot(&path).await;
    println!("screenshot: {}", path.display());
    assert_no_errors(&browser, |_| false);
}

/// Topic levels are device-controlled: `__proto__`, `constructor` and `prototype` as an event
/// type, an operation, a twin key, a measurement or alarm type are only names, in the change
/// stream as in the state read, and never reach `Object.prototype`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prototype_names_from_mqtt_are_plain_names() {
    let rig = system_with_a_hot_child().await;
    let browser = open_page(&rig).await;
    browser
        .evaluate(&format!(
            "location.hash = '#' + encodeURIComponent('{CHILD}')"
        ))
        .await;
    browser
        .wait_for(
            "child1 selected",
            WAIT,
            &format!("{} === '21.5'", series_value("environment/temperature")),
        )
        .await;

    for (topic, payload, retain) in [
        ("te/device/child1///e/__proto__", r#"{"text":"x"}"#, false),
        (
            "te/device/child1///cmd/__proto__/x1",
            r#"{"status":"init"}"#,
            true,
        ),
        ("te/device/child1///twin/__proto__", "1", true),
        ("te/device/child1///e/constructor", r#"{"text":"y"}"#, false),
        ("te/device/child1///cmd/constructor", "{}", true),
        ("te/device/child1///twin/prototype", r#""p""#, true),
        ("te/device/child1///m/constructor", r#"{"v":7}"#, false),
        (
            "te/device/child1///a/__proto__",
            r#"{"severity":"minor","text":"z"}"#,
            true,
        ),
    ] {
        rig.publish(topic, payload.to_owned(), retain).await;
    }
    rig.publish(
        "te/device/child1///m/environment",
        r#"{"temperature":23.25}"#,
        false,
    )
    .await;
    rig.caught_up().await;
    // What the agent itself made of them: the page shows the same.
    let (status, state) = rig.get("/te/v1/entities/device/child1///state").await;
    assert_eq!(status, 200, "{state}");
    println!(
        "the agent's twin {}, events {}, commands {}, capabilities {}",
        state["twin"], state["events"], state["commands"], state["capabilities"]
    );

    let shown = "document.getElementById('detail-body').innerText";
    let wanted: Vec<&str> = [
        (
            state["events"]["__proto__"][0]["payload"]["text"] == json!("x"),
            "x",
        ),
        (state["twin"]["__proto__"] == json!(1), "__proto__"),
        (state["twin"]["prototype"] == json!("p"), "prototype"),
    ]
    .into_iter()
    .filter_map(|(accepted, text)| accepted.then_some(text))
    .collect();
    let wanted = serde_json::to_string(&wanted).expect("json");
    let check = |what: &'static str| {
        format!(
            "{} === '23.25' && {wanted}.every(s => {shown}.includes(s)) \
             && ({{}}).status === undefined && ({{}}).x1 === undefined && ({{}}).text === undefined \
             && Object.getPrototypeOf({{}}) === Object.prototype && typeof ({{}}).constructor === 'function' \
             && '{what}'",
            series_value("environment/temperature")
        )
    };
    browser
        .wait_for(
            "the new temperature after the prototype names, live",
            WAIT,
            &check("live"),
        )
        .await;
    if state["commands"]["__proto__"]["x1"] == json!({"status":"init"}) {
        assert_eq!(
            browser
                .evaluate(
                    "!!document.querySelector('#detail-body tr[data-command=\"__proto__/x1\"]')"
                )
                .await,
            json!(true)
        );
    }
    if state["measurements"]["constructor"]["v"]["value"] == json!(7) {
        assert_eq!(
            browser.evaluate(&series_value("constructor/v")).await,
            json!("7")
        );
    }

    // The same names read from GET /te/v1/state by a page loaded afresh.
    browser
        .open(&rig.url(&format!("/#{}", CHILD.replace('/', "%2F"))))
        .await;
    browser
        .wait_for(
            "the state read with the prototype names",
            WAIT,
            &check("read"),
        )
        .await;
    assert_no_errors(&browser, |_| false);
}

/// After a reset the page reads the state, which may already hold changes that the stream
/// sends after the reset: an event must not be shown twice. The state read is held back (a
/// `fetch` wrapper installed before the page loads) until the agent has the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_in_the_state_read_and_in_the_stream_after_a_reset_is_shown_once() {
    let rig = system_with_a_hot_child().await;
    let browser = Browser::launch().await;
    browser
        .call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": r#"
                (() => {
                  const fetch = window.fetch.bind(window);
                  window.stateReads = 0;
                  window.changes = 0;
                  window.fetch = (url, options) => {
                    if (String(url) !== '/te/v1/state' || window.stateReads++ > 0) return fetch(url, options);
                    return new Promise((resolve) => {
                      window.releaseState = () => resolve(fetch(url, options));
                    });
                  };
                  const Source = window.EventSource;
                  window.EventSource = class extends Source {
                    constructor(url, options) {
                      super(url, options);
                      this.addEventListener('change', () => window.changes++);
                    }
                  };
                })();
            "#}),
        )
        .await;
    browser
        .open(&rig.url(&format!("/#{}", CHILD.replace('/', "%2F"))))
        .await;
    browser
        .wait_for(
            "the reset and the first state read (held back)",
            WAIT,
            "window.stateReads === 1 && typeof window.releaseState === 'function'",
        )
        .await;
    rig.publish(
        "te/device/child1///e/login",
        r#"{"text":"user bob"}"#,
        false,
    )
    .await;
    rig.caught_up().await;
    browser
        .wait_for("the event in the stream", WAIT, "window.changes >= 1")
        .await;
    browser.evaluate("window.releaseState(); true").await;
    let rows = "[...document.querySelectorAll('#detail-body .sec-events tbody tr')].map(tr => tr.innerText)";
    browser
        .wait_for(
            "the event shown",
            WAIT,
            &format!("(r => r.length > 0 ? r : null)({rows})"),
        )
        .await;
    // Let the queued change be applied (it is, in the frame after the state read).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shown = browser.evaluate(rows).await;
    assert_eq!(
        shown.as_array().map(Vec::len),
        Some(1),
        "the event once: {shown}"
    );

    // Another event with the same text is another event.
    rig.publish(
        "te/device/child1///e/login",
        r#"{"text":"user bob"}"#,
        false,
    )
    .await;
    browser
        .wait_for("two events", WAIT, &format!("{rows}.length === 2"))
        .await;
    assert_no_errors(&browser, |_| false);
}
