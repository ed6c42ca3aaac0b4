//! The buckets shared between sessions: one set per tenant, one per user,
//! rebuilt on reload.
//!
//! A reload builds a new [`LimitSet`] and bumps its generation; running
//! transfers notice the new generation at their next chunk and switch to
//! the new buckets. A bucket whose settings did not change is carried over
//! as it is, so a reload that touches one tenant does not reset the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::bucket::{ByteBucket, EventBucket};
use crate::config::{DEFAULT_TENANT, DirectionRates, EventRate, RuntimeConfig, TenantConfig};

/// The smallest default burst: a few network round trips' worth.
const MIN_DEFAULT_BURST: u64 = 64 * 1024;

/// A bucket's burst: the tenant's `burst`, or a tenth of a second of its rate.
pub fn burst_for(tenant: &TenantConfig, rate: u64) -> u64 {
    tenant
        .burst
        .unwrap_or_else(|| (rate / 10).max(MIN_DEFAULT_BURST))
}

/// Download and upload buckets for one party (tenant, user or session).
#[derive(Default, Clone)]
pub struct ByteBuckets {
    pub download: Option<Arc<ByteBucket>>,
    pub upload: Option<Arc<ByteBucket>>,
}

impl ByteBuckets {
    /// Buckets for `rates`, reusing those of `previous` whose settings match.
    pub fn build(
        rates: DirectionRates,
        tenant: &TenantConfig,
        previous: Option<&ByteBuckets>,
    ) -> ByteBuckets {
        let one = |rate: Option<u64>, old: Option<&Arc<ByteBucket>>| {
            let rate = rate?;
            let burst = burst_for(tenant, rate);
            match old {
                Some(old) if old.has_settings(rate, burst) => Some(old.clone()),
                _ => Some(Arc::new(ByteBucket::new(rate, burst))),
            }
        };
        ByteBuckets {
            download: one(rates.download, previous.and_then(|p| p.download.as_ref())),
            upload: one(rates.upload, previous.and_then(|p| p.upload.as_ref())),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.download.is_none() && self.upload.is_none()
    }
}

/// An event bucket for `rate`, reusing `previous` when its settings match.
pub fn event_bucket(
    rate: Option<EventRate>,
    previous: Option<&Arc<EventBucket>>,
) -> Option<Arc<EventBucket>> {
    let rate = rate?;
    match previous {
        Some(old) if old.has_settings(rate.per_second, rate.burst) => Some(old.clone()),
        _ => Some(Arc::new(EventBucket::new(rate.per_second, rate.burst))),
    }
}

/// What every session of a tenant shares.
pub struct TenantBuckets {
    pub config: Arc<TenantConfig>,
    pub bytes: ByteBuckets,
    pub commands: Option<Arc<EventBucket>>,
}

/// What every session of one user shares.
pub struct UserBuckets {
    rates: DirectionRates,
    tenant: String,
    pub bytes: ByteBuckets,
}

/// The buckets of one configuration generation.
pub struct LimitSet {
    pub generation: u64,
    tenants: HashMap<String, Arc<TenantBuckets>>,
    /// Users' own rates as configured (`[[users]]`), by name.
    configured_user_rates: HashMap<String, DirectionRates>,
    users: Mutex<HashMap<String, Arc<UserBuckets>>>,
}

impl LimitSet {
    fn build(config: &RuntimeConfig, previous: Option<&LimitSet>) -> LimitSet {
        let mut tenants = HashMap::new();
        for (name, tenant) in &config.tenants {
            let old = previous.and_then(|p| p.tenants.get(name));
            tenants.insert(
                name.clone(),
                Arc::new(TenantBuckets {
                    config: tenant.clone(),
                    bytes: ByteBuckets::build(tenant.rates, tenant, old.map(|o| &o.bytes)),
                    commands: event_bucket(tenant.commands, old.and_then(|o| o.commands.as_ref())),
                }),
            );
        }
        let configured_user_rates = config
            .users
            .values()
            .map(|user| (user.name.clone(), user.effective_rates()))
            .collect();
        // Users' buckets are rebuilt lazily; those still in use carry over.
        let users = previous
            .map(|p| p.users.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default();
        LimitSet {
            generation: previous.map_or(0, |p| p.generation + 1),
            tenants,
            configured_user_rates,
            users: Mutex::new(users),
        }
    }

    /// The tenant's buckets; a tenant removed by a reload falls back to the default one.
    pub fn tenant(&self, name: &str) -> Option<Arc<TenantBuckets>> {
        self.tenants
            .get(name)
            .or_else(|| self.tenants.get(DEFAULT_TENANT))
            .cloned()
    }

    /// The buckets shared by `user`'s sessions. `login_rates` are the user's
    /// rates as known at login, used when the config does not list the user.
    pub fn user(
        &self,
        user: &str,
        tenant: &TenantBuckets,
        login_rates: DirectionRates,
    ) -> Option<Arc<UserBuckets>> {
        let rates = self
            .configured_user_rates
            .get(user)
            .copied()
            .unwrap_or(login_rates);
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if rates == DirectionRates::default() {
            users.remove(user);
            return None;
        }
        let existing = users.get(user);
        if let Some(existing) = existing
            && existing.rates == rates
            && existing.tenant == tenant.config.name
        {
            return Some(existing.clone());
        }
        let buckets = Arc::new(UserBuckets {
            rates,
            tenant: tenant.config.name.clone(),
            bytes: ByteBuckets::build(rates, &tenant.config, existing.map(|e| &e.bytes)),
        });
        // Users whose sessions all ended hold no state worth keeping.
        users.retain(|_, buckets| Arc::strong_count(buckets) > 1);
        users.insert(user.to_owned(), buckets.clone());
        Some(buckets)
    }
}

/// The current [`LimitSet`], swapped on reload.
pub struct Limits {
    current: ArcSwap<LimitSet>,
}

impl Limits {
    pub fn new(config: &RuntimeConfig) -> Limits {
        Limits {
            current: ArcSwap::from_pointee(LimitSet::build(config, None)),
        }
    }

    pub fn current(&self) -> Arc<LimitSet> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Builds the buckets of `config`, keeping those whose settings did not change.
    pub fn apply(&self, config: &RuntimeConfig) {
        let previous = self.current.load_full();
        self.current
            .store(Arc::new(LimitSet::build(config, Some(&previous))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> RuntimeConfig {
        let base = r#"
[[listeners]]
name = "l"
bind = "127.0.0.1:0"
[[upstreams]]
name = "u"
kind = "sftp"
address = "127.0.0.1:22"
host_key = "insecure-accept-any"
auth = "passthrough"
"#;
        crate::config::from_toml(&format!("{base}{toml}"), std::iter::empty()).expect("config")
    }

    #[test]
    fn a_reload_keeps_unchanged_buckets_and_replaces_changed_ones() {
        let limits = Limits::new(&config(
            "[tenants.a]\ndownload_rate = \"1 MiB/s\"\n[tenants.b]\ndownload_rate = \"2 MiB/s\"\n",
        ));
        let before = limits.current();
        let a = before.tenant("a").unwrap().bytes.download.clone().unwrap();
        let b = before.tenant("b").unwrap().bytes.download.clone().unwrap();
        limits.apply(&config(
            "[tenants.a]\ndownload_rate = \"1 MiB/s\"\n[tenants.b]\ndownload_rate = \"3 MiB/s\"\n",
        ));
        let after = limits.current();
        assert_eq!(after.generation, before.generation + 1);
        assert!(Arc::ptr_eq(
            &a,
            after.tenant("a").unwrap().bytes.download.as_ref().unwrap()
        ));
        let b_after = after.tenant("b").unwrap().bytes.download.clone().unwrap();
        assert!(!Arc::ptr_eq(&b, &b_after));
        assert_eq!(b_after.rate(), 3 << 20);
    }

    #[test]
    fn a_removed_tenant_falls_back_to_the_default_one() {
        let limits = Limits::new(&config("[tenants.default]\nupload_rate = \"1 MiB/s\"\n"));
        let set = limits.current();
        let fallback = set.tenant("gone").unwrap();
        assert_eq!(fallback.config.name, DEFAULT_TENANT);
        assert!(fallback.bytes.upload.is_some());
    }

    #[test]
    fn user_buckets_are_shared_while_in_use_and_follow_the_config() {
        let hash = crate::auth::hash_password("x").unwrap();
        let limits = Limits::new(&config(&format!(
            "[tenants.t]\nuser_download_rate = \"1 MiB/s\"\n[[users]]\nname = \"ann\"\ntenant = \"t\"\nupstream = \"u\"\npassword_hash = \"{hash}\"\n"
        )));
        let set = limits.current();
        let tenant = set.tenant("t").unwrap();
        let first = set.user("ann", &tenant, DirectionRates::default()).unwrap();
        let second = set.user("ann", &tenant, DirectionRates::default()).unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "sessions of one user share a bucket"
        );
        assert_eq!(first.bytes.download.as_ref().unwrap().rate(), 1 << 20);
        // A user the config does not list gets the rates known at login.
        let routed = set
            .user(
                "bob",
                &tenant,
                DirectionRates {
                    download: None,
                    upload: Some(4096),
                },
            )
            .unwrap();
        assert_eq!(routed.bytes.upload.as_ref().unwrap().rate(), 4096);
        assert!(
            set.user("carl", &tenant, DirectionRates::default())
                .is_none()
        );
    }
}
