//! Compact JWE with `alg` = `dir` and `enc` = `A256GCM` (RFC 7516), the
//! wrapping python-jose gave the legacy refresh token.
//!
//! Compact form: `b64(header) . "" . b64(iv) . b64(ciphertext) . b64(tag)`;
//! the additional authenticated data is the ASCII of the encoded header.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::TokenError;

/// `{"alg":"dir","enc":"A256GCM"}`, byte for byte as python-jose writes it.
const HEADER_B64: &str = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0";
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Clone)]
pub struct DirA256Gcm {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for DirA256Gcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirA256Gcm(..)")
    }
}

#[derive(serde::Deserialize)]
struct JweHeader {
    alg: String,
    enc: String,
    zip: Option<String>,
    crit: Option<serde_json::Value>,
}

impl DirA256Gcm {
    /// `key` must be exactly 32 bytes.
    pub fn new(key: &[u8]) -> Result<Self, TokenError> {
        let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| TokenError::KeyLength)?;
        Ok(Self { cipher })
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, TokenError> {
        let mut iv = [0u8; IV_LEN];
        getrandom::fill(&mut iv).map_err(|_| TokenError::Random)?;
        let nonce = Nonce::from(iv);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: HEADER_B64.as_bytes(),
                },
            )
            .map_err(|_| TokenError::Malformed)?;
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        Ok(format!(
            "{HEADER_B64}..{}.{}.{}",
            URL_SAFE_NO_PAD.encode(iv),
            URL_SAFE_NO_PAD.encode(ciphertext),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    pub fn decrypt(&self, compact: &str) -> Result<Vec<u8>, TokenError> {
        let mut parts = compact.split('.');
        let (Some(header), Some(key), Some(iv), Some(ciphertext), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let parsed: JweHeader =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        if parsed.alg != "dir" || parsed.enc != "A256GCM" {
            return Err(TokenError::Algorithm);
        }
        if parsed.zip.is_some() || parsed.crit.is_some() || !key.is_empty() {
            return Err(TokenError::Malformed);
        }
        let iv = URL_SAFE_NO_PAD
            .decode(iv)
            .map_err(|_| TokenError::Malformed)?;
        let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| TokenError::Malformed)?;
        let mut sealed = URL_SAFE_NO_PAD
            .decode(ciphertext)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        if tag.len() != TAG_LEN {
            return Err(TokenError::Malformed);
        }
        sealed.extend_from_slice(&tag);
        self.cipher
            .decrypt(
                &Nonce::from(iv),
                Payload {
                    msg: &sealed,
                    aad: header.as_bytes(),
                },
            )
            .map_err(|_| TokenError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"9e25a2588fcee7d21ea15fb1a63d5135";

    #[test]
    fn round_trip() {
        let jwe = DirA256Gcm::new(KEY).unwrap();
        let token = jwe.encrypt(b"hello").unwrap();
        assert!(token.starts_with("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.."));
        assert_eq!(jwe.decrypt(&token).unwrap(), b"hello");
    }

    #[test]
    fn other_key_or_tampering_fails() {
        let jwe = DirA256Gcm::new(KEY).unwrap();
        let other = DirA256Gcm::new(b"00000000000000000000000000000000").unwrap();
        let token = jwe.encrypt(b"hello").unwrap();
        assert!(matches!(other.decrypt(&token), Err(TokenError::Signature)));
        let mut bytes = token.into_bytes();
        let last = bytes.len() - 30;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(jwe.decrypt(&tampered).is_err());
        assert!(jwe.decrypt("a.b.c").is_err());
        assert!(jwe.decrypt("").is_err());
    }

    #[test]
    fn wrong_key_length_is_an_error() {
        assert!(matches!(
            DirA256Gcm::new(b"short"),
            Err(TokenError::KeyLength)
        ));
    }
}

/// Hostile bytes: the compact JWE reader over random and mutated tokens
/// (the long run is `scripts/fuzz.sh`).
#[cfg(test)]
mod prop {
    use proptest::prelude::prop;
    use proptest::prelude::*;

    use super::*;

    const KEY: &[u8; 32] = b"9e25a2588fcee7d21ea15fb1a63d5135";

    /// A token with one of its five parts replaced, dropped or doubled.
    fn mutated(token: &str, part: usize, with: &str, how: u8) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let part = part % parts.len();
        match how % 4 {
            0 => parts[part] = with.to_string(),
            1 => {
                parts.remove(part);
            }
            2 => parts.insert(part, with.to_string()),
            _ => parts[part].push_str(with),
        }
        parts.join(".")
    }

    proptest! {
        /// Round trip: any plaintext comes back; the token is at most
        /// 4/3 of it plus a fixed 100 bytes.
        #[test]
        fn encrypt_decrypt(plain in prop::collection::vec(any::<u8>(), 0..2048)) {
            let jwe = DirA256Gcm::new(KEY).unwrap();
            let token = jwe.encrypt(&plain).unwrap();
            prop_assert!(token.len() <= plain.len() * 4 / 3 + 100);
            prop_assert_eq!(jwe.decrypt(&token).unwrap(), plain);
        }

        /// Random text and mutated tokens: never a panic, and what does
        /// decrypt is the sealed plaintext (no longer than the token).
        #[test]
        fn hostile_tokens(
            plain in prop::collection::vec(any::<u8>(), 0..64),
            part in any::<usize>(),
            with in prop_oneof![
                "[A-Za-z0-9_-]{0,40}",
                Just(String::new()),
                Just(String::from("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwiemlwIjoiREVGIn0")),
                Just(String::from("eyJhbGciOiJub25lIn0")),
                any::<String>(),
            ],
            how in any::<u8>(),
            random in proptest::option::of(any::<String>()),
        ) {
            let jwe = DirA256Gcm::new(KEY).unwrap();
            let token = jwe.encrypt(&plain).unwrap();
            let hostile = random.unwrap_or_else(|| mutated(&token, part, &with, how));
            if let Ok(opened) = jwe.decrypt(&hostile) {
                prop_assert_eq!(&opened, &plain);
                prop_assert!(opened.len() <= hostile.len());
            }
        }
    }
}
