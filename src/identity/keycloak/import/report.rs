//! What an import came to: counts, the users that failed and why, and how
//! the run ended; printed at the end and written as JSON when asked.

use std::path::Path;

use serde::Serialize;

/// A user that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub legacy_id: i32,
    pub username: String,
    pub reason: String,
}

/// Users counted by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Created in Keycloak (in a dry run: would be).
    pub imported: u64,
    /// Already in Keycloak: recorded by authgate, or found there under the
    /// same username with the same `legacy_id`.
    pub skipped: u64,
    pub failed: u64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.imported += other.imported;
        self.skipped += other.skipped;
        self.failed += other.failed;
    }

    /// Users handled, whatever the outcome.
    pub fn handled(&self) -> u64 {
        self.imported + self.skipped + self.failed
    }
}

/// How Keycloak got the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Batches through `partialImport`; a refused batch is split until the
    /// user Keycloak refuses is alone, and that one goes one at a time.
    PartialImport,
    /// One user at a time (the import client is not usable).
    OneAtATime,
    /// Nothing written: each user checked one at a time.
    DryRun,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum Ending {
    /// Every live legacy user was handled.
    Complete,
    /// Stopped on request (Ctrl-C) after the batches in flight.
    Interrupted,
    /// Stopped on an error (e.g. Keycloak unavailable for too long).
    Stopped(String),
}

/// The report of one run, counting what earlier, interrupted runs of the
/// same import did too.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ending: Ending,
    pub mode: Mode,
    pub batch_size: usize,
    pub concurrency: usize,
    /// Live legacy users, those handled by earlier runs included.
    pub total: u64,
    /// The run continued after this legacy id (where an earlier one stopped).
    pub resumed_after: Option<i32>,
    /// Every live user up to this id has been handled.
    pub handled_up_to: Option<i32>,
    /// The whole import: earlier runs and this one.
    pub totals: Tally,
    pub this_run: Tally,
    pub seconds: f64,
    /// Users this run handled per second.
    pub users_per_second: f64,
    /// Of the whole import, by legacy id.
    pub failures: Vec<Failure>,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "imported {}, skipped {}, failed {}",
            self.totals.imported, self.totals.skipped, self.totals.failed
        )
    }

    /// The failures' reasons, each with how many users it stopped, most
    /// frequent first.
    pub fn reasons(&self) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for failure in &self.failures {
            *counts.entry(reason_kind(&failure.reason)).or_default() += 1;
        }
        let mut reasons: Vec<(String, usize)> = counts
            .into_iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        reasons
    }

    /// Writes the report as JSON: to a temporary file beside `path`, then
    /// renamed over it, so a reader never sees half a report.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, path)
    }
}

/// A reason without what is particular to one user: reasons read
/// `<kind>: <detail>`.
fn reason_kind(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason).trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(id: i32, reason: &str) -> Failure {
        Failure {
            legacy_id: id,
            username: format!("user{id}"),
            reason: reason.into(),
        }
    }

    fn report(failures: Vec<Failure>) -> Report {
        Report {
            ending: Ending::Complete,
            mode: Mode::PartialImport,
            batch_size: 500,
            concurrency: 2,
            total: 10,
            resumed_after: None,
            handled_up_to: Some(10),
            totals: Tally {
                imported: 7,
                skipped: 0,
                failed: 3,
            },
            this_run: Tally::default(),
            seconds: 1.0,
            users_per_second: 10.0,
            failures,
        }
    }

    #[test]
    fn reasons_are_counted_by_kind() {
        let report = report(vec![
            failure(1, "password hash not importable: salt"),
            failure(2, "email taken in Keycloak: by a user with legacy_id 9"),
            failure(3, "password hash not importable: checksum length"),
        ]);
        assert_eq!(
            report.reasons(),
            [
                ("password hash not importable".to_string(), 2),
                ("email taken in Keycloak".to_string(), 1)
            ]
        );
        assert_eq!(report.summary(), "imported 7, skipped 0, failed 3");
    }

    #[test]
    fn json_report_is_written_whole() {
        let dir = std::env::temp_dir().join(format!("import-report-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        report(vec![failure(1, "password hash not importable: salt")])
            .write_json(&path)
            .unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["ending"]["state"], "complete");
        assert_eq!(written["mode"], "partial_import");
        assert_eq!(written["totals"]["imported"], 7);
        assert_eq!(written["failures"][0]["legacy_id"], 1);
        assert!(!dir.join("report.json.partial").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
