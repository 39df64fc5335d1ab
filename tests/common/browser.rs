//! Headless chromium for the page's tests (issue #7), driven over the Chrome DevTools Protocol.
//!
//! [`Browser::launch`] starts Debian's `chromium` with a private profile directory and
//! `--remote-debugging-port=0`, reads the WebSocket address chromium prints on stderr, opens one
//! page and attaches to it (a flat session). Commands are JSON messages over that WebSocket: one
//! task owns the socket, routes each answer to its caller by id and keeps every event, so a test
//! can assert on what the console said ([`Browser::errors`]). Chromium runs in its own process
//! group, killed on drop. A missing chromium fails the test with the command that installs it:
//! the page must be tested in a real browser, so it is never skipped.
//!
//! Not here: what the page shows (tests/page.rs asks the DOM through [`Browser::evaluate`]).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// How long chromium may take to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one DevTools command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The default wait of [`Browser::wait_for`].
pub const WAIT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const STDERR_KEPT: usize = 40;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A headless chromium with one page open, killed on drop.
pub struct Browser {
    child: Child,
    _profile: TempDir,
    stderr: Arc<Mutex<VecDeque<String>>>,
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
    next_id: AtomicU64,
    session: String,
    io: JoinHandle<()>,
}

/// The chromium binary: `/usr/bin/chromium` (Debian) or `chromium` on `PATH`.
fn chromium_binary() -> PathBuf {
    let debian = Path::new("/usr/bin/chromium");
    if debian.exists() {
        return debian.to_path_buf();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not installed: the page tests need a real browser \
                 (Debian: `apt-get install -y chromium`; .ci/run installs it)"
            )
        })
}

impl Browser {
    /// Starts chromium, opens `about:blank` in a new page, enables the Page, Runtime and Log
    /// domains (so that console errors are recorded from the start) and sets a desktop viewport.
    pub async fn launch() -> Browser {
        let binary = chromium_binary();
        let profile = tempfile::tempdir().expect("a temp dir for chromium's profile");
        let mut child = Command::new(&binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let ws_url = match devtools_url(&mut child, stderr.clone()) {
            Ok(url) => url,
            Err(why) => {
                kill_group(&mut child);
                let said = stderr
                    .lock()
                    .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"));
                panic!("chromium {why}; its stderr:\n{}", said.unwrap_or_default());
            }
        };
        let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connecting to chromium's DevTools at {ws_url}: {e}"));
        let (out, out_rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let events = Arc::new(Mutex::new(Vec::new()));
        let io = tokio::spawn(pump(socket, out_rx, pending.clone(), events.clone()));
        let mut browser = Browser {
            child,
            _profile: profile,
            stderr,
            out,
            pending,
            events,
            next_id: AtomicU64::new(1),
            session: String::new(),
            io,
        };
        let target = browser
            .call_on(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = browser
            .call_on(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser.viewport(1280, 900, false).await;
        browser
    }

    /// Sends one command to the page's session and returns its `result`; panics on an error
    /// answer or after [`CALL_TIMEOUT`].
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.call_on(Some(&self.session), method, params).await
    }

    async fn call_on(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        self.out
            .send(Message::text(message.to_string()))
            .unwrap_or_else(|_| panic!("{method}: the DevTools connection is closed"));
        let answer = match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => panic!("{method}: chromium closed the DevTools connection"),
            Err(_) => panic!("{method}: no answer from chromium within {CALL_TIMEOUT:?}"),
        };
        if let Some(error) = answer.get("error") {
            panic!("{method}: chromium answered {error}");
        }
        answer["result"].clone()
    }

    /// Sets the viewport (CSS pixels); `mobile` also emulates a phone's touch screen.
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// Navigates to `url` and waits until the document and its deferred script have loaded.
    pub async fn open(&self, url: &str) {
        let answer = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(error) = answer.get("errorText") {
            panic!("navigating to {url}: {error}");
        }
        self.wait_for(
            &format!("{url} to load"),
            WAIT,
            "document.readyState === 'complete'",
        )
        .await;
    }

    /// The value of a JavaScript expression in the page (promises awaited); panics if it
    /// throws.
    pub async fn evaluate(&self, expression: &str) -> Value {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(details) = answer.get("exceptionDetails") {
            panic!(
                "evaluating `{expression}` threw: {}",
                describe_exception(details)
            );
        }
        answer["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy and returns that value; panics after `timeout`,
    /// naming `what` and showing the last value.
    pub async fn wait_for(&self, what: &str, timeout: Duration, expression: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.evaluate(expression).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {what}; `{expression}` is {value}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Presses one key (`"ArrowDown"`, `"Enter"`, `" "`...) in the focused element, as a user
    /// would: keydown, then keyup.
    pub async fn press(&self, key: &str) {
        let (code, key_code) = match key {
            "ArrowDown" => ("ArrowDown", 40),
            "ArrowUp" => ("ArrowUp", 38),
            "ArrowRight" => ("ArrowRight", 39),
            "ArrowLeft" => ("ArrowLeft", 37),
            "Home" => ("Home", 36),
            "End" => ("End", 35),
            "Enter" => ("Enter", 13),
            " " => ("Space", 32),
            "Tab" => ("Tab", 9),
            other => panic!("no key code for {other:?}"),
        };
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": key_code}),
            )
            .await;
        }
    }

    /// What went wrong in the page so far: uncaught exceptions, `console.error` calls and
    /// browser log entries of level `error` (failed loads, CSP violations...), one line each.
    pub fn errors(&self) -> Vec<String> {
        let events = self.events.lock().expect("events");
        events
            .iter()
            .filter_map(|event| {
                let params = &event["params"];
                match event["method"].as_str()? {
                    "Runtime.exceptionThrown" => Some(format!(
                        "exception: {}",
                        describe_exception(&params["exceptionDetails"])
                    )),
                    "Runtime.consoleAPICalled" if params["type"] == "error" => {
                        let args: Vec<String> = params["args"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|a| match &a["value"] {
                                Value::String(s) => s.clone(),
                                Value::Null => a["description"].as_str().unwrap_or("?").to_owned(),
                                v => v.to_string(),
                            })
                            .collect();
                        Some(format!("console.error: {}", args.join(" ")))
                    }
                    "Log.entryAdded" if params["entry"]["level"] == "error" => {
                        let entry = &params["entry"];
                        Some(format!(
                            "log ({}): {} {}",
                            entry["source"].as_str().unwrap_or("?"),
                            entry["text"].as_str().unwrap_or("?"),
                            entry["url"].as_str().unwrap_or("")
                        ))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Saves a PNG of the viewport to `path` (its directory is created).
    pub async fn screenshot(&self, path: &Path) {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": false}),
            )
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// The last lines chromium wrote to stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.io.abort();
        kill_group(&mut self.child);
    }
}

/// Where test artifacts go: `$CARGO_TARGET_DIR/test-artifacts/<name>`, else
/// `target/test-artifacts/<name>` in the repository.
pub fn artifact_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artifacts").join(name)
}

/// Reads chromium's stderr until it prints its DevTools address, then keeps draining it (a
/// full pipe would block chromium) and keeps the last lines for diagnostics.
fn devtools_url(child: &mut Child, kept: Arc<Mutex<VecDeque<String>>>) -> Result<String, String> {
    let stderr = child.stderr.take().ok_or("has no stderr pipe")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
            if let Ok(mut kept) = kept.lock() {
                if kept.len() == STDERR_KEPT {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        }
    });
    match rx.recv_timeout(LAUNCH_TIMEOUT) {
        Ok(url) => Ok(url),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "printed no DevTools address within {LAUNCH_TIMEOUT:?}"
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.try_wait().ok().flatten();
            Err(format!(
                "exited ({status:?}) before printing its DevTools address"
            ))
        }
    }
}

/// Owns the WebSocket: sends what the callers queue, routes answers by id, keeps events.
async fn pump(
    mut socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    mut out: mpsc::UnboundedReceiver<Message>,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
) {
    loop {
        tokio::select! {
            message = out.recv() => {
                let Some(message) = message else { break };
                if socket.send(message).await.is_err() {
                    break;
                }
            }
            incoming = socket.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                match value.get("id").and_then(Value::as_u64) {
                    Some(id) => {
                        if let Some(tx) = pending.lock().expect("pending").remove(&id) {
                            let _ = tx.send(value);
                        }
                    }
                    None => events.lock().expect("events").push(value),
                }
            }
        }
    }
    // Callers still waiting learn that the connection is gone.
    pending.lock().expect("pending").clear();
}

fn describe_exception(details: &Value) -> String {
    let description = details["exception"]["description"]
        .as_str()
        .or_else(|| details["text"].as_str())
        .unwrap_or("?");
    format!(
        "{description} at {}:{}:{}",
        details["url"].as_str().unwrap_or("?"),
        details["lineNumber"],
        details["columnNumber"]
    )
}

/// Kills chromium and all its helper processes (renderer, GPU, zygote), then reaps it.
fn kill_group(child: &mut Child) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}
