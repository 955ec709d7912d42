//! SIGHUP: read again what can change without a restart (the routes file).
//!
//! One watcher of the signal for the whole process, installed at start
//! before anything else can receive it: unhandled, SIGHUP would end the
//! process (pingora watches SIGTERM, SIGINT and SIGQUIT only, see
//! [`crate::drain`]). Each part that reloads [`subscribe`]s and sees every
//! hang-up that arrives after it subscribed; several hang-ups while it is
//! busy count as one.

use std::sync::{Mutex, OnceLock, PoisonError};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// The count of hang-ups received, shared with the subscribers.
static HANGUPS: OnceLock<watch::Sender<u64>> = OnceLock::new();
/// Whether the signal is watched.
static INSTALLED: Mutex<bool> = Mutex::new(false);

fn hangups() -> &'static watch::Sender<u64> {
    HANGUPS.get_or_init(|| watch::channel(0).0)
}

/// Starts watching SIGHUP (once; later calls do nothing). From then on the
/// signal no longer ends the process.
pub fn install() -> std::io::Result<()> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if *installed {
        return Ok(());
    }
    // The signal is registered here, before this returns, and then waited
    // for on a thread of its own, whatever runtimes come and go.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let mut hangup = {
        let _entered = runtime.enter();
        signal(SignalKind::hangup())?
    };
    let sender = hangups().clone();
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            runtime.block_on(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!(signal = "SIGHUP", "reloading");
                    sender.send_modify(|count| *count += 1);
                }
            });
        })?;
    *installed = true;
    Ok(())
}

/// Hang-ups from now on: `changed()` resolves at the next one. Never
/// resolves when [`install`] was not called.
pub fn subscribe() -> watch::Receiver<u64> {
    hangups().subscribe()
}
