//! Running one handler: `sh -c <command>` with the command's `EDGE_*` variables, its output
//! logged line by line, the last non-empty line of its stderr kept for the failure reason, and a
//! time limit.
//!
//! The handler runs in a process group of its own, so that a timeout or a shutdown kills
//! (SIGKILL) everything it started, not only the shell. After it exits, its output is read for
//! at most [`DRAIN`]: a background process it left behind may hold the pipes open.

use std::ffi::OsString;
use std::fmt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// How long output is still read after the handler exited.
const DRAIN: Duration = Duration::from_secs(2);
/// The reason of a command cut short by a stopping runner.
pub const INTERRUPTED: &str = "interrupted: the child runner is stopping";
/// The longest line kept (for logs and the reason); longer ones are cut.
const MAX_LINE: usize = 1024;

/// How a handler ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited {
        status: ExitStatus,
        /// The last non-empty line it wrote to stderr, trimmed.
        last_stderr: Option<String>,
    },
    /// Still running after the time limit: killed.
    TimedOut(Duration),
    /// Killed because the runner is stopping.
    Aborted,
}

impl Ended {
    pub fn success(&self) -> bool {
        matches!(self, Ended::Exited { status, .. } if status.success())
    }
}

impl fmt::Display for Ended {
    /// The failure reason: `handler exited with status 3: <last stderr line>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Ended::Exited {
                status,
                last_stderr,
            } => {
                match (status.code(), status.signal()) {
                    (Some(code), _) => write!(f, "handler exited with status {code}")?,
                    (None, Some(signal)) => write!(f, "handler was killed by signal {signal}")?,
                    (None, None) => write!(f, "handler ended with {status}")?,
                }
                match last_stderr {
                    Some(line) => write!(f, ": {line}"),
                    None => Ok(()),
                }
            }
            Ended::TimedOut(limit) => {
                write!(
                    f,
                    "handler timed out after {} s and was killed",
                    limit.as_secs_f64()
                )
            }
            Ended::Aborted => f.write_str(INTERRUPTED),
        }
    }
}

/// Runs `sh -c <command>` with `env` added to the runner's environment, stdin closed.
pub async fn run(
    command: &str,
    env: &[(&str, OsString)],
    limit: Duration,
    abort: &CancellationToken,
    label: &str,
) -> std::io::Result<Ended> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let group = child.id();
    let last_stderr = Arc::new(Mutex::new(None));
    let readers = [
        child.stdout.take().map(|out| {
            let label = label.to_owned();
            tokio::spawn(read_lines(
                out,
                move |line| tracing::info!(handler = %label, "stdout: {line}"),
            ))
        }),
        child.stderr.take().map(|err| {
            let label = label.to_owned();
            let last = last_stderr.clone();
            tokio::spawn(read_lines(err, move |line| {
                tracing::info!(handler = %label, "stderr: {line}");
                if !line.trim().is_empty() {
                    *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(line.trim().to_owned());
                }
            }))
        }),
    ];
    let ended = tokio::select! {
        status = child.wait() => Some(status?),
        _ = tokio::time::sleep(limit) => None,
        _ = abort.cancelled() => None,
    };
    let ended = match ended {
        Some(status) => {
            for reader in readers.into_iter().flatten() {
                let abort = reader.abort_handle();
                if tokio::time::timeout(DRAIN, reader).await.is_err() {
                    abort.abort();
                }
            }
            let last_stderr = last_stderr.lock().unwrap_or_else(|e| e.into_inner()).take();
            Ended::Exited {
                status,
                last_stderr,
            }
        }
        None => {
            kill_group(group);
            let _ = child.kill().await;
            for reader in readers.into_iter().flatten() {
                reader.abort();
            }
            if abort.is_cancelled() {
                Ended::Aborted
            } else {
                Ended::TimedOut(limit)
            }
        }
    };
    Ok(ended)
}

/// SIGKILL to the handler's process group (its id is the shell's pid).
fn kill_group(pid: Option<u32>) {
    // Never 0 or 1: kill(0) and kill(-1) would reach far more than the handler.
    let Some(pid) = pid
        .filter(|pid| *pid > 1)
        .and_then(|pid| i32::try_from(pid).ok())
    else {
        return;
    };
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Reads `input` to its end, calling `on_line` for each line (lossy UTF-8, without its end,
/// cut at [`MAX_LINE`] bytes).
async fn read_lines(mut input: impl AsyncRead + Unpin, mut on_line: impl FnMut(&str)) {
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buf[..n] {
            if byte == b'\n' {
                emit(&mut line, &mut on_line);
            } else if line.len() < MAX_LINE {
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, &mut on_line);
    }
}

fn emit(line: &mut Vec<u8>, on_line: &mut impl FnMut(&str)) {
    let text = String::from_utf8_lossy(line);
    on_line(text.trim_end_matches('\r'));
    line.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sh(command: &str, limit: Duration) -> Ended {
        let env = [("EDGE_OPERATION", OsString::from("firmware_update"))];
        run(command, &env, limit, &CancellationToken::new(), "test")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_reason_has_the_exit_status_and_the_last_non_empty_stderr_line() {
        let ended = sh(
            "echo out; echo first >&2; echo '  flash failed at block 7  ' >&2; echo >&2; exit 3",
            Duration::from_secs(10),
        )
        .await;
        assert!(!ended.success());
        assert_eq!(
            ended.to_string(),
            "handler exited with status 3: flash failed at block 7"
        );
        assert_eq!(
            sh("exit 4", Duration::from_secs(10)).await.to_string(),
            "handler exited with status 4"
        );
        assert_eq!(
            sh("kill -9 $$", Duration::from_secs(10)).await.to_string(),
            "handler was killed by signal 9"
        );
    }

    #[tokio::test]
    async fn the_handler_sees_its_variables_and_succeeds_with_status_0() {
        let ended = sh(
            "test \"$EDGE_OPERATION\" = firmware_update",
            Duration::from_secs(10),
        )
        .await;
        assert!(ended.success(), "{ended}");
    }

    #[tokio::test]
    async fn a_handler_past_its_time_limit_is_killed_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let command = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let ended = sh(&command, Duration::from_millis(300)).await;
        assert_eq!(ended, Ended::TimedOut(Duration::from_millis(300)));
        assert_eq!(
            ended.to_string(),
            "handler timed out after 0.3 s and was killed"
        );
        // The background `sleep` was killed too: gone, or a zombie until init reaps it.
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::read_to_string(&stat) {
                Err(_) => break,
                Ok(text)
                    if text
                        .rsplit(')')
                        .next()
                        .unwrap()
                        .trim_start()
                        .starts_with('Z') =>
                {
                    break
                }
                Ok(text) => assert!(
                    std::time::Instant::now() < deadline,
                    "the handler's background job survived: {text}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_stopping_runner_kills_the_handler() {
        let abort = CancellationToken::new();
        abort.cancel();
        let ended = run("sleep 30", &[], Duration::from_secs(60), &abort, "test")
            .await
            .unwrap();
        assert_eq!(ended, Ended::Aborted);
        assert_eq!(
            ended.to_string(),
            "interrupted: the child runner is stopping"
        );
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_crlf_endings_dropped() {
        let mut lines = Vec::new();
        let mut input: Vec<u8> = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\nok\r\nlast");
        read_lines(&input[..], |l| lines.push(l.to_owned())).await;
        assert_eq!(lines, ["x".repeat(MAX_LINE), "ok".into(), "last".into()]);
    }
}
