//! passlib's `pbkdf2_sha256` format: `$pbkdf2-sha256$<rounds>$<salt>$<checksum>`.
//!
//! Salt and checksum use passlib's "adapted base64": the standard alphabet with
//! `.` in place of `+` and no `=` padding. The old service salted every hash
//! with `SECRET_KEY`; such hashes still verify, and [`PasswordHasher::needs_rehash`]
//! tells the caller to replace them after the next successful sign-in.
//!
//! Imports: nothing of the crate.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const PREFIX: &str = "$pbkdf2-sha256$";
const CHECKSUM_LEN: usize = 32;
const SALT_LEN: usize = 16;

const AB64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("stored password is not a pbkdf2-sha256 hash")]
    UnknownFormat,
    #[error("stored password hash is malformed: {0}")]
    Malformed(&'static str),
}

/// A parsed passlib hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pbkdf2Hash {
    pub rounds: u32,
    pub salt: Vec<u8>,
    pub checksum: Vec<u8>,
}

impl Pbkdf2Hash {
    pub fn parse(stored: &str) -> Result<Self, PasswordError> {
        let rest = stored
            .strip_prefix(PREFIX)
            .ok_or(PasswordError::UnknownFormat)?;
        let mut parts = rest.split('$');
        let (Some(rounds), Some(salt), Some(checksum), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PasswordError::Malformed(
                "expected rounds, salt and checksum",
            ));
        };
        let rounds: u32 = rounds
            .parse()
            .map_err(|_| PasswordError::Malformed("rounds is not a number"))?;
        if rounds == 0 {
            return Err(PasswordError::Malformed("rounds is zero"));
        }
        let salt = ab64_decode(salt).ok_or(PasswordError::Malformed("salt"))?;
        let checksum = ab64_decode(checksum).ok_or(PasswordError::Malformed("checksum"))?;
        if checksum.len() != CHECKSUM_LEN {
            return Err(PasswordError::Malformed("checksum length"));
        }
        Ok(Self {
            rounds,
            salt,
            checksum,
        })
    }

    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}{}${}${}",
            self.rounds,
            ab64_encode(&self.salt),
            ab64_encode(&self.checksum)
        )
    }

    /// Salt as standard, padded base64 (the form Keycloak's credential import takes).
    pub fn salt_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.salt)
    }

    /// Checksum as standard, padded base64.
    pub fn checksum_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.checksum)
    }

    fn matches(&self, password: &str) -> bool {
        let derived = derive(password, &self.salt, self.rounds);
        derived.ct_eq(&self.checksum).into()
    }
}

fn ab64_encode(bytes: &[u8]) -> String {
    AB64.encode(bytes).replace('+', ".")
}

fn ab64_decode(text: &str) -> Option<Vec<u8>> {
    AB64.decode(text.replace('.', "+")).ok()
}

fn derive(password: &str, salt: &[u8], rounds: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [0u8; CHECKSUM_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, rounds, &mut out);
    out
}

/// Hashes new passwords and judges stored ones.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    rounds: u32,
    legacy_salt: Vec<u8>,
}

impl PasswordHasher {
    /// `legacy_salt` is the salt the old service used for everyone (`SECRET_KEY`).
    pub fn new(rounds: u32, legacy_salt: &[u8]) -> Self {
        Self {
            rounds,
            legacy_salt: legacy_salt.to_vec(),
        }
    }

    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// A new hash with a random 16-byte salt at the configured rounds.
    pub fn hash(&self, password: &str) -> String {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt);
        self.hash_with_salt(password, &salt)
    }

    pub fn hash_with_salt(&self, password: &str, salt: &[u8]) -> String {
        Pbkdf2Hash {
            rounds: self.rounds,
            salt: salt.to_vec(),
            checksum: derive(password, salt, self.rounds).to_vec(),
        }
        .encode()
    }

    /// Whether `password` matches the stored passlib string.
    pub fn verify(&self, stored: &str, password: &str) -> Result<bool, PasswordError> {
        Ok(Pbkdf2Hash::parse(stored)?.matches(password))
    }

    /// True when the stored hash uses the old shared salt or fewer rounds than
    /// configured (or cannot be parsed at all).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        match Pbkdf2Hash::parse(stored) {
            Ok(hash) => hash.rounds < self.rounds || hash.salt == self.legacy_salt,
            Err(_) => true,
        }
    }

    /// Burns the time of one verification, so that an unknown account answers
    /// as slowly as a known one.
    pub fn waste_time(&self) {
        let _ = derive("", b"authgate-timing-equaliser", self.rounds);
    }
}

fn fill_random(buf: &mut [u8]) {
    // getrandom only fails when the OS has no entropy source at all; uuid's
    // v4 generator (same source) is the fallback so we never hand out a zero salt.
    if getrandom::fill(buf).is_err() {
        for chunk in buf.chunks_mut(16) {
            let bytes = uuid::Uuid::new_v4().into_bytes();
            for (to, from) in chunk.iter_mut().zip(bytes) {
                *to = from;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "9e25a2588fcee7d21ea15fb1a63d5135";
    const HORSE: &str = "$pbkdf2-sha256$29000$OWUyNWEyNTg4ZmNlZTdkMjFlYTE1ZmIxYTYzZDUxMzU$DU9PeUO1hzoh0mj4UhuANqU1DMBjIqApaw88WnW1nBI";
    const RANDOM_SALT: &str =
        "$pbkdf2-sha256$1000$l1JKqdW6t9aas7a2VkrJ2Q$jCXOqvZuAjWEpIqNffCS4jV2VKZ4oaMfrRxcJZyk1EU";

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(2000, SECRET.as_bytes())
    }

    #[test]
    fn verifies_legacy_hash_and_rejects_wrong_password() {
        let h = hasher();
        assert_eq!(h.verify(HORSE, "correct horse battery staple"), Ok(true));
        assert_eq!(h.verify(HORSE, "correct horse battery stapl"), Ok(false));
        assert_eq!(h.verify(RANDOM_SALT, "random-salt-example"), Ok(true));
    }

    #[test]
    fn legacy_salt_is_the_secret() {
        let parsed = Pbkdf2Hash::parse(HORSE).unwrap();
        assert_eq!(parsed.salt, SECRET.as_bytes());
        assert_eq!(parsed.rounds, 29000);
        assert_eq!(parsed.encode(), HORSE);
    }

    #[test]
    fn new_hashes_round_trip_and_use_random_salt() {
        let h = hasher();
        let a = h.hash("P@ssw0rd!");
        let b = h.hash("P@ssw0rd!");
        assert_ne!(a, b);
        assert!(a.starts_with("$pbkdf2-sha256$2000$"));
        assert_eq!(h.verify(&a, "P@ssw0rd!"), Ok(true));
        assert!(!h.needs_rehash(&a));
    }

    #[test]
    fn rehash_on_shared_salt_or_fewer_rounds() {
        let h = hasher();
        assert!(h.needs_rehash(HORSE), "shared salt");
        assert!(h.needs_rehash(RANDOM_SALT), "1000 < 2000 rounds");
        let strong = PasswordHasher::new(500, SECRET.as_bytes());
        assert!(!strong.needs_rehash(RANDOM_SALT));
    }

    #[test]
    fn dot_replaces_plus_in_encoding() {
        // 0xfb 0xef 0xbe encodes to "++++" in standard base64.
        assert_eq!(ab64_encode(&[0xfb, 0xef, 0xbe]), "....");
        assert_eq!(ab64_decode("....").unwrap(), vec![0xfb, 0xef, 0xbe]);
    }

    #[test]
    fn malformed_hashes_are_errors_not_panics() {
        let h = hasher();
        for bad in [
            "",
            "plain",
            "$pbkdf2-sha256$",
            "$pbkdf2-sha256$x$a$b",
            "$pbkdf2-sha256$0$YQ$YQ",
            "$pbkdf2-sha256$10$YQ$YQ",
            "$pbkdf2-sha256$10$!!$YQ",
            "$bcrypt$10$abc",
        ] {
            assert!(h.verify(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn every_legacy_vector_hash_verifies() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/legacy.json")).unwrap();
        let h = hasher();
        for entry in vectors["password_hashes"].as_array().unwrap() {
            let hash = entry["hash"].as_str().unwrap();
            let password = entry["password"].as_str().unwrap();
            assert_eq!(h.verify(hash, password), Ok(true), "{password}");
            assert_eq!(h.verify(hash, &format!("{password}x")), Ok(false));
        }
        let wrong = vectors["wrong_password_for_first_hash"].as_str().unwrap();
        let first = vectors["password_hashes"][0]["hash"].as_str().unwrap();
        assert_eq!(h.verify(first, wrong), Ok(false));
    }
}
