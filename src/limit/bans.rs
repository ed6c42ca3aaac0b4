//! Brute-force protection: failed logins counted per client IP and per user
//! name within a window; an IP past `max_failed_logins` is banned for
//! `ban_time` (421 at connect, before any password is checked). When one
//! user name collects `max_failed_logins_per_user` failures (a distributed
//! attack on one account), every further IP that fails on it is banned at
//! once; the account itself is never locked, so an attacker cannot lock its
//! owner out. Addresses in `ban_exempt` are never banned; their failures
//! still count against the user name.
//!
//! Times are passed in, so the rules are tested without sleeping. The
//! tables are bounded: past [`MAX_TRACKED`] entries, expired ones are
//! dropped, and if that is not enough the oldest are.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::SecuritySettings;

/// Entries per table (IPs, user names, bans) before pruning.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl Window {
    /// Counts one failure at `now`, starting a new window when the old one ended.
    fn count(&mut self, now: Instant, length: Duration) -> u32 {
        if now.duration_since(self.started) > length {
            *self = Window {
                started: now,
                failures: 0,
            };
        }
        self.failures += 1;
        self.failures
    }
}

#[derive(Default)]
struct State {
    by_ip: HashMap<IpAddr, Window>,
    by_user: HashMap<String, Window>,
    /// Banned addresses and when their ban ends.
    bans: HashMap<IpAddr, Instant>,
}

/// What one failed login led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    Counted,
    /// The address is now banned for this long.
    Banned(Duration),
}

#[derive(Default)]
pub struct LoginGuard {
    state: Mutex<State>,
}

impl LoginGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How much longer `ip` is banned, if it is.
    pub fn banned(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut state = self.lock();
        let until = *state.bans.get(&ip)?;
        if until <= now {
            state.bans.remove(&ip);
            return None;
        }
        Some(until - now)
    }

    /// Counts a failed login of `user` from `ip`.
    pub fn failed(
        &self,
        ip: IpAddr,
        user: &str,
        settings: &SecuritySettings,
        now: Instant,
    ) -> FailureVerdict {
        if settings.max_failed_logins == 0 && settings.max_failed_logins_per_user == 0 {
            return FailureVerdict::Counted;
        }
        let window = settings.failed_login_window;
        let mut state = self.lock();
        let fresh = Window {
            started: now,
            failures: 0,
        };
        prune(&mut state.by_ip, |w| now.duration_since(w.started) > window);
        prune(&mut state.by_user, |w| {
            now.duration_since(w.started) > window
        });
        let user_failures = state
            .by_user
            .entry(user.to_owned())
            .or_insert(fresh)
            .count(now, window);
        if crate::net::cidr::any_contains(&settings.ban_exempt, ip) {
            return FailureVerdict::Counted;
        }
        let ip_failures = state.by_ip.entry(ip).or_insert(fresh).count(now, window);
        let by_ip = settings.max_failed_logins > 0 && ip_failures >= settings.max_failed_logins;
        let by_user = settings.max_failed_logins_per_user > 0
            && user_failures > settings.max_failed_logins_per_user;
        if !(by_ip || by_user) {
            return FailureVerdict::Counted;
        }
        prune(&mut state.bans, |until| *until <= now);
        state.by_ip.remove(&ip);
        state.bans.insert(ip, now + settings.ban_time);
        FailureVerdict::Banned(settings.ban_time)
    }

    /// Ends the bans of addresses in `networks` (a reload that exempts them).
    pub fn lift_bans_of(&self, networks: &[crate::net::Cidr]) {
        if networks.is_empty() {
            return;
        }
        self.lock()
            .bans
            .retain(|ip, _| !crate::net::cidr::any_contains(networks, *ip));
    }

    /// Addresses banned now.
    pub fn banned_count(&self, now: Instant) -> usize {
        self.lock()
            .bans
            .values()
            .filter(|until| **until > now)
            .count()
    }
}

/// Keeps `map` under [`MAX_TRACKED`]: first without the `expired` entries,
/// then, if still full, without an arbitrary half (an attack from that many
/// addresses is beyond what a table per address can answer anyway).
fn prune<K: Hash + Eq, V>(map: &mut HashMap<K, V>, expired: impl Fn(&V) -> bool) {
    if map.len() < MAX_TRACKED {
        return;
    }
    map.retain(|_, value| !expired(value));
    if map.len() >= MAX_TRACKED {
        let mut keep = false;
        map.retain(|_, _| {
            keep = !keep;
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(per_ip: u32, per_user: u32) -> SecuritySettings {
        SecuritySettings {
            max_failed_logins: per_ip,
            max_failed_logins_per_user: per_user,
            failed_login_window: Duration::from_secs(60),
            ban_time: Duration::from_secs(300),
            connection_rate: None,
            password_cache: None,
            ban_exempt: Vec::new(),
        }
    }

    #[test]
    fn exempt_addresses_are_never_banned_but_count_against_the_user() {
        let guard = LoginGuard::default();
        let rules = SecuritySettings {
            ban_exempt: vec!["198.51.100.0/30".parse().unwrap()],
            ..settings(2, 3)
        };
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(
                guard.failed(ip(1), "admin", &rules, t0),
                FailureVerdict::Counted
            );
        }
        assert_eq!(guard.banned(ip(1), t0), None);
        guard.failed(ip(5), "x", &settings(1, 0), t0);
        assert!(guard.banned(ip(5), t0).is_some());
        guard.lift_bans_of(&["198.51.100.4/30".parse().unwrap()]);
        assert_eq!(guard.banned(ip(5), t0), None, "exempted by a reload");
        // The exempt address's failures pushed "admin" past its limit:
        // the next address that fails on it is banned at once.
        assert_eq!(
            guard.failed(ip(9), "admin", &rules, t0),
            FailureVerdict::Banned(Duration::from_secs(300))
        );
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    #[test]
    fn an_address_is_banned_at_the_threshold_and_released_after_the_ban() {
        let guard = LoginGuard::default();
        let rules = settings(3, 0);
        let t0 = Instant::now();
        assert_eq!(
            guard.failed(ip(1), "a", &rules, t0),
            FailureVerdict::Counted
        );
        assert_eq!(
            guard.failed(ip(1), "b", &rules, t0),
            FailureVerdict::Counted
        );
        assert_eq!(
            guard.failed(ip(1), "c", &rules, t0),
            FailureVerdict::Banned(Duration::from_secs(300))
        );
        assert_eq!(guard.banned(ip(1), t0), Some(Duration::from_secs(300)));
        assert_eq!(guard.banned(ip(2), t0), None, "only that address");
        assert_eq!(guard.banned_count(t0), 1);
        let later = t0 + Duration::from_secs(301);
        assert_eq!(guard.banned(ip(1), later), None);
        assert_eq!(guard.banned_count(later), 0);
    }

    #[test]
    fn failures_outside_the_window_start_over() {
        let guard = LoginGuard::default();
        let rules = settings(2, 0);
        let t0 = Instant::now();
        assert_eq!(
            guard.failed(ip(1), "a", &rules, t0),
            FailureVerdict::Counted
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            guard.failed(ip(1), "a", &rules, later),
            FailureVerdict::Counted
        );
        assert!(matches!(
            guard.failed(ip(1), "a", &rules, later),
            FailureVerdict::Banned(_)
        ));
    }

    #[test]
    fn a_user_name_under_attack_bans_each_further_failing_address() {
        let guard = LoginGuard::default();
        let rules = settings(100, 3);
        let t0 = Instant::now();
        for last in 1..=3 {
            assert_eq!(
                guard.failed(ip(last), "ceo", &rules, t0),
                FailureVerdict::Counted
            );
        }
        assert!(matches!(
            guard.failed(ip(4), "ceo", &rules, t0),
            FailureVerdict::Banned(_)
        ));
        assert!(guard.banned(ip(4), t0).is_some());
        assert!(guard.banned(ip(1), t0).is_none(), "earlier addresses stay");
        // Other names are unaffected.
        assert_eq!(
            guard.failed(ip(5), "intern", &rules, t0),
            FailureVerdict::Counted
        );
    }

    #[test]
    fn zero_thresholds_disable_banning() {
        let guard = LoginGuard::default();
        let rules = settings(0, 0);
        let t0 = Instant::now();
        for _ in 0..50 {
            assert_eq!(
                guard.failed(ip(1), "a", &rules, t0),
                FailureVerdict::Counted
            );
        }
        assert!(guard.banned(ip(1), t0).is_none());
    }

    #[test]
    fn the_tables_stay_bounded() {
        let mut map: HashMap<u32, u32> = (0..MAX_TRACKED as u32).map(|k| (k, k)).collect();
        prune(&mut map, |_| false);
        assert!(map.len() < MAX_TRACKED);
    }
}
