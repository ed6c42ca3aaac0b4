//! Password hashes for `[[users]]`: argon2id PHC strings.
//!
//! Verification costs ~50 ms of CPU and ~19 MiB of memory with the default
//! parameters (crates.md §13), so it runs on the blocking pool behind a small
//! semaphore, and an unknown user costs the same as a known one.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use tokio::sync::Semaphore;

use crate::secret::Secret;

/// Verifications running at once; each holds ~19 MiB while it runs.
const CONCURRENT_VERIFICATIONS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// A new argon2id PHC string (random salt, default parameters).
pub fn hash_password(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

/// Checks that `phc` is a PHC string argon2 can verify against.
pub fn validate_hash(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc).map_err(|e| format!("not a PHC password hash: {e}"))?;
    let algorithm = hash.algorithm.as_str();
    if !algorithm.starts_with("argon2") {
        return Err(format!(
            "unsupported algorithm {algorithm:?}; use `ftpbridge hash-password`"
        ));
    }
    Ok(())
}

/// Hash checked for unknown users so that their timing matches known ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        // The parameters match `hash_password`, which is what the timing needs.
        hash_password("ftpbridge-dummy-password").unwrap_or_default()
    })
}

/// Runs password verifications off the async runtime, a few at a time.
#[derive(Clone)]
pub struct PasswordChecker {
    permits: Arc<Semaphore>,
}

impl Default for PasswordChecker {
    fn default() -> Self {
        PasswordChecker {
            permits: Arc::new(Semaphore::new(CONCURRENT_VERIFICATIONS)),
        }
    }
}

impl PasswordChecker {
    /// True when `password` matches `phc`. With `phc = None` (unknown user) a
    /// dummy hash is verified and the answer is always false.
    pub async fn verify(&self, phc: Option<&Secret>, password: &[u8]) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let known = phc.is_some();
        let phc = phc
            .map(|s| s.expose().to_owned())
            .unwrap_or_else(|| dummy_hash().to_owned());
        let password = password.to_vec();
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .map(|hash| Argon2::default().verify_password(&password, &hash).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        known && matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        validate_hash(&phc).unwrap();
        let checker = PasswordChecker::default();
        let secret = Secret::new(phc);
        assert!(checker.verify(Some(&secret), b"correct horse").await);
        assert!(!checker.verify(Some(&secret), b"wrong").await);
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let checker = PasswordChecker::default();
        assert!(!checker.verify(None, b"ftpbridge-dummy-password").await);
    }

    #[test]
    fn malformed_hashes_are_refused() {
        assert!(validate_hash("plaintext").is_err());
        assert!(validate_hash("$5$rounds=5000$salt$hash").is_err());
    }
}
