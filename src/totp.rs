//! TOTP (RFC 6238) as authgate hands it out: the key, its `otpauth://` URI
//! and QR code, the check of a code, and the sealed enrolment token that
//! carries a pending key from the start of an enrolment to its confirmation.
//!
//! The parameters are Keycloak's realm OTP policy (`keycloak/authgate-realm.json`):
//! HMAC-SHA1, 6 digits, 30-second steps, one step of look-around. Keycloak
//! uses the UTF-8 bytes of the stored secret as the HMAC key, so the key is
//! a random ASCII string and authenticator apps get its bytes in base32.
//!
//! Imports: `tokens` (the sealed enrolment).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::tokens::DirA256Gcm;

/// Digits of a code (Keycloak's `otpPolicyDigits`).
pub const DIGITS: u8 = 6;
/// Seconds a code lives (Keycloak's `otpPolicyPeriod`).
pub const PERIOD: u64 = 30;
/// Steps before and after the current one that are accepted too
/// (Keycloak's `otpPolicyLookAheadWindow`).
pub const SKEW: u16 = 1;
/// The algorithm's name in `otpauth://` URIs; Keycloak calls it `HmacSHA1`.
pub const ALGORITHM: &str = "SHA1";
/// How long an enrolment may wait for its confirmation.
pub const ENROLMENT_SECONDS: i64 = 600;

/// Length of a key: 32 characters of [A-Za-z0-9], about 190 bits.
const KEY_LEN: usize = 32;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// `typ` of an enrolment token: no other sealed value of the gateway has it.
const ENROLMENT_TYP: &str = "totp-enrolment";

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("no randomness available")]
    Random,
    #[error("TOTP parameters refused: {0}")]
    Parameters(String),
    #[error("QR code: {0}")]
    Qr(String),
    #[error("enrolment token: {0}")]
    Seal(String),
}

/// A TOTP key: the secret Keycloak stores, whose UTF-8 bytes are the HMAC key.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpKey(String);

impl std::fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpKey(***)")
    }
}

impl TotpKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, TotpError> {
        let mut key = String::with_capacity(KEY_LEN);
        let mut bytes = [0u8; 64];
        while key.len() < KEY_LEN {
            getrandom::fill(&mut bytes).map_err(|_| TotpError::Random)?;
            // 248 = 4 × 62: dropping larger bytes keeps every character equally likely.
            for byte in bytes
                .iter()
                .filter(|b| usize::from(**b) < 4 * ALPHABET.len())
            {
                if key.len() == KEY_LEN {
                    break;
                }
                if let Some(letter) = ALPHABET.get(usize::from(*byte) % ALPHABET.len()) {
                    key.push(char::from(*letter));
                }
            }
        }
        Ok(Self(key))
    }

    /// The value Keycloak stores (`secretData.value`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key as authenticator apps take it (base32 of its bytes, no padding).
    pub fn base32(&self) -> String {
        Secret::from(self.0.as_bytes()).to_base32()
    }

    fn totp(&self, issuer: &str, account: &str) -> Result<Totp, TotpError> {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS)
            .with_skew(SKEW)
            .with_step_duration(PERIOD)
            .with_secret(self.0.as_bytes())
            // A colon separates issuer and account in the URI's label.
            .with_issuer(Some(issuer.replace(':', " ")))
            .with_account_name(account.replace(':', " "))
            .build()
            .map_err(|err| TotpError::Parameters(err.to_string()))
    }

    /// `otpauth://totp/<issuer>:<account>?secret=...&issuer=...`
    pub fn uri(&self, issuer: &str, account: &str) -> Result<String, TotpError> {
        self.totp(issuer, account)?
            .to_url()
            .map_err(|err| TotpError::Parameters(err.to_string()))
    }

    /// Whether `code` is the code of `unix_time`'s step or of a step next to it.
    pub fn check(&self, code: &str, unix_time: i64) -> Result<bool, TotpError> {
        let time = u64::try_from(unix_time).unwrap_or_default();
        let code = code.trim();
        if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(false);
        }
        Ok(self.totp("authgate", "check")?.check(code, time).is_some())
    }

    /// The code of `unix_time`'s step (tests, and the examples).
    pub fn code_at(&self, unix_time: i64) -> Result<String, TotpError> {
        let time = u64::try_from(unix_time).unwrap_or_default();
        Ok(self.totp("authgate", "code")?.generate(time).to_string())
    }
}

/// An SVG image of a QR code of `text` (e.g. an `otpauth://` URI).
pub fn qr_svg(text: &str) -> Result<String, TotpError> {
    let code =
        qrcode::QrCode::new(text.as_bytes()).map_err(|err| TotpError::Qr(err.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build())
}

/// What an enrolment token holds.
#[derive(Debug, Serialize, Deserialize)]
struct Enrolment {
    typ: String,
    /// The user's id: a token is good for its own user only.
    sub: i64,
    key: String,
    exp: i64,
}

/// Seals and opens enrolment tokens: compact JWE (`dir`/`A256GCM`) under a
/// key derived from `SECRET_KEY` for this use only, so the client holds the
/// pending key but can neither read nor change it.
#[derive(Debug, Clone)]
pub struct EnrolmentSealer {
    cipher: DirA256Gcm,
}

impl EnrolmentSealer {
    pub fn new(secret_key: &[u8]) -> Result<Self, TotpError> {
        let derived = Sha256::new()
            .chain_update(b"authgate totp enrolment v1\0")
            .chain_update(secret_key)
            .finalize();
        let cipher = DirA256Gcm::new(&derived).map_err(|err| TotpError::Seal(err.to_string()))?;
        Ok(Self { cipher })
    }

    /// A token for `user_id`'s pending `key`, good until `expires_at` (Unix seconds).
    pub fn seal(&self, user_id: i64, key: &TotpKey, expires_at: i64) -> Result<String, TotpError> {
        let claims = Enrolment {
            typ: ENROLMENT_TYP.into(),
            sub: user_id,
            key: key.0.clone(),
            exp: expires_at,
        };
        let plain = serde_json::to_vec(&claims).map_err(|err| TotpError::Seal(err.to_string()))?;
        self.cipher
            .encrypt(&plain)
            .map_err(|err| TotpError::Seal(err.to_string()))
    }

    /// The pending key, if the token is genuine, `user_id`'s and not expired at `now`.
    pub fn open(&self, token: &str, user_id: i64, now: i64) -> Option<TotpKey> {
        let plain = self.cipher.decrypt(token.trim()).ok()?;
        let claims: Enrolment = serde_json::from_slice(&plain).ok()?;
        let valid = claims.typ == ENROLMENT_TYP
            && claims.sub == user_id
            && now < claims.exp
            && claims.key.len() == KEY_LEN
            && claims.key.bytes().all(|b| ALPHABET.contains(&b));
        valid.then_some(TotpKey(claims.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"9e25a2588fcee7d21ea15fb1a63d5135";

    #[test]
    fn keys_are_random_ascii_of_fixed_length() {
        let a = TotpKey::generate().unwrap();
        let b = TotpKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238, appendix B: key "12345678901234567890", 8 digits; the
        // last 6 digits are the 6-digit code.
        let key = TotpKey("12345678901234567890".into());
        assert_eq!(key.code_at(59).unwrap(), "287082");
        assert_eq!(key.code_at(1_111_111_109).unwrap(), "081804");
        assert_eq!(key.code_at(2_000_000_000).unwrap(), "279037");
    }

    #[test]
    fn checks_the_step_and_its_neighbours_only() {
        let key = TotpKey::generate().unwrap();
        let now = 1_800_000_015;
        let code = key.code_at(now).unwrap();
        assert!(key.check(&code, now).unwrap());
        assert!(key.check(&code, now + 30).unwrap());
        assert!(key.check(&code, now - 30).unwrap());
        assert!(!key.check(&code, now + 90).unwrap());
        assert!(!key.check("12345", now).unwrap());
        assert!(!key.check("abcdef", now).unwrap());
        assert!(!key.check("", now).unwrap());
    }

    #[test]
    fn uri_names_issuer_account_and_the_key_in_base32() {
        let key = TotpKey::generate().unwrap();
        let uri = key.uri("Authgate: Test", "ada@example.com").unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&format!("secret={}", key.base32())), "{uri}");
        assert!(
            uri.contains("ada%40example.com") || uri.contains("ada@example.com"),
            "{uri}"
        );
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
    }

    #[test]
    fn enrolment_tokens_are_bound_to_user_and_time() {
        let sealer = EnrolmentSealer::new(SECRET).unwrap();
        let key = TotpKey::generate().unwrap();
        let token = sealer.seal(7, &key, 1000).unwrap();
        assert!(!token.contains(key.expose()));
        assert_eq!(sealer.open(&token, 7, 999), Some(key.clone()));
        assert_eq!(sealer.open(&token, 8, 999), None);
        assert_eq!(sealer.open(&token, 7, 1000), None);
        assert_eq!(sealer.open("nope", 7, 0), None);
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(sealer.open(&forged, 7, 999), None);
        // Another key (another SECRET_KEY) opens nothing.
        let other = EnrolmentSealer::new(b"another secret of thirty-two b!!").unwrap();
        assert_eq!(other.open(&token, 7, 999), None);
        // A refresh token (the same cipher under SECRET_KEY itself) is no enrolment.
        let refresh_cipher = DirA256Gcm::new(SECRET).unwrap();
        let refresh = refresh_cipher
            .encrypt(b"{\"typ\":\"totp-enrolment\"}")
            .unwrap();
        assert_eq!(sealer.open(&refresh, 7, 0), None);
    }
}
