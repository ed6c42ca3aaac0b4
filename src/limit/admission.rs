//! Concurrent sessions per client IP, tenant, user and tenant+IP, and the
//! connection rate per client IP.
//!
//! Counting and checking happen under one lock, so two logins racing for the
//! last slot cannot both get it. Slots are guards: a session that ends for
//! any reason gives its slots back.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{EventRate, TenantConfig};

#[derive(Default)]
struct Counts {
    by_ip: HashMap<IpAddr, usize>,
    by_tenant: HashMap<String, usize>,
    by_user: HashMap<String, usize>,
    by_tenant_ip: HashMap<(String, IpAddr), usize>,
}

fn increment<K: Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    *map.entry(key).or_insert(0) += 1;
}

/// Removes entries that reach zero, so the maps hold only live sessions.
fn decrement<K: Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// Which session limit a login hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionLimit {
    Tenant(usize),
    User(usize),
    TenantIp(usize),
}

impl SessionLimit {
    /// The 421 text for the client.
    pub fn reply_text(&self) -> String {
        match self {
            SessionLimit::Tenant(max) => {
                format!("Too many sessions for your organisation (limit {max}); try again later.")
            }
            SessionLimit::User(max) => {
                format!("Too many sessions for this user (limit {max}); try again later.")
            }
            SessionLimit::TenantIp(max) => {
                format!("Too many sessions from your address (limit {max}); try again later.")
            }
        }
    }

    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionLimit::Tenant(_) => "tenant_sessions",
            SessionLimit::User(_) => "user_sessions",
            SessionLimit::TenantIp(_) => "tenant_ip_sessions",
        }
    }
}

/// The session counts of the whole server.
#[derive(Default)]
pub struct SessionCounts {
    counts: Mutex<Counts>,
}

impl SessionCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for one more session from `ip`, unless `max` are open.
    pub fn enter_ip(self: &Arc<Self>, ip: IpAddr, max: Option<usize>) -> Result<IpSlot, usize> {
        let mut counts = self.lock();
        if let Some(max) = max
            && counts.by_ip.get(&ip).copied().unwrap_or(0) >= max
        {
            return Err(max);
        }
        increment(&mut counts.by_ip, ip);
        Ok(IpSlot {
            counts: self.clone(),
            ip,
        })
    }

    /// A slot for one more logged-in session of `user` in `tenant` from `ip`.
    pub fn enter_login(
        self: &Arc<Self>,
        tenant: &TenantConfig,
        user: &str,
        user_max: Option<usize>,
        ip: IpAddr,
    ) -> Result<LoginSlot, SessionLimit> {
        let mut counts = self.lock();
        let tenant_ip = (tenant.name.clone(), ip);
        let over = |count: Option<&usize>, max: Option<usize>| {
            max.filter(|max| count.copied().unwrap_or(0) >= *max)
        };
        if let Some(max) = over(counts.by_tenant.get(&tenant.name), tenant.max_sessions) {
            return Err(SessionLimit::Tenant(max));
        }
        if let Some(max) = over(counts.by_user.get(user), user_max) {
            return Err(SessionLimit::User(max));
        }
        if let Some(max) = over(
            counts.by_tenant_ip.get(&tenant_ip),
            tenant.max_sessions_per_ip,
        ) {
            return Err(SessionLimit::TenantIp(max));
        }
        increment(&mut counts.by_tenant, tenant.name.clone());
        increment(&mut counts.by_user, user.to_owned());
        increment(&mut counts.by_tenant_ip, tenant_ip);
        Ok(LoginSlot {
            counts: self.clone(),
            tenant: tenant.name.clone(),
            user: user.to_owned(),
            ip,
        })
    }
}

/// One session from one IP; released when dropped.
pub struct IpSlot {
    counts: Arc<SessionCounts>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        decrement(&mut self.counts.lock().by_ip, &self.ip);
    }
}

/// One logged-in session; released when dropped (logout, REIN, session end).
pub struct LoginSlot {
    counts: Arc<SessionCounts>,
    tenant: String,
    user: String,
    ip: IpAddr,
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        decrement(&mut counts.by_tenant, &self.tenant);
        decrement(&mut counts.by_user, &self.user);
        let key = (std::mem::take(&mut self.tenant), self.ip);
        decrement(&mut counts.by_tenant_ip, &key);
    }
}

/// How often the per-IP state is pruned of addresses that are idle again.
const PRUNE_EVERY: u64 = 4096;

struct RateState {
    rate: EventRate,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

/// New connections per client IP (`[security] connections_per_ip_per_second`).
#[derive(Default)]
pub struct ConnectionRate {
    state: ArcSwapOption<RateState>,
}

impl ConnectionRate {
    /// Takes `rate` from a (re)loaded config; an unchanged rate keeps its state.
    pub fn apply(&self, rate: Option<EventRate>) {
        let current = self.state.load();
        if current.as_ref().map(|s| s.rate) == rate {
            return;
        }
        self.state.store(rate.map(|rate| {
            Arc::new(RateState {
                rate,
                limiter: RateLimiter::keyed(
                    Quota::per_second(rate.per_second).allow_burst(rate.burst),
                ),
                checks: AtomicU64::new(0),
            })
        }));
    }

    /// Whether one more connection from `ip` is allowed now.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let Some(state) = self.state.load_full() else {
            return true;
        };
        if state.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            state.limiter.retain_recent();
            state.limiter.shrink_to_fit();
        }
        state.limiter.check_key(&ip).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn tenant(max: Option<usize>, per_ip: Option<usize>) -> TenantConfig {
        TenantConfig {
            max_sessions: max,
            max_sessions_per_ip: per_ip,
            ..TenantConfig::unlimited("t")
        }
    }

    #[test]
    fn ip_slots_count_and_release() {
        let counts = Arc::new(SessionCounts::default());
        let first = counts.enter_ip(ip(1), Some(2)).unwrap();
        let _second = counts.enter_ip(ip(1), Some(2)).unwrap();
        assert_eq!(counts.enter_ip(ip(1), Some(2)).err(), Some(2));
        assert!(
            counts.enter_ip(ip(2), Some(2)).is_ok(),
            "other addresses are separate"
        );
        drop(first);
        assert!(counts.enter_ip(ip(1), Some(2)).is_ok());
    }

    #[test]
    fn login_slots_check_tenant_user_and_address() {
        let counts = Arc::new(SessionCounts::default());
        let t = tenant(Some(3), Some(2));
        let a = counts.enter_login(&t, "ann", Some(1), ip(1)).unwrap();
        assert_eq!(
            counts.enter_login(&t, "ann", Some(1), ip(2)).err(),
            Some(SessionLimit::User(1))
        );
        let _b = counts.enter_login(&t, "bob", None, ip(1)).unwrap();
        assert_eq!(
            counts.enter_login(&t, "cat", None, ip(1)).err(),
            Some(SessionLimit::TenantIp(2))
        );
        let _c = counts.enter_login(&t, "cat", None, ip(2)).unwrap();
        assert_eq!(
            counts.enter_login(&t, "dan", None, ip(3)).err(),
            Some(SessionLimit::Tenant(3))
        );
        drop(a);
        assert!(counts.enter_login(&t, "dan", None, ip(3)).is_ok());
        assert!(
            !counts.lock().by_user.contains_key("ann"),
            "released entries are removed"
        );
    }

    #[test]
    fn the_connection_rate_is_per_address() {
        let rate = ConnectionRate::default();
        assert!(rate.allow(ip(1)), "no limit configured");
        rate.apply(Some(EventRate {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        }));
        assert!(rate.allow(ip(1)));
        assert!(rate.allow(ip(1)));
        assert!(!rate.allow(ip(1)), "the burst is spent");
        assert!(rate.allow(ip(2)));
        rate.apply(None);
        assert!(rate.allow(ip(1)));
    }
}
