//! FTP commands with typed arguments (RFC 959 §4.1, RFC 2389, RFC 2428, RFC 3659).
//!
//! Path arguments stay raw bytes: RFC 959 defines pathnames as "a string of
//! characters", RFC 2640 lets clients send UTF-8 or anything else, and the
//! bridge passes them to the upstream unchanged.

use std::fmt;
use std::net::SocketAddr;

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
    /// `OPTS MLST fact;fact;` (RFC 3659 §7.9): the facts to show, as sent.
    Mlst(Vec<String>),
    Other(String),
}

/// PROT levels (RFC 2228 §3): only C and P exist for TLS (RFC 4217 §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectionLevel {
    Clear,
    Safe,
    Confidential,
    Private,
}

/// SITE subcommands (RFC 959 §4.1.3 leaves SITE to the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    Chmod { mode: u32, path: Bytes },
    Help,
    Other(String),
}

/// A modification time from MFMT or the MDTM set form: seconds since the
/// Unix epoch, UTC (RFC 3659 §2.3 time-val).
pub type Timestamp = i64;

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
    /// PORT (RFC 959) or EPRT (RFC 2428): connect back to this address.
    Port(SocketAddr),
    /// EPRT with a network protocol other than 1 or 2.
    EprtUnsupportedProtocol,
    List(Option<Bytes>),
    Nlst(Option<Bytes>),
    Mlsd(Option<Bytes>),
    Mlst(Option<Bytes>),
    Retr(Bytes),
    Stor(Bytes),
    /// STOU, with the optional name hint some clients send.
    Stou(Option<Bytes>),
    Appe(Bytes),
    Rest(u64),
    Dele(Bytes),
    Mkd(Bytes),
    Rmd(Bytes),
    Rnfr(Bytes),
    Rnto(Bytes),
    Size(Bytes),
    /// MDTM's argument stays raw: whether it is the set form
    /// ("YYYYMMDDHHMMSS path") depends on what exists upstream.
    Mdtm(Bytes),
    /// MFMT YYYYMMDDHHMMSS path (draft-somers-ftp-mfxx).
    Mfmt(Timestamp, Bytes),
    Site(Site),
    /// HOST (RFC 7151), before USER.
    Host(Bytes),
    /// CLNT: the client names itself.
    Clnt,
    /// REIN (RFC 959 §4.1.1): back to the state right after connecting.
    Rein,
    /// AUTH (RFC 2228 §3, RFC 4217 §4): the mechanism, upper-cased.
    Auth(String),
    /// PBSZ (RFC 2228 §3); TLS always uses 0 (RFC 4217 §8).
    Pbsz(u64),
    /// PROT (RFC 2228 §3).
    Prot(ProtectionLevel),
    /// CCC (RFC 2228 §3): clear the control channel.
    Ccc,
    Stat(Option<Bytes>),
    Help(Option<Bytes>),
    Abor,
    /// ALLO with the byte count, when given.
    Allo(Option<u64>),
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
            Command::Port(_) | Command::EprtUnsupportedProtocol => "PORT",
            Command::List(_) => "LIST",
            Command::Nlst(_) => "NLST",
            Command::Mlsd(_) => "MLSD",
            Command::Mlst(_) => "MLST",
            Command::Retr(_) => "RETR",
            Command::Stor(_) => "STOR",
            Command::Stou(_) => "STOU",
            Command::Appe(_) => "APPE",
            Command::Rest(_) => "REST",
            Command::Dele(_) => "DELE",
            Command::Mkd(_) => "MKD",
            Command::Rmd(_) => "RMD",
            Command::Rnfr(_) => "RNFR",
            Command::Rnto(_) => "RNTO",
            Command::Size(_) => "SIZE",
            Command::Mdtm(_) => "MDTM",
            Command::Mfmt(..) => "MFMT",
            Command::Site(_) => "SITE",
            Command::Host(_) => "HOST",
            Command::Clnt => "CLNT",
            Command::Rein => "REIN",
            Command::Auth(_) => "AUTH",
            Command::Pbsz(_) => "PBSZ",
            Command::Prot(_) => "PROT",
            Command::Ccc => "CCC",
            Command::Stat(_) => "STAT",
            Command::Help(_) => "HELP",
            Command::Abor => "ABOR",
            Command::Allo(_) => "ALLO",
        }
    }

    /// Commands that read a whole directory from the upstream, which the
    /// command rate charges more for.
    pub fn is_listing(&self) -> bool {
        matches!(
            self,
            Command::List(_) | Command::Nlst(_) | Command::Mlsd(_) | Command::Stat(Some(_))
        )
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
                | Command::Host(_)
                | Command::Clnt
                | Command::Rein
                | Command::Auth(_)
                | Command::Pbsz(_)
                | Command::Prot(_)
        )
    }
}
