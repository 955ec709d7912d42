//! The cap on open client connections, and the few kept for health probes
//! once it is reached.
//!
//! Each open connection costs a file descriptor and memory (about 2.3 KB
//! idle, more while a request runs), so a storm of connections, slow or
//! idle, must meet a limit before the process runs out of either. Up to
//! `MAX_CLIENT_CONNECTIONS` are served as usual. Past it:
//!
//! - [`PROBE_RESERVE`] more connections are each allowed one request head
//!   within the head timeout: a health probe (`GET` or `HEAD` of `/health`,
//!   `/ready` or `/metrics`) is answered as usual and the connection closed;
//!   anything else gets 503 `{"detail": "Service Unavailable"}` with
//!   `Retry-After` and `Connection: close`. Without this reserve, the
//!   orchestrator's liveness probe would fail during the storm and restart
//!   the process, dropping every connection it holds, legitimate ones too;
//!   and a full replica could not even be scraped. The 503 is written after
//!   the request was read, so that closing the connection cannot reset it
//!   before the client sees it;
//! - when the reserve is full, the newest connection takes the place of the
//!   oldest one still waiting for its head, which is closed unanswered. A
//!   storm that opens connections again as fast as they are refused would
//!   otherwise keep the reserve full of its own slow heads; this way a probe,
//!   which sends its whole request at once, is read long before newer
//!   connections push it out (64 of them must come first);
//! - past the reserve and the connections on their way out as well (a hard
//!   bound on descriptors), new connections are closed at once, unanswered.
//!
//! Refusals and evictions count in `authgate_connections_refused_total`;
//! the open connections (the reserve's too) are the gauge
//! `authgate_client_connections`.
//!
//! The cap is worth something only below the open-file limit: at that
//! limit, pingora's accept loop fails and sleeps a second at a time, and
//! every new connection, health probes too, waits in the backlog.
//! [`fit_open_files`] raises the soft limit as far as the cap needs (up to
//! the hard limit) and otherwise lowers the cap to fit, with a warning.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;

/// Connections kept, past the cap, for health probes.
pub const PROBE_RESERVE: usize = 64;

/// The share of the open-file limit client connections may take; the rest
/// is for upstream connections (one per forwarded request in flight, plus
/// the idle ones kept per upstream), the database and Redis pools, the
/// listeners and the files authgate writes.
const CLIENT_SHARE_OF_OPEN_FILES: (u64, u64) = (3, 4);

/// Open client connections against the cap.
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
    /// Reserve connections still waiting for their head, oldest first.
    waiting: Mutex<VecDeque<Arc<Notify>>>,
    gauge: IntGauge,
    refused: IntCounter,
}

/// What a new connection may do.
pub enum Admission {
    /// Served as usual.
    Served(Permit),
    /// Over the cap: one health probe, or a 503.
    ProbeOnly(Permit, Waiting),
    /// Over every bound: closed at once (already counted).
    Refused,
}

/// An admitted connection's place; given back when dropped.
pub struct Permit {
    limit: Arc<ConnectionLimit>,
}

/// A reserve connection's place in the queue of those waiting for their
/// head; left when dropped.
pub struct Waiting {
    limit: Arc<ConnectionLimit>,
    evicted: Arc<Notify>,
}

impl ConnectionLimit {
    pub fn new(max: usize, gauge: IntGauge, refused: IntCounter) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            waiting: Mutex::new(VecDeque::with_capacity(PROBE_RESERVE)),
            gauge,
            refused,
        })
    }

    /// Takes a place for a new connection, if there is one.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        if open > self.max.saturating_add(2 * PROBE_RESERVE) {
            return self.refuse_new();
        }
        if open <= self.max {
            return Admission::Served(self.permit());
        }
        let Ok(mut waiting) = self.waiting.lock() else {
            return self.refuse_new();
        };
        if waiting.len() >= PROBE_RESERVE
            && let Some(oldest) = waiting.pop_front()
        {
            oldest.notify_one();
            self.refuse();
        }
        let evicted = Arc::new(Notify::new());
        waiting.push_back(Arc::clone(&evicted));
        drop(waiting);
        Admission::ProbeOnly(
            self.permit(),
            Waiting {
                limit: Arc::clone(self),
                evicted,
            },
        )
    }

    fn permit(self: &Arc<Self>) -> Permit {
        self.gauge.inc();
        Permit {
            limit: Arc::clone(self),
        }
    }

    fn refuse_new(&self) -> Admission {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.refuse();
        Admission::Refused
    }

    /// Counts a refused connection.
    pub fn refuse(&self) {
        self.refused.inc();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
        self.limit.gauge.dec();
    }
}

impl Waiting {
    /// Resolves when a newer connection has taken this one's place.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.limit.waiting.lock() {
            waiting.retain(|w| !Arc::ptr_eq(w, &self.evicted));
        }
    }
}

/// The cap to use with the process's open-file limit: `wanted` when the
/// soft limit can be raised far enough for it (it is, up to the hard
/// limit), else as many as fit, with the warning to log.
pub fn fit_open_files(wanted: usize) -> (usize, Option<String>) {
    let needed = files_needed(wanted);
    match rlimit::increase_nofile_limit(needed) {
        Ok(limit) => fit_to(wanted, limit),
        Err(e) => (
            wanted,
            Some(format!(
                "MAX_CLIENT_CONNECTIONS: the open-file limit could not be read or raised ({e}); keeping {wanted}"
            )),
        ),
    }
}

/// Descriptors the process should have for `connections` client
/// connections and the probe reserve.
fn files_needed(connections: usize) -> u64 {
    let (part, whole) = CLIENT_SHARE_OF_OPEN_FILES;
    let clients = connections.saturating_add(PROBE_RESERVE) as u64;
    clients.saturating_mul(whole).div_ceil(part)
}

fn fit_to(wanted: usize, open_files: u64) -> (usize, Option<String>) {
    if open_files >= files_needed(wanted) {
        return (wanted, None);
    }
    let (part, whole) = CLIENT_SHARE_OF_OPEN_FILES;
    let clients = open_files.saturating_mul(part) / whole;
    let fitted = usize::try_from(clients)
        .unwrap_or(usize::MAX)
        .saturating_sub(PROBE_RESERVE)
        .max(1);
    (
        fitted,
        Some(format!(
            "MAX_CLIENT_CONNECTIONS={wanted} does not fit the open-file limit ({open_files}, \
             raise it with `ulimit -n` or the container's nofile limit): serving at most \
             {fitted} client connections"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit(max: usize) -> (Arc<ConnectionLimit>, IntGauge, IntCounter) {
        let gauge = IntGauge::new("open", "open").unwrap();
        let refused = IntCounter::new("refused", "refused").unwrap();
        (
            ConnectionLimit::new(max, gauge.clone(), refused.clone()),
            gauge,
            refused,
        )
    }

    #[tokio::test]
    async fn serves_up_to_the_cap_then_probes_only_the_oldest_waiting_giving_way() {
        let (limit, gauge, refused) = limit(2);
        let mut served = Vec::new();
        for _ in 0..2 {
            match limit.admit() {
                Admission::Served(p) => served.push(p),
                _ => panic!("under the cap"),
            }
        }
        let mut reserve = Vec::new();
        for _ in 0..PROBE_RESERVE {
            match limit.admit() {
                Admission::ProbeOnly(p, w) => reserve.push((p, w)),
                _ => panic!("in the reserve"),
            }
        }
        assert_eq!(gauge.get(), 2 + PROBE_RESERVE as i64);
        assert_eq!(refused.get(), 0);

        // The reserve is full: the newest takes the oldest's place.
        let Admission::ProbeOnly(newest_permit, newest) = limit.admit() else {
            panic!("a place in the reserve");
        };
        assert_eq!(refused.get(), 1);
        let (oldest_permit, oldest) = reserve.remove(0);
        tokio::time::timeout(Duration::from_secs(1), oldest.evicted())
            .await
            .expect("the oldest waiting connection is told to go");
        let second = &reserve[0].1;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), second.evicted())
                .await
                .is_err(),
            "only the oldest"
        );
        drop((oldest_permit, oldest));
        reserve.push((newest_permit, newest));

        // One that has read its head leaves the queue: no longer evicted.
        let (being_served, read_its_head) = reserve.remove(0);
        drop(read_its_head);
        let Admission::ProbeOnly(permit, waiting) = limit.admit() else {
            panic!("a place in the reserve");
        };
        assert_eq!(
            refused.get(),
            1,
            "a free place in the queue: nobody evicted"
        );

        // Places come back as connections close.
        drop((being_served, permit, waiting, reserve));
        served.truncate(1);
        assert_eq!(gauge.get(), 1);
        assert!(matches!(limit.admit(), Admission::Served(_)));
    }

    #[test]
    fn past_every_bound_connections_are_refused() {
        let (limit, gauge, refused) = limit(1);
        let mut held = Vec::new();
        // Evicted connections keep their permit until their task ends.
        for _ in 0..(1 + 2 * PROBE_RESERVE) {
            match limit.admit() {
                Admission::Refused => panic!("within the bound"),
                admitted => held.push(admitted),
            }
        }
        assert!(matches!(limit.admit(), Admission::Refused));
        assert_eq!(gauge.get(), (1 + 2 * PROBE_RESERVE) as i64);
        assert_eq!(refused.get(), PROBE_RESERVE as u64 + 1);
    }

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        // Room enough: unchanged.
        let needed = files_needed(20_000);
        assert!(needed > 20_000 + PROBE_RESERVE as u64);
        assert_eq!(fit_to(20_000, needed), (20_000, None));
        assert_eq!(fit_to(20_000, 1 << 20), (20_000, None));
        // Too few descriptors: three quarters of them, less the reserve.
        let (fitted, warning) = fit_to(20_000, 20_000);
        assert_eq!(fitted, 15_000 - PROBE_RESERVE);
        assert!(warning.unwrap().contains("MAX_CLIENT_CONNECTIONS=20000"));
        assert_eq!(fit_to(20_000, 10).0, 1);
    }
}
