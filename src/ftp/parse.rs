//! The command parser: one control line in, one [`Command`] out. Pure.
//!
//! RFC 959 §5.3.1: "The command codes themselves are alphabetic characters
//! terminated by the character <SP> (Space) if parameters follow and
//! Telnet-EOL otherwise. [...] upper and lower case alphabetic characters are
//! to be treated identically."

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;

use super::command::{
    Command, EpsvArg, Opts, Password, ProtectionLevel, Site, Timestamp, TransferType,
};

/// Why a line is not an acceptable command; each maps to one reply code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a command at all (500).
    #[error("syntax error, command unrecognized")]
    Syntax,
    /// A well-formed verb we do not implement (502).
    #[error("command {0} not implemented")]
    NotImplemented(String),
    /// Argument missing or malformed (501).
    #[error("{0}")]
    BadArgument(&'static str),
    /// Argument understood but not supported (504).
    #[error("{0}")]
    UnsupportedParameter(&'static str),
    /// EPSV with a network protocol we do not speak (522, RFC 2428 §3).
    #[error("network protocol not supported, use (1,2)")]
    UnsupportedNetworkProtocol,
}

/// Parses one control line without its line terminator.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], Some(&line[space + 1..])),
        None => (line, None),
    };
    if verb.is_empty() || verb.len() > 4 || !verb.iter().all(u8::is_ascii_alphabetic) {
        return Err(ParseError::Syntax);
    }
    let verb = verb.to_ascii_uppercase();
    // "CWD " with nothing after the space carries no argument either.
    let arg = arg.filter(|a| !a.is_empty());
    let path = || required(arg);

    let command = match verb.as_slice() {
        b"USER" => Command::User(required(arg)?),
        // An empty password is legal (RFC 959 §4.1.1 allows PASS with any string).
        b"PASS" => Command::Pass(Password(Bytes::copy_from_slice(arg.unwrap_or_default()))),
        b"ACCT" => Command::Acct,
        b"QUIT" => Command::Quit,
        b"NOOP" => Command::Noop,
        b"SYST" => Command::Syst,
        b"FEAT" => Command::Feat,
        b"OPTS" => Command::Opts(parse_opts(arg)?),
        b"PWD" | b"XPWD" => Command::Pwd,
        b"CWD" | b"XCWD" => Command::Cwd(path()?),
        b"CDUP" | b"XCUP" => Command::Cdup,
        b"TYPE" => Command::Type(parse_type(arg)?),
        b"MODE" => parse_single_letter(arg, b'S', "only stream mode (S) is supported")
            .map(|()| Command::Mode)?,
        b"STRU" => parse_single_letter(arg, b'F', "only file structure (F) is supported")
            .map(|()| Command::Stru)?,
        b"PASV" => Command::Pasv,
        b"EPSV" => Command::Epsv(parse_epsv(arg)?),
        b"PORT" => Command::Port(parse_port(arg)?),
        b"EPRT" => parse_eprt(arg)?,
        b"LIST" => Command::List(list_path(arg)),
        b"NLST" => Command::Nlst(list_path(arg)),
        b"MLSD" => Command::Mlsd(optional(arg)),
        b"MLST" => Command::Mlst(optional(arg)),
        b"RETR" => Command::Retr(path()?),
        b"STOR" => Command::Stor(path()?),
        b"STOU" => Command::Stou(optional(arg)),
        b"APPE" => Command::Appe(path()?),
        b"REST" => Command::Rest(parse_rest(arg)?),
        b"DELE" => Command::Dele(path()?),
        b"MKD" | b"XMKD" => Command::Mkd(path()?),
        b"RMD" | b"XRMD" => Command::Rmd(path()?),
        b"RNFR" => Command::Rnfr(path()?),
        b"RNTO" => Command::Rnto(path()?),
        b"SIZE" => Command::Size(path()?),
        b"MDTM" => Command::Mdtm(path()?),
        b"MFMT" => parse_mfmt(arg)?,
        b"SITE" => Command::Site(parse_site(arg)?),
        b"HOST" => Command::Host(required(arg)?),
        b"CLNT" => Command::Clnt,
        b"REIN" => Command::Rein,
        b"AUTH" => {
            Command::Auth(ascii_arg(arg).ok_or(ParseError::BadArgument("AUTH needs a mechanism"))?)
        }
        b"PBSZ" => Command::Pbsz(
            std::str::from_utf8(required(arg)?.as_ref())
                .ok()
                .and_then(|n| n.trim().parse().ok())
                .ok_or(ParseError::BadArgument("PBSZ takes a decimal buffer size"))?,
        ),
        b"PROT" => Command::Prot(parse_prot(arg)?),
        b"CCC" => Command::Ccc,
        b"STAT" => Command::Stat(optional(arg)),
        b"HELP" => Command::Help(optional(arg)),
        b"ABOR" => Command::Abor,
        b"ALLO" => Command::Allo(parse_allo(arg)?),
        _ => {
            return Err(ParseError::NotImplemented(
                String::from_utf8_lossy(&verb).into_owned(),
            ));
        }
    };
    Ok(command)
}

fn required(arg: Option<&[u8]>) -> Result<Bytes, ParseError> {
    arg.map(Bytes::copy_from_slice)
        .ok_or(ParseError::BadArgument("argument required"))
}

fn optional(arg: Option<&[u8]>) -> Option<Bytes> {
    arg.map(Bytes::copy_from_slice)
}

/// LIST and NLST: clients send `ls` options (`-la`, `-a`, `-l`) that FTP
/// never defined. Drop leading option words, keep the rest as the path.
fn list_path(arg: Option<&[u8]>) -> Option<Bytes> {
    let mut rest = arg?;
    while rest.first() == Some(&b'-') {
        match rest.iter().position(|&b| b == b' ') {
            Some(space) => rest = &rest[space + 1..],
            None => return None,
        }
    }
    (!rest.is_empty()).then(|| Bytes::copy_from_slice(rest))
}

fn ascii_arg(arg: Option<&[u8]>) -> Option<String> {
    arg.map(|a| String::from_utf8_lossy(a).trim().to_ascii_uppercase())
}

/// RFC 959 §4.1.2: "TYPE A N" (default format), "TYPE I", "TYPE L 8".
fn parse_type(arg: Option<&[u8]>) -> Result<TransferType, ParseError> {
    let arg = ascii_arg(arg).ok_or(ParseError::BadArgument("TYPE needs an argument"))?;
    let words: Vec<&str> = arg.split_whitespace().collect();
    match words.as_slice() {
        ["A"] | ["A", "N"] => Ok(TransferType::Ascii),
        ["I"] | ["L", "8"] => Ok(TransferType::Image),
        ["A", _] | ["E"] | ["E", _] | ["L", _] => Err(ParseError::UnsupportedParameter(
            "only TYPE A (non-print) and TYPE I are supported",
        )),
        _ => Err(ParseError::BadArgument("unknown TYPE")),
    }
}

fn parse_single_letter(
    arg: Option<&[u8]>,
    supported: u8,
    unsupported: &'static str,
) -> Result<(), ParseError> {
    match arg.map(|a| a.trim_ascii()) {
        Some([letter]) if letter.to_ascii_uppercase() == supported => Ok(()),
        Some([letter]) if letter.is_ascii_alphabetic() => {
            Err(ParseError::UnsupportedParameter(unsupported))
        }
        _ => Err(ParseError::BadArgument("a single letter is expected")),
    }
}

/// RFC 2428 §3: "EPSV<space><net-prt>" or "EPSV<space>ALL".
fn parse_epsv(arg: Option<&[u8]>) -> Result<EpsvArg, ParseError> {
    let Some(arg) = ascii_arg(arg) else {
        return Ok(EpsvArg::Any);
    };
    if arg == "ALL" {
        return Ok(EpsvArg::All);
    }
    match arg.parse::<u16>() {
        Ok(protocol @ (1 | 2)) => Ok(EpsvArg::Protocol(protocol)),
        Ok(_) => Err(ParseError::UnsupportedNetworkProtocol),
        Err(_) => Err(ParseError::BadArgument("EPSV takes ALL, 1 or 2")),
    }
}

/// RFC 3659 §5.2: in stream mode the REST marker is a decimal byte offset.
fn parse_rest(arg: Option<&[u8]>) -> Result<u64, ParseError> {
    let arg = arg.ok_or(ParseError::BadArgument("REST needs a byte offset"))?;
    let text = std::str::from_utf8(arg.trim_ascii())
        .map_err(|_| ParseError::BadArgument("REST needs a byte offset"))?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadArgument("REST needs a decimal byte offset"));
    }
    text.parse()
        .map_err(|_| ParseError::BadArgument("REST offset is too large"))
}

/// RFC 2389 §4: "OPTS <command-name> [<command-options>]".
fn parse_opts(arg: Option<&[u8]>) -> Result<Opts, ParseError> {
    let arg = ascii_arg(arg).ok_or(ParseError::BadArgument("OPTS needs a command name"))?;
    let mut words = arg.split_whitespace();
    let name = words.next().unwrap_or_default();
    let value = words.next();
    match (name, value) {
        ("UTF8" | "UTF-8", Some("ON") | None) => Ok(Opts::Utf8(true)),
        ("UTF8" | "UTF-8", Some("OFF")) => Ok(Opts::Utf8(false)),
        ("UTF8" | "UTF-8", Some(_)) => Err(ParseError::BadArgument("OPTS UTF8 takes ON or OFF")),
        // RFC 3659 §7.9: "OPTS MLST" with no facts turns every fact off.
        ("MLST", facts) => Ok(Opts::Mlst(
            facts
                .unwrap_or_default()
                .split(';')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect(),
        )),
        _ => Ok(Opts::Other(name.to_owned())),
    }
}

/// RFC 959 §4.1.2: PORT h1,h2,h3,h4,p1,p2 (each a decimal 0-255).
fn parse_port(arg: Option<&[u8]>) -> Result<SocketAddr, ParseError> {
    const BAD: ParseError = ParseError::BadArgument("PORT takes h1,h2,h3,h4,p1,p2");
    let text = std::str::from_utf8(arg.ok_or(BAD)?.trim_ascii()).map_err(|_| BAD)?;
    let numbers: Vec<u8> = text
        .split(',')
        .map(|n| n.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| BAD)?;
    let [a, b, c, d, p1, p2] = numbers[..] else {
        return Err(BAD);
    };
    let port = u16::from(p1) << 8 | u16::from(p2);
    Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port))
}

/// RFC 2428 §2: EPRT <d><net-prt><d><net-addr><d><tcp-port><d>, where the
/// delimiter is any printable ASCII character (normally '|').
fn parse_eprt(arg: Option<&[u8]>) -> Result<Command, ParseError> {
    const BAD: ParseError = ParseError::BadArgument("EPRT takes |protocol|address|port|");
    let text = std::str::from_utf8(arg.ok_or(BAD)?.trim_ascii()).map_err(|_| BAD)?;
    let delimiter = text
        .chars()
        .next()
        .filter(|c| ('!'..='~').contains(c))
        .ok_or(BAD)?;
    let fields: Vec<&str> = text.split(delimiter).collect();
    let ["", protocol, address, port, ""] = fields[..] else {
        return Err(BAD);
    };
    let port: u16 = port.parse().map_err(|_| BAD)?;
    let ip: IpAddr = match protocol {
        "1" => IpAddr::V4(address.parse().map_err(|_| BAD)?),
        "2" => IpAddr::V6(address.parse().map_err(|_| BAD)?),
        _ => return Ok(Command::EprtUnsupportedProtocol),
    };
    Ok(Command::Port(SocketAddr::new(ip, port)))
}

/// RFC 3659 §2.3 time-val: YYYYMMDDHHMMSS, optionally with fractional
/// seconds (ignored), always UTC.
pub fn parse_time_val(text: &[u8]) -> Option<Timestamp> {
    let digits = text.get(..14)?;
    let rest = &text[14..];
    let fraction_ok = rest.is_empty()
        || (rest[0] == b'.' && rest.len() > 1 && rest[1..].iter().all(u8::is_ascii_digit));
    if !digits.iter().all(u8::is_ascii_digit) || !fraction_ok {
        return None;
    }
    let digits = std::str::from_utf8(digits).ok()?;
    chrono::NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// MFMT <time-val> <SP> <pathname>.
fn parse_mfmt(arg: Option<&[u8]>) -> Result<Command, ParseError> {
    const BAD: ParseError = ParseError::BadArgument("MFMT takes YYYYMMDDHHMMSS and a path");
    let arg = arg.ok_or(BAD)?;
    let space = arg.iter().position(|&b| b == b' ').ok_or(BAD)?;
    let time = parse_time_val(&arg[..space]).ok_or(BAD)?;
    let path = &arg[space + 1..];
    if path.is_empty() {
        return Err(BAD);
    }
    Ok(Command::Mfmt(time, Bytes::copy_from_slice(path)))
}

/// SITE CHMOD <octal mode> <path>, SITE HELP; anything else is reported by name.
fn parse_site(arg: Option<&[u8]>) -> Result<Site, ParseError> {
    let arg = arg.ok_or(ParseError::BadArgument("SITE needs a command"))?;
    let (name, rest) = match arg.iter().position(|&b| b == b' ') {
        Some(space) => (&arg[..space], Some(&arg[space + 1..])),
        None => (arg, None),
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    match name.as_str() {
        "HELP" => Ok(Site::Help),
        "CHMOD" => {
            const BAD: ParseError =
                ParseError::BadArgument("SITE CHMOD takes an octal mode and a path");
            let rest = rest.ok_or(BAD)?;
            let space = rest.iter().position(|&b| b == b' ').ok_or(BAD)?;
            let mode = std::str::from_utf8(&rest[..space]).map_err(|_| BAD)?;
            if mode.is_empty() || mode.len() > 4 {
                return Err(BAD);
            }
            let mode = u32::from_str_radix(mode, 8).map_err(|_| BAD)?;
            let path = &rest[space + 1..];
            if path.is_empty() {
                return Err(BAD);
            }
            Ok(Site::Chmod {
                mode,
                path: Bytes::copy_from_slice(path),
            })
        }
        _ => Ok(Site::Other(name)),
    }
}

/// RFC 959 §4.1.3: ALLO <decimal-integer> [<SP> R <SP> <decimal-integer>].
fn parse_allo(arg: Option<&[u8]>) -> Result<Option<u64>, ParseError> {
    let Some(arg) = arg else {
        return Ok(None);
    };
    let text =
        std::str::from_utf8(arg).map_err(|_| ParseError::BadArgument("ALLO takes a byte count"))?;
    let count = text.split_whitespace().next().unwrap_or_default();
    count
        .parse()
        .map(Some)
        .map_err(|_| ParseError::BadArgument("ALLO takes a byte count"))
}

/// RFC 2228 §3: PROT C (clear), S (safe), E (confidential), P (private).
fn parse_prot(arg: Option<&[u8]>) -> Result<ProtectionLevel, ParseError> {
    match arg.map(|a| a.trim_ascii().to_ascii_uppercase()).as_deref() {
        Some(b"C") => Ok(ProtectionLevel::Clear),
        Some(b"S") => Ok(ProtectionLevel::Safe),
        Some(b"E") => Ok(ProtectionLevel::Confidential),
        Some(b"P") => Ok(ProtectionLevel::Private),
        _ => Err(ParseError::BadArgument("PROT takes C, S, E or P")),
    }
}
