//! The certificate pair being served, and its replacement.
//!
//! The pair (`TLS_CERT_FILE`, `TLS_KEY_FILE`) is read whole and checked
//! before it is served: the chain's PEM certificates (the server's first),
//! a PEM private key the TLS library can sign with, the key matching the
//! first certificate, and that certificate not expired. [`Certificates`]
//! holds the pair in use behind an [`ArcSwap`], and is the handshake's
//! certificate resolver: each new handshake takes the pair current at its
//! start, and connections already open keep theirs (nothing is dropped).
//!
//! [`Certificates::check`] reads the files again and swaps in a new pair
//! only when it passed every check; a broken one (unreadable, unparsable,
//! key not matching, expired) is logged and counted
//! (`authgate_tls_reload_failures_total`), once per content, and the old
//! pair goes on being served. `authgate_tls_certificate_expiry_timestamp_seconds`
//! is the served certificate's expiry.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::metrics::TlsMetrics;

/// Why a certificate pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("{} cannot be read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("{} holds no PEM private key", .0.display())]
    NoKey(PathBuf),
    #[error("the private key cannot be used: {0}")]
    Key(rustls::Error),
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    #[error("the certificate cannot be read: {0}")]
    Certificate(String),
    #[error("the certificate expired at {0}")]
    Expired(String),
}

/// A checked pair, ready to serve.
#[derive(Debug)]
pub struct Pair {
    pub key: Arc<CertifiedKey>,
    /// The first certificate's notAfter, in seconds since the epoch.
    pub not_after: i64,
    /// Its subject, for the log.
    pub subject: String,
}

/// The two files' contents.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Contents {
    fn read(cert_file: &Path, key_file: &Path) -> Result<Self, PairError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| PairError::Unreadable {
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Self {
            cert: read(cert_file)?,
            key: read(key_file)?,
        })
    }

    /// Tells two contents apart without keeping the key's bytes around.
    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update((self.cert.len() as u64).to_be_bytes());
        hash.update(&self.cert);
        hash.update(&self.key);
        hash.finalize().into()
    }
}

/// Checks a pair's PEM texts (`now` in seconds since the epoch); the files
/// are named in the errors.
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    files: (&Path, &Path),
    provider: &CryptoProvider,
    now: i64,
) -> Result<Pair, PairError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| PairError::Certificate(err.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(PairError::NoCertificate(files.0.to_path_buf()));
    };
    let (subject, not_after) = {
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|err| PairError::Certificate(err.to_string()))?;
        let validity = parsed.validity();
        (
            parsed.subject().to_string(),
            (
                validity.not_after.timestamp(),
                validity.not_after.to_string(),
            ),
        )
    };
    if not_after.0 <= now {
        return Err(PairError::Expired(not_after.1));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| PairError::NoKey(files.1.to_path_buf()))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => PairError::KeyMismatch,
        other => PairError::Key(other),
    })?;
    Ok(Pair {
        key: Arc::new(certified),
        not_after: not_after.0,
        subject,
    })
}

/// What the last look at the files found.
struct Seen {
    /// The contents being served.
    served: [u8; 32],
    /// The last contents refused (reported once).
    refused: Option<[u8; 32]>,
}

/// The pair being served; the TLS handshake's certificate resolver.
pub struct Certificates {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    clock: Arc<dyn Clock>,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<Seen>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// What a look at the files did.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// The files hold the pair being served.
    Unchanged,
    /// A new pair is served from now on.
    Replaced,
    /// The files hold a pair that cannot be served; the old one stays.
    Refused,
}

impl Certificates {
    /// Loads the pair the server starts with. An expired certificate is
    /// served (with an error in the log: clients will refuse it, but the
    /// process and its health probes stay up); anything else wrong stops
    /// the start.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
        clock: Arc<dyn Clock>,
        metrics: TlsMetrics,
    ) -> Result<Self, PairError> {
        let contents = Contents::read(cert_file, key_file)?;
        let files = (cert_file, key_file);
        let pair = match parse_pair(
            &contents.cert,
            &contents.key,
            files,
            &provider,
            clock.unix(),
        ) {
            Err(PairError::Expired(when)) => {
                tracing::error!(
                    cert_file = %cert_file.display(),
                    expired = %when,
                    "the TLS certificate has expired: serving it until a valid one replaces it"
                );
                parse_pair(&contents.cert, &contents.key, files, &provider, i64::MIN)?
            }
            other => other?,
        };
        tracing::info!(
            subject = %pair.subject,
            not_after = pair.not_after,
            "TLS certificate loaded"
        );
        metrics.expiry.set(pair.not_after);
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            clock,
            current: ArcSwap::new(pair.key),
            seen: Mutex::new(Seen {
                served: contents.digest(),
                refused: None,
            }),
            metrics,
        })
    }

    /// Looks at the files: a new pair that passes every check replaces the
    /// one served; a broken one is reported (once per content, unless
    /// `asked`: a reload asked for explicitly reports every time) and
    /// changes nothing.
    pub fn check(&self, asked: bool) -> Checked {
        let Ok(mut seen) = self.seen.lock() else {
            return Checked::Unchanged;
        };
        let contents = Contents::read(&self.cert_file, &self.key_file);
        let digest = contents.as_ref().ok().map(Contents::digest);
        if !asked && digest.is_some() {
            if digest == Some(seen.served) {
                return Checked::Unchanged;
            }
            if digest == seen.refused {
                return Checked::Refused;
            }
        }
        let parsed = contents.and_then(|c| {
            parse_pair(
                &c.cert,
                &c.key,
                (&self.cert_file, &self.key_file),
                &self.provider,
                self.clock.unix(),
            )
        });
        match (parsed, digest) {
            (Ok(pair), Some(digest)) => {
                if digest == seen.served {
                    return Checked::Unchanged;
                }
                tracing::info!(
                    subject = %pair.subject,
                    not_after = pair.not_after,
                    "TLS certificate replaced: new connections get the new one"
                );
                self.current.store(pair.key);
                self.metrics.expiry.set(pair.not_after);
                *seen = Seen {
                    served: digest,
                    refused: None,
                };
                Checked::Replaced
            }
            (Err(err), _) => {
                // Unreadable files are reported once until they read again.
                let key = digest.unwrap_or_default();
                if asked || seen.refused != Some(key) {
                    tracing::error!(
                        error = %err,
                        cert_file = %self.cert_file.display(),
                        key_file = %self.key_file.display(),
                        "the new TLS certificate pair is refused: the old one is still served"
                    );
                    self.metrics.reload_failures.inc();
                    seen.refused = Some(key);
                }
                Checked::Refused
            }
            (Ok(_), None) => Checked::Unchanged,
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use prometheus::{IntCounter, IntGauge};

    struct Made {
        cert: String,
        key: String,
        not_after: i64,
    }

    /// A self-signed pair for `name`, valid for `days` from 2030-01-01.
    fn make(name: &str, days: i64) -> Made {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let start = rcgen::date_time_ymd(2030, 1, 1);
        params.not_before = start;
        params.not_after = start + std::time::Duration::from_secs(days as u64 * 86_400);
        let cert = params.self_signed(&key).unwrap();
        Made {
            cert: cert.pem(),
            key: key.serialize_pem(),
            not_after: JAN_2030 + days * 86_400,
        }
    }

    const JAN_2030: i64 = 1_893_456_000;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn metrics() -> TlsMetrics {
        TlsMetrics {
            reload_failures: IntCounter::new("f", "f").unwrap(),
            expiry: IntGauge::new("e", "e").unwrap(),
        }
    }

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new() -> Self {
            let dir = std::env::temp_dir()
                .join(format!("authgate-certs-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).unwrap();
            Self { dir }
        }
        fn cert(&self) -> PathBuf {
            self.dir.join("tls.crt")
        }
        fn key(&self) -> PathBuf {
            self.dir.join("tls.key")
        }
        fn write(&self, cert: &str, key: &str) {
            std::fs::write(self.cert(), cert).unwrap();
            std::fs::write(self.key(), key).unwrap();
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn served(certs: &Certificates) -> Vec<u8> {
        certs.current.load().cert[0].to_vec()
    }

    #[test]
    fn a_pair_is_checked_before_it_is_served() {
        let p = provider();
        let files = (Path::new("c.pem"), Path::new("k.pem"));
        let a = make("a.example", 90);
        let pair = parse_pair(a.cert.as_bytes(), a.key.as_bytes(), files, &p, JAN_2030).unwrap();
        assert_eq!(pair.not_after, a.not_after);
        assert_eq!(pair.subject, "CN=a.example");

        let b = make("b.example", 90);
        let err = parse_pair(a.cert.as_bytes(), b.key.as_bytes(), files, &p, JAN_2030);
        assert!(matches!(err, Err(PairError::KeyMismatch)), "{err:?}");
        let err = parse_pair(b"", a.key.as_bytes(), files, &p, JAN_2030);
        assert!(matches!(err, Err(PairError::NoCertificate(_))), "{err:?}");
        let err = parse_pair(a.cert.as_bytes(), a.cert.as_bytes(), files, &p, JAN_2030);
        assert!(matches!(err, Err(PairError::NoKey(_))), "{err:?}");
        let err = parse_pair(
            a.cert.as_bytes(),
            a.key.as_bytes(),
            files,
            &p,
            a.not_after + 1,
        );
        assert!(matches!(err, Err(PairError::Expired(_))), "{err:?}");
    }

    #[test]
    fn a_new_pair_replaces_the_old_and_a_broken_one_is_refused_once() {
        let dir = Files::new();
        let first = make("first.example", 90);
        dir.write(&first.cert, &first.key);
        let clock = Arc::new(ManualClock::at(JAN_2030 + 86_400));
        let m = metrics();
        let certs = Certificates::load(
            &dir.cert(),
            &dir.key(),
            provider(),
            clock.clone(),
            m.clone(),
        )
        .unwrap();
        let first_der = served(&certs);
        assert_eq!(m.expiry.get(), first.not_after);
        assert_eq!(certs.check(false), Checked::Unchanged);

        // A key that does not match: refused, reported once, old pair kept.
        let other = make("other.example", 90);
        dir.write(&other.cert, &first.key);
        assert_eq!(certs.check(false), Checked::Refused);
        assert_eq!(certs.check(false), Checked::Refused);
        assert_eq!(m.reload_failures.get(), 1);
        assert_eq!(served(&certs), first_der);
        // Asked for (SIGHUP): reported again.
        assert_eq!(certs.check(true), Checked::Refused);
        assert_eq!(m.reload_failures.get(), 2);

        // Missing files: refused, the old pair kept.
        std::fs::remove_file(dir.key()).unwrap();
        assert_eq!(certs.check(false), Checked::Refused);
        assert_eq!(certs.check(false), Checked::Refused);
        assert_eq!(m.reload_failures.get(), 3);

        // A good pair: served from now on.
        let second = make("second.example", 30);
        dir.write(&second.cert, &second.key);
        assert_eq!(certs.check(false), Checked::Replaced);
        assert_ne!(served(&certs), first_der);
        assert_eq!(m.expiry.get(), second.not_after);
        assert_eq!(certs.check(true), Checked::Unchanged);

        // An expired one is refused.
        let expired = make("expired.example", 1);
        dir.write(&expired.cert, &expired.key);
        assert_eq!(certs.check(false), Checked::Refused);
        assert_eq!(m.reload_failures.get(), 4);
        assert_eq!(m.expiry.get(), second.not_after);
    }

    #[test]
    fn an_expired_pair_still_starts_and_a_broken_one_does_not() {
        let dir = Files::new();
        let old = make("old.example", 1);
        dir.write(&old.cert, &old.key);
        let late = Arc::new(ManualClock::at(JAN_2030 + 10 * 86_400));
        let m = metrics();
        assert!(Certificates::load(&dir.cert(), &dir.key(), provider(), late.clone(), m).is_ok());
        dir.write(&old.cert, "not a key");
        let err = Certificates::load(&dir.cert(), &dir.key(), provider(), late, metrics());
        assert!(matches!(err, Err(PairError::NoKey(_))), "{err:?}");
    }
}
