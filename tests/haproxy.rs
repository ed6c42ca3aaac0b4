//! Real HAProxy in front of the proxy, in TCP mode with `send-proxy-v2` on
//! the control port and on the passive port range, as an L4 load balancer
//! is deployed (docs/deployment.md). HAProxy listens on 127.0.0.10, the
//! proxy on 127.0.0.1, and clients connect from other loopback addresses, so
//! the load balancer's address, the client's and the proxy's all differ.
//!
//! Needs the `haproxy` binary (Debian package; `scripts/test.sh` installs
//! it). Without it the test prints why and passes, except under CI.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::proxy::{Fixture, PASSWORD, random_bytes, sha256, sha256_file};
use common::raw::RawFtp;
use common::source::{connect_from, epsv_port, loopback, pasv_addr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Where HAProxy listens (its "public" address).
const FRONT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 10));
const PASSIVE_PORTS: u16 = 8;

fn haproxy_binary() -> Option<&'static str> {
    [
        "/usr/sbin/haproxy",
        "/usr/local/sbin/haproxy",
        "/usr/bin/haproxy",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

/// `count` consecutive ports free on both 127.0.0.1 and the front address.
fn free_port_range(count: u16) -> u16 {
    for _ in 0..200 {
        let base = 20000 + rand_u16() % 30000;
        let free = (base..base + count).all(|port| {
            std::net::TcpListener::bind((FRONT, port)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free range of {count} ports");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (nanos ^ std::process::id()) as u16
}

struct Haproxy {
    _child: Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(binary: &str, control: u16, upstream: SocketAddr, passive: u16) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let last = passive + PASSIVE_PORTS - 1;
        let config = format!(
            "global\n\
             \x20   stats socket {socket} mode 600 level admin\n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   timeout connect 5s\n\
             \x20   timeout client 60s\n\
             \x20   timeout server 60s\n\
             frontend ftp_control\n\
             \x20   bind {FRONT}:{control}\n\
             \x20   default_backend ftp_control\n\
             backend ftp_control\n\
             \x20   option tcp-check\n\
             \x20   tcp-check expect string 220\n\
             \x20   server ftpbridge {upstream} send-proxy-v2 check check-send-proxy inter 1s\n\
             frontend ftp_passive\n\
             \x20   bind {FRONT}:{passive}-{last}\n\
             \x20   default_backend ftp_passive\n\
             backend ftp_passive\n\
             \x20   # No port: each connection goes to the port it arrived on.\n\
             \x20   server ftpbridge {ip} send-proxy-v2\n",
            socket = socket.display(),
            ip = upstream.ip(),
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start haproxy");
        Haproxy {
            _child: child,
            socket,
            _dir: dir,
        }
    }

    /// The health-check status of the control backend's server ("UP", ...).
    fn control_server_status(&self) -> Option<String> {
        let mut stream = UnixStream::connect(&self.socket).ok()?;
        stream.write_all(b"show stat\n").ok()?;
        let mut csv = String::new();
        stream.read_to_string(&mut csv).ok()?;
        // Columns: pxname,svname,...; status is the 18th.
        csv.lines()
            .find(|l| l.starts_with("ftp_control,ftpbridge,"))
            .and_then(|l| l.split(',').nth(17).map(str::to_owned))
    }
}

async fn drain(mut stream: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out))
        .await
        .expect("data in time");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_with_send_proxy_v2_on_control_and_passive_ports() {
    let Some(binary) = haproxy_binary() else {
        if std::env::var_os("CI").is_some() {
            panic!("haproxy is not installed; scripts/test.sh installs it");
        }
        eprintln!(
            "haproxy_with_send_proxy_v2_on_control_and_passive_ports: skipped: haproxy is not installed"
        );
        return;
    };
    let passive = free_port_range(PASSIVE_PORTS);
    let fx = Fixture::start_with(
        &format!(
            "passive_ports = \"{passive}-{}\"\npassive_address = \"{FRONT}\"\n\
             proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]",
            passive + PASSIVE_PORTS - 1
        ),
        "",
    )
    .await;
    let control = free_port_range(1);
    let haproxy = Haproxy::start(binary, control, fx.proxy.addr, passive);
    let front = SocketAddr::new(FRONT, control);

    // HAProxy's health check (PROXY v2 LOCAL, then "expect 220") passes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = haproxy.control_server_status();
        if status.as_deref() == Some("UP") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the health check never passed: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let client = loopback(5);
    let (mut raw, greeting) = RawFtp::from_stream(connect_from(client, front).await).await;
    assert_eq!(greeting.code, 220);
    raw.login("alice", PASSWORD).await;
    assert_eq!(raw.cmd("TYPE I").await.code, 200);
    let stat = raw.cmd("STAT").await;
    assert!(
        stat.text.contains("Connected to 127.0.0.5:"),
        "the client, not HAProxy: {stat:?}"
    );

    // EPSV: the data connection goes through HAProxy too and carries the
    // client's address in its own header.
    let content = random_bytes(500_000, 3);
    std::fs::write(fx.alice_dir().join("f.bin"), &content).unwrap();
    let port = epsv_port(&raw.cmd("EPSV").await);
    assert!((passive..passive + PASSIVE_PORTS).contains(&port));
    let data = connect_from(client, SocketAddr::new(FRONT, port)).await;
    assert_eq!(raw.cmd("RETR f.bin").await.code, 150);
    assert_eq!(sha256(&drain(data).await), sha256(&content));
    assert_eq!(raw.reply().await.code, 226);

    // PASV announces HAProxy's address.
    let announced = pasv_addr(&raw.cmd("PASV").await);
    assert_eq!(announced.ip(), FRONT);
    let mut data = connect_from(client, announced).await;
    assert_eq!(raw.cmd("STOR up.bin").await.code, 150);
    data.write_all(&content).await.unwrap();
    drop(data);
    assert_eq!(raw.reply().await.code, 226);
    assert_eq!(
        sha256_file(&fx.alice_dir().join("up.bin")),
        sha256(&content)
    );

    // Another client through the same load balancer cannot take the port,
    // and the transfer fails fast.
    let port = epsv_port(&raw.cmd("EPSV").await);
    let intruder = connect_from(loopback(6), SocketAddr::new(FRONT, port)).await;
    let started = Instant::now();
    assert_eq!(raw.cmd("RETR f.bin").await.code, 150);
    assert_eq!(drain(intruder).await, b"");
    assert_eq!(raw.reply().await.code, 425);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(raw.cmd("QUIT").await.code, 221);

    // And a real client: curl from 127.0.0.5 through HAProxy.
    let url = format!("ftp://alice:{}@{front}/", PASSWORD.replace(' ', "%20"));
    let curl = |args: Vec<String>| async move {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--interface", "127.0.0.5"])
            .args(&args)
            .output()
            .await
            .expect("curl");
        assert!(
            output.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let listing = curl(vec![url.clone()]).await;
    assert!(String::from_utf8_lossy(&listing).contains("up.bin"));
    let body = curl(vec![format!("{url}f.bin")]).await;
    assert_eq!(sha256(&body), sha256(&content));
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("c.bin");
    std::fs::write(&source, &content).unwrap();
    curl(vec![
        "-T".into(),
        source.display().to_string(),
        format!("{url}curl.bin"),
    ])
    .await;
    assert_eq!(
        sha256_file(&fx.alice_dir().join("curl.bin")),
        sha256(&content)
    );
}
