//! Password hashes for `[[users]]`: argon2id PHC strings.
//!
//! Verification costs ~50 ms of CPU and ~19 MiB of memory with the default
//! parameters (crates.md §13), so it runs on the blocking pool behind a small
//! semaphore, and an unknown user costs the same as a known one. Credentials
//! verified a moment ago are recognised by [`cache`] without a second run.

pub mod cache;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::Semaphore;

use self::cache::CredentialCache;
use crate::obs::metrics::ResultLabels;
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

/// `result` values of `ftpbridge_password_verifications_total`: argon2 ran
/// and accepted, argon2 ran and refused (unknown users included), or the
/// credential cache accepted without argon2.
pub const VERIFICATION_RESULTS: [&str; 3] = ["ok", "failed", "cached"];

/// Runs password verifications off the async runtime, a few at a time.
#[derive(Clone)]
pub struct PasswordChecker {
    permits: Arc<Semaphore>,
    cache: Arc<CredentialCache>,
    counts: Family<ResultLabels, Counter>,
}

impl Default for PasswordChecker {
    fn default() -> Self {
        PasswordChecker::new(None, Family::default())
    }
}

impl PasswordChecker {
    /// A checker whose cache keeps verified credentials for `cache_ttl`
    /// (`None`: no cache), counting verifications in `counts`.
    pub fn new(cache_ttl: Option<Duration>, counts: Family<ResultLabels, Counter>) -> Self {
        PasswordChecker {
            permits: Arc::new(Semaphore::new(CONCURRENT_VERIFICATIONS)),
            cache: Arc::new(CredentialCache::new(cache_ttl)),
            counts,
        }
    }

    /// Applies a reloaded `[security] password_cache`.
    pub fn set_cache_ttl(&self, ttl: Option<Duration>) {
        self.cache.set_ttl(ttl);
    }

    fn count(&self, result: &'static str) {
        self.counts.get_or_create(&ResultLabels { result }).inc();
    }

    fn cached(&self, user: &str, phc: Option<&Secret>, password: &[u8]) -> bool {
        let hit = phc.is_some_and(|phc| {
            self.cache
                .matches(user, phc.expose(), password, Instant::now())
        });
        if hit {
            self.count("cached");
        }
        hit
    }

    /// True when `password` matches `user`'s `phc`. With `phc = None`
    /// (unknown user) a dummy hash is verified and the answer is always false.
    pub async fn verify(&self, user: &str, phc: Option<&Secret>, password: &[u8]) -> bool {
        if self.cached(user, phc, password) {
            return true;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        // Sessions of one user that log in together queue here behind the
        // first; once it is verified the rest need no argon2 of their own.
        if self.cached(user, phc, password) {
            return true;
        }
        let known = phc.is_some();
        let phc = phc
            .map(|s| s.expose().to_owned())
            .unwrap_or_else(|| dummy_hash().to_owned());
        let owned_password = password.to_vec();
        let checked_phc = phc.clone();
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&checked_phc)
                .map(|hash| {
                    Argon2::default()
                        .verify_password(&owned_password, &hash)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let accepted = known && matched;
        if accepted {
            self.cache.remember(user, &phc, password, Instant::now());
        }
        self.count(if accepted { "ok" } else { "failed" });
        accepted
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
        assert!(checker.verify("u", Some(&secret), b"correct horse").await);
        assert!(!checker.verify("u", Some(&secret), b"wrong").await);
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let checker = PasswordChecker::new(Some(Duration::from_secs(60)), Family::default());
        assert!(!checker.verify("x", None, b"ftpbridge-dummy-password").await);
        assert!(!checker.verify("x", None, b"ftpbridge-dummy-password").await);
    }

    fn count(counts: &Family<ResultLabels, Counter>, result: &'static str) -> u64 {
        counts.get_or_create(&ResultLabels { result }).get()
    }

    #[tokio::test]
    async fn a_repeated_login_skips_argon2_and_a_wrong_password_never_does() {
        let counts = Family::default();
        let checker = PasswordChecker::new(Some(Duration::from_secs(60)), counts.clone());
        let secret = Secret::new(hash_password("correct horse").unwrap());
        assert!(checker.verify("u", Some(&secret), b"correct horse").await);
        assert!(checker.verify("u", Some(&secret), b"correct horse").await);
        assert!(!checker.verify("u", Some(&secret), b"wrong").await);
        assert!(!checker.verify("other", Some(&secret), b"wrong").await);
        assert_eq!(count(&counts, "ok"), 1);
        assert_eq!(count(&counts, "cached"), 1);
        assert_eq!(count(&counts, "failed"), 2);
    }

    #[tokio::test]
    async fn many_logins_of_one_user_at_once_share_few_verifications() {
        let counts = Family::default();
        let checker = PasswordChecker::new(Some(Duration::from_secs(60)), counts.clone());
        let secret = Secret::new(hash_password("pw").unwrap());
        let logins = (0..12).map(|_| {
            let (checker, secret) = (checker.clone(), secret.clone());
            tokio::spawn(async move { checker.verify("u", Some(&secret), b"pw").await })
        });
        for login in logins {
            assert!(login.await.unwrap());
        }
        // At most one per permit ran before the first result was cached.
        assert!(count(&counts, "ok") <= CONCURRENT_VERIFICATIONS as u64);
        assert_eq!(count(&counts, "ok") + count(&counts, "cached"), 12);
    }

    #[tokio::test]
    async fn without_a_cache_every_login_runs_argon2() {
        let counts = Family::default();
        let checker = PasswordChecker::new(None, counts.clone());
        let secret = Secret::new(hash_password("pw").unwrap());
        assert!(checker.verify("u", Some(&secret), b"pw").await);
        assert!(checker.verify("u", Some(&secret), b"pw").await);
        assert_eq!(count(&counts, "ok"), 2);
        assert_eq!(count(&counts, "cached"), 0);
    }

    #[test]
    fn malformed_hashes_are_refused() {
        assert!(validate_hash("plaintext").is_err());
        assert!(validate_hash("$5$rounds=5000$salt$hash").is_err());
    }
}
