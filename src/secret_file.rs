//! The key a gateway on the embedded store uses when `SECRET_KEY` is unset:
//! made once from the system's random source and kept in a file readable by
//! its owner only, so tokens stay valid across restarts.
//!
//! Imports: nothing of the crate.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Bytes of randomness in a generated key (32 characters of base64url).
const KEY_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{0} cannot be read: {1}")]
    Read(String, std::io::Error),
    #[error("{0} cannot be written: {1}")]
    Write(String, std::io::Error),
    #[error("{0} does not hold a 32-byte key")]
    Invalid(String),
    #[error("no randomness for a new key: {0}")]
    Random(getrandom::Error),
}

/// The key in `path`, created there (with its folder) when missing.
pub fn load_or_create(path: &Path) -> Result<String, SecretFileError> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim().to_string();
            if key.len() == 32 {
                Ok(key)
            } else {
                Err(SecretFileError::Invalid(name))
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => create(path, &name),
        Err(err) => Err(SecretFileError::Read(name, err)),
    }
}

fn create(path: &Path, name: &str) -> Result<String, SecretFileError> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(SecretFileError::Random)?;
    let key = URL_SAFE_NO_PAD.encode(bytes);
    let write_err = |err| SecretFileError::Write(name.to_string(), err);
    if let Some(folder) = path.parent()
        && !folder.as_os_str().is_empty()
    {
        std::fs::create_dir_all(folder).map_err(write_err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(format!("{key}\n").as_bytes())
                .map_err(write_err)?;
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(path),
        Err(err) => Err(write_err(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_reads_the_same_key() {
        let dir = std::env::temp_dir().join(format!("authgate-key-{}", uuid::Uuid::new_v4()));
        let path = dir.join("nested").join("secret.key");
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(load_or_create(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(SecretFileError::Invalid(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
