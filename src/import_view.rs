//! `authgate import-users` as a person watching it sees it (part of the
//! binary): the plan, the progress, notices, what Ctrl-C does, and the
//! final report.
//!
//! Imports: nothing of the crate (a module of the binary; it uses the
//! library's public items).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use authgate::identity::keycloak::import::{
    Ending, ImportEvents, Mode, Progressed, Report, Started, Tally,
};
use authgate::progress::Progress;

/// Failures listed on stdout when the report file holds them all.
const LISTED_WITH_REPORT_FILE: usize = 20;

pub struct ImportView {
    progress: OnceLock<Progress>,
    /// `--crash-at-batch`: exit at once when Keycloak has taken this batch.
    crash_at_batch: Option<u64>,
}

fn detail(tally: &Tally) -> String {
    format!(
        "imported {}, skipped {}, failed {}",
        tally.imported, tally.skipped, tally.failed
    )
}

impl ImportView {
    pub fn new(crash_at_batch: Option<u64>) -> Self {
        Self {
            progress: OnceLock::new(),
            crash_at_batch,
        }
    }

    /// The progress display's last word.
    pub fn finish(&self, report: &Report) {
        if let Some(progress) = self.progress.get() {
            progress.finish(report.totals.handled(), &detail(&report.totals));
        }
    }
}

impl ImportEvents for ImportView {
    fn started(&self, started: &Started) {
        let how = match started.mode {
            Mode::PartialImport => format!(
                "partial import, batches of {}, {} in flight",
                started.batch_size, started.concurrency
            ),
            Mode::OneAtATime => format!(
                "one user at a time, {} batches in flight",
                started.concurrency
            ),
            Mode::DryRun => "dry run: checking each user, writing nothing".to_string(),
        };
        eprintln!(
            "importing {} live legacy users into Keycloak ({how})",
            started.total
        );
        if let Some(after) = started.resumed_after {
            eprintln!(
                "continuing after legacy id {after}, where an earlier run stopped ({} users handled then; --restart starts over)",
                started.handled
            );
        }
        let _ = self
            .progress
            .set(Progress::new(started.total, started.handled, "users"));
    }

    fn progressed(&self, progress: &Progressed) {
        if let Some(display) = self.progress.get() {
            display.update(progress.handled, &detail(&progress.totals));
        }
    }

    fn notice(&self, message: &str) {
        match self.progress.get() {
            Some(progress) => progress.println(message),
            None => eprintln!("{message}"),
        }
    }

    fn answered(&self, number: u64) {
        if self.crash_at_batch == Some(number) {
            self.notice(&format!(
                "--crash-at-batch {number}: Keycloak has taken batch {number}; exiting before recording it"
            ));
            std::process::exit(3);
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM: no new batch starts, those in flight finish
/// and are recorded, the report is written. A second one quits at once.
pub fn stop_on_signals(view: Arc<ImportView>) -> Result<watch::Receiver<bool>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen =
        |kind: SignalKind| signal(kind).map_err(|err| format!("cannot listen for signals: {err}"));
    let mut interrupt = listen(SignalKind::interrupt())?;
    let mut terminate = listen(SignalKind::terminate())?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        view.notice(
            "stopping: the batches in flight finish and are recorded, then the report; \
             run import-users again to continue (Ctrl-C again quits at once)",
        );
        let _ = stop.send(true);
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        std::process::exit(130);
    });
    Ok(stopped)
}

/// The report on stdout: each failure (the first few when a report file
/// holds them all), failures by reason, the counts, how the run ended.
pub fn print_report(report: &Report, report_file: Option<&Path>) {
    let listed = match report_file {
        Some(_) => LISTED_WITH_REPORT_FILE,
        None => usize::MAX,
    };
    for failure in report.failures.iter().take(listed) {
        println!(
            "failed: {} (id {}): {}",
            failure.username, failure.legacy_id, failure.reason
        );
    }
    if let Some(path) = report_file
        && report.failures.len() > listed
    {
        println!(
            "... and {} more failures, all listed in {}",
            report.failures.len() - listed,
            path.display()
        );
    }
    if report.failures.len() > 1 {
        println!("failures by reason:");
        for (reason, count) in report.reasons() {
            println!("  {count:>8}  {reason}");
        }
    }
    let mode = match report.mode {
        Mode::DryRun => " (dry run: nothing written)",
        Mode::PartialImport | Mode::OneAtATime => "",
    };
    println!(
        "{}{mode} in {:.1}s ({:.0} users/s)",
        report.summary(),
        report.seconds,
        report.users_per_second
    );
    if let Some(after) = report.resumed_after {
        println!(
            "this run continued after legacy id {after}: {}",
            detail(&report.this_run)
        );
    }
    let done_up_to = report
        .handled_up_to
        .map_or_else(|| "none".to_string(), |id| format!("legacy id {id}"));
    match &report.ending {
        Ending::Complete => {}
        Ending::Interrupted => println!(
            "interrupted: every user up to {done_up_to} is done; run import-users again to continue"
        ),
        Ending::Stopped(why) => println!(
            "stopped: {why}; every user up to {done_up_to} is done; run import-users again to continue"
        ),
    }
}

/// Success only for a complete run without failures.
pub fn verdict(report: &Report) -> Result<(), String> {
    match &report.ending {
        Ending::Complete if report.totals.failed == 0 => Ok(()),
        Ending::Complete => Err(format!(
            "{} users could not be imported",
            report.totals.failed
        )),
        Ending::Interrupted => {
            Err("interrupted before the end; run import-users again to continue".into())
        }
        Ending::Stopped(why) => Err(format!("stopped before the end: {why}")),
    }
}
