//! FTP commands with typed arguments (RFC 959 §4.1, RFC 2389, RFC 2428, RFC 3659).
//!
//! Path arguments stay raw bytes: RFC 959 defines pathnames as "a string of
//! characters", RFC 2640 lets clients send UTF-8 or anything else, and the
//! bridge passes them to the upstream unchanged.

use std::fmt;

use bytes::Bytes;

/// The PASS argument; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub Bytes);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// TYPE (RFC 959 §3.1.1): only what a byte-stream store can honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferType {
    /// `A` / `A N`: lines end in CRLF on the wire, LF in storage.
    Ascii,
    /// `I` / `L 8`: bytes unchanged.
    Image,
}

/// EPSV argument (RFC 2428 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsvArg {
    Any,
    /// `EPSV ALL`: from now on only EPSV is allowed.
    All,
    /// A network protocol number: 1 = IPv4, 2 = IPv6.
    Protocol(u16),
}

/// OPTS (RFC 2389 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opts {
    Utf8(bool),
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(Bytes),
    Pass(Password),
    Acct,
    Quit,
    Noop,
    Syst,
    Feat,
    Opts(Opts),
    Pwd,
    Cwd(Bytes),
    Cdup,
    Type(TransferType),
    Mode,
    Stru,
    Pasv,
    Epsv(EpsvArg),
    /// PORT and EPRT (active mode), recognised and refused on this listener.
    Active,
    List(Option<Bytes>),
    Nlst(Option<Bytes>),
    Mlsd(Option<Bytes>),
    Mlst(Option<Bytes>),
    Retr(Bytes),
    Stor(Bytes),
    Appe(Bytes),
    Rest(u64),
    Dele(Bytes),
    Mkd(Bytes),
    Rmd(Bytes),
    Rnfr(Bytes),
    Rnto(Bytes),
    Size(Bytes),
    Mdtm(Bytes),
    Stat(Option<Bytes>),
    Help(Option<Bytes>),
    Abor,
    Allo,
}

impl Command {
    /// The verb, for logs and metrics (never includes arguments).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Acct => "ACCT",
            Command::Quit => "QUIT",
            Command::Noop => "NOOP",
            Command::Syst => "SYST",
            Command::Feat => "FEAT",
            Command::Opts(_) => "OPTS",
            Command::Pwd => "PWD",
            Command::Cwd(_) => "CWD",
            Command::Cdup => "CDUP",
            Command::Type(_) => "TYPE",
            Command::Mode => "MODE",
            Command::Stru => "STRU",
            Command::Pasv => "PASV",
            Command::Epsv(_) => "EPSV",
            Command::Active => "PORT",
            Command::List(_) => "LIST",
            Command::Nlst(_) => "NLST",
            Command::Mlsd(_) => "MLSD",
            Command::Mlst(_) => "MLST",
            Command::Retr(_) => "RETR",
            Command::Stor(_) => "STOR",
            Command::Appe(_) => "APPE",
            Command::Rest(_) => "REST",
            Command::Dele(_) => "DELE",
            Command::Mkd(_) => "MKD",
            Command::Rmd(_) => "RMD",
            Command::Rnfr(_) => "RNFR",
            Command::Rnto(_) => "RNTO",
            Command::Size(_) => "SIZE",
            Command::Mdtm(_) => "MDTM",
            Command::Stat(_) => "STAT",
            Command::Help(_) => "HELP",
            Command::Abor => "ABOR",
            Command::Allo => "ALLO",
        }
    }

    /// Commands allowed before login (RFC 959 §5.4 lists the sequences).
    pub fn allowed_before_login(&self) -> bool {
        matches!(
            self,
            Command::User(_)
                | Command::Pass(_)
                | Command::Acct
                | Command::Quit
                | Command::Noop
                | Command::Syst
                | Command::Feat
                | Command::Opts(_)
                | Command::Help(_)
        )
    }
}
