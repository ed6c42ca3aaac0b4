//! Real FTP clients (curl, lftp, Python ftplib) against the proxy in front of
//! a real OpenSSH server; results checked on the upstream filesystem.

mod common;

use std::path::Path;

use common::clients::{path_str, run, run_ok};
use common::proxy::{Fixture, PASSWORD, TEST_TIMEOUT, random_bytes, sha256, sha256_file};

#[tokio::test(flavor = "multi_thread")]
async fn curl_uploads_downloads_lists_and_resumes() {
    let fx = Fixture::start().await;
    let local = tempfile::tempdir().unwrap();
    let content = random_bytes(3 * 1024 * 1024 + 17, 11);
    let source = local.path().join("source.bin");
    std::fs::write(&source, &content).unwrap();
    let url = |path: &str| fx.proxy.url("alice", PASSWORD, path);

    // Upload (EPSV, curl's default) into a directory curl creates.
    run_ok(
        "curl",
        &[
            "-sS",
            "--ftp-create-dirs",
            "-T",
            path_str(&source),
            &url("in/data.bin"),
        ],
    )
    .await;
    assert_eq!(
        sha256_file(&fx.alice_dir().join("in/data.bin")),
        sha256(&content)
    );

    // Download with PASV instead of EPSV.
    let copy = local.path().join("copy.bin");
    run_ok(
        "curl",
        &[
            "-sS",
            "--disable-epsv",
            "-o",
            path_str(&copy),
            &url("in/data.bin"),
        ],
    )
    .await;
    assert_eq!(sha256_file(&copy), sha256(&content));

    // Listings: LIST and NLST.
    let list = String::from_utf8(run_ok("curl", &["-sS", &url("in/")]).await).unwrap();
    assert!(list.contains(" data.bin"), "{list}");
    let names =
        String::from_utf8(run_ok("curl", &["-sS", "--list-only", &url("in/")]).await).unwrap();
    assert_eq!(names.trim(), "data.bin");

    // Resume a download from a partial local copy (REST + RETR).
    let partial = local.path().join("partial.bin");
    std::fs::write(&partial, &content[..1_000_000]).unwrap();
    run_ok(
        "curl",
        &[
            "-sS",
            "-C",
            "-",
            "-o",
            path_str(&partial),
            &url("in/data.bin"),
        ],
    )
    .await;
    assert_eq!(sha256_file(&partial), sha256(&content));

    // Resume an upload: curl asks SIZE and appends the rest.
    std::fs::write(fx.alice_dir().join("in/up.bin"), &content[..2_000_000]).unwrap();
    run_ok(
        "curl",
        &["-sS", "-C", "-", "-T", path_str(&source), &url("in/up.bin")],
    )
    .await;
    assert_eq!(
        sha256_file(&fx.alice_dir().join("in/up.bin")),
        sha256(&content)
    );

    // --append (APPE) and quoted commands (-Q) after the transfer.
    let tail = local.path().join("tail.txt");
    std::fs::write(&tail, b"tail").unwrap();
    std::fs::write(fx.alice_dir().join("in/log.txt"), b"head-").unwrap();
    run_ok(
        "curl",
        &["-sS", "--append", "-T", path_str(&tail), &url("in/log.txt")],
    )
    .await;
    assert_eq!(
        std::fs::read(fx.alice_dir().join("in/log.txt")).unwrap(),
        b"head-tail"
    );
    run_ok("curl", &["-sS", "-Q", "-DELE log.txt", &url("in/")]).await;
    assert!(!fx.alice_dir().join("in/log.txt").exists());

    // ASCII mode: LF on the server, CRLF on the wire, LF again in curl's output.
    std::fs::write(fx.alice_dir().join("in/text.txt"), b"a\nb\n").unwrap();
    let text = run_ok("curl", &["-sS", "--use-ascii", &url("in/text.txt")]).await;
    assert_eq!(text, b"a\nb\n");

    // A missing file is an error for curl (550), not an empty download.
    let missing = run("curl", &["-sS", "-o", "/dev/null", &url("in/missing.bin")]).await;
    assert_eq!(
        missing.status.code(),
        Some(78),
        "curl's 'remote file not found'"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_with_a_wrong_password_fails_to_log_in() {
    let fx = Fixture::start().await;
    let output = run("curl", &["-sS", &fx.proxy.url("alice", "wrong", "")]).await;
    assert_eq!(output.status.code(), Some(67), "curl's 'login denied'");
}

fn make_tree(root: &Path) -> usize {
    let mut files = 0;
    for d in 0..10 {
        let dir = root.join(format!("dir {d}")).join(format!("nested-{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..10 {
            let size = (d * 7919 + f * 104_729) % 50_000;
            std::fs::write(
                dir.join(format!("file-{f}.dat")),
                random_bytes(size, (d * 10 + f) as u64 + 1),
            )
            .unwrap();
            std::fs::write(
                root.join(format!("dir {d}")).join(format!("top-{f}.txt")),
                format!("{d}/{f}\n"),
            )
            .unwrap();
            files += 2;
        }
    }
    files
}

fn tree_digest(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, sha256_file(&path)));
            }
        }
    }
    out.sort();
    out
}

async fn lftp(fx: &Fixture, script: &str) -> Vec<u8> {
    let port = fx.proxy.addr.port().to_string();
    let login = format!("alice,{PASSWORD}");
    let script =
        format!("set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 20; {script}; quit");
    run_ok(
        "lftp",
        &["-u", &login, "-p", &port, "-e", &script, "127.0.0.1"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn lftp_mirrors_a_tree_up_and_back_down() {
    let fx = Fixture::start().await;
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("source");
    let files = make_tree(&source);
    assert_eq!(files, 200);

    lftp(&fx, &format!("mirror -R '{}' tree", path_str(&source))).await;
    assert_eq!(
        tree_digest(&fx.alice_dir().join("tree")),
        tree_digest(&source)
    );

    let back = local.path().join("back");
    lftp(&fx, &format!("mirror tree '{}'", path_str(&back))).await;
    assert_eq!(tree_digest(&back), tree_digest(&source));

    lftp(
        &fx,
        "mv 'tree/dir 0/top-0.txt' 'tree/renamed.txt'; rm -r 'tree/dir 1'",
    )
    .await;
    assert!(fx.alice_dir().join("tree/renamed.txt").is_file());
    assert!(!fx.alice_dir().join("tree/dir 0/top-0.txt").exists());
    assert!(!fx.alice_dir().join("tree/dir 1").exists());
    assert!(fx.alice_dir().join("tree/dir 2").is_dir());
}

const FTPLIB_SCRIPT: &str = r#"
import ftplib, hashlib, io, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ftp = ftplib.FTP()
ftp.connect(host, port, timeout=30)
ftp.login(user, password)
data = bytes(range(256)) * 4096
ftp.storbinary("STOR py.bin", io.BytesIO(data))
assert ftp.size("py.bin") == len(data), ftp.size("py.bin")
out = io.BytesIO()
ftp.retrbinary("RETR py.bin", out.write)
assert out.getvalue() == data
out = io.BytesIO()
ftp.retrbinary("RETR py.bin", out.write, rest=1000)
assert out.getvalue() == data[1000:]
facts = dict(ftp.mlsd())
assert facts["py.bin"]["type"] == "file" and int(facts["py.bin"]["size"]) == len(data), facts
assert ftp.sendcmd("MDTM py.bin").startswith("213 ")
ftp.storlines("STOR lines.txt", io.BytesIO(b"one\ntwo\n"))
lines = []
ftp.retrlines("RETR lines.txt", lines.append)
assert lines == ["one", "two"], lines
ftp.rename("py.bin", "renamed.bin")
ftp.mkd("made")
ftp.cwd("made")
assert ftp.pwd() == "/made"
ftp.cwd("/")
ftp.rmd("made")
ftp.delete("lines.txt")
print(sorted(ftp.nlst()))
ftp.quit()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn python_ftplib_works_end_to_end() {
    let fx = Fixture::start().await;
    let port = fx.proxy.addr.port().to_string();
    let stdout = run_ok(
        "python3",
        &["-c", FTPLIB_SCRIPT, "127.0.0.1", &port, "alice", PASSWORD],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&stdout).trim(), "['renamed.bin']");
    let expected: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(4096);
    assert_eq!(
        std::fs::read(fx.alice_dir().join("renamed.bin")).unwrap(),
        expected
    );
    assert!(!fx.alice_dir().join("made").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_in_active_mode_with_port_and_eprt() {
    let fx = Fixture::start().await;
    let local = tempfile::tempdir().unwrap();
    let content = random_bytes(1_500_000, 12);
    let source = local.path().join("source.bin");
    std::fs::write(&source, &content).unwrap();
    let url = |path: &str| fx.proxy.url("alice", PASSWORD, path);

    // -P makes curl listen and send EPRT; --disable-eprt makes it send PORT.
    run_ok(
        "curl",
        &[
            "-sS",
            "-P",
            "127.0.0.1",
            "--disable-eprt",
            "-T",
            path_str(&source),
            &url("port.bin"),
        ],
    )
    .await;
    assert_eq!(
        sha256_file(&fx.alice_dir().join("port.bin")),
        sha256(&content)
    );
    let copy = local.path().join("copy.bin");
    run_ok(
        "curl",
        &[
            "-sS",
            "-P",
            "127.0.0.1",
            "-o",
            path_str(&copy),
            &url("port.bin"),
        ],
    )
    .await;
    assert_eq!(sha256_file(&copy), sha256(&content));
    let names = String::from_utf8(
        run_ok("curl", &["-sS", "-P", "127.0.0.1", "--list-only", &url("")]).await,
    )
    .unwrap();
    assert_eq!(names.trim(), "port.bin");
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_over_ipv6_uses_epsv() {
    let fx = Fixture::start_on("[::1]:0", "", "").await;
    std::fs::write(fx.alice_dir().join("six.txt"), b"IPv6 all the way").unwrap();
    let url = format!(
        "ftp://alice:{}@[::1]:{}/six.txt",
        PASSWORD.replace(' ', "%20"),
        fx.proxy.addr.port()
    );
    assert_eq!(
        run_ok("curl", &["-sS", "-g", &url]).await,
        b"IPv6 all the way"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ncftp_puts_and_gets_files() {
    let fx = Fixture::start().await;
    let local = tempfile::tempdir().unwrap();
    let content = random_bytes(800_000, 13);
    let source = local.path().join("nc.bin");
    std::fs::write(&source, &content).unwrap();
    let port = fx.proxy.addr.port().to_string();
    std::fs::create_dir(fx.alice_dir().join("drop")).unwrap();
    run_ok(
        "ncftpput",
        &[
            "-u",
            "alice",
            "-p",
            PASSWORD,
            "-P",
            &port,
            "-V",
            "-t",
            "30",
            "127.0.0.1",
            "/drop",
            path_str(&source),
        ],
    )
    .await;
    assert_eq!(
        sha256_file(&fx.alice_dir().join("drop/nc.bin")),
        sha256(&content)
    );
    let back = local.path().join("back");
    std::fs::create_dir(&back).unwrap();
    run_ok(
        "ncftpget",
        &[
            "-u",
            "alice",
            "-p",
            PASSWORD,
            "-P",
            &port,
            "-V",
            "-t",
            "30",
            "127.0.0.1",
            path_str(&back),
            "/drop/nc.bin",
        ],
    )
    .await;
    assert_eq!(sha256_file(&back.join("nc.bin")), sha256(&content));
}

const FTPLIB_ABOR_STOU_SCRIPT: &str = r#"
import ftplib, socket, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ftp = ftplib.FTP()
ftp.connect(host, port, timeout=30)
ftp.login(user, password)
ftp.voidcmd("TYPE I")

# ABOR mid-RETR: ftplib sends "ABOR\r\n" as TCP urgent data (MSG_OOB).
conn = ftp.transfercmd("RETR big.bin")
conn.recv(65536)
resp = ftp.abort()
assert resp.startswith("426"), resp
conn.close()
assert ftp.voidresp().startswith("226")
assert ftp.size("big.bin") == 32 * 1024 * 1024

# STOU: the 150 reply names the file (RFC 1123 4.1.2.9).
host_, port_ = ftp.makepasv()
data = socket.create_connection((host_, port_), timeout=30)
resp = ftp.sendcmd("STOU")
assert resp.startswith("150 FILE: "), resp
name = resp[len("150 FILE: "):]
data.sendall(b"unique bytes")
data.close()
done = ftp.voidresp()
assert name in done, done
assert ftp.size(name) == len(b"unique bytes")
print(name)
ftp.quit()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn python_ftplib_aborts_a_download_and_uses_stou() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("big.bin"), random_bytes(32 << 20, 14)).unwrap();
    let port = fx.proxy.addr.port().to_string();
    let stdout = run_ok(
        "python3",
        &[
            "-c",
            FTPLIB_ABOR_STOU_SCRIPT,
            "127.0.0.1",
            &port,
            "alice",
            PASSWORD,
        ],
    )
    .await;
    let name = String::from_utf8(stdout).unwrap();
    assert_eq!(
        std::fs::read(fx.alice_dir().join(name.trim())).unwrap(),
        b"unique bytes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_sessions_move_distinct_files_byte_exact() {
    let fx = Fixture::start().await;
    let addr = fx.proxy.addr;
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        tasks.push(tokio::spawn(async move {
            let content = random_bytes(1_000_000 + i as usize * 4099, 100 + i);
            let name = format!("concurrent-{i}.bin");
            let mut ftp = common::proxy::connect_and_login(addr, "alice", PASSWORD).await;
            ftp.put_file(&name, &mut std::io::Cursor::new(content.clone()))
                .await
                .unwrap();
            let mut stream = ftp.retr_as_stream(&name).await.unwrap();
            let mut back = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut back)
                .await
                .unwrap();
            stream.finish().await.unwrap();
            ftp.quit().await.unwrap();
            assert_eq!(sha256(&back), sha256(&content), "{name} downloaded");
            (name, sha256(&content))
        }));
    }
    for task in tasks {
        let (name, digest) = tokio::time::timeout(TEST_TIMEOUT, task)
            .await
            .expect("in time")
            .expect("task");
        assert_eq!(
            sha256_file(&fx.alice_dir().join(&name)),
            digest,
            "{name} on the SFTP server"
        );
    }
}
