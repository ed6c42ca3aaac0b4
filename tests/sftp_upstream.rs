//! FTP clients against the proxy in front of a real OpenSSH sftp-server:
//! every byte checked on the upstream filesystem.

mod common;

use std::io::Cursor;

use common::proxy::{Fixture, leftover_temporaries, random_bytes, sha256, sha256_file};
use common::raw::RawFtp;
use suppaftp::FtpError;
use suppaftp::types::FileType;
use tokio::io::AsyncReadExt;

async fn upload(ftp: &mut suppaftp::tokio::AsyncFtpStream, name: &str, bytes: &[u8]) {
    ftp.put_file(name, &mut Cursor::new(bytes.to_vec()))
        .await
        .unwrap_or_else(|e| panic!("STOR {name}: {e}"));
}

async fn download(ftp: &mut suppaftp::tokio::AsyncFtpStream, name: &str) -> Vec<u8> {
    let mut stream = ftp
        .retr_as_stream(name)
        .await
        .unwrap_or_else(|e| panic!("RETR {name}: {e}"));
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read data");
    stream.finish().await.expect("226 after RETR");
    out
}

fn reply_code(err: FtpError) -> u32 {
    match err {
        FtpError::UnexpectedResponse(response) => response.status.code(),
        other => panic!("expected an FTP error reply, got {other}"),
    }
}

#[tokio::test]
async fn uploads_and_downloads_are_byte_exact_on_the_sftp_server() {
    let fx = Fixture::start().await;
    let mut ftp = fx.ftp().await;
    let mut cr_lf_nul = b"line\r\nbare lf\nbare cr\r\0nul\0\r\r\n\n".repeat(1000);
    cr_lf_nul.extend_from_slice(&[0, 13, 10, 255, 254]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.bin", Vec::new()),
        ("one.bin", vec![0x42]),
        ("ten-mib.bin", random_bytes(10 * 1024 * 1024, 7)),
        ("crlf-nul.bin", cr_lf_nul),
    ];
    for (name, bytes) in &cases {
        upload(&mut ftp, name, bytes).await;
        let on_server = fx.alice_dir().join(name);
        assert_eq!(
            sha256_file(&on_server),
            sha256(bytes),
            "{name} on the SFTP server"
        );
        let back = download(&mut ftp, name).await;
        assert_eq!(sha256(&back), sha256(bytes), "{name} downloaded back");
        assert_eq!(ftp.size(*name).await.expect("SIZE"), bytes.len());
    }
    assert!(leftover_temporaries(&fx.alice_dir()).is_empty());
    ftp.quit().await.expect("QUIT");
}

#[tokio::test]
async fn stor_replaces_an_existing_file_atomically_and_keeps_its_permissions() {
    let fx = Fixture::start().await;
    let target = fx.alice_dir().join("report.csv");
    std::fs::write(&target, b"old contents that are longer than the new ones").unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let mut ftp = fx.ftp().await;
    upload(&mut ftp, "report.csv", b"new").await;
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&target).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640);
    assert!(leftover_temporaries(&fx.alice_dir()).is_empty());
}

#[tokio::test]
async fn list_and_mlsd_show_what_is_on_the_sftp_server() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("data file.txt"), b"12345").unwrap();
    std::fs::create_dir(fx.alice_dir().join("sub")).unwrap();
    let mut ftp = fx.ftp().await;

    let list = ftp.list(None).await.expect("LIST");
    let file_line = list
        .iter()
        .find(|l| l.ends_with(" data file.txt"))
        .expect("file in LIST");
    assert!(file_line.starts_with("-rw"), "{file_line}");
    assert!(file_line.contains(" 5 "), "size in {file_line}");
    let dir_line = list
        .iter()
        .find(|l| l.ends_with(" sub"))
        .expect("dir in LIST");
    assert!(dir_line.starts_with('d'), "{dir_line}");
    // Every line must parse the way FileZilla/WinSCP-style clients parse it.
    for line in &list {
        suppaftp::list::File::try_from(line.as_str())
            .unwrap_or_else(|e| panic!("unparsable LIST line {line:?}: {e:?}"));
    }

    let mlsd = ftp.mlsd(None).await.expect("MLSD");
    let file_facts = mlsd
        .iter()
        .find(|l| l.ends_with("; data file.txt"))
        .expect("file in MLSD");
    assert!(file_facts.contains("type=file;"), "{file_facts}");
    assert!(file_facts.contains("size=5;"), "{file_facts}");
    assert!(file_facts.contains("modify="), "{file_facts}");
    assert!(file_facts.contains("perm="), "{file_facts}");
    assert!(file_facts.contains("unique="), "{file_facts}");
    let dir_facts = mlsd
        .iter()
        .find(|l| l.ends_with("; sub"))
        .expect("dir in MLSD");
    assert!(dir_facts.contains("type=dir;"), "{dir_facts}");

    let names = ftp.nlst(None).await.expect("NLST");
    let mut names: Vec<_> = names.iter().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["data file.txt", "sub"]);

    let mlst = ftp.mlst(Some("data file.txt")).await.expect("MLST");
    assert!(mlst.contains("size=5;"), "{mlst}");
}

#[tokio::test]
async fn directories_are_created_renamed_and_removed_on_the_sftp_server() {
    let fx = Fixture::start().await;
    let mut ftp = fx.ftp().await;
    ftp.mkdir("projects").await.expect("MKD");
    assert!(fx.alice_dir().join("projects").is_dir());
    ftp.cwd("projects").await.expect("CWD");
    assert_eq!(ftp.pwd().await.expect("PWD"), "/projects");
    upload(&mut ftp, "a.txt", b"a").await;
    assert!(fx.alice_dir().join("projects/a.txt").is_file());

    ftp.rename("a.txt", "b.txt").await.expect("RNFR/RNTO");
    assert!(!fx.alice_dir().join("projects/a.txt").exists());
    assert_eq!(
        std::fs::read(fx.alice_dir().join("projects/b.txt")).unwrap(),
        b"a"
    );

    ftp.cdup().await.expect("CDUP");
    assert_eq!(ftp.pwd().await.expect("PWD"), "/");
    assert_eq!(
        reply_code(ftp.rmdir("projects").await.unwrap_err()),
        550,
        "RMD of a non-empty directory"
    );
    assert!(
        fx.alice_dir().join("projects/b.txt").exists(),
        "never recursive"
    );
    assert_eq!(
        reply_code(ftp.mkdir("projects").await.unwrap_err()),
        550,
        "MKD of an existing directory"
    );

    ftp.rm("projects/b.txt").await.expect("DELE");
    ftp.rmdir("projects").await.expect("RMD");
    assert!(!fx.alice_dir().join("projects").exists());
}

#[tokio::test]
async fn rnto_replaces_an_existing_file() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("new"), b"new").unwrap();
    std::fs::write(fx.alice_dir().join("old"), b"old").unwrap();
    let mut ftp = fx.ftp().await;
    ftp.rename("new", "old")
        .await
        .expect("rename over an existing file");
    assert_eq!(std::fs::read(fx.alice_dir().join("old")).unwrap(), b"new");
    assert!(!fx.alice_dir().join("new").exists());
}

#[tokio::test]
async fn rest_resumes_downloads_and_uploads() {
    let fx = Fixture::start().await;
    let content = random_bytes(300_000, 3);
    std::fs::write(fx.alice_dir().join("big.bin"), &content).unwrap();
    let mut ftp = fx.ftp().await;

    ftp.resume_transfer(100_000).await.expect("REST");
    let tail = download(&mut ftp, "big.bin").await;
    assert_eq!(tail, content[100_000..]);

    // An interrupted upload left the first 120000 bytes; resume it.
    std::fs::write(fx.alice_dir().join("partial.bin"), &content[..120_000]).unwrap();
    ftp.resume_transfer(120_000).await.expect("REST");
    upload(&mut ftp, "partial.bin", &content[120_000..]).await;
    assert_eq!(
        sha256_file(&fx.alice_dir().join("partial.bin")),
        sha256(&content)
    );
}

#[tokio::test]
async fn rest_beyond_the_end_of_file_is_554() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("small"), b"12345").unwrap();
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", common::proxy::PASSWORD).await;
    assert_eq!(raw.cmd("REST 6").await.code, 350);
    let _data = raw.epsv_connect(fx.proxy.addr).await;
    // EPSV came between REST and RETR, so REST no longer applies (RFC 3659 §5.3).
    assert_eq!(raw.cmd("RETR small").await.code, 150);
    assert_eq!(raw.reply().await.code, 226);
    let _data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("REST 6").await.code, 350);
    assert_eq!(raw.cmd("RETR small").await.code, 554);
    assert_eq!(raw.cmd("REST 6").await.code, 350);
    assert_eq!(raw.cmd("STOR small").await.code, 554);
    assert_eq!(
        std::fs::read(fx.alice_dir().join("small")).unwrap(),
        b"12345"
    );
}

#[tokio::test]
async fn appe_appends_and_creates() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("log.txt"), b"one\n").unwrap();
    let mut ftp = fx.ftp().await;
    ftp.append_file("log.txt", &mut Cursor::new(b"two\n".to_vec()))
        .await
        .expect("APPE");
    assert_eq!(
        std::fs::read(fx.alice_dir().join("log.txt")).unwrap(),
        b"one\ntwo\n"
    );
    ftp.append_file("fresh.txt", &mut Cursor::new(b"x".to_vec()))
        .await
        .expect("APPE new");
    assert_eq!(
        std::fs::read(fx.alice_dir().join("fresh.txt")).unwrap(),
        b"x"
    );
}

#[tokio::test]
async fn ascii_mode_converts_line_endings_on_the_wire_only() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("unix.txt"), b"x\ny\n").unwrap();
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", common::proxy::PASSWORD).await;
    assert_eq!(raw.cmd("TYPE A").await.code, 200);

    let data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("RETR unix.txt").await.code, 150);
    assert_eq!(RawFtp::read_all(data).await, b"x\r\ny\r\n");
    assert_eq!(raw.reply().await.code, 226);

    let mut data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("STOR dos.txt").await.code, 150);
    tokio::io::AsyncWriteExt::write_all(&mut data, b"a\r\nb\r\n")
        .await
        .unwrap();
    drop(data);
    assert_eq!(raw.reply().await.code, 226);
    assert_eq!(
        std::fs::read(fx.alice_dir().join("dos.txt")).unwrap(),
        b"a\nb\n"
    );

    assert_eq!(raw.cmd("TYPE I").await.code, 200);
    let data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("RETR unix.txt").await.code, 150);
    assert_eq!(RawFtp::read_all(data).await, b"x\ny\n");
    assert_eq!(raw.reply().await.code, 226);
}

#[tokio::test]
async fn missing_paths_are_550() {
    let fx = Fixture::start().await;
    let mut ftp = fx.ftp().await;
    assert_eq!(
        reply_code(
            ftp.retr_as_stream("nope.txt")
                .await
                .map(|_| ())
                .unwrap_err()
        ),
        550
    );
    assert_eq!(reply_code(ftp.size("nope.txt").await.unwrap_err()), 550);
    assert_eq!(reply_code(ftp.mdtm("nope.txt").await.unwrap_err()), 550);
    assert_eq!(reply_code(ftp.cwd("nope").await.unwrap_err()), 550);
    assert_eq!(reply_code(ftp.rm("nope.txt").await.unwrap_err()), 550);
    assert_eq!(reply_code(ftp.rmdir("nope").await.unwrap_err()), 550);
    assert_eq!(reply_code(ftp.rename("nope", "x").await.unwrap_err()), 550);
    assert_eq!(reply_code(ftp.list(Some("nope")).await.unwrap_err()), 550);
    // STOR into a directory that does not exist creates nothing.
    assert_eq!(
        reply_code(
            ftp.put_file("no/such/dir/f", &mut Cursor::new(b"x".to_vec()))
                .await
                .unwrap_err()
        ),
        550
    );
    assert!(!fx.alice_dir().join("no").exists());
}

#[tokio::test]
async fn mdtm_reports_the_upstream_modification_time_in_utc() {
    let fx = Fixture::start().await;
    let path = fx.alice_dir().join("dated");
    std::fs::write(&path, b"x").unwrap();
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(time)
        .unwrap();
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", common::proxy::PASSWORD).await;
    let reply = raw.cmd("MDTM dated").await;
    assert_eq!((reply.code, reply.text.as_str()), (213, "20231114221320"));
}

#[tokio::test]
async fn paths_never_leave_the_user_root() {
    let fx = Fixture::start().await;
    std::fs::write(fx.sshd.data_dir().join("secret.txt"), b"not alice's").unwrap();
    let mut ftp = fx.ftp().await;
    assert_eq!(
        reply_code(
            ftp.retr_as_stream("../secret.txt")
                .await
                .map(|_| ())
                .unwrap_err()
        ),
        550
    );
    assert_eq!(
        reply_code(
            ftp.retr_as_stream("/../../secret.txt")
                .await
                .map(|_| ())
                .unwrap_err()
        ),
        550
    );
    ftp.cwd("../../..")
        .await
        .expect("CWD above the root stays at the root");
    assert_eq!(ftp.pwd().await.unwrap(), "/");
    upload(&mut ftp, "../../escaped.txt", b"inside").await;
    assert!(fx.alice_dir().join("escaped.txt").is_file());
    assert!(!fx.sshd.data_dir().join("escaped.txt").exists());
    assert_eq!(
        std::fs::read(fx.sshd.data_dir().join("secret.txt")).unwrap(),
        b"not alice's"
    );
}

#[tokio::test]
async fn names_with_spaces_quotes_and_utf8_round_trip() {
    let fx = Fixture::start().await;
    let mut ftp = fx.ftp().await;
    for name in [
        "with space.txt",
        "-leading-dash",
        "hash#percent%.txt",
        "日本語.txt",
        "quote\"d",
    ] {
        upload(&mut ftp, name, name.as_bytes()).await;
        assert_eq!(
            std::fs::read(fx.alice_dir().join(name)).unwrap(),
            name.as_bytes(),
            "{name}"
        );
        assert_eq!(download(&mut ftp, name).await, name.as_bytes(), "{name}");
    }
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", common::proxy::PASSWORD).await;
    let reply = raw.cmd("MKD say \"hi\"").await;
    assert_eq!(reply.code, 257);
    assert!(
        reply.text.starts_with("\"/say \"\"hi\"\"\""),
        "RFC 959 quote doubling: {reply:?}"
    );
}

#[tokio::test]
async fn an_aborted_upload_leaves_no_temporary_file_and_the_old_file_untouched() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("keep.bin"), b"original").unwrap();
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", common::proxy::PASSWORD).await;
    assert_eq!(raw.cmd("TYPE I").await.code, 200);
    let mut data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("STOR keep.bin").await.code, 150);
    tokio::io::AsyncWriteExt::write_all(&mut data, &random_bytes(1 << 20, 9))
        .await
        .unwrap();
    raw.send(b"ABOR").await;
    let first = raw.reply().await;
    assert_eq!(first.code, 426, "{first:?}");
    assert_eq!(raw.reply().await.code, 226);
    drop(data);
    assert_eq!(
        std::fs::read(fx.alice_dir().join("keep.bin")).unwrap(),
        b"original"
    );
    // The temporary file is removed before the 426 is sent.
    assert!(
        leftover_temporaries(&fx.alice_dir()).is_empty(),
        "{:?}",
        leftover_temporaries(&fx.alice_dir())
    );
    // The session is still usable.
    assert_eq!(raw.cmd("NOOP").await.code, 200);
    assert_eq!(raw.cmd("SIZE keep.bin").await.code, 213);
}

#[tokio::test]
async fn changes_made_directly_on_the_sftp_server_are_visible_at_once() {
    let fx = Fixture::start().await;
    let mut ftp = fx.ftp().await;
    assert!(ftp.nlst(None).await.unwrap().is_empty());
    std::fs::write(fx.alice_dir().join("appeared"), b"abc").unwrap();
    assert_eq!(ftp.size("appeared").await.unwrap(), 3);
    std::fs::write(fx.alice_dir().join("appeared"), b"abcdef").unwrap();
    assert_eq!(ftp.size("appeared").await.unwrap(), 6);
    assert_eq!(ftp.nlst(None).await.unwrap(), vec!["appeared".to_owned()]);
}

#[tokio::test]
async fn ascii_type_upload_through_suppaftp_stores_lf() {
    let fx = Fixture::start().await;
    let mut ftp = fx.ftp().await;
    ftp.transfer_type(FileType::Ascii(suppaftp::types::FormatControl::Default))
        .await
        .unwrap();
    upload(&mut ftp, "notes.txt", b"one\ntwo\n").await;
    assert_eq!(
        std::fs::read(fx.alice_dir().join("notes.txt")).unwrap(),
        b"one\ntwo\n"
    );
}

/// Unmounts the small filesystem even when the test fails.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_upstream_disk_is_552_and_leaves_nothing_behind() {
    let fx = Fixture::start().await;
    let root = fx.alice_dir();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs"])
        .arg(&root)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a tmpfs"
        );
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    let _mount = Mount(root.clone());
    std::fs::write(root.join("keep.bin"), b"original").unwrap();
    let mut ftp = fx.ftp().await;
    let err = ftp
        .put_file("keep.bin", &mut Cursor::new(random_bytes(4 << 20, 5)))
        .await
        .unwrap_err();
    assert_eq!(reply_code(err), 552);
    assert_eq!(std::fs::read(root.join("keep.bin")).unwrap(), b"original");
    assert!(
        leftover_temporaries(&root).is_empty(),
        "{:?}",
        leftover_temporaries(&root)
    );
    // The space is free again: a small upload works in the same session.
    upload(&mut ftp, "small.txt", b"fits").await;
    assert_eq!(std::fs::read(root.join("small.txt")).unwrap(), b"fits");
}

#[tokio::test]
async fn a_directory_larger_than_the_sorted_limit_lists_every_entry_once() {
    // 10 000 entries are sent sorted; the rest stream in the server's order.
    const ENTRIES: usize = 12_500;
    let fx = Fixture::start().await;
    let dir = fx.alice_dir().join("big");
    std::fs::create_dir(&dir).expect("mkdir");
    for i in 0..ENTRIES {
        std::fs::write(dir.join(format!("f{i:05}")), b"").expect("create an entry");
    }
    let mut ftp = fx.ftp().await;
    for (command, names) in [
        ("NLST", ftp.nlst(Some("big")).await.expect("NLST")),
        (
            "MLSD",
            ftp.mlsd(Some("big"))
                .await
                .expect("MLSD")
                .into_iter()
                .map(|line| {
                    line.rsplit_once(' ')
                        .map(|(_, n)| n.to_owned())
                        .unwrap_or(line)
                })
                .collect(),
        ),
    ] {
        let names: Vec<String> = names
            .into_iter()
            .map(|n| n.trim_start_matches("big/").to_owned())
            .collect();
        assert_eq!(names.len(), ENTRIES, "{command}: every entry");
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), ENTRIES, "{command}: none twice");
        let head = &names[..10_000];
        assert!(
            head.windows(2).all(|w| w[0] < w[1]),
            "{command}: the first 10 000 are sorted"
        );
    }
    let list = ftp.list(Some("big")).await.expect("LIST");
    assert_eq!(list.len(), ENTRIES);
}
