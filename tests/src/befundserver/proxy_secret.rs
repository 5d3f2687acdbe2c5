//! The shared secret that proves a request came through the proxy.
//!
//! The proxy adds the secret header to every request it forwards and strips
//! any client-supplied copy. A host on the lab network that talks to the
//! Befundserver directly does not know the secret, so its identity headers
//! are never believed.

use std::fmt;
use std::path::{Path, PathBuf};

use hyper::HeaderMap;
use hyper::header::HeaderName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Default name of the secret header (the proxy's default too).
pub const DEFAULT_HEADER: &str = "x-befund-proxy-auth";

/// Shortest secret accepted: 16 bytes, so that it cannot be guessed by a
/// host on the lab network that can send requests all day.
const MIN_SECRET_LEN: usize = 16;

/// The expected secret. Only its SHA-256 is kept, and the comparison is of
/// digests in constant time, so neither the secret's bytes nor its length
/// leak through timing.
pub struct ProxySecret {
    header: HeaderName,
    digest: [u8; 32],
}

/// Result of checking a request's secret header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretCheck {
    /// The header carries the secret.
    Valid,
    /// The header is absent.
    Missing,
    /// The header is present but wrong, or present more than once.
    Wrong,
}

/// Why the proxy secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("failed to read proxy secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds too short a secret.
    #[error(
        "proxy secret in {path} is {len} bytes long; put at least {MIN_SECRET_LEN} random bytes \
         there (the same file the proxy is configured with)"
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Length found, after removing surrounding whitespace.
        len: usize,
    },
}

impl ProxySecret {
    /// Reads the secret from `path`; surrounding whitespace (such as the
    /// final newline) is not part of it.
    ///
    /// # Errors
    ///
    /// [`SecretError::Read`] when the file cannot be read,
    /// [`SecretError::TooShort`] when the secret has fewer than 16 bytes.
    pub fn from_file(path: &Path, header: HeaderName) -> Result<Self, SecretError> {
        let contents = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        let secret = contents.trim_ascii();
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                path: path.to_owned(),
                len: secret.len(),
            });
        }
        Ok(Self {
            header,
            digest: Sha256::digest(secret).into(),
        })
    }

    /// Name of the header that carries the secret.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Whether the request carries the secret exactly once.
    pub fn check(&self, headers: &HeaderMap) -> SecretCheck {
        let mut values = headers.get_all(&self.header).iter();
        let Some(value) = values.next() else {
            return SecretCheck::Missing;
        };
        if values.next().is_some() {
            return SecretCheck::Wrong;
        }
        let presented: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        if bool::from(presented.ct_eq(&self.digest)) {
            SecretCheck::Valid
        } else {
            SecretCheck::Wrong
        }
    }
}

impl fmt::Debug for ProxySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySecret")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    const SECRET: &str = "c2f1a8d07be94e3a9b6d5c4e3f2a1b0c";

    fn load(contents: &str) -> Result<ProxySecret, SecretError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy-secret");
        std::fs::write(&path, contents).unwrap();
        ProxySecret::from_file(&path, HeaderName::from_static(DEFAULT_HEADER))
    }

    fn with_header(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(DEFAULT_HEADER, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn secret_file_newline_is_not_part_of_the_secret() {
        let secret = load(&format!("{SECRET}\n")).unwrap();

        assert_eq!(secret.check(&with_header(&[SECRET])), SecretCheck::Valid);
    }

    #[test]
    fn absent_wrong_and_repeated_secrets_are_told_apart() {
        let secret = load(SECRET).unwrap();

        assert_eq!(secret.check(&with_header(&[])), SecretCheck::Missing);
        assert_eq!(
            secret.check(&with_header(&[&SECRET[1..]])),
            SecretCheck::Wrong
        );
        assert_eq!(
            secret.check(&with_header(&[SECRET, SECRET])),
            SecretCheck::Wrong
        );
    }

    #[test]
    fn short_secret_file_is_refused() {
        assert!(matches!(
            load("tooshort\n"),
            Err(SecretError::TooShort { len: 8, .. })
        ));
    }

    #[test]
    fn debug_output_does_not_show_the_secret() {
        let secret = load(SECRET).unwrap();

        assert!(!format!("{secret:?}").contains(SECRET));
    }
}
