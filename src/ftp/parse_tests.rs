//! One rule per test, each citing where the rule comes from.

use bytes::Bytes;

use std::net::SocketAddr;

use super::command::{Command, EpsvArg, Opts, Password, ProtectionLevel, Site, TransferType};
use super::parse::{ParseError, parse, parse_time_val};

fn path(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

// RFC 959 §5.3.1: "upper and lower case alphabetic characters are to be treated identically".
#[test]
fn verbs_are_case_insensitive() {
    assert_eq!(parse(b"noop"), Ok(Command::Noop));
    assert_eq!(parse(b"NoOp"), Ok(Command::Noop));
    assert_eq!(parse(b"retr a"), Ok(Command::Retr(path("a"))));
}

// RFC 959 §5.3.1: arguments are not case-folded; pathnames are case-sensitive strings.
#[test]
fn arguments_keep_their_case() {
    assert_eq!(
        parse(b"RETR ReadMe.TXT"),
        Ok(Command::Retr(path("ReadMe.TXT")))
    );
}

// RFC 959 §5.3.2: <pathname> ::= <string>, which may contain spaces.
#[test]
fn paths_may_contain_spaces() {
    assert_eq!(
        parse(b"STOR my file .txt"),
        Ok(Command::Stor(path("my file .txt")))
    );
}

// Leading spaces are part of the name: "STOR  x" names " x".
#[test]
fn only_the_first_space_separates_verb_and_argument() {
    assert_eq!(parse(b"DELE  x"), Ok(Command::Dele(path(" x"))));
}

// RFC 2640 §2.2: pathnames may be any bytes; non-UTF-8 must pass through.
#[test]
fn paths_are_raw_bytes() {
    assert_eq!(
        parse(b"RETR caf\xe9.txt"),
        Ok(Command::Retr(Bytes::from_static(b"caf\xe9.txt")))
    );
}

// RFC 959 §4.1.1: USER requires a username.
#[test]
fn user_without_name_is_a_bad_argument() {
    assert!(matches!(parse(b"USER"), Err(ParseError::BadArgument(_))));
    assert!(matches!(parse(b"USER "), Err(ParseError::BadArgument(_))));
}

// RFC 959 §4.1.1: PASS takes any string, including an empty one.
#[test]
fn pass_accepts_an_empty_password() {
    assert_eq!(parse(b"PASS"), Ok(Command::Pass(Password(Bytes::new()))));
    assert_eq!(
        parse(b"PASS s3cret with space"),
        Ok(Command::Pass(Password(path("s3cret with space"))))
    );
}

#[test]
fn password_is_never_shown_in_debug_output() {
    let command = parse(b"PASS hunter2").unwrap();
    assert!(!format!("{command:?}").contains("hunter2"));
}

// RFC 959 §4.1.3: commands that name a file require the pathname.
#[test]
fn file_commands_require_a_path() {
    for verb in [
        "RETR", "STOR", "APPE", "DELE", "MKD", "RMD", "RNFR", "RNTO", "CWD", "SIZE", "MDTM",
    ] {
        assert!(
            matches!(parse(verb.as_bytes()), Err(ParseError::BadArgument(_))),
            "{verb} without argument"
        );
    }
}

// RFC 959 §4.1.3 (and historic RFC 775): X-prefixed aliases of directory commands.
#[test]
fn x_aliases_map_to_the_rfc_959_commands() {
    assert_eq!(parse(b"XPWD"), Ok(Command::Pwd));
    assert_eq!(parse(b"XCWD d"), Ok(Command::Cwd(path("d"))));
    assert_eq!(parse(b"XCUP"), Ok(Command::Cdup));
    assert_eq!(parse(b"XMKD d"), Ok(Command::Mkd(path("d"))));
    assert_eq!(parse(b"XRMD d"), Ok(Command::Rmd(path("d"))));
}

// RFC 959 §4.1.2: TYPE A [N] and TYPE I; TYPE L 8 is the same as I.
#[test]
fn type_ascii_and_image_are_accepted() {
    assert_eq!(parse(b"TYPE A"), Ok(Command::Type(TransferType::Ascii)));
    assert_eq!(parse(b"TYPE A N"), Ok(Command::Type(TransferType::Ascii)));
    assert_eq!(parse(b"TYPE i"), Ok(Command::Type(TransferType::Image)));
    assert_eq!(parse(b"TYPE L 8"), Ok(Command::Type(TransferType::Image)));
}

// RFC 959 §5.4: TYPE with an unimplemented parameter is 504.
#[test]
fn type_ebcdic_and_telnet_formats_are_unsupported() {
    assert!(matches!(
        parse(b"TYPE E"),
        Err(ParseError::UnsupportedParameter(_))
    ));
    assert!(matches!(
        parse(b"TYPE A T"),
        Err(ParseError::UnsupportedParameter(_))
    ));
    assert!(matches!(parse(b"TYPE X"), Err(ParseError::BadArgument(_))));
}

// RFC 959 §4.1.2: MODE S and STRU F are the defaults every server must accept.
#[test]
fn mode_stream_and_structure_file_are_accepted() {
    assert_eq!(parse(b"MODE S"), Ok(Command::Mode));
    assert_eq!(parse(b"STRU f"), Ok(Command::Stru));
    assert!(matches!(
        parse(b"MODE B"),
        Err(ParseError::UnsupportedParameter(_))
    ));
    assert!(matches!(
        parse(b"STRU R"),
        Err(ParseError::UnsupportedParameter(_))
    ));
}

// RFC 2428 §3: EPSV, EPSV <net-prt>, EPSV ALL.
#[test]
fn epsv_arguments() {
    assert_eq!(parse(b"EPSV"), Ok(Command::Epsv(EpsvArg::Any)));
    assert_eq!(parse(b"EPSV ALL"), Ok(Command::Epsv(EpsvArg::All)));
    assert_eq!(parse(b"epsv all"), Ok(Command::Epsv(EpsvArg::All)));
    assert_eq!(parse(b"EPSV 2"), Ok(Command::Epsv(EpsvArg::Protocol(2))));
}

// RFC 2428 §3: an unknown network protocol gets 522.
#[test]
fn epsv_with_unknown_protocol_is_522() {
    assert_eq!(
        parse(b"EPSV 3"),
        Err(ParseError::UnsupportedNetworkProtocol)
    );
}

// RFC 3659 §5.3: REST <SP> <decimal-integer> in stream mode.
#[test]
fn rest_takes_a_decimal_offset() {
    assert_eq!(parse(b"REST 0"), Ok(Command::Rest(0)));
    assert_eq!(
        parse(b"REST 10737418240"),
        Ok(Command::Rest(10_737_418_240))
    );
}

#[test]
fn rest_refuses_anything_but_digits() {
    for bad in [
        &b"REST"[..],
        b"REST -1",
        b"REST 1e3",
        b"REST 0x10",
        b"REST 99999999999999999999999",
    ] {
        assert!(
            matches!(parse(bad), Err(ParseError::BadArgument(_))),
            "{bad:?}"
        );
    }
}

// `ls` options are not FTP, but every client sends them (vsftpd ignores them too).
#[test]
fn list_ignores_leading_ls_options() {
    assert_eq!(parse(b"LIST -la"), Ok(Command::List(None)));
    assert_eq!(
        parse(b"LIST -a -l dir"),
        Ok(Command::List(Some(path("dir"))))
    );
    assert_eq!(
        parse(b"LIST dir name"),
        Ok(Command::List(Some(path("dir name"))))
    );
    assert_eq!(parse(b"NLST -1"), Ok(Command::Nlst(None)));
}

// RFC 3659 §7: MLSD and MLST take an optional pathname.
#[test]
fn mlsd_and_mlst_take_an_optional_path() {
    assert_eq!(parse(b"MLSD"), Ok(Command::Mlsd(None)));
    assert_eq!(parse(b"MLST a"), Ok(Command::Mlst(Some(path("a")))));
}

// RFC 2389 §4 and RFC 2640 §3.3: OPTS UTF8 ON/OFF.
#[test]
fn opts_utf8() {
    assert_eq!(parse(b"OPTS UTF8 ON"), Ok(Command::Opts(Opts::Utf8(true))));
    assert_eq!(
        parse(b"opts utf8 off"),
        Ok(Command::Opts(Opts::Utf8(false)))
    );
    assert_eq!(parse(b"OPTS UTF-8 ON"), Ok(Command::Opts(Opts::Utf8(true))));
    assert_eq!(
        parse(b"OPTS MODE Z"),
        Ok(Command::Opts(Opts::Other("MODE".into())))
    );
}

// RFC 959 §5.4: 502 "Command not implemented" for a well-formed unknown verb.
#[test]
fn unknown_verbs_are_not_implemented() {
    assert_eq!(
        parse(b"XYZZ"),
        Err(ParseError::NotImplemented("XYZZ".into()))
    );
    assert_eq!(
        parse(b"LPRT 4,4,1,2,3,4,2,4,1"),
        Err(ParseError::NotImplemented("LPRT".into()))
    );
}

// RFC 959 §5.4: 500 "Syntax error, command unrecognized" for what is not a command at all.
#[test]
fn garbage_is_a_syntax_error() {
    for bad in [
        &b""[..],
        b" NOOP",
        b"NO OP5",
        b"RETRIEVE x",
        b"\xff\xf4\xff\xf2",
        b"12",
    ] {
        let result = parse(bad);
        assert!(
            matches!(
                result,
                Err(ParseError::Syntax) | Err(ParseError::NotImplemented(_))
            ),
            "{bad:?} gave {result:?}"
        );
    }
    assert_eq!(parse(b"RETRIEVE x"), Err(ParseError::Syntax));
    assert_eq!(parse(b""), Err(ParseError::Syntax));
}

// RFC 959 §4.1.3: STAT and HELP have optional arguments.
#[test]
fn stat_and_help_arguments_are_optional() {
    assert_eq!(parse(b"STAT"), Ok(Command::Stat(None)));
    assert_eq!(parse(b"STAT dir"), Ok(Command::Stat(Some(path("dir")))));
    assert_eq!(parse(b"HELP"), Ok(Command::Help(None)));
}

// RFC 959 §5.4 lists which commands may come before login.
#[test]
fn only_session_commands_are_allowed_before_login() {
    assert!(parse(b"FEAT").unwrap().allowed_before_login());
    assert!(parse(b"QUIT").unwrap().allowed_before_login());
    assert!(!parse(b"LIST").unwrap().allowed_before_login());
    assert!(!parse(b"RETR x").unwrap().allowed_before_login());
    assert!(!parse(b"PASV").unwrap().allowed_before_login());
}

fn socket(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// RFC 959 §4.1.2: PORT h1,h2,h3,h4,p1,p2, the port being p1*256+p2.
#[test]
fn port_decodes_host_and_port() {
    assert_eq!(
        parse(b"PORT 127,0,0,1,4,1"),
        Ok(Command::Port(socket("127.0.0.1:1025")))
    );
    assert_eq!(
        parse(b"PORT 10, 0, 0, 2, 255, 255"),
        Ok(Command::Port(socket("10.0.0.2:65535")))
    );
}

#[test]
fn malformed_port_is_a_bad_argument() {
    for bad in [
        &b"PORT"[..],
        b"PORT 1,2,3,4,5",
        b"PORT 1,2,3,4,5,6,7",
        b"PORT 256,0,0,1,4,1",
        b"PORT a,b,c,d,e,f",
    ] {
        assert!(
            matches!(parse(bad), Err(ParseError::BadArgument(_))),
            "{bad:?}"
        );
    }
}

// RFC 2428 §2: EPRT |1|addr|port| and |2|addr|port|, any delimiter.
#[test]
fn eprt_takes_ipv4_and_ipv6_with_any_delimiter() {
    assert_eq!(
        parse(b"EPRT |1|132.235.1.2|6275|"),
        Ok(Command::Port(socket("132.235.1.2:6275")))
    );
    assert_eq!(
        parse(b"EPRT |2|::1|5282|"),
        Ok(Command::Port(socket("[::1]:5282")))
    );
    assert_eq!(
        parse(b"EPRT !1!10.0.0.1!2000!"),
        Ok(Command::Port(socket("10.0.0.1:2000")))
    );
}

// RFC 2428 §2: an unknown network protocol gets 522, not 501.
#[test]
fn eprt_with_an_unknown_protocol_is_reported_as_such() {
    assert_eq!(
        parse(b"EPRT |3|1.2.3.4|5|"),
        Ok(Command::EprtUnsupportedProtocol)
    );
    assert!(matches!(
        parse(b"EPRT |1|::1|5|"),
        Err(ParseError::BadArgument(_))
    ));
    assert!(matches!(
        parse(b"EPRT |1|1.2.3.4|5"),
        Err(ParseError::BadArgument(_))
    ));
}

// RFC 3659 §2.3: time-val is YYYYMMDDHHMMSS[.sss], UTC.
#[test]
fn time_values_are_utc_with_optional_fraction() {
    assert_eq!(parse_time_val(b"20231114221320"), Some(1_700_000_000));
    assert_eq!(parse_time_val(b"20231114221320.123"), Some(1_700_000_000));
    assert_eq!(parse_time_val(b"20231314221320"), None, "month 13");
    assert_eq!(parse_time_val(b"2023111422132"), None);
    assert_eq!(parse_time_val(b"20231114221320."), None);
}

// draft-somers-ftp-mfxx §3: MFMT <time-val> <SP> <pathname>.
#[test]
fn mfmt_takes_a_time_and_a_path_with_spaces() {
    assert_eq!(
        parse(b"MFMT 20231114221320 my file.txt"),
        Ok(Command::Mfmt(1_700_000_000, path("my file.txt")))
    );
    assert!(matches!(
        parse(b"MFMT 2023 x"),
        Err(ParseError::BadArgument(_))
    ));
    assert!(matches!(
        parse(b"MFMT 20231114221320"),
        Err(ParseError::BadArgument(_))
    ));
}

#[test]
fn site_chmod_and_help() {
    assert_eq!(
        parse(b"site chmod 0640 a file"),
        Ok(Command::Site(Site::Chmod {
            mode: 0o640,
            path: path("a file")
        }))
    );
    assert_eq!(parse(b"SITE HELP"), Ok(Command::Site(Site::Help)));
    assert_eq!(
        parse(b"SITE UTIME x"),
        Ok(Command::Site(Site::Other("UTIME".into())))
    );
    assert!(matches!(
        parse(b"SITE CHMOD 9 x"),
        Err(ParseError::BadArgument(_))
    ));
    assert!(matches!(
        parse(b"SITE CHMOD 644"),
        Err(ParseError::BadArgument(_))
    ));
}

// RFC 959 §4.1.3: ALLO <decimal-integer> [<SP> R <SP> <decimal-integer>].
#[test]
fn allo_takes_an_optional_size_and_record_size() {
    assert_eq!(parse(b"ALLO"), Ok(Command::Allo(None)));
    assert_eq!(parse(b"ALLO 1048576"), Ok(Command::Allo(Some(1_048_576))));
    assert_eq!(parse(b"ALLO 100 R 10"), Ok(Command::Allo(Some(100))));
    assert!(matches!(
        parse(b"ALLO lots"),
        Err(ParseError::BadArgument(_))
    ));
}

// RFC 7151 §3: HOST <domain>; RFC 959: STOU, REIN; CLNT as clients send it.
#[test]
fn host_stou_clnt_rein() {
    assert_eq!(
        parse(b"HOST ftp.example.com"),
        Ok(Command::Host(path("ftp.example.com")))
    );
    assert_eq!(parse(b"STOU"), Ok(Command::Stou(None)));
    assert_eq!(
        parse(b"STOU report.csv"),
        Ok(Command::Stou(Some(path("report.csv"))))
    );
    assert_eq!(parse(b"CLNT FileZilla 3.66"), Ok(Command::Clnt));
    assert_eq!(parse(b"REIN"), Ok(Command::Rein));
    assert!(parse(b"HOST x").unwrap().allowed_before_login());
}

// RFC 3659 §7.9: OPTS MLST fact;fact; (no facts at all is allowed).
#[test]
fn opts_mlst_lists_facts() {
    assert_eq!(
        parse(b"OPTS MLST type;size;modify;"),
        Ok(Command::Opts(Opts::Mlst(vec![
            "TYPE".into(),
            "SIZE".into(),
            "MODIFY".into()
        ])))
    );
    assert_eq!(parse(b"OPTS MLST"), Ok(Command::Opts(Opts::Mlst(vec![]))));
}

// RFC 4217 §4: AUTH TLS (and the historical AUTH SSL / TLS-C); the mechanism is case-insensitive.
#[test]
fn auth_names_a_mechanism() {
    assert_eq!(parse(b"AUTH TLS"), Ok(Command::Auth("TLS".into())));
    assert_eq!(parse(b"auth ssl"), Ok(Command::Auth("SSL".into())));
    assert!(matches!(parse(b"AUTH"), Err(ParseError::BadArgument(_))));
    assert!(parse(b"AUTH TLS").unwrap().allowed_before_login());
}

// RFC 2228 §3 / RFC 4217 §8-9: PBSZ <decimal>, PROT C|S|E|P.
#[test]
fn pbsz_and_prot() {
    assert_eq!(parse(b"PBSZ 0"), Ok(Command::Pbsz(0)));
    assert!(matches!(parse(b"PBSZ x"), Err(ParseError::BadArgument(_))));
    assert_eq!(
        parse(b"PROT P"),
        Ok(Command::Prot(ProtectionLevel::Private))
    );
    assert_eq!(parse(b"prot c"), Ok(Command::Prot(ProtectionLevel::Clear)));
    assert_eq!(
        parse(b"PROT E"),
        Ok(Command::Prot(ProtectionLevel::Confidential))
    );
    assert!(matches!(parse(b"PROT X"), Err(ParseError::BadArgument(_))));
    assert_eq!(parse(b"CCC"), Ok(Command::Ccc));
}
