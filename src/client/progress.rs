//! Progress of one transfer, on stderr: a bar (indicatif) when stderr is a terminal, otherwise
//! plain lines that a log keeps readable: a heading, a line at 25, 50 and 75 % or after
//! [`EVERY`] without one, and a closing line with the size, time, rate and SHA-256.
//!
//! When a plain line is due is decided by [`Milestones`], which is pure (it is given the time),
//! so it is tested without a clock or a terminal. stdout is not this module's: the result of a
//! command is printed by `main`.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::files::digest::Sha256;

/// The longest silence between two plain lines while bytes flow.
pub const EVERY: Duration = Duration::from_secs(5);
const BAR_TEMPLATE: &str =
    "{bytes:>10} / {total_bytes} [{wide_bar}] {binary_bytes_per_sec} eta {eta}";

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bar,
    Lines,
}

impl Style {
    /// A bar on a terminal, lines otherwise.
    pub fn detect() -> Style {
        if std::io::stderr().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

/// One transfer's progress; clones share it (the body stream advances it, the command ends it).
#[derive(Clone)]
pub struct Progress(Arc<Inner>);

enum Inner {
    Bar { bar: ProgressBar, started: Instant },
    Lines(Mutex<Milestones>),
}

impl Progress {
    /// Prints `heading` and starts counting `total` bytes from `position` (a resumed download).
    pub fn start(style: Style, heading: &str, total: u64, position: u64) -> Progress {
        let now = Instant::now();
        eprintln!("{heading}");
        let inner = match style {
            Style::Bar => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_position(position);
                bar.reset_eta();
                Inner::Bar { bar, started: now }
            }
            Style::Lines => Inner::Lines(Mutex::new(Milestones::new(total, position, now))),
        };
        Progress(Arc::new(inner))
    }

    /// `n` more bytes went through.
    pub fn advance(&self, n: u64) {
        match &*self.0 {
            Inner::Bar { bar, .. } => bar.inc(n),
            Inner::Lines(m) => {
                let line = lock(m).advance(n, Instant::now());
                if let Some(line) = line {
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
        }
    }

    /// Ends the display with the closing line: `transferred` bytes moved by this run.
    pub fn finish(&self, transferred: u64, digest: &Sha256) {
        let started = match &*self.0 {
            Inner::Bar { bar, started } => {
                bar.finish_and_clear();
                *started
            }
            Inner::Lines(m) => lock(m).started,
        };
        eprintln!("{}", done_line(transferred, started.elapsed(), digest));
    }

    /// Ends the display after a failure, leaving the bar where it stopped.
    pub fn abandon(&self) {
        if let Inner::Bar { bar, .. } = &*self.0 {
            bar.abandon();
        }
    }
}

fn lock(m: &Mutex<Milestones>) -> std::sync::MutexGuard<'_, Milestones> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `done: 3145728 bytes in 0.12 s (26.2 MB/s), sha256 <hex>` (1 MB = 10⁶ bytes).
pub fn done_line(bytes: u64, elapsed: Duration, digest: &Sha256) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        bytes as f64 / secs / 1e6
    } else {
        0.0
    };
    format!("done: {bytes} bytes in {secs:.2} s ({rate:.1} MB/s), sha256 {digest}")
}

/// When the plain lines are due: at each quarter crossed (but 100 %, which the closing line
/// says), or after [`EVERY`] since the last line.
#[derive(Debug)]
pub struct Milestones {
    total: u64,
    done: u64,
    quarter: u64,
    last: Instant,
    started: Instant,
}

impl Milestones {
    pub fn new(total: u64, position: u64, now: Instant) -> Milestones {
        Milestones {
            total,
            done: position,
            quarter: quarter(position, total),
            last: now,
            started: now,
        }
    }

    /// Counts `n` bytes at `now`; the line to print, if one is due.
    pub fn advance(&mut self, n: u64, now: Instant) -> Option<String> {
        self.done = self.done.saturating_add(n);
        let q = quarter(self.done, self.total);
        let due = (q > self.quarter && q < 4) || now.duration_since(self.last) >= EVERY;
        self.quarter = self.quarter.max(q);
        if !due || self.done >= self.total {
            return None;
        }
        self.last = now;
        let percent = u128::from(self.done) * 100 / u128::from(self.total.max(1));
        Some(format!(
            "{percent}% ({} of {} bytes)",
            self.done, self.total
        ))
    }
}

fn quarter(done: u64, total: u64) -> u64 {
    if total == 0 {
        4
    } else {
        (u128::from(done) * 4 / u128::from(total)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_due_at_each_quarter_but_the_last() {
        let t = Instant::now();
        let mut m = Milestones::new(400, 0, t);
        assert_eq!(m.advance(99, t), None);
        assert_eq!(m.advance(1, t).as_deref(), Some("25% (100 of 400 bytes)"));
        assert_eq!(m.advance(10, t), None);
        assert_eq!(m.advance(190, t).as_deref(), Some("75% (300 of 400 bytes)"));
        assert_eq!(m.advance(100, t), None, "the closing line says 100 %");
    }

    #[test]
    fn a_line_is_due_after_a_silence_even_between_quarters() {
        let t = Instant::now();
        let mut m = Milestones::new(1000, 0, t);
        assert_eq!(m.advance(10, t + EVERY / 2), None);
        assert_eq!(
            m.advance(10, t + EVERY).as_deref(),
            Some("2% (20 of 1000 bytes)")
        );
        assert_eq!(m.advance(10, t + EVERY + EVERY / 2), None);
        assert!(m.advance(10, t + EVERY * 2).is_some());
    }

    #[test]
    fn a_resumed_transfer_counts_from_its_offset() {
        let t = Instant::now();
        let mut m = Milestones::new(400, 250, t);
        assert_eq!(m.advance(49, t), None, "50 % was passed before");
        assert_eq!(m.advance(1, t).as_deref(), Some("75% (300 of 400 bytes)"));
    }

    #[test]
    fn an_empty_transfer_has_no_quarters() {
        let t = Instant::now();
        assert_eq!(Milestones::new(0, 0, t).advance(0, t + EVERY), None);
    }

    #[test]
    fn the_closing_line_gives_size_time_rate_and_digest() {
        let digest = Sha256([0xab; 32]);
        assert_eq!(
            done_line(3_000_000, Duration::from_millis(1500), &digest),
            format!(
                "done: 3000000 bytes in 1.50 s (2.0 MB/s), sha256 {}",
                "ab".repeat(32)
            )
        );
        assert!(
            done_line(0, Duration::ZERO, &digest).starts_with("done: 0 bytes in 0.00 s (0.0 MB/s)")
        );
    }
}
