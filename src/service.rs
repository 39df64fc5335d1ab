//! `edge-agent run` as a service (issue #6): the signals a service manager sends, and systemd's
//! notify protocol (sd_notify(3)) for a `Type=notify` unit.
//!
//! [`supervise`] runs between start-up and shutdown. It tells the manager `READY=1` once the
//! agent is up (HTTP bound, twin loaded, connection started: the broker may come later, and
//! `STATUS=` says how it stands, updated on every change), feeds the watchdog
//! (`WATCHDOG=1`, every half `WatchdogSec`) only while the twin's owner task answers, reloads
//! the configuration on SIGHUP (`RELOADING=1`, then `READY=1` when done), and returns on SIGINT
//! or SIGTERM after `STOPPING=1`. Without `NOTIFY_SOCKET` (not under systemd, or in a container)
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

/// Runs until SIGINT or SIGTERM, serving the service manager meanwhile.
pub async fn supervise(agent: &Agent) {
    let mut terminate = listen(SignalKind::terminate());
    let mut hangup = listen(SignalKind::hangup());
    let watchdog = sd_notify::watchdog_enabled().map(|usec| usec / 2);
    let mut feed = watchdog.map(|every| {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut readiness = agent.readiness_changes();
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&status(&readiness.borrow_and_update())),
    ]);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = next(&mut terminate) => break,
            _ = next(&mut hangup) => {
                tracing::info!("SIGHUP: reading the configuration again");
                match sd_notify::NotifyState::monotonic_usec_now() {
                    Ok(now) => notify(&[NotifyState::Reloading, now]),
                    Err(e) => tracing::debug!("no monotonic clock for the reload notification: {e}"),
                }
                agent.reload().await;
                notify(&[
                    NotifyState::Ready,
                    NotifyState::Status(&status(&readiness.borrow_and_update())),
                ]);
            }
            _ = tick(&mut feed) => {
                // Half the period: an answer later than that could not be fed in time anyway.
                let within = watchdog.map_or(Duration::from_secs(1), |every| every / 2);
                if agent.alive(within).await {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!(
                        "the twin did not answer within {within:?}: the watchdog is not fed"
                    );
                }
            }
            Ok(()) = readiness.changed() => {
                notify(&[NotifyState::Status(&status(&readiness.borrow_and_update()))]);
            }
        }
    }
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
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
