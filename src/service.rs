//! `edge-agent run` as a service (issue #6): the signals a service manager sends, and systemd's
//! notify protocol (sd_notify(3)) for a `Type=notify` unit.
//!
//! [`supervise`] runs between start-up and shutdown. It tells the manager `READY=1` once the
//! agent is up (HTTP bound, twin loaded, connection started: the broker may come later, and
//! `STATUS=` says how it stands, updated on every change), feeds the watchdog (`WATCHDOG=1`,
//! every quarter `WatchdogSec`, as long as the twin's owner task answered a probe within the
//! last half period), reloads the configuration on SIGHUP (`RELOADING=1`, then `READY=1` when
//! done), and returns on SIGINT or SIGTERM after `STOPPING=1`, at once even while a reload or a
//! probe is waiting. Without `NOTIFY_SOCKET` (not under systemd, or in a container)
//! only the signals matter: every notification is skipped.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::app::Agent;
use crate::readiness::Readiness;

/// Environment variables of the notify protocol, which must not reach the programs the agent
/// starts (mosquitto, the bridge restart command): mosquitto built with systemd support would
/// notify the agent's unit itself.
const NOTIFY_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Keeps the notify protocol's variables from `command` (see [`NOTIFY_ENV`]).
pub fn unmanaged(command: &mut std::process::Command) -> &mut std::process::Command {
    for name in NOTIFY_ENV {
        command.env_remove(name);
    }
    command
}

/// The longest a reload may take before the manager is told `READY=1` anyway; the bridges'
/// task goes on with it (its own steps are bounded: proving, the restart command).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(90);

/// The signals `run` answers, installed before the agent starts so that a SIGHUP or SIGTERM
/// sent while it loads is kept for [`supervise`] instead of ending the process.
pub struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
    hangup: Option<Signal>,
}

impl Signals {
    /// Must be called inside the runtime.
    pub fn install() -> Signals {
        Signals {
            interrupt: listen(SignalKind::interrupt()),
            terminate: listen(SignalKind::terminate()),
            hangup: listen(SignalKind::hangup()),
        }
    }
}

type Pending<'a, T> = Option<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>>;

/// Runs until SIGINT or SIGTERM, serving the service manager meanwhile. A reload and a watchdog
/// probe run beside the loop, never in it: a stop is acted on at once whatever they wait for.
pub async fn supervise(agent: &Agent, signals: Signals) {
    let Signals {
        mut interrupt,
        mut terminate,
        mut hangup,
    } = signals;
    // Fed every quarter period while the twin answered within the last half: a stall of the
    // twin stops the feeding after half a period, and systemd acts a period later.
    let watchdog = sd_notify::watchdog_enabled().filter(|period| !period.is_zero());
    let mut feed = watchdog.map(|period| {
        let mut interval = tokio::time::interval(period / 4);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut answered = tokio::time::Instant::now();
    let mut probe: Pending<'_, bool> = None;
    let mut reload: Pending<'_, bool> = None;
    let mut readiness = agent.readiness_changes();
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&status(&readiness.borrow_and_update())),
    ]);
    loop {
        tokio::select! {
            _ = next(&mut interrupt) => break,
            _ = next(&mut terminate) => break,
            _ = next(&mut hangup) => {
                if reload.is_some() {
                    tracing::info!("SIGHUP: a reload is already under way");
                    continue;
                }
                tracing::info!("SIGHUP: reading the configuration again");
                match NotifyState::monotonic_usec_now() {
                    Ok(now) => notify(&[NotifyState::Reloading, now]),
                    Err(e) => tracing::debug!("no monotonic clock for the reload notification: {e}"),
                }
                reload = Some(Box::pin(async {
                    tokio::time::timeout(RELOAD_TIMEOUT, agent.reload()).await.is_ok()
                }));
            }
            finished = run(&mut reload), if reload.is_some() => {
                reload = None;
                if !finished {
                    tracing::warn!("the reload did not finish within {RELOAD_TIMEOUT:?}; it goes on");
                }
                notify(&[
                    NotifyState::Ready,
                    NotifyState::Status(&status(&readiness.borrow_and_update())),
                ]);
            }
            _ = tick(&mut feed) => {
                let period = watchdog.unwrap_or(Duration::from_secs(1));
                if probe.is_none() {
                    probe = Some(Box::pin(agent.alive(period / 2)));
                }
                if answered.elapsed() < period / 2 {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!(
                        "the twin has not answered for {:?}: the watchdog is not fed",
                        answered.elapsed()
                    );
                }
            }
            alive = run(&mut probe), if probe.is_some() => {
                probe = None;
                if alive {
                    answered = tokio::time::Instant::now();
                }
            }
            Ok(()) = readiness.changed() => {
                notify(&[NotifyState::Status(&status(&readiness.borrow_and_update()))]);
            }
        }
    }
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Waits for a pending future (the branch is enabled only while there is one).
async fn run<T>(pending: &mut Pending<'_, T>) -> T {
    match pending {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// A signal stream; `None` (never fires) when the handler cannot be installed, which is logged.
fn listen(kind: SignalKind) -> Option<Signal> {
    match signal(kind) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!("cannot listen for signal {}: {e}", kind.as_raw_value());
            None
        }
    }
}

async fn next(signal: &mut Option<Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The one-line status `systemctl status` shows.
fn status(readiness: &Readiness) -> String {
    match readiness {
        Readiness::Ready => "ready: connected to the broker".to_owned(),
        Readiness::Starting(reason) => format!("starting: {reason}"),
        Readiness::Disconnected(reason) => format!("not connected to the broker: {reason}"),
    }
}

/// Sends `states` to the service manager, if there is one; a failure is logged, never fatal.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_names_the_state_and_its_reason() {
        assert_eq!(status(&Readiness::Ready), "ready: connected to the broker");
        assert_eq!(
            status(&Readiness::Starting("loading persisted state".into())),
            "starting: loading persisted state"
        );
        assert_eq!(
            status(&Readiness::Disconnected("connection refused".into())),
            "not connected to the broker: connection refused"
        );
    }
}
