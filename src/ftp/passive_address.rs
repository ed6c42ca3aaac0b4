//! The address a PASV reply announces (RFC 959 §4.1.2: `h1,h2,h3,h4,p1,p2`).
//!
//! Behind NAT the local address is private and clients that connect to it
//! hang, so a listener announces `passive_address`: `auto` (the address the
//! client reached), a fixed IPv4 address, or a host name. Clients in the
//! networks of a `passive_address_overrides` entry get that entry's address
//! instead (the most specific network wins), so internal and external
//! clients each get one they can reach. EPSV (RFC 2428) announces only a
//! port, so none of this applies to it, nor to IPv6 clients.
//!
//! Host names are resolved when first needed and again after
//! `passive_address_ttl`, not at every PASV: a slow or failing DNS server
//! then costs one lookup per TTL instead of delaying every transfer, and a
//! failed refresh keeps the last good address.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{ListenerConfig, PassiveAddress};
use crate::net::canonical;

/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed refresh, the last good address is used this long before
/// the next attempt (shorter than the TTL when the TTL is long).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// The configured address for a client at `client`: the most specific
/// override whose networks contain it, else the listener's.
pub fn select(listener: &ListenerConfig, client: IpAddr) -> &PassiveAddress {
    listener
        .passive_address_overrides
        .iter()
        .flat_map(|o| o.clients.iter().map(move |net| (net, &o.address)))
        .filter(|(net, _)| net.contains(client))
        .max_by_key(|(net, _)| net.prefix())
        .map(|(_, address)| address)
        .unwrap_or(&listener.passive_address)
}

/// Why no address can be announced.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// `auto` on a connection that reached an IPv6 address.
    #[error("the client reached an IPv6 address; PASV can only announce IPv4")]
    NotIpv4,
    #[error("cannot resolve {host}: {message}")]
    Lookup { host: String, message: String },
}

/// The IPv4 address to announce for `address`; `reached` is the address the
/// client connected to (for `auto`). A client that reached an IPv6 address
/// uses IPv6, and its data port listens there: it gets EPSV only, whatever
/// `passive_address` says.
pub async fn resolve(
    address: &PassiveAddress,
    reached: IpAddr,
    hosts: &HostCache,
    ttl: Duration,
) -> Result<Ipv4Addr, AddressError> {
    let IpAddr::V4(reached) = canonical(reached) else {
        return Err(AddressError::NotIpv4);
    };
    match address {
        PassiveAddress::Auto => Ok(reached),
        PassiveAddress::Ip(ip) => Ok(*ip),
        PassiveAddress::Host(host) => hosts.ipv4(host, ttl).await,
    }
}

type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
/// Resolves a host name (the system resolver, or a fake in tests).
pub type Resolver = Arc<dyn Fn(String) -> LookupFuture + Send + Sync>;

/// Resolved host names with their expiry, per listener.
pub struct HostCache {
    resolver: Resolver,
    entries: Mutex<HashMap<String, Arc<HostEntry>>>,
}

#[derive(Default)]
struct HostEntry {
    /// The last good address and when to look again.
    known: Mutex<Option<(Ipv4Addr, Instant)>>,
    /// Held while looking up, so concurrent PASVs share one lookup.
    lookup: tokio::sync::Mutex<()>,
}

impl HostEntry {
    fn known(&self) -> Option<(Ipv4Addr, Instant)> {
        *self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, ip: Ipv4Addr, refresh_at: Instant) {
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = Some((ip, refresh_at));
    }
}

impl Default for HostCache {
    fn default() -> Self {
        HostCache::with_resolver(Arc::new(|host: String| {
            Box::pin(async move {
                let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
                Ok(addrs.map(|a| a.ip()).collect())
            })
        }))
    }
}

impl HostCache {
    pub fn with_resolver(resolver: Resolver) -> Self {
        HostCache {
            resolver,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The IPv4 address of `host`, looked up at most once per `ttl` (a failed
    /// refresh keeps the previous address).
    pub async fn ipv4(&self, host: &str, ttl: Duration) -> Result<Ipv4Addr, AddressError> {
        let entry = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.entry(host.to_owned()).or_default().clone()
        };
        if let Some((ip, refresh_at)) = entry.known()
            && Instant::now() < refresh_at
        {
            return Ok(ip);
        }
        let _lookup = entry.lookup.lock().await;
        // Someone else may have refreshed it while this one waited.
        let previous = entry.known();
        if let Some((ip, refresh_at)) = previous
            && Instant::now() < refresh_at
        {
            return Ok(ip);
        }
        match self.lookup(host).await {
            Ok(ip) => {
                if previous.is_some_and(|(old, _)| old != ip) {
                    info!(%host, %ip, "passive_address host name now resolves to a new address");
                }
                entry.set(ip, Instant::now() + ttl);
                Ok(ip)
            }
            Err(e) => match previous {
                Some((ip, _)) => {
                    warn!(error = %e, %ip, "keeping the last address of passive_address");
                    entry.set(ip, Instant::now() + ttl.min(RETRY_AFTER_FAILURE));
                    Ok(ip)
                }
                None => Err(e),
            },
        }
    }

    async fn lookup(&self, host: &str) -> Result<Ipv4Addr, AddressError> {
        let error = |message: String| AddressError::Lookup {
            host: host.to_owned(),
            message,
        };
        let addresses = tokio::time::timeout(LOOKUP_TIMEOUT, (self.resolver)(host.to_owned()))
            .await
            .map_err(|_| error(format!("no answer within {LOOKUP_TIMEOUT:?}")))?
            .map_err(|e| error(e.to_string()))?;
        addresses
            .into_iter()
            .find_map(|ip| match canonical(ip) {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .ok_or_else(|| error("it has no IPv4 address".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PassiveAddressOverride;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn listener(address: PassiveAddress, overrides: Vec<PassiveAddressOverride>) -> ListenerConfig {
        let toml = "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n";
        let config = crate::config::from_toml(toml, std::iter::empty()).unwrap();
        let mut listener = (*config.listeners[0]).clone();
        listener.passive_address = address;
        listener.passive_address_overrides = overrides;
        listener
    }

    fn over(clients: &[&str], address: PassiveAddress) -> PassiveAddressOverride {
        PassiveAddressOverride {
            clients: clients.iter().map(|c| c.parse().unwrap()).collect(),
            address,
        }
    }

    fn v4(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn clients_outside_every_override_get_the_listener_s_address() {
        let l = listener(
            PassiveAddress::Ip(v4("203.0.113.10")),
            vec![over(&["10.0.0.0/8"], PassiveAddress::Ip(v4("10.1.2.3")))],
        );
        assert_eq!(
            select(&l, "198.51.100.1".parse().unwrap()),
            &PassiveAddress::Ip(v4("203.0.113.10"))
        );
        assert_eq!(
            select(&l, "10.9.9.9".parse().unwrap()),
            &PassiveAddress::Ip(v4("10.1.2.3"))
        );
    }

    #[test]
    fn the_most_specific_override_wins_whatever_the_order() {
        let l = listener(
            PassiveAddress::Auto,
            vec![
                over(&["10.0.0.0/8"], PassiveAddress::Ip(v4("10.1.2.3"))),
                over(&["192.0.2.0/24", "10.20.0.0/16"], PassiveAddress::Auto),
            ],
        );
        assert_eq!(
            select(&l, "10.20.1.1".parse().unwrap()),
            &PassiveAddress::Auto
        );
        assert_eq!(
            select(&l, "10.21.1.1".parse().unwrap()),
            &PassiveAddress::Ip(v4("10.1.2.3"))
        );
        assert_eq!(
            select(&l, "::ffff:10.21.1.1".parse().unwrap()),
            &PassiveAddress::Ip(v4("10.1.2.3")),
            "IPv4 clients on a dual-stack socket match IPv4 networks"
        );
    }

    #[tokio::test]
    async fn auto_announces_the_address_the_client_reached() {
        let hosts = HostCache::default();
        let ttl = Duration::from_secs(60);
        let reached: IpAddr = "::ffff:192.0.2.5".parse().unwrap();
        assert_eq!(
            resolve(&PassiveAddress::Auto, reached, &hosts, ttl)
                .await
                .unwrap(),
            v4("192.0.2.5")
        );
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        assert!(matches!(
            resolve(&PassiveAddress::Auto, v6, &hosts, ttl).await,
            Err(AddressError::NotIpv4)
        ));
    }

    #[tokio::test]
    async fn a_client_that_reached_an_ipv6_address_gets_epsv_only_whatever_is_configured() {
        let hosts = HostCache::default();
        let ttl = Duration::from_secs(60);
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        for address in [
            PassiveAddress::Ip(v4("198.51.100.1")),
            PassiveAddress::Host("ftp.example.com".into()),
        ] {
            assert!(
                matches!(
                    resolve(&address, v6, &hosts, ttl).await,
                    Err(AddressError::NotIpv4)
                ),
                "{address:?}"
            );
        }
    }

    /// A resolver that answers from a shared list and counts its lookups.
    fn fake(answers: Arc<Mutex<io::Result<Vec<IpAddr>>>>, calls: Arc<AtomicUsize>) -> HostCache {
        HostCache::with_resolver(Arc::new(move |_host| {
            calls.fetch_add(1, Ordering::SeqCst);
            let answer = match &*answers.lock().unwrap() {
                Ok(list) => Ok(list.clone()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            Box::pin(async move { answer })
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn host_names_are_looked_up_once_per_ttl() {
        let answers = Arc::new(Mutex::new(Ok(vec![
            "2001:db8::1".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
        ])));
        let calls = Arc::new(AtomicUsize::new(0));
        let hosts = fake(answers.clone(), calls.clone());
        let ttl = Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(
                hosts.ipv4("ftp.example.com", ttl).await.unwrap(),
                v4("192.0.2.1")
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one lookup for five PASVs");

        *answers.lock().unwrap() = Ok(vec!["192.0.2.2".parse().unwrap()]);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(
            hosts.ipv4("ftp.example.com", ttl).await.unwrap(),
            v4("192.0.2.1")
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            hosts.ipv4("ftp.example.com", ttl).await.unwrap(),
            v4("192.0.2.2")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_last_good_address_and_retries_later() {
        let answers = Arc::new(Mutex::new(Ok(vec!["192.0.2.1".parse().unwrap()])));
        let calls = Arc::new(AtomicUsize::new(0));
        let hosts = fake(answers.clone(), calls.clone());
        let ttl = Duration::from_secs(300);
        hosts.ipv4("h", ttl).await.unwrap();
        *answers.lock().unwrap() = Err(io::Error::other("SERVFAIL"));
        tokio::time::advance(ttl).await;
        assert_eq!(hosts.ipv4("h", ttl).await.unwrap(), v4("192.0.2.1"));
        assert_eq!(hosts.ipv4("h", ttl).await.unwrap(), v4("192.0.2.1"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "no lookup storm while DNS fails"
        );
        *answers.lock().unwrap() = Ok(vec!["192.0.2.9".parse().unwrap()]);
        tokio::time::advance(RETRY_AFTER_FAILURE).await;
        assert_eq!(hosts.ipv4("h", ttl).await.unwrap(), v4("192.0.2.9"));
    }

    #[tokio::test]
    async fn a_name_that_never_resolved_or_has_no_ipv4_is_an_error() {
        let answers = Arc::new(Mutex::new(Err(io::Error::other("NXDOMAIN"))));
        let hosts = fake(answers.clone(), Arc::new(AtomicUsize::new(0)));
        assert!(hosts.ipv4("h", Duration::from_secs(1)).await.is_err());
        *answers.lock().unwrap() = Ok(vec!["2001:db8::1".parse().unwrap()]);
        let err = hosts.ipv4("h", Duration::from_secs(1)).await.unwrap_err();
        assert!(err.to_string().contains("no IPv4"), "{err}");
    }

    #[tokio::test]
    async fn the_system_resolver_knows_localhost() {
        let ip = HostCache::default()
            .ipv4("localhost", Duration::from_secs(1))
            .await
            .unwrap();
        assert!(ip.is_loopback());
    }
}
