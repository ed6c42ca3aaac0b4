//! Verified-credential cache: a login that repeats credentials argon2 has
//! just accepted skips the second verification.
//!
//! argon2id costs ~50 ms of CPU and ~19 MiB per login on purpose, so that a
//! stolen hash is slow to crack. Scripts that log in every minute, or open
//! many sessions at once, pay that cost every time for a password the proxy
//! already knows to be right. SFTPGo calls the same idea "password caching".
//!
//! What is remembered is not the password but an HMAC-SHA256 tag, under a
//! random key that never leaves the process, of the user name, the stored
//! PHC string and the password (each length-prefixed, so no two inputs
//! share an encoding). A login is accepted from the cache only when its tag
//! equals the remembered one, compared in constant time. So:
//! - a wrong password never matches and still costs a full verification;
//! - a changed hash (a reload with a new `password_hash`) never matches,
//!   because the PHC string is part of the tag;
//! - an entry lives `ttl` from the verification that created it (a hit does
//!   not extend it), so argon2 runs again at least that often per user.
//!
//! The cost: for `ttl` after a login, someone who can read the process's
//! memory (key and tag) could test guesses at HMAC speed rather than argon2
//! speed. `password_cache = "off"` removes that window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type Tag = [u8; 32];

/// Users remembered at most; beyond it the oldest entry makes room. Each
/// entry is a user name and 32 bytes, so the cap bounds memory at a few
/// hundred KiB however many users log in.
pub const MAX_ENTRIES: usize = 4096;

struct Entry {
    tag: Tag,
    verified_at: Instant,
}

struct Inner {
    ttl: Option<Duration>,
    by_user: HashMap<String, Entry>,
}

/// Tags of recently verified credentials, one per user.
pub struct CredentialCache {
    /// One HMAC-SHA256 block: the longest key that is used as it is.
    key: [u8; 64],
    inner: Mutex<Inner>,
}

impl CredentialCache {
    /// A cache whose entries live `ttl`; `None` disables it.
    pub fn new(ttl: Option<Duration>) -> Self {
        CredentialCache {
            key: rand::random(),
            inner: Mutex::new(Inner {
                ttl,
                by_user: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the lifetime of entries (a reload); `None` empties the cache.
    pub fn set_ttl(&self, ttl: Option<Duration>) {
        let mut inner = self.lock();
        inner.ttl = ttl;
        if ttl.is_none() {
            inner.by_user.clear();
        }
    }

    fn mac(&self, user: &str, phc: &str, password: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&self.key.into());
        for part in [user.as_bytes(), phc.as_bytes(), password] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// True when argon2 accepted exactly these credentials within the TTL.
    pub fn matches(&self, user: &str, phc: &str, password: &[u8], now: Instant) -> bool {
        let stored = {
            let mut inner = self.lock();
            let Some(ttl) = inner.ttl else {
                return false;
            };
            match inner.by_user.get(user) {
                Some(entry) if now.saturating_duration_since(entry.verified_at) < ttl => {
                    Some(entry.tag)
                }
                Some(_) => {
                    inner.by_user.remove(user);
                    None
                }
                None => None,
            }
        };
        // The MAC is computed outside the lock; verify_slice compares in
        // constant time.
        stored.is_some_and(|tag| self.mac(user, phc, password).verify_slice(&tag).is_ok())
    }

    /// Remembers credentials argon2 has just accepted.
    pub fn remember(&self, user: &str, phc: &str, password: &[u8], now: Instant) {
        let tag: Tag = self.mac(user, phc, password).finalize().into_bytes().into();
        let mut inner = self.lock();
        let Some(ttl) = inner.ttl else {
            return;
        };
        if inner.by_user.len() >= MAX_ENTRIES && !inner.by_user.contains_key(user) {
            inner
                .by_user
                .retain(|_, entry| now.saturating_duration_since(entry.verified_at) < ttl);
            if inner.by_user.len() >= MAX_ENTRIES {
                let oldest = inner
                    .by_user
                    .iter()
                    .min_by_key(|(_, entry)| entry.verified_at)
                    .map(|(name, _)| name.clone());
                if let Some(oldest) = oldest {
                    inner.by_user.remove(&oldest);
                }
            }
        }
        inner.by_user.insert(
            user.to_owned(),
            Entry {
                tag,
                verified_at: now,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_user.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn remembered_credentials_match_and_nothing_else_does() {
        let cache = CredentialCache::new(Some(MINUTE));
        let now = Instant::now();
        assert!(!cache.matches("alice", PHC, b"pw", now), "empty cache");
        cache.remember("alice", PHC, b"pw", now);
        assert!(cache.matches("alice", PHC, b"pw", now));
        assert!(
            !cache.matches("alice", PHC, b"pw2", now),
            "another password"
        );
        assert!(!cache.matches("alice", PHC, b"p", now), "a prefix");
        assert!(!cache.matches("bob", PHC, b"pw", now), "another user");
    }

    #[test]
    fn a_changed_hash_invalidates_the_entry() {
        let cache = CredentialCache::new(Some(MINUTE));
        let now = Instant::now();
        cache.remember("alice", PHC, b"pw", now);
        let rehashed = PHC.replace("aGFzaG", "bmV3aG");
        assert!(!cache.matches("alice", &rehashed, b"pw", now));
    }

    #[test]
    fn length_prefixes_keep_field_boundaries_apart() {
        let cache = CredentialCache::new(Some(MINUTE));
        let now = Instant::now();
        cache.remember("ab", "c", b"d", now);
        // Same bytes overall, split differently.
        assert!(!cache.matches("a", "bc", b"d", now));
    }

    #[test]
    fn entries_expire_after_the_ttl_from_their_verification() {
        let cache = CredentialCache::new(Some(MINUTE));
        let start = Instant::now();
        cache.remember("alice", PHC, b"pw", start);
        assert!(cache.matches("alice", PHC, b"pw", start + MINUTE / 2));
        assert!(!cache.matches("alice", PHC, b"pw", start + MINUTE));
        assert_eq!(cache.len(), 0, "an expired entry is dropped when seen");
    }

    #[test]
    fn a_disabled_cache_remembers_nothing() {
        let cache = CredentialCache::new(None);
        let now = Instant::now();
        cache.remember("alice", PHC, b"pw", now);
        assert!(!cache.matches("alice", PHC, b"pw", now));
        let cache = CredentialCache::new(Some(MINUTE));
        cache.remember("alice", PHC, b"pw", now);
        cache.set_ttl(None);
        cache.set_ttl(Some(MINUTE));
        assert!(
            !cache.matches("alice", PHC, b"pw", now),
            "turning it off empties it"
        );
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_oldest_first() {
        let cache = CredentialCache::new(Some(MINUTE));
        let start = Instant::now();
        for i in 0..MAX_ENTRIES {
            let at = start + Duration::from_millis(i as u64);
            cache.remember(&format!("user{i}"), PHC, b"pw", at);
        }
        let later = start + Duration::from_secs(10);
        cache.remember("newcomer", PHC, b"pw", later);
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(
            !cache.matches("user0", PHC, b"pw", later),
            "the oldest went"
        );
        assert!(cache.matches("user1", PHC, b"pw", later));
        assert!(cache.matches("newcomer", PHC, b"pw", later));
    }
}
