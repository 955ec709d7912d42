//! What the TLS tests need: a certificate authority of their own, the
//! gateway's certificate files, TLS clients that say which certificate they
//! were shown and which protocol was chosen, and a raw HTTP/2 client that
//! sends what no well-behaved client would.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::harness::{Options, TempDir};

/// A certificate authority made by the test; the gateway's certificates
/// are signed by it, and the test's clients trust it alone.
pub struct TestCa {
    pub pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, as PEM files would hold them.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate in DER, to recognise it on the wire.
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "authgate test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// A certificate for `localhost` and 127.0.0.1, valid from a day ago
    /// for `days` more days (negative: already expired).
    pub fn leaf(&self, days: i64) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let now = std::time::SystemTime::now();
        let day = Duration::from_secs(86_400);
        params.not_before = (now - 2 * day).into();
        params.not_after = if days >= 0 {
            (now + day * days as u32).into()
        } else {
            (now - day * (-days) as u32).into()
        };
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// The gateway's `TLS_CERT_FILE` and `TLS_KEY_FILE`, replaced the way an
/// operator (or a Kubernetes Secret mount) replaces them: whole files,
/// renamed into place.
pub struct CertFiles {
    dir: TempDir,
}

impl CertFiles {
    pub fn new(leaf: &Leaf) -> Self {
        let files = Self {
            dir: TempDir::new("authgate-tls"),
        };
        files.install(&leaf.cert_pem, &leaf.key_pem);
        files
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    /// Writes both files (each renamed into place).
    pub fn install(&self, cert: &str, key: &str) {
        for (path, text) in [(self.cert(), cert), (self.key(), key)] {
            let fresh = path.with_extension("new");
            std::fs::write(&fresh, text).unwrap();
            std::fs::rename(&fresh, &path).unwrap();
        }
    }

    /// The gateway's settings for these files, trusting `ca`.
    pub fn options(&self, options: Options, ca: &TestCa) -> Options {
        let mut options = options
            .set("TLS_CERT_FILE", &self.cert().display().to_string())
            .set("TLS_KEY_FILE", &self.key().display().to_string());
        options.ca_pem = Some(ca.pem.clone());
        options
    }
}

/// A client configuration trusting `ca` alone, offering `alpn`.
pub fn client_config(ca: &TestCa, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

use tokio_rustls::rustls::pki_types::pem::PemObject;

/// A TLS connection to the gateway at `port` as `localhost`.
pub async fn connect(port: u16, ca: &TestCa, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    try_connect(port, ca, alpn).await.expect("a TLS handshake")
}

pub async fn try_connect(
    port: u16,
    ca: &TestCa,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let connector = TlsConnector::from(client_config(ca, alpn));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The certificate a TLS connection was shown (DER).
pub fn shown(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

/// The protocol the handshake chose.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// Writes an HTTP/1.1 request and reads one answer with a Content-Length
/// body (or up to the close): the status line and the whole text.
pub async fn h1_exchange<S>(stream: &mut S, request: &str) -> (String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|length| body.len() >= length) {
                let status = head.lines().next().unwrap_or_default().to_string();
                return (status, text);
            }
        }
        match tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => {
                let status = text.lines().next().unwrap_or_default().to_string();
                return (status, text);
            }
        }
    }
}

/// An HTTP/2 client connection (the `h2` crate) over TLS with ALPN `h2`.
pub async fn h2_client(
    port: u16,
    ca: &TestCa,
) -> (h2::client::SendRequest<bytes::Bytes>, TlsStreamInfo) {
    let tls = connect(port, ca, &[b"h2"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]), "ALPN chose h2");
    let info = TlsStreamInfo { shown: shown(&tls) };
    let (send, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    (send, info)
}

/// What a TLS connection was shown.
pub struct TlsStreamInfo {
    pub shown: Vec<u8>,
}

/// A whole HTTP/2 answer.
pub struct H2Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// Sends `request` (with `body`, if any) on an HTTP/2 connection and reads
/// the whole answer; `Err` when the stream was reset.
pub async fn h2_send(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    request: http::Request<()>,
    body: Option<&[u8]>,
) -> Result<H2Answer, h2::Error> {
    let mut ready = send.clone().ready().await?;
    let (response, mut stream) = ready.send_request(request, body.is_none())?;
    if let Some(body) = body {
        stream.send_data(bytes::Bytes::copy_from_slice(body), true)?;
    }
    let response = tokio::time::timeout(Duration::from_secs(15), response)
        .await
        .expect("an HTTP/2 answer within 15 s")?;
    let (parts, mut recv) = response.into_parts();
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    Ok(H2Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// What a raw HTTP/2 request got on its stream.
#[derive(Debug, PartialEq, Eq)]
pub enum RawOutcome {
    /// An answer with this status (0: not read).
    Status(u16),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection closed, or nothing came in time.
    Closed,
}

/// One HTTP/2 request written frame by frame: header fields as given
/// (literal, never indexed, never Huffman-coded: any bytes at all), then
/// `data` frames; what the stream got back.
pub async fn raw_h2(
    port: u16,
    ca: &TestCa,
    fields: &[(&[u8], &[u8])],
    data: &[&[u8]],
) -> RawOutcome {
    let mut tls = connect(port, ca, &[b"h2"]).await;
    let mut out = BytesMut::new();
    out.put_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    frame(&mut out, 0x4, 0, 0, &[]);
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00); // literal without indexing, new name
        string(&mut block, name);
        string(&mut block, value);
    }
    let end_stream = if data.is_empty() { 0x1 } else { 0 };
    frame(&mut out, 0x1, 0x4 | end_stream, 1, &block);
    for (i, chunk) in data.iter().enumerate() {
        let last = if i + 1 == data.len() { 0x1 } else { 0 };
        frame(&mut out, 0x0, last, 1, chunk);
    }
    if tls.write_all(&out).await.is_err() {
        return RawOutcome::Closed;
    }
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let kind = buf[3];
            let flags = buf[4];
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            let _ = buf.split_to(9 + len);
            match (kind, stream) {
                (0x4, 0) if flags & 0x1 == 0 => {
                    let mut ack = BytesMut::new();
                    frame(&mut ack, 0x4, 0x1, 0, &[]);
                    let _ = tls.write_all(&ack).await;
                }
                (0x1, 1) => return RawOutcome::Status(status_of(&payload, flags)),
                (0x3, 1) => return RawOutcome::Reset(code(&payload)),
                (0x7, 0) => return RawOutcome::GoAway(code(&payload[4..])),
                _ => {}
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return RawOutcome::Closed,
        }
    }
}

fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.put_u32(stream);
    out.put_slice(payload);
}

/// An HPACK string literal, not Huffman-coded.
fn string(out: &mut Vec<u8>, text: &[u8]) {
    integer(out, text.len(), 7, 0);
    out.extend_from_slice(text);
}

fn integer(out: &mut Vec<u8>, mut value: usize, prefix: u8, flags: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

fn code(payload: &[u8]) -> u32 {
    payload
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The `:status` of an answer's HEADERS frame (its first field, as h2
/// servers write it: from the static table, or a literal of three digits,
/// Huffman-coded or not); 0 when it cannot be read.
fn status_of(payload: &[u8], flags: u8) -> u16 {
    let mut at = 0;
    if flags & 0x8 != 0 {
        at += 1 + usize::from(payload.first().copied().unwrap_or(0)); // padding
    }
    if flags & 0x20 != 0 {
        at += 5; // priority
    }
    let Some(&first) = payload.get(at) else {
        return 0;
    };
    if first & 0x80 != 0 {
        return match first & 0x7f {
            8 => 200,
            9 => 204,
            10 => 206,
            11 => 304,
            12 => 400,
            13 => 404,
            14 => 500,
            _ => 0,
        };
    }
    let name = if first & 0xc0 == 0x40 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&name) {
        return 0;
    }
    let Some(&len_byte) = payload.get(at + 1) else {
        return 0;
    };
    let len = usize::from(len_byte & 0x7f);
    let Some(value) = payload.get(at + 2..at + 2 + len) else {
        return 0;
    };
    let digits = if len_byte & 0x80 != 0 {
        huffman_digits(value)
    } else {
        String::from_utf8_lossy(value).into_owned()
    };
    digits.parse().unwrap_or(0)
}

/// Decodes HPACK Huffman codes of the digits 0-9 (all a status has).
fn huffman_digits(bytes: &[u8]) -> String {
    const CODES: [(u32, u8); 10] = [
        (0b00000, 5),
        (0b00001, 5),
        (0b00010, 5),
        (0b011001, 6),
        (0b011010, 6),
        (0b011011, 6),
        (0b011100, 6),
        (0b011101, 6),
        (0b011110, 6),
        (0b011111, 6),
    ];
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    'next: while at < bits.len() {
        for (digit, (code, len)) in CODES.iter().enumerate() {
            let len = usize::from(*len);
            if at + len > bits.len() {
                break 'next;
            }
            let value = bits[at..at + len]
                .iter()
                .fold(0u32, |v, b| (v << 1) | u32::from(*b));
            if value == *code {
                out.push(char::from(b'0' + digit as u8));
                at += len;
                continue 'next;
            }
        }
        break;
    }
    out
}
