//! The change stream `GET /te/v1/changes` and the measurement history
//! `GET /te/v1/entities/<id>/m/<type>` end to end (issue #7): a real mosquitto, the agent
//! in-process, real MQTT in and real HTTP (Server-Sent Events) out.

mod common;

use chrono::{Duration as TimeDelta, SubsecRound, Utc};
use common::http;
use common::sse::{Event, Sse};
use common::twin::System;
use reqwest::Method;
use serde_json::{json, Value};

const CHILD: &str = "device/child1//";

/// A time `secs_ago` before now, as the agent prints times.
fn ago(secs_ago: i64) -> String {
    (Utc::now().trunc_subsecs(0) - TimeDelta::seconds(secs_ago))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A change event's data without its sequence number, which the event's id carries.
fn change(event: &Event) -> Value {
    assert_eq!(event.event, "change", "{event:?}");
    let mut data = event.json();
    assert_eq!(data["seq"], json!(event.seq()), "{event:?}");
    data.as_object_mut().map(|o| o.remove("seq"));
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_starts_with_a_reset_then_carries_every_change_with_its_new_value() {
    let rig = System::start().await;
    let mut sse = Sse::open(&rig.url("/te/v1/changes"), None).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    let reset = sse.next().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.json(), json!({"seq": reset.seq(), "reason": "start"}));

    let t = ago(5);
    rig.publish(
        &format!("te/{CHILD}"),
        r#"{"@type":"child-device","@id":"c1"}"#,
        true,
    )
    .await;
    rig.publish(
        &format!("te/{CHILD}/m/environment"),
        format!(r#"{{"temperature":21.5,"current":{{"L1":9.5}},"time":"{t}"}}"#),
        false,
    )
    .await;
    rig.publish(&format!("te/{CHILD}/twin/name"), r#""pump""#, true)
        .await;
    rig.publish(
        &format!("te/{CHILD}/a/high_temp"),
        format!(r#"{{"severity":"major","text":"Too hot","time":"{t}"}}"#),
        true,
    )
    .await;
    rig.publish(&format!("te/{CHILD}/a/high_temp"), "", true)
        .await;
    rig.publish(&format!("te/{CHILD}/cmd/restart"), "{}", true)
        .await;
    rig.publish(
        &format!("te/{CHILD}/cmd/restart/r-1"),
        r#"{"status":"init"}"#,
        true,
    )
    .await;
    rig.publish(
        &format!("te/{CHILD}/e/login"),
        format!(r#"{{"text":"user bob","time":"{t}"}}"#),
        false,
    )
    .await;
    rig.publish(
        &format!("te/{CHILD}/status/health"),
        r#"{"status":"up"}"#,
        true,
    )
    .await;
    rig.publish(&format!("te/{CHILD}"), "", true).await;

    let events = sse.of(CHILD, 10).await;
    let mut seqs: Vec<u64> = events.iter().map(Event::seq).collect();
    assert!(seqs[0] > reset.seq(), "{seqs:?} after {}", reset.seq());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    seqs.dedup();
    assert_eq!(seqs.len(), 10);
    let data: Vec<Value> = events.iter().map(change).collect();
    let expected_plain = [
        json!({"@topic-id": CHILD, "channel": "", "value":
            {"@topic-id": CHILD, "@parent": "device/main//", "@type": "child-device", "@id": "c1"}}),
        json!({"@topic-id": CHILD, "channel": "m/environment", "value": {
            "current": {"L1": {"value": 9.5, "time": t}},
            "temperature": {"value": 21.5, "time": t}}}),
        json!({"@topic-id": CHILD, "channel": "twin/name", "value": "pump"}),
    ];
    assert_eq!(data[..3], expected_plain);
    // Records carry the agent's reception time, checked for its format only.
    let alarm = &data[3];
    assert_eq!(alarm["channel"], "a/high_temp");
    assert_eq!(
        alarm["value"]["payload"],
        json!({"severity": "major", "text": "Too hot"})
    );
    assert_eq!(alarm["value"]["time"], json!(t));
    http::agent_time(alarm["value"]["received"].as_str().unwrap());
    assert_eq!(
        data[4],
        json!({"@topic-id": CHILD, "channel": "a/high_temp", "value": null})
    );
    assert_eq!(
        data[5],
        json!({"@topic-id": CHILD, "channel": "cmd/restart", "value": {}})
    );
    assert_eq!(
        data[6],
        json!({"@topic-id": CHILD, "channel": "cmd/restart/r-1", "value": {"status": "init"}})
    );
    assert_eq!(data[7]["channel"], "e/login");
    assert_eq!(data[7]["value"]["payload"], json!({"text": "user bob"}));
    assert_eq!(data[8]["channel"], "status/health");
    assert_eq!(data[8]["value"]["status"], "up");
    assert_eq!(data[8]["value"]["raw"], r#"{"status":"up"}"#);
    assert_eq!(
        data[9],
        json!({"@topic-id": CHILD, "channel": "", "value": null})
    );

    // Other methods, and a position that is not a number.
    let post = http::request(Method::POST, &rig.url("/te/v1/changes"), "").await;
    http::assert_error(&post, 405, "Method Not Allowed");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let bad = http::get(&rig.url("/te/v1/changes?since=soon")).await;
    http::assert_error(
        &bad,
        400,
        "Invalid value of since: expected the number of a change, got \"soon\"",
    );
    // The client shows in the metrics while it follows.
    let metrics = http::get(&rig.url("/metrics")).await;
    assert!(
        metrics.text().contains("\nedge_agent_sse_clients 1\n"),
        "{}",
        metrics.text()
    );
}

/// The number of changes made by `n` twin updates of the child, read back on `sse`.
async fn twin_updates(rig: &System, sse: &mut Sse, from: u32, n: u32) -> Vec<Event> {
    for i in from..from + n {
        rig.publish(&format!("te/{CHILD}/twin/count"), i.to_string(), true)
            .await;
    }
    sse.of(CHILD, n as usize).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_without_a_gap_and_is_reset_once_it_fell_out_of_the_journal() {
    let rig = System::start_with(|c| c.twin.changes_kept = 8).await;
    rig.register(CHILD, r#"{"@type":"child-device"}"#).await;
    let url = rig.url("/te/v1/changes");
    let mut first = Sse::open(&url, None).await;
    first.next().await;
    let seen = twin_updates(&rig, &mut first, 0, 3).await;
    let last = seen[2].seq();
    drop(first);

    // Two changes while nobody follows: both come on resumption, and nothing else first.
    for i in 3..5 {
        rig.publish(&format!("te/{CHILD}/twin/count"), i.to_string(), true)
            .await;
    }
    rig.caught_up().await;
    let mut resumed = Sse::open(&url, Some(&last.to_string())).await;
    let events = resumed.of(CHILD, 2).await;
    assert_eq!(
        events
            .iter()
            .map(change)
            .map(|d| d["value"].clone())
            .collect::<Vec<_>>(),
        [json!(3), json!(4)]
    );
    assert!(events[0].seq() > last);
    let last = events[1].seq();
    drop(resumed);

    // `?since=` works the same way.
    let mut since = Sse::open(&format!("{url}?since={}", events[0].seq()), None).await;
    assert_eq!(since.of(CHILD, 1).await[0].seq(), last);
    drop(since);

    // Twelve changes later, the journal of eight no longer reaches back: a reset first, then
    // the changes after it.
    for i in 5..17 {
        rig.publish(&format!("te/{CHILD}/twin/count"), i.to_string(), true)
            .await;
    }
    rig.caught_up().await;
    let mut behind = Sse::open(&url, Some(&last.to_string())).await;
    let reset = behind.next().await;
    assert_eq!(reset.event, "reset", "{reset:?}");
    assert_eq!(reset.json()["reason"], "behind");
    assert!(reset.seq() >= last + 12, "{} after {last}", reset.seq());
    let next = twin_updates(&rig, &mut behind, 17, 1).await;
    assert_eq!(change(&next[0])["value"], json!(17));
    assert!(next[0].seq() > reset.seq());

    // An id this run never gave (another run's, or garbage) is a reset too.
    let mut unknown = Sse::open(&url, Some("not-a-number")).await;
    assert_eq!(unknown.next().await.json()["reason"], "behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_reset_never_skipped_and_holds_no_one_up() {
    let rig = System::start_with(|c| c.twin.changes_kept = 400).await;
    rig.register(CHILD, r#"{"@type":"child-device"}"#).await;
    let url = rig.url("/te/v1/changes");
    let mut stalled = Sse::open(&url, None).await;
    let mut live = Sse::open(&url, None).await;
    stalled.next().await;
    live.next().await;
    // 1,200 changes of 16 KiB (19 MiB): more than the socket buffers between the agent and a
    // client that does not read hold, and three times the journal.
    const N: usize = 1200;
    let big = "x".repeat(16 << 10);
    // The live client reads each hundred before the next is published: it stays in the journal
    // however slowly a debug build parses.
    let mut updates = Vec::with_capacity(N);
    for hundred in 0..N / 100 {
        for i in hundred * 100..(hundred + 1) * 100 {
            rig.publish(
                &format!("te/{CHILD}/twin/blob"),
                format!(r#"{{"n":{i},"pad":"{big}"}}"#),
                false,
            )
            .await;
        }
        updates.extend(live.of(CHILD, 100).await);
    }
    let values: Vec<Value> = updates
        .iter()
        .map(|e| change(e)["value"]["n"].clone())
        .collect();
    assert_eq!(values, (0..N).map(|i| json!(i)).collect::<Vec<_>>());
    rig.still_serves_others("other").await;

    // The stalled client now reads what it gets, up to the last change the live one saw:
    // consecutive changes, except right after a `behind` reset, which must have come (it fell
    // out of the journal).
    let last = updates[N - 1].seq();
    let (mut next, mut resets, mut after_reset) = (0u64, 0, false);
    loop {
        let event = stalled.next().await;
        if event.seq() >= last {
            if event.event == "reset" {
                resets += 1;
            }
            break;
        }
        if event.event == "reset" {
            assert_eq!(event.json()["reason"], "behind");
            resets += 1;
            after_reset = true;
            continue;
        }
        let data = change(&event);
        if data["@topic-id"] != CHILD || data["channel"] != "twin/blob" {
            continue;
        }
        let n = data["value"]["n"].as_u64().unwrap();
        if after_reset {
            assert!(n >= next, "{n} after {next}");
        } else {
            assert_eq!(n, next, "a change was skipped without a reset");
        }
        after_reset = false;
        next = n + 1;
    }
    assert!(
        resets >= 1,
        "the client never fell behind: the test proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_measurement_history_is_served_oldest_first_and_kept_across_restarts() {
    let mut rig = System::start_with(|c| c.twin.history.points = 3).await;
    rig.register(CHILD, r#"{"@type":"child-device"}"#).await;
    let topic = format!("te/{CHILD}/m/environment");
    let times: Vec<String> = (0..5).map(|i| ago(50 - i * 10)).collect();
    // Out of order: the fourth point is older than the third.
    for (i, value) in [(0, "20"), (1, "20.5"), (3, "21.25"), (2, "21"), (4, "22")] {
        let t = &times[i];
        rig.publish(
            &topic,
            format!(r#"{{"temperature":{value},"current":{{"L1":{i}}},"time":"{t}"}}"#),
            false,
        )
        .await;
    }
    rig.publish(&format!("te/{CHILD}/m/"), r#"{"rpm":900}"#, false)
        .await;
    rig.caught_up().await;

    let url = rig.entities(&format!("/{CHILD}/m/environment"));
    let point = |t: &str, v: Value| json!({"time": t, "value": v});
    let expected = json!({
        "@topic-id": CHILD,
        "type": "environment",
        "series": {
            "current": {"L1": [point(&times[2], json!(2)), point(&times[3], json!(3)), point(&times[4], json!(4))]},
            "temperature": [point(&times[2], json!(21)), point(&times[3], json!(21.25)), point(&times[4], json!(22))],
        }
    });
    http::assert_json(&http::get(&url).await, 200, &expected);
    let since = http::get(&format!(
        "{url}?since={}&series=temperature",
        times[3].replace(':', "%3A")
    ))
    .await;
    http::assert_json(
        &since,
        200,
        &json!({"@topic-id": CHILD, "type": "environment", "series": {
            "temperature": [point(&times[3], json!(21.25)), point(&times[4], json!(22))]}}),
    );
    let untyped = http::get(&rig.entities(&format!("/{CHILD}/m/"))).await;
    assert_eq!(untyped.status, 200);
    assert_eq!(untyped.json()["type"], "ThinEdgeMeasurement");
    assert_eq!(untyped.json()["series"]["rpm"][0]["value"], 900);
    http::assert_json(
        &http::get(&rig.entities(&format!("/{CHILD}/m/nothing"))).await,
        200,
        &json!({"@topic-id": CHILD, "type": "nothing", "series": {}}),
    );
    http::assert_error(
        &http::get(&rig.entities("/device/nope///m/environment")).await,
        404,
        "The specified entity: device/nope// does not exist in the entity store",
    );
    http::assert_error(
        &http::get(&format!("{url}?since=tomorrow")).await,
        400,
        "Invalid value of since: invalid value: string \"tomorrow\", expected a date formatted as a unix timestamp (as an integer number of seconds) or an ISO-8601 string: premature end of input",
    );
    let put = http::request(Method::PUT, &url, "{}").await;
    http::assert_error(&put, 405, "Method Not Allowed");
    assert_eq!(put.header("allow"), Some("GET, HEAD"));

    // A graceful restart keeps the history (read from disk while the agent already serves).
    rig.restart_agent().await;
    let url = rig.entities(&format!("/{CHILD}/m/environment"));
    http::get_until(&url, |r| r.status == 200 && r.json() == expected).await;

    // A removed entity takes its history along; registered again, it starts empty (and a
    // crash between the removal and the history's next write cannot bring it back:
    // history_file's unit tests).
    rig.publish(&format!("te/{CHILD}"), "", true).await;
    rig.caught_up().await;
    rig.register(CHILD, r#"{"@type":"child-device"}"#).await;
    http::assert_json(
        &http::get(&url).await,
        200,
        &json!({"@topic-id": CHILD, "type": "environment", "series": {}}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_end_when_the_agent_stops_and_do_not_hold_the_shutdown_up() {
    let mut rig = System::start().await;
    let url = rig.url("/te/v1/changes");
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut sse = Sse::open(&url, None).await;
        assert_eq!(sse.next().await.event, "reset");
        streams.push(sse);
    }
    // `stop` asserts that the shutdown finished within its grace period.
    rig.agent.stop().await;
    for mut sse in streams {
        let rest = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut rest = Vec::new();
            while let Some(event) = sse.next_or_end().await {
                rest.push(event);
            }
            rest
        })
        .await
        .expect("the stream ends with the agent");
        // The agent's own `down` health may still go out before the end.
        assert!(rest.iter().all(|e| e.event == "change"), "{rest:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stopped_reading_does_not_hold_the_shutdown_up() {
    let mut rig = System::start_with(|c| c.twin.changes_kept = 200).await;
    rig.register(CHILD, r#"{"@type":"child-device"}"#).await;
    // A raw client with a small receive buffer that asks for the stream and never reads.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&rig.agent.http_addr().into()).unwrap();
    let mut stalled = std::net::TcpStream::from(socket);
    std::io::Write::write_all(
        &mut stalled,
        b"GET /te/v1/changes HTTP/1.1\r\nhost: agent\r\n\r\n",
    )
    .unwrap();
    let mut live = Sse::open(&rig.url("/te/v1/changes"), None).await;
    live.next().await;
    // 10 MiB of changes: the stalled connection's buffers fill up, and its stream waits on it.
    let big = "x".repeat(16 << 10);
    for hundred in 0..6 {
        for i in hundred * 100..(hundred + 1) * 100 {
            rig.publish(
                &format!("te/{CHILD}/twin/blob"),
                format!(r#"{{"n":{i},"pad":"{big}"}}"#),
                false,
            )
            .await;
        }
        live.of(CHILD, 100).await;
    }
    // `stop` asserts that the shutdown finished within its grace period.
    rig.agent.stop().await;
    drop(stalled);
}
