#![allow(dead_code)]
//! Shared helpers for the integration tests; each test binary includes them with `mod common;`.
//!
//! - [`sshd`]: a real OpenSSH sshd + sftp-server on 127.0.0.1 (upstream for SFTP tests).

pub mod sshd;
