//! Network values and protocols that are not FTP: IP networks (`cidr`) and
//! the PROXY protocol load balancers speak (`proxy_protocol`).

pub mod cidr;
pub mod proxy_protocol;

pub use cidr::Cidr;

use std::net::IpAddr;

/// IPv4 clients on a dual-stack socket appear as `::ffff:a.b.c.d`; every
/// comparison of client addresses goes through this first.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_addresses_compare_as_ipv4() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(canonical(mapped), IpAddr::from([127, 0, 0, 1]));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
