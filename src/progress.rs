//! The progress of a long command on stderr: on a terminal, a bar with the
//! count, the rate and the time left; otherwise (CI logs, a pipe) a plain
//! line every few seconds and one at the end.
//!
//! The rate shown is that of the last half minute, not of the whole run: a
//! server warming up (Keycloak's JIT) gets several times faster after the
//! first minute, and the time left should say so.
//!
//! Imports: nothing of the crate.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is written.
pub const LINE_EVERY: Duration = Duration::from_secs(10);
/// The rate shown is over this much of the recent past.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum Display {
    Bar(ProgressBar),
    /// Plain lines, each at least this long after the last.
    Lines(Duration),
}

/// What the progress has seen.
#[derive(Debug)]
struct Seen {
    /// (when, done): the newest sample at least [`RATE_WINDOW`] old first.
    samples: VecDeque<(Instant, u64)>,
    /// When the last plain line was written.
    last_line: Instant,
}

/// Progress towards `total` items, of which `start` were done before this
/// run (they do not count towards the rate).
#[derive(Debug)]
pub struct Progress {
    display: Display,
    total: u64,
    start: u64,
    started: Instant,
    seen: Mutex<Seen>,
    /// The unit, plural (`users`).
    unit: &'static str,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn new(total: u64, start: u64, unit: &'static str) -> Self {
        if std::io::stderr().is_terminal() {
            Self::bar(total, start, unit)
        } else {
            Self::lines(total, start, unit, LINE_EVERY)
        }
    }

    pub fn bar(total: u64, start: u64, unit: &'static str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_position(start);
        // Two lines, so that the counts fit an 80-column terminal.
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} {percent:>3}%\n  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Self::with_display(Display::Bar(bar), total, start, unit, Instant::now())
    }

    pub fn lines(total: u64, start: u64, unit: &'static str, every: Duration) -> Self {
        Self::with_display(Display::Lines(every), total, start, unit, Instant::now())
    }

    fn with_display(
        display: Display,
        total: u64,
        start: u64,
        unit: &'static str,
        now: Instant,
    ) -> Self {
        Self {
            display,
            total,
            start,
            started: now,
            seen: Mutex::new(Seen {
                samples: VecDeque::from([(now, start)]),
                last_line: now,
            }),
            unit,
        }
    }

    /// `done` items so far; `detail` says what they came to.
    pub fn update(&self, done: u64, detail: &str) {
        let now = Instant::now();
        let pace = self.pace(now, done);
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(format!("{pace} · {detail}"));
            }
            Display::Lines(every) => {
                let mut seen = self.seen();
                if now.duration_since(seen.last_line) >= *every {
                    seen.last_line = now;
                    drop(seen);
                    eprintln!("{}", self.line(done, &pace, detail));
                }
            }
        }
    }

    /// A line of its own, above the bar.
    pub fn println(&self, text: &str) {
        match &self.display {
            Display::Bar(bar) => bar.println(text),
            Display::Lines(_) => eprintln!("{text}"),
        }
    }

    /// The last word, with the rate of the whole run: the bar stays on
    /// screen as it ends; a plain line is written whatever the time since
    /// the last one.
    pub fn finish(&self, done: u64, detail: &str) {
        let elapsed = self.started.elapsed();
        let rate = rate(done.saturating_sub(self.start), elapsed);
        let pace = format!(
            "{rate:.0} {}/s, {} in all",
            self.unit,
            human_duration(elapsed)
        );
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(done);
                bar.finish_with_message(format!("{pace} · {detail}"));
            }
            Display::Lines(_) => eprintln!("{}", self.line(done, &pace, detail)),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn line(&self, done: u64, pace: &str, detail: &str) -> String {
        let percent = match self.total {
            0 => 100.0,
            total => done as f64 * 100.0 / total as f64,
        };
        format!("[{done}/{}] {percent:.1}% {detail}; {pace}", self.total)
    }

    /// The recent rate and the time left at it.
    fn pace(&self, now: Instant, done: u64) -> String {
        let rate = self.recent_rate(now, done);
        match time_left(rate, self.total.saturating_sub(done)) {
            Some(left) => format!(
                "{rate:.0} {}/s, about {} left",
                self.unit,
                human_duration(left)
            ),
            None => format!("{rate:.0} {}/s", self.unit),
        }
    }

    /// Items per second since the newest sample at least [`RATE_WINDOW`]
    /// old (since the start while the run is younger than that).
    fn recent_rate(&self, now: Instant, done: u64) -> f64 {
        let mut seen = self.seen();
        seen.samples.push_back((now, done));
        while seen
            .samples
            .get(1)
            .is_some_and(|&(at, _)| now.duration_since(at) >= RATE_WINDOW)
        {
            seen.samples.pop_front();
        }
        let (since, then) = seen
            .samples
            .front()
            .copied()
            .unwrap_or((self.started, self.start));
        rate(done.saturating_sub(then), now.duration_since(since))
    }
}

/// Items per second.
pub fn rate(done: u64, elapsed: Duration) -> f64 {
    done as f64 / elapsed.as_secs_f64().max(1e-3)
}

/// How long `remaining` items take at `rate`; unknown before any went,
/// and nothing to say when none remain.
pub fn time_left(rate: f64, remaining: u64) -> Option<Duration> {
    (rate > 0.0 && remaining > 0).then(|| Duration::from_secs_f64(remaining as f64 / rate))
}

/// `2h 05m`, `4m 10s`, `12s`, `0.4s`.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => format!("{:.1}s", duration.as_secs_f64()),
        1..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human_duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(250)), "4m 10s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h 05m");
    }

    #[test]
    fn time_left_follows_the_rate() {
        let rate = rate(500, Duration::from_secs(2));
        assert_eq!(rate, 250.0);
        assert_eq!(time_left(rate, 1000), Some(Duration::from_secs(4)));
        assert_eq!(time_left(0.0, 1000), None);
        assert_eq!(time_left(rate, 0), None);
    }

    #[test]
    fn the_rate_is_the_recent_one() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let progress =
            Progress::with_display(Display::Lines(LINE_EVERY), 100_000, 1000, "users", start);
        // Slow while warming up, then ten times faster.
        assert_eq!(progress.recent_rate(at(10), 2000), 100.0);
        assert_eq!(progress.recent_rate(at(20), 3000), 100.0);
        assert_eq!(progress.recent_rate(at(30), 13_000), 400.0);
        assert_eq!(progress.recent_rate(at(40), 23_000), 700.0);
        // From the newest sample at least 30 s old (at 20 s, 3 000 done).
        assert_eq!(progress.recent_rate(at(50), 33_000), 1000.0);
    }

    #[test]
    fn plain_line_counts_from_the_total() {
        let progress = Progress::lines(200, 50, "users", Duration::from_secs(3600));
        let line = progress.line(100, "120 users/s", "imported 90, skipped 10, failed 0");
        assert_eq!(
            line,
            "[100/200] 50.0% imported 90, skipped 10, failed 0; 120 users/s"
        );
    }
}
