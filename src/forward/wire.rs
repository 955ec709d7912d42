//! HTTP/1.1 on the upstream side: the request head written for a forwarded
//! request, the answer's head read back, and the framing of its body
//! (RFC 9112 sections 6 and 7).

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method};
use pingora::http::{HeaderNameVariant, RequestHeader, ResponseHeader};

use super::ForwardError;

/// The most headers an upstream answer may carry.
const MAX_HEADERS: usize = 128;
/// The largest upstream answer head.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest chunk-size line or trailer line.
const MAX_LINE_BYTES: usize = 4 * 1024;

/// Hop-by-hop headers: they describe one connection and are never passed on.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "http2-settings",
    "proxy-authorization",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `name` is hop-by-hop, by the standard list or by the message's own
/// `Connection` header.
fn is_hop_by_hop(name: &[u8], connection_tokens: &[&str]) -> bool {
    let listed = |list: &[&str]| list.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()));
    listed(&HOP_BY_HOP) || listed(connection_tokens)
}

fn connection_tokens(values: http::header::GetAll<'_, HeaderValue>) -> Vec<&str> {
    values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(list_items)
        .collect()
}

/// The items of a comma-separated header value.
fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// Appends one `name: value` header line.
fn push_header(out: &mut Vec<u8>, name: &[u8], value: &HeaderValue) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The request head sent upstream for a request without a body: the
/// settled request's method, target and headers (their case kept), less
/// the hop-by-hop ones. An `upgrade` request keeps its `Upgrade` header and
/// asks for it with `Connection: Upgrade`.
pub fn request_head(req: &RequestHeader, upgrade: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + req.headers.len() * 32);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.raw_path());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let tokens = connection_tokens(req.headers.get_all(http::header::CONNECTION));
    let mut write = |name: &[u8], value: &HeaderValue| {
        let kept_for_upgrade = upgrade && name.eq_ignore_ascii_case(b"upgrade");
        if is_hop_by_hop(name, &tokens) && !kept_for_upgrade {
            return;
        }
        push_header(&mut out, name, value);
    };
    // `map` walks the headers with their original case; it fails only when
    // the closure does, and this one cannot.
    let _ = req.map(|name, value| {
        match name {
            HeaderNameVariant::Case(name) => write(name.as_slice(), value),
            HeaderNameVariant::Titled(name) => write(name.as_bytes(), value),
        }
        Ok(())
    });
    if upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How the body of an upstream answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// An upstream answer's head, ready for the client.
pub struct Head {
    pub header: ResponseHeader,
    pub framing: Framing,
    /// The upstream connection may carry another request after this answer.
    pub reusable: bool,
}

/// Parses one answer head from the front of `buf`: `Ok(None)` when more
/// bytes are needed; informational (1xx) answers are consumed and skipped,
/// except a `101 Switching Protocols` answering an `upgrade` request, which
/// keeps its `Upgrade` and `Connection` headers (the bytes after it belong
/// to the new protocol).
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    upgrade: bool,
) -> Result<Option<Head>, ForwardError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let used = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(ForwardError::BadResponse("answer head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ForwardError::BadResponse("too many answer headers"));
            }
            Err(_) => return Err(ForwardError::BadResponse("malformed answer head")),
        };
        let code = parsed.code.unwrap_or(0);
        if code == 101 && upgrade {
            let head = switched_head(&parsed)?;
            buf.advance(used);
            return Ok(Some(head));
        }
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(ForwardError::BadResponse("unrequested protocol switch"));
            }
            buf.advance(used);
            continue;
        }
        let head = build_head(&parsed, code, method)?;
        buf.advance(used);
        return Ok(Some(head));
    }
}

fn build_head(
    parsed: &httparse::Response<'_, '_>,
    code: u16,
    method: &Method,
) -> Result<Head, ForwardError> {
    fn bad<E>(_: E) -> ForwardError {
        ForwardError::BadResponse("invalid answer header")
    }
    let mut connection = Vec::new();
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            connection.extend(list_items(std::str::from_utf8(h.value).unwrap_or("")));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides whether the body is chunked.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(ForwardError::BadResponse("invalid content-length"))?;
            if length.is_some_and(|l| l != value) {
                return Err(ForwardError::BadResponse("conflicting content-length"));
            }
            length = Some(value);
        }
    }
    let framing = if *method == Method::HEAD || code == 204 || code == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(len)) => Framing::Length(len),
            (None, None) => Framing::Close,
        }
    };
    let keep_alive = if parsed.version == Some(1) {
        !connection.iter().any(|t| t.eq_ignore_ascii_case("close"))
    } else {
        connection
            .iter()
            .any(|t| t.eq_ignore_ascii_case("keep-alive"))
    };
    let reusable = keep_alive && framing != Framing::Close;

    let mut header = ResponseHeader::build(code, Some(parsed.headers.len()))
        .map_err(|_| ForwardError::BadResponse("invalid answer status"))?;
    if let Some(reason) = parsed.reason
        && Some(reason) != header.status.canonical_reason()
    {
        header.set_reason_phrase(Some(reason)).map_err(bad)?;
    }
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        // Transfer-Encoding stays: the client's side frames the body again
        // from it. A Content-Length beside it is void (RFC 9112 6.3).
        let keep = name.eq_ignore_ascii_case(b"transfer-encoding")
            || !(is_hop_by_hop(name, &connection)
                || (chunked.is_some() && name.eq_ignore_ascii_case(b"content-length")));
        if keep {
            header
                .append_header(
                    h.name.to_string(),
                    HeaderValue::from_bytes(h.value).map_err(bad)?,
                )
                .map_err(bad)?;
        }
    }
    Ok(Head {
        header,
        framing,
        reusable,
    })
}

/// A `101 Switching Protocols` head for the client: the upstream's headers,
/// `Upgrade` kept, `Connection: Upgrade` said once.
fn switched_head(parsed: &httparse::Response<'_, '_>) -> Result<Head, ForwardError> {
    fn bad<E>(_: E) -> ForwardError {
        ForwardError::BadResponse("invalid answer header")
    }
    let mut header = ResponseHeader::build(101, Some(parsed.headers.len()))
        .map_err(|_| ForwardError::BadResponse("invalid answer status"))?;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection")
            || (is_hop_by_hop(name, &[]) && !name.eq_ignore_ascii_case(b"upgrade"))
        {
            continue;
        }
        header
            .append_header(
                h.name.to_string(),
                HeaderValue::from_bytes(h.value).map_err(bad)?,
            )
            .map_err(bad)?;
    }
    header.append_header("Connection", "Upgrade").map_err(bad)?;
    Ok(Head {
        header,
        framing: Framing::Empty,
        reusable: false,
    })
}

/// Decodes a chunked body as it arrives.
#[derive(Debug)]
pub struct Dechunker {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Default for Dechunker {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
        }
    }
}

impl Dechunker {
    /// The body is complete (trailers, if any, skipped).
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes what can be decoded from the front of `buf`: the body bytes
    /// found, in order. Leaves an incomplete piece in `buf` for next time.
    pub fn decode(&mut self, buf: &mut BytesMut, out: &mut Vec<Bytes>) -> Result<(), ForwardError> {
        loop {
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_LINE_BYTES => {
                        return Err(ForwardError::BadResponse("chunk size line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(()),
                    Err(_) => return Err(ForwardError::BadResponse("invalid chunk size")),
                },
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(());
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    out.push(buf.split_to(take).freeze());
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    let Some(end) = buf.get(..2) else {
                        return Ok(());
                    };
                    if end != b"\r\n" {
                        return Err(ForwardError::BadResponse("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    // Trailer fields are dropped; the empty line ends the body.
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_LINE_BYTES {
                            return Err(ForwardError::BadResponse("trailer line too long"));
                        }
                        return Ok(());
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &str, method: &Method) -> Head {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf, method, false)
            .expect("valid head")
            .expect("complete head")
    }

    #[test]
    fn request_head_drops_hop_by_hop_headers() {
        let mut req = RequestHeader::build("GET", b"/a/b?x=1&y=%20", None).unwrap();
        req.append_header("Host", "example.test").unwrap();
        req.append_header("Connection", "keep-alive, X-Secret-Hop")
            .unwrap();
        req.append_header("X-Secret-Hop", "1").unwrap();
        req.append_header("Keep-Alive", "timeout=5").unwrap();
        req.append_header("Accept", "a").unwrap();
        req.append_header("Accept", "b").unwrap();
        let head = String::from_utf8(request_head(&req, false)).unwrap();
        assert_eq!(
            head,
            "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.test\r\nAccept: a\r\nAccept: b\r\n\r\n"
        );
    }

    #[test]
    fn answer_framing_follows_rfc_9112() {
        let get = Method::GET;
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Framing::Close,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            ("HTTP/1.1 204 No Content\r\n\r\n", Framing::Empty, true),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                Framing::Length(0),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
                Framing::Length(2),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
                Framing::Length(2),
                true,
            ),
        ];
        for (raw, framing, reusable) in cases {
            let head = head_of(raw, &get);
            assert_eq!(head.framing, framing, "{raw}");
            assert_eq!(head.reusable, reusable, "{raw}");
        }
        assert_eq!(
            head_of(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                &Method::HEAD
            )
            .framing,
            Framing::Empty
        );
    }

    #[test]
    fn answer_head_keeps_case_drops_hop_by_hop_and_skips_1xx() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Made It\r\nX-Upstream: a\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello";
        let mut buf = BytesMut::from(raw);
        let head = parse_head(&mut buf, &Method::GET, false).unwrap().unwrap();
        assert_eq!(head.header.status.as_u16(), 201);
        assert_eq!(head.header.get_reason_phrase(), Some("Made It"));
        let mut wire = Vec::new();
        head.header.header_to_h1_wire(&mut wire);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "X-Upstream: a\r\nTransfer-Encoding: chunked\r\n"
        );
        assert_eq!(&buf[..], b"5\r\nhello", "the body is left in the buffer");
    }

    #[test]
    fn broken_answers_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(raw);
            assert!(parse_head(&mut buf, &Method::GET, false).is_err(), "{raw}");
        }
        let mut partial = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(
            parse_head(&mut partial, &Method::GET, false)
                .unwrap()
                .is_none()
        );
        let mut huge = BytesMut::from("HTTP/1.1 200 OK\r\n");
        huge.extend_from_slice(&vec![b'a'; MAX_HEAD_BYTES + 1]);
        assert!(parse_head(&mut huge, &Method::GET, false).is_err());
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        for split in 1..wire.len() {
            let mut dechunker = Dechunker::default();
            let mut buf = BytesMut::new();
            let mut body = Vec::new();
            for piece in wire.chunks(split) {
                buf.extend_from_slice(piece);
                let mut out = Vec::new();
                dechunker.decode(&mut buf, &mut out).unwrap();
                body.extend(out.iter().flat_map(|b| b.iter().copied()));
                if dechunker.done() {
                    break;
                }
            }
            assert!(dechunker.done(), "split {split}");
            assert_eq!(body, b"hello, world", "split {split}");
        }
        let mut bad = BytesMut::from("5\r\nhelloXX");
        assert!(
            Dechunker::default()
                .decode(&mut bad, &mut Vec::new())
                .is_err()
        );
        let mut bad = BytesMut::from("zz\r\n");
        assert!(
            Dechunker::default()
                .decode(&mut bad, &mut Vec::new())
                .is_err()
        );
    }
}

/// Hostile bytes: the upstream answer's head and chunked body over random
/// and built answers, fed whole and in arbitrary pieces (the long run is
/// `scripts/fuzz.sh`).
#[cfg(test)]
mod prop {
    use proptest::prelude::prop;
    use proptest::prelude::*;

    use super::*;

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![Just(Method::GET), Just(Method::HEAD), Just(Method::POST)]
    }

    fn header_line() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..100_000).prop_map(|n| format!("Content-Length: {n}")),
            Just(String::from("Content-Length: 18446744073709551616")),
            Just(String::from("content-length: -1")),
            Just(String::from("Transfer-Encoding: chunked")),
            Just(String::from("Transfer-Encoding: gzip, chunked")),
            Just(String::from("Transfer-Encoding: chunked, gzip")),
            Just(String::from("Connection: close")),
            Just(String::from("Connection: keep-alive, X-Drop")),
            Just(String::from("X-Drop: 1")),
            Just(String::from("Upgrade: websocket")),
            Just(String::from("Keep-Alive: timeout=5")),
            ("[A-Za-z-]{1,12}", "[ -~\t]{0,40}").prop_map(|(n, v)| format!("{n}: {v}")),
            "[ -~]{0,30}",
        ]
    }

    fn head() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(
                prop_oneof![Just(100u16), Just(101), Just(103), 100u16..1000],
                0..3,
            ),
            prop_oneof![
                Just(200u16),
                Just(204),
                Just(304),
                Just(101),
                100u16..1000,
                0u16..100
            ],
            prop_oneof![
                Just("HTTP/1.1"),
                Just("HTTP/1.0"),
                Just("HTTP/2"),
                Just("ICY")
            ],
            "[ -~]{0,20}",
            prop::collection::vec(header_line(), 0..10),
            prop::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(interim, code, version, reason, lines, tail)| {
                let mut out = Vec::new();
                for code in interim {
                    out.extend_from_slice(format!("HTTP/1.1 {code} Info\r\n\r\n").as_bytes());
                }
                out.extend_from_slice(format!("{version} {code} {reason}\r\n").as_bytes());
                for line in lines {
                    out.extend_from_slice(line.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&tail);
                out
            })
    }

    /// Comparable summary of a parse.
    fn outcome(r: &Result<Option<Head>, ForwardError>) -> Option<(u16, Framing, bool, usize)> {
        match r {
            Ok(Some(h)) => Some((
                h.header.status.as_u16(),
                h.framing,
                h.reusable,
                h.header.headers.len(),
            )),
            _ => None,
        }
    }

    /// Feeds `bytes` as the connection would, a piece at a time.
    fn parse_pieces(
        bytes: &[u8],
        cuts: &[usize],
        method: &Method,
        upgrade: bool,
    ) -> (Result<Option<Head>, ForwardError>, BytesMut) {
        let mut buf = BytesMut::new();
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(bytes.len());
        for cut in cuts {
            buf.extend_from_slice(&bytes[at..cut.max(at)]);
            at = cut.max(at);
            match parse_head(&mut buf, method, upgrade) {
                Ok(None) => {
                    assert!(buf.len() <= MAX_HEAD_BYTES);
                    continue;
                }
                done => {
                    // What the connection had read past the head stays.
                    buf.extend_from_slice(&bytes[at..]);
                    return (done, buf);
                }
            }
        }
        (Ok(None), buf)
    }

    fn check_head(
        bytes: &[u8],
        cuts: &[usize],
        method: &Method,
        upgrade: bool,
    ) -> Result<(), TestCaseError> {
        let mut whole = BytesMut::from(bytes);
        let at_once = parse_head(&mut whole, method, upgrade);
        if matches!(at_once, Ok(None)) {
            // Bound: an incomplete head is never held beyond the cap.
            prop_assert!(whole.len() <= MAX_HEAD_BYTES);
        }
        if let Ok(Some(head)) = &at_once {
            prop_assert!(whole.len() <= bytes.len());
            // Hop-by-hop headers never reach the client (101 keeps Upgrade).
            for name in [
                "connection",
                "keep-alive",
                "te",
                "trailer",
                "proxy-authenticate",
            ] {
                if head.header.status.as_u16() != 101 || name != "connection" {
                    prop_assert!(head.header.headers.get(name).is_none(), "{name} passed");
                }
            }
            if head.framing == Framing::Close {
                prop_assert!(!head.reusable);
            }
        }
        let (pieces, rest) = parse_pieces(bytes, cuts, method, upgrade);
        prop_assert_eq!(outcome(&at_once), outcome(&pieces));
        if outcome(&at_once).is_some() {
            prop_assert_eq!(&whole[..], &rest[..]);
        }
        Ok(())
    }

    /// A body in the chunked coding: sizes in either case, extensions,
    /// trailers, and what follows the body.
    fn chunked() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<u8>, Vec<u8>)> {
        (
            prop::collection::vec(
                (
                    prop::collection::vec(any::<u8>(), 1..300),
                    prop::bool::ANY,
                    prop::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?"),
                ),
                0..8,
            ),
            prop::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..3),
            prop::collection::vec(any::<u8>(), 0..20),
        )
            .prop_map(|(chunks, trailers, after)| {
                let mut wire = Vec::new();
                let mut body = Vec::new();
                for (data, upper, ext) in chunks {
                    let size = if upper {
                        format!("{:X}", data.len())
                    } else {
                        format!("{:x}", data.len())
                    };
                    wire.extend_from_slice(size.as_bytes());
                    if let Some(ext) = ext {
                        wire.extend_from_slice(format!(";{ext}").as_bytes());
                    }
                    wire.extend_from_slice(b"\r\n");
                    wire.extend_from_slice(&data);
                    wire.extend_from_slice(b"\r\n");
                    body.push(data);
                }
                wire.extend_from_slice(b"0\r\n");
                for t in trailers {
                    wire.extend_from_slice(t.as_bytes());
                    wire.extend_from_slice(b"\r\n");
                }
                wire.extend_from_slice(b"\r\n");
                (body, wire, after)
            })
    }

    /// Decodes `wire` fed in pieces; the body, whether it ended, what is left.
    fn dechunk(wire: &[u8], cuts: &[usize]) -> (Result<Vec<u8>, ForwardError>, bool, BytesMut) {
        let mut d = Dechunker::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(wire.len());
        let mut at = 0;
        for cut in cuts {
            let cut = cut.max(at);
            buf.extend_from_slice(&wire[at..cut]);
            at = cut;
            let mut out = Vec::new();
            if let Err(e) = d.decode(&mut buf, &mut out) {
                return (Err(e), false, buf);
            }
            // Bound: until the body ends, at most one line is held.
            if !d.done() {
                assert!(buf.len() <= MAX_LINE_BYTES, "{} bytes held", buf.len());
            }
            for piece in out {
                body.extend_from_slice(&piece);
            }
        }
        (Ok(body), d.done(), buf)
    }

    proptest! {
        #[test]
        fn answer_head_random_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            cuts in prop::collection::vec(any::<usize>(), 0..4),
            method in method(),
            upgrade in prop::bool::ANY,
        ) {
            check_head(&bytes, &cuts, &method, upgrade)?;
        }

        #[test]
        fn answer_head_built(
            bytes in head(),
            cuts in prop::collection::vec(any::<usize>(), 0..4),
            method in method(),
            upgrade in prop::bool::ANY,
        ) {
            check_head(&bytes, &cuts, &method, upgrade)?;
        }

        /// Round trip: what was chunked comes back, in any pieces, and the
        /// bytes after the body stay for the next answer.
        #[test]
        fn chunked_round_trip(
            (body, wire, after) in chunked(),
            cuts in prop::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut all = wire.clone();
            all.extend_from_slice(&after);
            let (decoded, done, rest) = dechunk(&all, &cuts);
            prop_assert_eq!(decoded.ok(), Some(body.concat()));
            prop_assert!(done);
            prop_assert_eq!(&rest[..], &after[..]);
        }

        /// Random and mutated chunked bodies: never a panic, the held
        /// bytes stay within one line.
        #[test]
        fn chunked_hostile(
            (_, mut wire, _) in chunked(),
            noise in prop::collection::vec(any::<u8>(), 0..64),
            edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            random in prop::bool::ANY,
            cuts in prop::collection::vec(any::<usize>(), 0..6),
        ) {
            if random {
                wire = noise;
            } else {
                for (at, byte) in edits {
                    if !wire.is_empty() {
                        let at = at % wire.len();
                        wire[at] = byte;
                    }
                }
            }
            let _ = dechunk(&wire, &cuts);
        }
    }
}
