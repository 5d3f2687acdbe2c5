//! Password hashing with Argon2id (PHC strings in the user table).

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Why hashing or checking a password failed (not: the password was wrong).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password is empty.
    #[error("password is empty; put the password in the file, on one line")]
    Empty,
    /// The system supplied no random bytes.
    #[error("failed to read random bytes from the operating system: {0}")]
    Random(getrandom::Error),
    /// Hashing failed (salt generation or parameters).
    #[error("failed to hash password: {0}")]
    Hash(argon2::password_hash::Error),
    /// A stored hash is not an Argon2 PHC string.
    #[error("stored password hash is not a valid argon2 PHC string: {0}")]
    StoredHash(argon2::password_hash::phc::Error),
}

/// Hashes a password with Argon2id, its default (OWASP) cost and a random salt.
///
/// # Errors
///
/// [`PasswordError::Empty`] for an empty password, [`PasswordError::Hash`]
/// when the system cannot supply a salt.
pub fn hash(password: &[u8]) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    let hash: PasswordHash = Argon2::default()
        .hash_password(password)
        .map_err(PasswordError::Hash)?;
    Ok(hash.to_string())
}

/// Whether `password` is the one hashed into `stored` (a PHC string; its own
/// parameters are used).
///
/// # Errors
///
/// [`PasswordError::StoredHash`] when `stored` cannot be parsed.
pub fn verify(password: &[u8], stored: &str) -> Result<bool, PasswordError> {
    let stored = PasswordHash::new(stored).map_err(PasswordError::StoredHash)?;
    Ok(Argon2::default().verify_password(password, &stored).is_ok())
}

/// Checks passwords of accounts that may not exist, taking the same time
/// either way: for an unknown user it verifies against a hash of a random
/// password, so response times do not reveal which usernames exist.
pub struct Verifier {
    decoy: String,
}

impl Verifier {
    /// Creates a verifier with a fresh decoy hash.
    ///
    /// # Errors
    ///
    /// [`PasswordError::Random`] when no random bytes are available.
    pub fn new() -> Result<Self, PasswordError> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(PasswordError::Random)?;
        Ok(Self {
            decoy: hash(&random)?,
        })
    }

    /// Verifies `password` against `stored`, or against the decoy when there
    /// is no stored hash (and then answers `false`).
    ///
    /// # Errors
    ///
    /// [`PasswordError::StoredHash`] when `stored` cannot be parsed.
    pub fn verify(&self, password: &[u8], stored: Option<&str>) -> Result<bool, PasswordError> {
        match stored {
            Some(stored) => verify(password, stored),
            None => verify(password, &self.decoy).map(|_| false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_and_verifies_only_the_same_password() {
        let stored = hash(b"Stethoskop-7").unwrap();

        assert!(stored.starts_with("$argon2id$"));
        assert!(verify(b"Stethoskop-7", &stored).unwrap());
        assert!(!verify(b"stethoskop-7", &stored).unwrap());
    }

    #[test]
    fn same_password_hashes_differently_each_time() {
        assert_ne!(hash(b"x").unwrap(), hash(b"x").unwrap());
    }

    #[test]
    fn empty_password_is_refused() {
        assert!(matches!(hash(b""), Err(PasswordError::Empty)));
    }

    #[test]
    fn unknown_user_never_verifies() {
        let verifier = Verifier::new().unwrap();

        assert!(!verifier.verify(b"", None).unwrap());
        assert!(!verifier.verify(b"anything", None).unwrap());
    }

    #[test]
    fn corrupt_stored_hash_is_an_error() {
        assert!(matches!(
            verify(b"x", "plaintext"),
            Err(PasswordError::StoredHash(_))
        ));
    }
}
