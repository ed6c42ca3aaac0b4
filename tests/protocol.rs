//! The corners of RFC 959/2389/2428/3659 that legacy clients rely on, with
//! exact reply codes, over a real OpenSSH upstream.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::UNIX_EPOCH;

use common::proxy::{Fixture, PASSWORD, TEST_TIMEOUT, random_bytes};
use common::raw::RawFtp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn logged_in(fx: &Fixture) -> RawFtp {
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", PASSWORD).await;
    assert_eq!(raw.cmd("TYPE I").await.code, 200);
    raw
}

/// PORT h1,h2,h3,h4,p1,p2 for a listener of ours.
fn port_argument(addr: std::net::SocketAddr) -> String {
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        panic!("PORT needs IPv4");
    };
    let [a, b, c, d] = ip.octets();
    format!(
        "{a},{b},{c},{d},{},{}",
        addr.port() >> 8,
        addr.port() & 0xff
    )
}

async fn accept_data(listener: &TcpListener) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    tokio::time::timeout(TEST_TIMEOUT, listener.accept())
        .await
        .expect("the proxy connects back in time")
        .expect("accept")
}

#[tokio::test]
async fn port_and_eprt_connect_back_to_the_client_for_transfers() {
    let fx = Fixture::start().await;
    let content = random_bytes(700_000, 4);
    std::fs::write(fx.alice_dir().join("f.bin"), &content).unwrap();
    let mut raw = logged_in(&fx).await;
    let ip = raw.local_addr().ip();

    // PORT + RETR.
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let reply = raw
        .cmd(&format!(
            "PORT {}",
            port_argument(listener.local_addr().unwrap())
        ))
        .await;
    assert_eq!(reply.code, 200, "{reply:?}");
    assert_eq!(raw.cmd("RETR f.bin").await.code, 150);
    let (data, from) = accept_data(&listener).await;
    assert_eq!(
        from.ip(),
        ip,
        "the data connection comes from the address we reached"
    );
    assert_eq!(RawFtp::read_all(data).await, content);
    assert_eq!(raw.reply().await.code, 226);

    // EPRT + STOR.
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let eprt = format!("EPRT |1|{ip}|{}|", listener.local_addr().unwrap().port());
    assert_eq!(raw.cmd(&eprt).await.code, 200);
    assert_eq!(raw.cmd("STOR up.bin").await.code, 150);
    let (mut data, _) = accept_data(&listener).await;
    data.write_all(&content).await.unwrap();
    drop(data);
    assert_eq!(raw.reply().await.code, 226);
    assert_eq!(
        std::fs::read(fx.alice_dir().join("up.bin")).unwrap(),
        content
    );

    // EPRT + LIST.
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let eprt = format!("EPRT |1|{ip}|{}|", listener.local_addr().unwrap().port());
    assert_eq!(raw.cmd(&eprt).await.code, 200);
    assert_eq!(raw.cmd("NLST").await.code, 150);
    let (data, _) = accept_data(&listener).await;
    assert_eq!(RawFtp::read_all(data).await, b"f.bin\r\nup.bin\r\n");
    assert_eq!(raw.reply().await.code, 226);
}

#[tokio::test]
async fn an_active_target_that_refuses_is_425_and_the_session_goes_on() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("f"), b"x").unwrap();
    let mut raw = logged_in(&fx).await;
    let closed = std::net::TcpListener::bind((raw.local_addr().ip(), 0))
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(
        raw.cmd(&format!("PORT {}", port_argument(closed)))
            .await
            .code,
        200
    );
    assert_eq!(raw.cmd("RETR f").await.code, 150);
    assert_eq!(raw.reply().await.code, 425);
    assert_eq!(raw.cmd("NOOP").await.code, 200);
}

#[tokio::test]
async fn active_mode_uses_the_configured_source_port() {
    let source = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fx = Fixture::start_with(&format!("active_source_port = {source}"), "").await;
    std::fs::write(fx.alice_dir().join("f"), b"x").unwrap();
    let mut raw = logged_in(&fx).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(
        raw.cmd(&format!(
            "PORT {}",
            port_argument(listener.local_addr().unwrap())
        ))
        .await
        .code,
        200
    );
    assert_eq!(raw.cmd("RETR f").await.code, 150);
    let (data, from) = accept_data(&listener).await;
    assert_eq!(from.port(), source);
    RawFtp::read_all(data).await;
    assert_eq!(raw.reply().await.code, 226);
}

#[tokio::test]
async fn active_mode_can_be_switched_off_and_feat_says_so() {
    let fx = Fixture::start_with("active_mode = false", "").await;
    let mut raw = logged_in(&fx).await;
    assert_eq!(raw.cmd("PORT 127,0,0,1,200,1").await.code, 502);
    assert_eq!(raw.cmd("EPRT |1|127.0.0.1|51201|").await.code, 502);
    let feat = raw.cmd("FEAT").await;
    assert!(!feat.text.contains("EPRT"), "{feat:?}");
    assert!(feat.text.contains("EPSV"), "{feat:?}");
}

#[tokio::test]
async fn epsv_all_refuses_every_other_data_setup_command() {
    let fx = Fixture::start().await;
    let mut raw = logged_in(&fx).await;
    assert_eq!(raw.cmd("EPSV ALL").await.code, 200);
    assert_eq!(raw.cmd("PASV").await.code, 503);
    assert_eq!(raw.cmd("PORT 127,0,0,1,200,1").await.code, 503);
    assert_eq!(raw.cmd("EPRT |1|127.0.0.1|51201|").await.code, 503);
    assert_eq!(raw.cmd("EPSV").await.code, 229);
}

#[tokio::test]
async fn ipv6_clients_use_epsv_and_eprt_and_get_a_clear_answer_to_pasv() {
    let fx = Fixture::start_on("[::1]:0", "", "").await;
    std::fs::write(fx.alice_dir().join("v6.txt"), b"over IPv6").unwrap();
    let (mut raw, greeting) = RawFtp::connect(fx.proxy.addr).await;
    assert_eq!(greeting.code, 220);
    raw.login("alice", PASSWORD).await;
    let pasv = raw.cmd("PASV").await;
    assert_eq!(pasv.code, 425);
    assert!(
        pasv.text.contains("EPSV"),
        "the reply says what to use instead: {pasv:?}"
    );
    assert_eq!(raw.cmd("EPSV 1").await.code, 522);

    let data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("RETR v6.txt").await.code, 150);
    assert_eq!(RawFtp::read_all(data).await, b"over IPv6");
    assert_eq!(raw.reply().await.code, 226);

    let listener = TcpListener::bind("[::1]:0").await.unwrap();
    let eprt = format!("EPRT |2|::1|{}|", listener.local_addr().unwrap().port());
    assert_eq!(raw.cmd(&eprt).await.code, 200);
    assert_eq!(raw.cmd("RETR v6.txt").await.code, 150);
    let (data, from) = accept_data(&listener).await;
    assert!(from.is_ipv6());
    assert_eq!(RawFtp::read_all(data).await, b"over IPv6");
    assert_eq!(raw.reply().await.code, 226);
}

#[tokio::test]
async fn abor_sent_with_telnet_synch_and_urgent_data_stops_a_running_download() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("big.bin"), random_bytes(40 << 20, 8)).unwrap();
    let mut raw = logged_in(&fx).await;
    let mut data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("RETR big.bin").await.code, 150);
    // Read a little, then stop reading so the transfer is stalled mid-file.
    let mut first = vec![0; 64 * 1024];
    data.read_exact(&mut first).await.unwrap();
    raw.send_with_synch(b"ABOR").await;
    let transfer = raw.reply().await;
    assert_eq!(transfer.code, 426, "{transfer:?}");
    assert_eq!(raw.reply().await.code, 226);
    // The next command arrives intact after the urgent byte.
    assert_eq!(raw.cmd("SIZE big.bin").await.code, 213);
    drop(data);
}

#[tokio::test]
async fn stou_stores_under_a_new_name_reported_in_150_and_226() {
    let fx = Fixture::start().await;
    let mut raw = logged_in(&fx).await;
    let mut names = Vec::new();
    for content in [b"first".as_slice(), b"second"] {
        let mut data = raw.epsv_connect(fx.proxy.addr).await;
        let opening = raw.cmd("STOU").await;
        assert_eq!(opening.code, 150);
        let name = opening
            .text
            .strip_prefix("FILE: ")
            .expect("RFC 1123 '150 FILE: name'")
            .to_owned();
        data.write_all(content).await.unwrap();
        drop(data);
        let done = raw.reply().await;
        assert_eq!(done.code, 226);
        assert!(done.text.contains(&name), "{done:?}");
        assert_eq!(std::fs::read(fx.alice_dir().join(&name)).unwrap(), content);
        names.push(name);
    }
    assert_ne!(names[0], names[1]);
    // A hint becomes the prefix of the unique name.
    let mut data = raw.epsv_connect(fx.proxy.addr).await;
    let opening = raw.cmd("STOU report.csv").await;
    assert!(opening.text.starts_with("FILE: report.csv."), "{opening:?}");
    data.write_all(b"x").await.unwrap();
    drop(data);
    assert_eq!(raw.reply().await.code, 226);
}

#[tokio::test]
async fn allo_answers_202_and_552_when_the_upstream_lacks_space() {
    let fx = Fixture::start().await;
    let mut raw = logged_in(&fx).await;
    assert_eq!(raw.cmd("ALLO").await.code, 202);
    assert_eq!(raw.cmd("ALLO 1024").await.code, 202);
    // More than any test machine's disk, as statvfs on the SFTP server reports it.
    let reply = raw.cmd("ALLO 1000000000000000000").await;
    assert_eq!(reply.code, 552, "{reply:?}");
}

#[tokio::test]
async fn mfmt_and_the_mdtm_set_form_change_the_modification_time_upstream() {
    let fx = Fixture::start().await;
    let file = fx.alice_dir().join("dated.txt");
    std::fs::write(&file, b"x").unwrap();
    let mtime = || {
        std::fs::metadata(&file)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let mut raw = logged_in(&fx).await;
    let reply = raw.cmd("MFMT 20200102030405 dated.txt").await;
    assert_eq!(
        (reply.code, reply.text.as_str()),
        (213, "Modify=20200102030405; /dated.txt")
    );
    assert_eq!(mtime(), 1_577_934_245);
    assert_eq!(raw.cmd("MDTM dated.txt").await.text, "20200102030405");

    let reply = raw.cmd("MDTM 20210304050607 dated.txt").await;
    assert_eq!(reply.code, 213, "{reply:?}");
    assert_eq!(mtime(), 1_614_834_367);
    assert_eq!(raw.cmd("MFMT 20200102030405 missing.txt").await.code, 550);
    assert_eq!(raw.cmd("MFMT 2020 dated.txt").await.code, 501);
}

#[tokio::test]
async fn site_chmod_changes_permissions_upstream_and_site_help_lists_it() {
    let fx = Fixture::start().await;
    let file = fx.alice_dir().join("secret.txt");
    std::fs::write(&file, b"x").unwrap();
    let mut raw = logged_in(&fx).await;
    assert_eq!(raw.cmd("SITE CHMOD 600 secret.txt").await.code, 200);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let help = raw.cmd("SITE HELP").await;
    assert_eq!(help.code, 214);
    assert!(help.text.contains("CHMOD"));
}

#[tokio::test]
async fn host_clnt_and_rein() {
    let fx = Fixture::start().await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("HOST ftp.example.com").await.code, 220);
    assert_eq!(raw.cmd("CLNT curious-client 1.0").await.code, 200);
    raw.login("alice", PASSWORD).await;
    assert_eq!(
        raw.cmd("HOST other.example.com").await.code,
        503,
        "HOST after login"
    );
    assert_eq!(raw.cmd("REIN").await.code, 220);
    assert_eq!(raw.cmd("PWD").await.code, 530, "REIN logs out");
    raw.login("alice", PASSWORD).await;
    assert_eq!(raw.cmd("PWD").await.code, 257);
}

#[tokio::test]
async fn opts_mlst_selects_the_facts_mlst_and_mlsd_show() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("f"), b"12345").unwrap();
    let mut raw = logged_in(&fx).await;
    let reply = raw.cmd("OPTS MLST size;type;").await;
    assert_eq!(
        (reply.code, reply.text.as_str()),
        (200, "MLST OPTS type;size;")
    );
    let mlst = raw.cmd("MLST f").await;
    assert_eq!(mlst.code, 250);
    assert!(mlst.text.contains(" type=file;size=5; /f"), "{mlst:?}");
    assert!(!mlst.text.contains("modify="), "{mlst:?}");
    let feat = raw.cmd("FEAT").await;
    assert!(
        feat.text
            .contains("MLST type*;size*;modify;perm;unique;UNIX.mode;"),
        "{feat:?}"
    );
    let data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("MLSD").await.code, 150);
    assert_eq!(RawFtp::read_all(data).await, b"type=file;size=5; f\r\n");
    assert_eq!(raw.reply().await.code, 226);
}

async fn listing(raw: &mut RawFtp, fx: &Fixture, command: &str) -> (u16, String) {
    let data = raw.epsv_connect(fx.proxy.addr).await;
    let reply = raw.cmd(command).await;
    if reply.code != 150 {
        return (reply.code, String::new());
    }
    let text = String::from_utf8(RawFtp::read_all(data).await).unwrap();
    assert_eq!(raw.reply().await.code, 226);
    (150, text)
}

#[tokio::test]
async fn nlst_and_list_accept_files_directories_and_globs() {
    let fx = Fixture::start().await;
    for name in ["a.txt", "b.txt", "c.log", ".hidden.txt"] {
        std::fs::write(fx.alice_dir().join(name), name).unwrap();
    }
    std::fs::create_dir(fx.alice_dir().join("sub")).unwrap();
    std::fs::write(fx.alice_dir().join("sub/x.txt"), b"x").unwrap();
    let mut raw = logged_in(&fx).await;

    assert_eq!(
        listing(&mut raw, &fx, "NLST *.txt").await.1,
        "a.txt\r\nb.txt\r\n"
    );
    assert_eq!(
        listing(&mut raw, &fx, "NLST sub/*.txt").await.1,
        "sub/x.txt\r\n"
    );
    assert_eq!(listing(&mut raw, &fx, "NLST a.txt").await.1, "a.txt\r\n");
    assert_eq!(listing(&mut raw, &fx, "NLST sub").await.1, "sub/x.txt\r\n");
    assert_eq!(
        listing(&mut raw, &fx, "NLST").await.1,
        ".hidden.txt\r\na.txt\r\nb.txt\r\nc.log\r\nsub\r\n"
    );
    assert_eq!(listing(&mut raw, &fx, "NLST *.none").await.0, 550);
    let (_, list) = listing(&mut raw, &fx, "LIST -la *.log").await;
    assert_eq!(list.lines().count(), 1);
    assert!(list.trim_end().ends_with(" c.log"), "{list}");
    let (_, list) = listing(&mut raw, &fx, "LIST a.txt").await;
    assert!(
        list.trim_end().ends_with(" a.txt"),
        "LIST of a single file: {list}"
    );
    assert_eq!(listing(&mut raw, &fx, "MLSD *.txt").await.0, 501);
    assert_eq!(listing(&mut raw, &fx, "MLSD a.txt").await.0, 501);
}

#[tokio::test]
async fn stat_path_lists_over_the_control_channel_and_stat_during_a_transfer_reports_progress() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("big.bin"), random_bytes(30 << 20, 3)).unwrap();
    let mut raw = logged_in(&fx).await;
    let stat = raw.cmd("STAT /").await;
    assert_eq!(stat.code, 213);
    assert!(stat.text.contains(" big.bin"), "{stat:?}");

    let mut data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("RETR big.bin").await.code, 150);
    let mut some = vec![0; 100_000];
    data.read_exact(&mut some).await.unwrap();
    let progress = raw.cmd("STAT").await;
    assert_eq!(progress.code, 213);
    assert!(progress.text.contains("bytes so far"), "{progress:?}");
    let mut rest = Vec::new();
    data.read_to_end(&mut rest).await.unwrap();
    assert_eq!(some.len() + rest.len(), 30 << 20);
    assert_eq!(raw.reply().await.code, 226);
}

#[tokio::test]
async fn legacy_8_bit_names_pass_through_as_bytes() {
    let fx = Fixture::start().await;
    let mut raw = logged_in(&fx).await;
    // "café.txt" in Latin-1: not UTF-8.
    let name = b"caf\xe9.txt";
    let mut stor = b"STOR ".to_vec();
    stor.extend_from_slice(name);
    let mut data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd_bytes(&stor).await.code, 150);
    data.write_all(b"latin-1").await.unwrap();
    drop(data);
    assert_eq!(raw.reply().await.code, 226);
    let stored: Vec<Vec<u8>> = std::fs::read_dir(fx.alice_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert_eq!(
        stored,
        vec![name.to_vec()],
        "the upstream name is the exact bytes"
    );

    let data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("NLST").await.code, 150);
    assert_eq!(RawFtp::read_all(data).await, b"caf\xe9.txt\r\n");
    assert_eq!(raw.reply().await.code, 226);
    let mut size = b"SIZE ".to_vec();
    size.extend_from_slice(name);
    assert_eq!(raw.cmd_bytes(&size).await.code, 213);
    // Garbage bytes in the verb position are a syntax error, not a crash.
    assert_eq!(raw.cmd_bytes(b"\xc3\x28\xa0\xa1").await.code, 500);
    assert_eq!(raw.cmd("NOOP").await.code, 200);
}

#[tokio::test]
async fn unicode_names_with_cjk_and_combining_characters_round_trip() {
    let fx = Fixture::start().await;
    let mut ftp = fx.ftp().await;
    for name in [
        "日本語 ファイル.txt",
        "e\u{301}te\u{301}.txt",
        "#%&+;=@[].txt",
        "-rf",
    ] {
        ftp.put_file(name, &mut std::io::Cursor::new(name.as_bytes().to_vec()))
            .await
            .unwrap_or_else(|e| panic!("STOR {name}: {e}"));
        assert_eq!(
            std::fs::read(fx.alice_dir().join(name)).unwrap(),
            name.as_bytes()
        );
        let names = ftp.nlst(None).await.unwrap();
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
}

#[tokio::test]
async fn feat_lists_exactly_the_extensions_that_work() {
    let fx = Fixture::start().await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    let feat = raw.cmd("FEAT").await;
    let lines: Vec<&str> = feat
        .text
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| *l != "End")
        .collect();
    assert_eq!(
        lines,
        vec![
            "CLNT",
            "EPRT",
            "EPSV",
            "HOST",
            "MDTM",
            "MFMT",
            "MLST type*;size*;modify*;perm*;unique*;UNIX.mode*;",
            "PASV",
            "REST STREAM",
            "SIZE",
            "TVFS",
            "UTF8",
        ]
    );
}
