#![allow(dead_code)]
//! Shared helpers for the integration tests; each test binary includes them with `mod common;`.
//!
//! - [`clients`]: running curl, lftp and python3 with a timeout.
//! - [`sshd`]: a real OpenSSH sshd + sftp-server on 127.0.0.1 (upstream for SFTP tests).
//! - [`proxy`]: the proxy in-process on 127.0.0.1:0, test configs, byte helpers.
//! - [`raw`]: a bare control connection for exact reply codes.
//! - [`pki`]: a test CA and the certificates it issues.
//! - [`ftps`]: an FTPS control connection with rustls as the client.
//! - [`http`]: a minimal GET for the admin endpoint.
//! - [`hook`]: an HTTPS auth hook endpoint with answers the test decides.
//! - [`webdav`]: real nginx and Apache WebDAV servers (upstreams for WebDAV tests).
//! - [`source`]: connections from chosen loopback addresses, PASV/EPSV reply parsing.
//! - [`netns`]: network namespaces, veth links and NAT for the NAT lab.

pub mod clients;
pub mod ftps;
pub mod hook;
pub mod http;
pub mod netns;
pub mod pki;
pub mod proxy;
pub mod raw;
pub mod source;
pub mod sshd;
pub mod webdav;
