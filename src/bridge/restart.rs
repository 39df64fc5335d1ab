//! Applying changed bridge files: mosquitto 2.0 reads bridges only when it starts (a SIGHUP
//! skips them, spec/bridges.md §5), so `bridge.restart_command` is run once after all files are
//! written; and while the agent runs, at most once per [`MIN_INTERVAL`].

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// The shortest time between two restarts by a running agent.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// How long the command may take (`systemctl restart` waits for the broker to stop).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The most of the command's output kept for the log.
const MAX_OUTPUT: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("cannot run the restart command {program:?} (bridge.restart_command)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the restart command {command:?} failed ({status}): {output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
    #[error("the restart command {command:?} did not finish within {}s", TIMEOUT.as_secs())]
    Timeout { command: String },
}

/// Runs `argv` (not through a shell) and waits for it. Its output is returned on failure.
pub async fn run(argv: &[String]) -> Result<(), RestartError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let command = argv.join(" ");
    let mut process = tokio::process::Command::new(program);
    crate::service::unmanaged(process.as_std_mut());
    let mut child = process
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Not killed when the agent stops meanwhile: a broker restart cut off half-way would
        // leave it down.
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| RestartError::Spawn {
            program: program.clone(),
            source,
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read = async {
        let mut text = String::new();
        if let Some(out) = stdout {
            let _ = out.take(MAX_OUTPUT).read_to_string(&mut text).await;
        }
        if let Some(err) = stderr {
            let _ = err.take(MAX_OUTPUT).read_to_string(&mut text).await;
        }
        text
    };
    let finished = tokio::time::timeout(TIMEOUT, async {
        let (output, status) = tokio::join!(read, child.wait());
        (output, status)
    })
    .await;
    match finished {
        Err(_) => Err(RestartError::Timeout { command }),
        Ok((_, Err(source))) => Err(RestartError::Spawn {
            program: program.clone(),
            source,
        }),
        Ok((_, Ok(status))) if status.success() => Ok(()),
        Ok((output, Ok(status))) => Err(RestartError::Failed {
            command,
            status: status.to_string(),
            output: output.trim().to_owned(),
        }),
    }
}

/// When a running agent may restart the broker next: changes that arrive within
/// [`MIN_INTERVAL`] of the last restart wait for its end, and are applied by one restart.
#[derive(Debug, Default)]
pub struct Pacer {
    last: Option<Instant>,
}

impl Pacer {
    /// The instant the next restart may run (now, or the end of the interval).
    pub fn next_slot(&self, now: Instant) -> Instant {
        match self.last {
            Some(last) if now < last + MIN_INTERVAL => last + MIN_INTERVAL,
            _ => now,
        }
    }

    pub fn ran(&mut self, at: Instant) {
        self.last = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[tokio::test]
    async fn a_command_that_succeeds_is_ok_and_a_failure_carries_its_output() {
        assert!(run(&argv(&["true"])).await.is_ok());
        assert!(run(&[]).await.is_ok());
        let err = run(&argv(&["sh", "-c", "echo broken >&2; exit 3"]))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the restart command \"sh -c echo broken >&2; exit 3\" failed (exit status: 3): broken"
        );
        let err = run(&argv(&["/nonexistent/restart"])).await.unwrap_err();
        assert!(matches!(err, RestartError::Spawn { .. }), "{err}");
    }

    #[test]
    fn restarts_are_paced_ten_seconds_apart() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert_eq!(pacer.next_slot(t0), t0);
        pacer.ran(t0);
        assert_eq!(
            pacer.next_slot(t0 + Duration::from_secs(3)),
            t0 + MIN_INTERVAL
        );
        let later = t0 + Duration::from_secs(11);
        assert_eq!(pacer.next_slot(later), later);
    }
}
