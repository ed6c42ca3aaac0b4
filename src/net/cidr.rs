//! IP networks as written in the configuration: `"10.0.0.0/8"`,
//! `"2001:db8::/32"`, or a single address (`"192.0.2.7"`, a /32 or /128).
//!
//! Used for `data_source_cidrs`, `trusted_proxies` and the `clients` of
//! `passive_address_overrides`. Pure values; IPv4 clients seen on a
//! dual-stack socket (`::ffff:a.b.c.d`) match IPv4 networks.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::canonical;

/// One IP network: an address with its host bits clear, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network `ip/prefix`; fails when the prefix is too long for the
    /// family or `ip` has host bits set (a typo such as `10.1.2.3/8` would
    /// otherwise silently mean `10.0.0.0/8`).
    pub fn new(ip: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let ip = canonical(ip);
        let bits = family_bits(ip);
        if prefix > bits {
            return Err(format!("prefix /{prefix} is longer than {bits} bits"));
        }
        let network = mask(ip, prefix);
        if network != ip {
            return Err(format!(
                "{ip}/{prefix} has host bits set; did you mean {network}/{prefix}?"
            ));
        }
        Ok(Cidr { network, prefix })
    }

    /// The network holding exactly `ip`.
    pub fn host(ip: IpAddr) -> Cidr {
        let ip = canonical(ip);
        Cidr {
            network: ip,
            prefix: family_bits(ip),
        }
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        family_bits(ip) == family_bits(self.network) && mask(ip, self.prefix) == self.network
    }

    /// Whether the two networks share an address (for networks, that means
    /// one contains the other).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let ip: IpAddr = address.parse().map_err(|_| {
            format!("{text:?} is not an IP network (e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")")
        })?;
        match prefix {
            None => Ok(Cidr::host(ip)),
            Some(prefix) => {
                let prefix: u8 = prefix
                    .parse()
                    .map_err(|_| format!("{text:?}: {prefix:?} is not a prefix length"))?;
                // An IPv4-mapped IPv6 network is written with a /96+ prefix.
                let prefix = match ip {
                    IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && prefix >= 96 => prefix - 96,
                    _ => prefix,
                };
                Cidr::new(ip, prefix).map_err(|e| format!("{text:?}: {e}"))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether any of `networks` contains `ip`.
pub fn any_contains(networks: &[Cidr], ip: IpAddr) -> bool {
    networks.iter().any(|net| net.contains(ip))
}

fn family_bits(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_and_nothing_else() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("10.0.0.0")));
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("9.255.255.255")));
    }

    #[test]
    fn a_bare_address_is_a_single_host() {
        let host = cidr("192.0.2.7");
        assert_eq!(host.prefix(), 32);
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        assert_eq!(cidr("2001:db8::1").prefix(), 128);
    }

    #[test]
    fn the_zero_prefix_matches_its_whole_family_only() {
        let all_v4 = cidr("0.0.0.0/0");
        assert!(all_v4.contains(ip("203.0.113.9")));
        assert!(!all_v4.contains(ip("2001:db8::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(!cidr("::/0").contains(ip("203.0.113.9")));
    }

    #[test]
    fn ipv6_networks_work_at_odd_prefixes() {
        let net = cidr("2001:db8:8000::/33");
        assert!(net.contains(ip("2001:db8:ffff::1")));
        assert!(!net.contains(ip("2001:db8:7fff::1")));
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_networks() {
        let net = cidr("198.51.100.0/24");
        assert!(net.contains(ip("::ffff:198.51.100.20")));
        assert_eq!(cidr("::ffff:198.51.100.0/120"), net);
    }

    #[test]
    fn host_bits_and_bad_prefixes_are_refused() {
        let err = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
        assert!("ftp.example.com".parse::<Cidr>().is_err());
        assert!("".parse::<Cidr>().is_err());
    }

    #[test]
    fn overlapping_networks_are_recognised() {
        assert!(cidr("10.0.0.0/8").overlaps(&cidr("10.1.0.0/16")));
        assert!(cidr("10.1.0.0/16").overlaps(&cidr("10.0.0.0/8")));
        assert!(!cidr("10.1.0.0/16").overlaps(&cidr("10.2.0.0/16")));
        assert!(!cidr("10.0.0.0/8").overlaps(&cidr("::/0")));
    }

    #[test]
    fn networks_print_as_written() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr(" 2001:db8::/32 ").to_string(), "2001:db8::/32");
    }

    #[test]
    fn lists_match_when_any_network_does() {
        let list = [cidr("10.0.0.0/8"), cidr("192.0.2.7")];
        assert!(any_contains(&list, ip("192.0.2.7")));
        assert!(any_contains(&list, ip("10.9.9.9")));
        assert!(!any_contains(&list, ip("192.0.2.8")));
        assert!(!any_contains(&[], ip("10.9.9.9")));
    }
}
