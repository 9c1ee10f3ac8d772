//! [`Progress`] of long operations (`drain`, `rollout status`, `image import`): an
//! `indicatif` bar on stderr when stderr is a terminal, plain lines otherwise — so a
//! person sees one bar move, and logs, pipes and CI keep a readable line per step.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What the bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Objects (instances, replicas).
    Items,
    /// Bytes (shown as MiB, with a rate).
    Bytes,
}

/// A progress report: a bar, or plain lines.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    unit: Unit,
    total: u64,
    /// Plain byte progress is printed at each quarter; the last quarter printed.
    quarter: std::sync::atomic::AtomicU64,
    label: String,
}

impl Progress {
    /// A report of `total` `unit`s for `label`: a bar when stderr is a terminal.
    pub fn new(label: &str, total: u64, unit: Unit) -> Self {
        Self::with_target(label, total, unit, std::io::stderr().is_terminal())
    }

    /// As [`Progress::new`], choosing the bar (`terminal`) or plain lines; the bar
    /// draws on stderr.
    pub fn with_target(label: &str, total: u64, unit: Unit, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let template = match unit {
                Unit::Items => "{spinner} {prefix} [{bar:30}] {pos}/{len} {wide_msg}",
                Unit::Bytes => {
                    "{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {wide_msg}"
                }
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            unit,
            total,
            quarter: 0.into(),
            label: label.to_string(),
        }
    }

    /// True when a bar is shown (plain lines are then the caller's to leave out).
    pub fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// `done` of the total, with `message`. Plain: byte progress prints a line at each
    /// quarter; item progress prints nothing (the caller prints its own lines).
    pub fn update(&self, done: u64, message: impl Into<String>) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(self.total.max(done));
                bar.set_position(done);
                bar.set_message(message.into());
            }
            None if self.unit == Unit::Bytes => {
                if let Some(line) = self.plain_bytes_line(done) {
                    eprintln!("{line}");
                }
            }
            None => {}
        }
    }

    /// The plain line for `done` bytes, when it reaches a new quarter of the total.
    fn plain_bytes_line(&self, done: u64) -> Option<String> {
        let quarter = (done.saturating_mul(4))
            .checked_div(self.total)
            .unwrap_or(4)
            .min(4);
        let before = self
            .quarter
            .fetch_max(quarter, std::sync::atomic::Ordering::Relaxed);
        (quarter > before).then(|| {
            let percent = (done.saturating_mul(100))
                .checked_div(self.total)
                .unwrap_or(100);
            format!(
                "{}: {:.1} / {:.1} MiB ({percent}%)",
                self.label,
                mib(done),
                mib(self.total),
            )
        })
    }

    /// Changes the total (e.g. a Workload scaled meanwhile).
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Runs `f` (which prints) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_byte_progress_prints_each_quarter_once() {
        let p = Progress::with_target("uploading a.tar", 4 << 20, Unit::Bytes, false);
        assert!(!p.is_bar());
        assert_eq!(p.plain_bytes_line(1 << 19), None, "under a quarter");
        assert_eq!(
            p.plain_bytes_line(1 << 20).as_deref(),
            Some("uploading a.tar: 1.0 / 4.0 MiB (25%)")
        );
        assert_eq!(p.plain_bytes_line(3 << 19), None, "same quarter");
        assert_eq!(
            p.plain_bytes_line(3 << 20).as_deref(),
            Some("uploading a.tar: 3.0 / 4.0 MiB (75%)"),
            "a chunk may skip a quarter"
        );
        assert_eq!(
            p.plain_bytes_line(4 << 20).as_deref(),
            Some("uploading a.tar: 4.0 / 4.0 MiB (100%)")
        );
        let empty = Progress::with_target("e", 0, Unit::Bytes, false);
        assert!(empty.plain_bytes_line(0).is_some(), "an empty file is done");
    }

    #[test]
    fn a_bar_follows_the_position() {
        let p = Progress::with_target("drain", 3, Unit::Items, true);
        p.update(2, "1 left");
        let bar = p.bar.as_ref().expect("bar");
        assert_eq!((bar.position(), bar.length()), (2, Some(3)));
        assert_eq!(p.suspend(|| 7), 7);
        p.finish();
        assert!(bar.is_finished());
    }
}
