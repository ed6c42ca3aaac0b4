//! ftpbridge: legacy FTP clients in front, SFTP storage behind.
//!
//! One FTP session becomes one upstream session; every FTP command becomes
//! one or a few upstream operations. `ftpbridge run` wires [`config`] and
//! [`server::run`]; tests call [`server::run`] directly with listeners bound
//! on port 0.

pub mod admin;
pub mod auth;
pub mod config;
pub mod demo;
pub mod ftp;
pub mod limit;
pub mod net;
pub mod obs;
pub mod reload;
pub mod routing;
pub mod secret;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;

pub use server::{BoundListener, RunOptions, bind_all, run, run_with};
