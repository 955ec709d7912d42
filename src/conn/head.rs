//! Reading a request head within a deadline.
//!
//! pingora's HTTP/1 reader bounds each read of a request head (by the
//! keep-alive timeout), not the head as a whole: a client that sends one
//! byte every few seconds keeps a connection and its buffers for ever. So
//! the connection loop reads the head itself: it waits for the request's
//! first byte (up to the idle timeout, holding no buffer meanwhile), then
//! reads until the blank line that ends the head, up to the head timeout
//! after that first byte. The bytes read (the head, and whatever of the body
//! came with it) go to pingora's parser as they are, which parses them
//! without reading again; the body is read by pingora with its own limits,
//! so a slow body is never cut by this deadline.
//!
//! The scan for the end of the head accepts what pingora's parser
//! (httparse) accepts: lines ending in CRLF or a bare LF, empty lines before
//! the request line skipped. It looks at each byte once.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// The largest head read before it is handed over incomplete: pingora's
/// own limit (`MAX_HEADER_SIZE` of its HTTP/1 reader), which then refuses it
/// as it always did.
const MAX_HEAD_BYTES: usize = 1_048_575;
/// The first buffer for a head: pingora's own first size.
const HEAD_BUFFER: usize = 4096;
/// Paths a health probe asks for.
const PROBE_PATHS: [&[u8]; 3] = [b"/health", b"/ready", b"/metrics"];

/// What came of waiting for a request.
#[derive(Debug)]
pub enum Head {
    /// A whole head: the bytes read, the head first.
    Complete(BytesMut),
    /// No request to serve: the client closed the connection, stayed
    /// silent for the idle timeout, or the server is shutting down.
    Gone,
    /// The request began, but its head was not complete in time.
    TimedOut,
}

/// Waits up to `idle` for a request's first byte (giving up at once when
/// the server begins to shut down: an idle connection has nothing to
/// finish), then up to `limit` more for the rest of its head.
pub async fn read_head(
    stream: &mut Stream,
    idle: Duration,
    limit: Duration,
    shutdown: &mut ShutdownWatch,
) -> Head {
    let mut first = [0u8; 1];
    let arrived = tokio::select! {
        biased;
        read = tokio::time::timeout(idle, stream.read(&mut first)) => matches!(read, Ok(Ok(1))),
        _ = shutdown.wait_for(|&down| down) => false,
    };
    if !arrived {
        return Head::Gone;
    }
    let deadline = Instant::now() + limit;
    let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
    buf.put_u8(first[0]);
    let mut scan = HeadEnd::default();
    loop {
        if scan.found(&buf) || buf.len() > MAX_HEAD_BYTES {
            return Head::Complete(buf);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Head::Gone,
            Ok(Ok(_)) => {}
            Err(_) => return Head::TimedOut,
        }
    }
}

/// Whether a complete head asks for a health probe: `GET` or `HEAD` of
/// `/health`, `/ready` or `/metrics`, with any query.
pub fn is_probe(head: &[u8]) -> bool {
    let start = head
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(head.len());
    let line = head
        .get(start..)
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or(&[]);
    let mut words = line.split(|&b| b == b' ');
    let method = words.next().unwrap_or(&[]);
    let target = words.next().unwrap_or(&[]);
    let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
    matches!(method, b"GET" | b"HEAD") && PROBE_PATHS.contains(&path)
}

/// The search for the end of a head, resumed as bytes arrive.
#[derive(Debug, Default)]
struct HeadEnd {
    /// The request line has begun (leading empty lines are skipped).
    started: bool,
    /// Where to look next.
    from: usize,
}

impl HeadEnd {
    /// Whether `buf` (the same buffer as before, grown) holds the blank
    /// line that ends a head.
    fn found(&mut self, buf: &[u8]) -> bool {
        let unread = buf.get(self.from..).unwrap_or_default();
        if !self.started {
            match unread.iter().position(|b| !matches!(b, b'\r' | b'\n')) {
                Some(at) => {
                    self.from += at;
                    self.started = true;
                }
                None => {
                    self.from = buf.len();
                    return false;
                }
            }
        }
        let unread = buf.get(self.from..).unwrap_or_default();
        for at in memchr::memchr_iter(b'\n', unread).map(|i| self.from + i) {
            match (buf.get(at + 1), buf.get(at + 2)) {
                (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => return true,
                // Not all there yet: look again from this line end.
                (None, _) | (Some(b'\r'), None) => {
                    self.from = at;
                    return false;
                }
                _ => {}
            }
        }
        self.from = buf.len();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one after the other: at which piece the head is
    /// found to be complete.
    fn complete_at(pieces: &[&str]) -> Option<usize> {
        let mut scan = HeadEnd::default();
        let mut buf = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            buf.extend_from_slice(piece.as_bytes());
            if scan.found(&buf) {
                return Some(i);
            }
        }
        None
    }

    #[test]
    fn finds_the_end_of_a_head_however_it_is_split() {
        let head = "GET /x HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\nbody";
        for split in 1..head.len() {
            let (a, b) = head.split_at(split);
            let at = complete_at(&[a, b]).expect("complete");
            let end = head.find("\r\n\r\n").unwrap() + 4;
            assert_eq!(at, usize::from(split < end), "split at {split}");
        }
        // One byte at a time.
        let bytes: Vec<String> = head.chars().map(String::from).collect();
        let pieces: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(
            complete_at(&pieces),
            Some(head.find("\r\n\r\n").unwrap() + 3)
        );
    }

    #[test]
    fn line_ends_and_leading_blank_lines_as_the_parser_reads_them() {
        assert_eq!(complete_at(&["GET / HTTP/1.1\n\n"]), Some(0));
        assert_eq!(complete_at(&["GET / HTTP/1.1\nHost: a\n\r\n"]), Some(0));
        assert_eq!(complete_at(&["GET / HTTP/1.1\r\n\r\n"]), Some(0));
        // Blank lines before the request line are not its end.
        assert_eq!(
            complete_at(&["\r\n\r\n", "\r\n", "GET / HTTP/1.1\r\n"]),
            None
        );
        assert_eq!(
            complete_at(&["\r\n\r\n", "GET / HTTP/1.1\r\n", "\r\n"]),
            Some(2)
        );
        // A head still going on.
        assert_eq!(
            complete_at(&["GET / HTTP/1.1\r\nHost: a\r\n", "X: y\r"]),
            None
        );
        assert_eq!(complete_at(&["GET / HTTP/1.1\r\nHost: a\r\n", "\r"]), None);
    }

    #[test]
    fn probes_are_health_readiness_and_metrics_reads() {
        for probe in [
            "GET /health HTTP/1.1\r\n\r\n",
            "HEAD /ready HTTP/1.1\r\n\r\n",
            "GET /metrics?x=1 HTTP/1.1\r\n\r\n",
            "\r\nGET /health HTTP/1.0\n\n",
        ] {
            assert!(is_probe(probe.as_bytes()), "{probe:?}");
        }
        for other in [
            "POST /health HTTP/1.1\r\n\r\n",
            "GET /healthz HTTP/1.1\r\n\r\n",
            "GET /health/x HTTP/1.1\r\n\r\n",
            "GET /users/me HTTP/1.1\r\n\r\n",
            "get /health HTTP/1.1\r\n\r\n",
            "",
        ] {
            assert!(!is_probe(other.as_bytes()), "{other:?}");
        }
    }
}
