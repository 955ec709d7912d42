//! Idle upstream connections kept for reuse, per upstream address.
//!
//! No task watches an idle connection: a connection is checked when it is
//! taken (one non-blocking read: closed or talking out of turn means it is
//! dropped) and connections idle for longer than the pool's idle time are
//! dropped when the pool is next touched.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Idle upstream connections by address.
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, VecDeque<Idle>>>,
    max_idle_per_upstream: usize,
    idle_timeout: Duration,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl Pool {
    pub fn new(max_idle_per_upstream: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            max_idle_per_upstream,
            idle_timeout,
        }
    }

    /// The most recently returned idle connection to `addr` that is still
    /// open, if any.
    pub fn take(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        loop {
            let idle = {
                let mut idle = self.idle.lock().ok()?;
                let queue = idle.get_mut(&addr)?;
                self.expire(queue, now);
                queue.pop_back()?
            };
            if still_open(&idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    /// Keeps `stream` for reuse (dropped when the pool for `addr` is full).
    pub fn put(&self, addr: SocketAddr, stream: TcpStream, now: Instant) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let queue = idle.entry(addr).or_default();
        self.expire(queue, now);
        if queue.len() < self.max_idle_per_upstream {
            queue.push_back(Idle { stream, since: now });
        }
    }

    /// How many idle connections are kept for `addr`.
    #[cfg(test)]
    fn idle_count(&self, addr: SocketAddr) -> usize {
        self.idle
            .lock()
            .map_or(0, |idle| idle.get(&addr).map_or(0, VecDeque::len))
    }

    /// Drops the connections idle for too long (the oldest are in front).
    fn expire(&self, queue: &mut VecDeque<Idle>, now: Instant) {
        while queue
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.since) >= self.idle_timeout)
        {
            queue.pop_front();
        }
    }
}

/// An idle HTTP/1.1 connection has nothing to read: end of stream means the
/// upstream closed it, and bytes would be an answer to nothing.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair: the pool's side and the upstream's side.
    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn keeps_open_connections_newest_first_and_drops_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let t0 = Instant::now();
        let pool = Pool::new(2, Duration::from_secs(60));
        assert!(pool.take(addr, t0).is_none());

        let (a, _a_peer) = pair(&listener).await;
        let (b, _b_peer) = pair(&listener).await;
        let (c, _c_peer) = pair(&listener).await;
        let b_port = b.local_addr().unwrap().port();
        pool.put(addr, a, t0);
        pool.put(addr, b, t0);
        pool.put(addr, c, t0);
        assert_eq!(pool.idle_count(addr), 2, "full: the third is dropped");
        let taken = pool.take(addr, t0).unwrap();
        assert_eq!(taken.local_addr().unwrap().port(), b_port, "newest first");

        // Closed by the upstream while idle: dropped when taken.
        let (d, d_peer) = pair(&listener).await;
        pool.put(addr, d, t0);
        drop(d_peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let next = pool.take(addr, t0).unwrap();
        assert_ne!(next.local_addr().unwrap().port(), b_port);
        assert_eq!(pool.idle_count(addr), 0);

        // Idle past the timeout: dropped.
        pool.put(addr, next, t0);
        assert!(pool.take(addr, t0 + Duration::from_secs(60)).is_none());
        assert_eq!(pool.idle_count(addr), 0);
    }
}
