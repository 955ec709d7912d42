//! Reloading without a restart: the one place where "reload now" is said
//! and heard.
//!
//! SIGHUP asks every part of the gateway that can reload something to do
//! it (the TLS certificate pair, [`crate::tls`], and whatever else
//! subscribes). How to take part:
//!
//! - **to hear it**: take a [`Subscription`] once with
//!   [`Reloads::subscribe`], then loop on [`Subscription::next`]; each time
//!   it returns `true`, reload what you own, and keep what you had when the
//!   new version is broken (log it and count it: the process goes on
//!   serving). Requests that come while a subscriber is still busy are
//!   folded into one, so a subscriber never falls behind;
//! - **to say it**: [`Reloads::request`] (the SIGHUP watch does; so may a
//!   file watch or an admin action).
//!
//! [`Reloads`] is made once in [`crate::server::run`] and cloned to whoever
//! needs it. [`HangupSignals`] is the background service that turns each
//! SIGHUP into a request. SIGHUP never stops the process: stopping is
//! SIGTERM's and SIGINT's ([`crate::drain`]). [`keep_running_on_hangup`]
//! takes SIGHUP over at the very start of `serve`, before the database
//! migrations and the listeners, so that a SIGHUP sent early is not fatal
//! either (its default action ends the process).
//!
//! Imports: nothing of the crate.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// The reload requests of the process; clones share them.
#[derive(Clone)]
pub struct Reloads {
    /// The number of requests so far.
    asked: watch::Sender<u64>,
}

impl Default for Reloads {
    fn default() -> Self {
        Self::new()
    }
}

impl Reloads {
    pub fn new() -> Self {
        Self {
            asked: watch::Sender::new(0),
        }
    }

    /// Asks every subscriber to reload.
    pub fn request(&self) {
        self.asked
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Hears the requests made from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            asked: self.asked.subscribe(),
        }
    }
}

/// One subscriber's side of [`Reloads`].
pub struct Subscription {
    asked: watch::Receiver<u64>,
}

impl Subscription {
    /// Waits for the next reload request (one for all those made since the
    /// last call); `false` once no request can come any more.
    pub async fn next(&mut self) -> bool {
        self.asked.changed().await.is_ok()
    }
}

/// The background service that turns each SIGHUP into a reload request.
pub struct HangupSignals {
    reloads: Reloads,
}

impl HangupSignals {
    pub fn new(reloads: Reloads) -> Self {
        Self { reloads }
    }
}

#[async_trait]
impl BackgroundService for HangupSignals {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::error!(error = %err, "cannot watch SIGHUP: no reload on SIGHUP");
                return;
            }
        };
        loop {
            tokio::select! {
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!(signal = "SIGHUP", "reloading");
                    self.reloads.request();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Takes SIGHUP over for the rest of the process's life, so that it no
/// longer ends the process (tokio keeps the handler it installs; the
/// requests are heard once [`HangupSignals`] runs). Call it first thing.
pub fn keep_running_on_hangup() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async { signal(SignalKind::hangup()).map(drop) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_subscriber_hears_a_request_and_busy_ones_hear_one_for_many() {
        let reloads = Reloads::new();
        let mut first = reloads.subscribe();
        let mut second = reloads.subscribe();
        reloads.request();
        assert!(first.next().await);
        assert!(second.next().await);
        // Three requests while `first` was busy: one reload.
        for _ in 0..3 {
            reloads.request();
        }
        assert!(first.next().await);
        let again = tokio::time::timeout(Duration::from_millis(50), first.next()).await;
        assert!(again.is_err(), "a second reload for one batch of requests");
        drop(reloads);
        assert!(second.next().await, "a pending request is still heard");
        assert!(!second.next().await, "no more requests can come");
    }
}
