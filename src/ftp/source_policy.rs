//! Which passive data connections belong to a session: the listener's
//! `data_source` rules applied to one session (pure, no I/O).
//!
//! The classic check ("the data connection must come from the control
//! connection's IP") breaks behind cloud NAT, where one client's connections
//! leave through several egress IPs; switching it off lets anyone who finds
//! the port take the transfer. So the rules are any-of:
//!
//! - `same-ip`: the control connection's IP (after PROXY protocol);
//! - `cidr`: the listener's and the user's `data_source_cidrs`;
//! - `tls-session`: any IP, when the connection's TLS handshake resumes a
//!   session issued on this control connection, a proof that the client
//!   holds its secret (only for protected transfers: PROT P at PASV time);
//! - `any`: anything.
//!
//! The same rules decide whether two sessions may wait on one passive port at
//! the same time: only when every connection can be told apart by its source
//! address. A session that may accept any address (`tls-session`, `any`)
//! needs a port of its own while it waits.

use std::net::IpAddr;

use crate::config::DataSourcePolicy;
use crate::net::canonical;
use crate::net::cidr::{Cidr, any_contains};

/// What to do with a data connection from some address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An address rule accepts it.
    Accept,
    /// Only a resumed TLS session can make it acceptable.
    NeedsTlsProof,
    Refuse,
}

/// The rules one waiting session applies to the connections it is offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRules {
    control: IpAddr,
    same_ip: bool,
    /// Empty unless the `cidr` rule is on.
    cidrs: Vec<Cidr>,
    tls_proof: bool,
    any: bool,
}

impl SlotRules {
    /// The rules for a session whose control connection comes from
    /// `control`; `cidrs` are the listener's and the user's networks, and
    /// `protected` says whether its data connections use TLS (PROT P).
    pub fn new(
        policy: DataSourcePolicy,
        control: IpAddr,
        cidrs: impl IntoIterator<Item = Cidr>,
        protected: bool,
    ) -> SlotRules {
        SlotRules {
            control: canonical(control),
            same_ip: policy.same_ip,
            cidrs: if policy.cidr {
                cidrs.into_iter().collect()
            } else {
                Vec::new()
            },
            tls_proof: policy.tls_session && protected,
            any: policy.any,
        }
    }

    pub fn control_ip(&self) -> IpAddr {
        self.control
    }

    /// The verdict on a connection from `source`.
    pub fn judge(&self, source: IpAddr) -> Verdict {
        let source = canonical(source);
        if self.any || (self.same_ip && source == self.control) || any_contains(&self.cidrs, source)
        {
            Verdict::Accept
        } else if self.tls_proof {
            Verdict::NeedsTlsProof
        } else {
            Verdict::Refuse
        }
    }

    /// No connection could ever pass (e.g. only `tls-session` on a clear
    /// session, or only `cidr` with no network for this user).
    pub fn accepts_nothing(&self) -> bool {
        !self.any && !self.same_ip && self.cidrs.is_empty() && !self.tls_proof
    }

    /// Accepts connections from addresses it cannot name in advance.
    pub fn is_wildcard(&self) -> bool {
        self.any || self.tls_proof
    }

    /// Whether this session and `other` may wait on the same port at once:
    /// neither is a wildcard and no address is accepted by both, so the
    /// source address alone says whose connection it is.
    pub fn can_share_port_with(&self, other: &SlotRules) -> bool {
        !self.is_wildcard() && !other.is_wildcard() && !self.overlaps(other)
    }

    fn overlaps(&self, other: &SlotRules) -> bool {
        (self.same_ip && other.same_ip && self.control == other.control)
            || (self.same_ip && any_contains(&other.cidrs, self.control))
            || (other.same_ip && any_contains(&self.cidrs, other.control))
            || self
                .cidrs
                .iter()
                .any(|mine| other.cidrs.iter().any(|theirs| mine.overlaps(theirs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn policy(same_ip: bool, cidr: bool, tls_session: bool, any: bool) -> DataSourcePolicy {
        DataSourcePolicy {
            same_ip,
            cidr,
            tls_session,
            any,
        }
    }

    const SAME_IP: DataSourcePolicy = DataSourcePolicy {
        same_ip: true,
        cidr: false,
        tls_session: false,
        any: false,
    };

    #[test]
    fn same_ip_accepts_only_the_control_address() {
        let rules = SlotRules::new(SAME_IP, ip("198.51.100.7"), [], false);
        assert_eq!(rules.judge(ip("198.51.100.7")), Verdict::Accept);
        assert_eq!(rules.judge(ip("::ffff:198.51.100.7")), Verdict::Accept);
        assert_eq!(rules.judge(ip("198.51.100.8")), Verdict::Refuse);
    }

    #[test]
    fn cidr_accepts_the_listed_egress_networks() {
        let rules = SlotRules::new(
            policy(true, true, false, false),
            ip("20.50.0.1"),
            cidrs(&["20.50.0.0/24", "20.60.0.9"]),
            false,
        );
        assert_eq!(rules.judge(ip("20.50.0.77")), Verdict::Accept);
        assert_eq!(rules.judge(ip("20.60.0.9")), Verdict::Accept);
        assert_eq!(rules.judge(ip("20.60.0.10")), Verdict::Refuse);
    }

    #[test]
    fn cidrs_count_only_when_the_cidr_rule_is_on() {
        let rules = SlotRules::new(SAME_IP, ip("20.50.0.1"), cidrs(&["20.50.0.0/24"]), false);
        assert_eq!(rules.judge(ip("20.50.0.77")), Verdict::Refuse);
    }

    #[test]
    fn tls_session_asks_foreign_addresses_for_proof_on_protected_sessions_only() {
        let both = policy(true, false, true, false);
        let protected = SlotRules::new(both, ip("198.51.100.7"), [], true);
        assert_eq!(protected.judge(ip("198.51.100.7")), Verdict::Accept);
        assert_eq!(protected.judge(ip("203.0.113.1")), Verdict::NeedsTlsProof);
        let clear = SlotRules::new(both, ip("198.51.100.7"), [], false);
        assert_eq!(clear.judge(ip("203.0.113.1")), Verdict::Refuse);
    }

    #[test]
    fn any_accepts_everything() {
        let rules = SlotRules::new(
            policy(false, false, false, true),
            ip("198.51.100.7"),
            [],
            false,
        );
        assert_eq!(rules.judge(ip("203.0.113.1")), Verdict::Accept);
        assert!(rules.is_wildcard());
    }

    #[test]
    fn rules_that_cannot_accept_anything_are_recognised() {
        let tls_only = policy(false, false, true, false);
        assert!(SlotRules::new(tls_only, ip("198.51.100.7"), [], false).accepts_nothing());
        assert!(!SlotRules::new(tls_only, ip("198.51.100.7"), [], true).accepts_nothing());
        let cidr_only = policy(false, true, false, false);
        assert!(SlotRules::new(cidr_only, ip("198.51.100.7"), [], false).accepts_nothing());
        assert!(
            !SlotRules::new(cidr_only, ip("198.51.100.7"), cidrs(&["10.0.0.0/8"]), false)
                .accepts_nothing()
        );
    }

    #[test]
    fn sessions_from_different_addresses_can_share_a_port() {
        let a = SlotRules::new(SAME_IP, ip("198.51.100.7"), [], false);
        let b = SlotRules::new(SAME_IP, ip("198.51.100.8"), [], false);
        assert!(a.can_share_port_with(&b));
        assert!(b.can_share_port_with(&a));
    }

    #[test]
    fn two_sessions_behind_one_nat_address_cannot() {
        let a = SlotRules::new(SAME_IP, ip("198.51.100.7"), [], false);
        let b = SlotRules::new(SAME_IP, ip("::ffff:198.51.100.7"), [], false);
        assert!(!a.can_share_port_with(&b));
    }

    #[test]
    fn overlapping_networks_or_a_control_address_inside_one_prevent_sharing() {
        let with_cidr = policy(true, true, false, false);
        let a = SlotRules::new(with_cidr, ip("20.50.0.1"), cidrs(&["20.50.0.0/24"]), false);
        let b = SlotRules::new(with_cidr, ip("20.60.0.1"), cidrs(&["20.50.0.0/16"]), false);
        assert!(!a.can_share_port_with(&b), "networks overlap");
        let c = SlotRules::new(SAME_IP, ip("20.50.0.9"), [], false);
        assert!(!a.can_share_port_with(&c), "c's address is in a's network");
        assert!(!c.can_share_port_with(&a));
        let d = SlotRules::new(with_cidr, ip("30.0.0.1"), cidrs(&["30.0.0.0/24"]), false);
        assert!(a.can_share_port_with(&d));
    }

    #[test]
    fn wildcard_sessions_need_a_port_of_their_own() {
        let proof = SlotRules::new(
            policy(true, false, true, false),
            ip("198.51.100.7"),
            [],
            true,
        );
        let other = SlotRules::new(SAME_IP, ip("203.0.113.1"), [], false);
        assert!(!proof.can_share_port_with(&other));
        assert!(!other.can_share_port_with(&proof));
    }
}
