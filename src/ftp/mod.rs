//! The FTP side: RFC 959 with the extensions legacy clients rely on
//! (RFC 2389 FEAT/OPTS, RFC 2428 EPSV, RFC 3659 SIZE/MDTM/REST/MLST/MLSD).
//!
//! Layout: `codec` frames lines and replies, `parse` turns a line into a
//! `command::Command` (pure), `session` runs the state machine with handlers
//! in `login`, `files` and `data`; `passive` (ports shared through the
//! `switchboard`, admitted by `source_policy`, announced by
//! `passive_address`), `dataconn` and `transfer` are the data channel;
//! `listing`, `ascii` and `path` are pure helpers; `reply_map` is the one
//! table from upstream errors to replies.

pub mod ascii;
pub mod codec;
pub mod command;
mod control_socket;
mod control_stream;
mod data;
mod data_stream;
pub mod dataconn;
mod files;
pub mod glob;
pub mod listing;
mod listing_stream;
mod login;
pub mod parse;
#[cfg(test)]
mod parse_tests;
pub mod passive;
pub mod passive_address;
pub mod path;
pub mod refusals;
pub mod reply;
pub mod reply_map;
mod security;
pub mod session;
pub mod source_policy;
mod switchboard;
pub mod transfer;

pub use session::{SessionContext, serve};
