//! Network namespaces for the NAT lab, built by the tests themselves:
//!
//! ```text
//!  client 10.66.1.2 ──┐                 ┌── server 10.66.2.2 (proxy, sshd, vsftpd)
//!                     ├── router ───────┤   egress 10.66.2.11 / 10.66.2.12 (SNAT)
//!  attacker 10.66.3.2 ┘   (NAT)         └   VIP 10.66.9.9 → 10.66.2.2 (DNAT, optional)
//! ```
//!
//! The router SNATs each new connection from the client network to one of
//! two egress addresses (iptables `statistic`, `nth` or `random`), as cloud
//! NAT gateways do; the attacker's connections are not translated. Every
//! namespace is named `ftpb-<pid>-<n>-<role>` and deleted on drop, and
//! leftovers of crashed runs (whose pid is gone) are swept first. Nothing
//! outside these namespaces is touched.
//!
//! Needs root, `ip` (iproute2) and `iptables` (nft or legacy). Without them
//! a lab test prints why and passes, except under CI (`CI` set), where it
//! fails: CI must run the lab.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 66, 1, 2);
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(10, 66, 3, 2);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 66, 2, 2);
pub const EGRESS_A: Ipv4Addr = Ipv4Addr::new(10, 66, 2, 11);
pub const EGRESS_B: Ipv4Addr = Ipv4Addr::new(10, 66, 2, 12);
/// The server's "public" address when it sits behind the router's DNAT.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 66, 9, 9);

const PREFIX: &str = "ftpb-";

/// Whether the lab can run here; `Err` says why not.
pub fn lab_available() -> Result<(), String> {
    if !nix_is_root() {
        return Err("network namespaces need root".into());
    }
    for tool in ["ip", "iptables"] {
        if Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Err(format!(
                "`{tool}` is not installed (run scripts/test.sh as root)"
            ));
        }
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // The effective uid of this process, from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Skips (returns `true`) when the lab cannot run, unless under CI, where
/// the lab is required and this panics instead.
pub fn skip_unless_available(test: &str) -> bool {
    match lab_available() {
        Ok(()) => false,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: the NAT lab must run in CI, but {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped: {why}");
            true
        }
    }
}

/// Runs `ip args...`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    check(program, args, &output)
}

fn check(program: &str, args: &[&str], output: &Output) -> Result<(), String> {
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// One network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: String) -> Result<Netns, String> {
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program args...` inside this namespace, as a `Command` to adjust.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs a command inside this namespace, failing with its stderr.
    pub fn exec(&self, args: &[&str]) -> Result<(), String> {
        let output = self
            .command(args[0])
            .args(&args[1..])
            .output()
            .map_err(|e| format!("ip netns exec: {e}"))?;
        check(args[0], args, &output)
    }

    /// Runs `f` on a thread that joined this namespace: every socket it
    /// opens and every process it starts lives in the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs the future `f` builds on a runtime inside this namespace.
    pub fn block_on<T: Send, F: Future<Output = T>>(&self, f: impl FnOnce() -> F + Send) -> T {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        })
    }

    /// Waits until something accepts TCP connections on `addr`, as seen from
    /// this namespace.
    pub fn wait_for_listener(&self, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
        self.run(|| {
            let deadline = Instant::now() + timeout;
            loop {
                match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                    Ok(_) => return Ok(()),
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("nothing listens on {addr}: {e}"));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// How the router translates the client's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snat {
    /// Alternating egress addresses: connection 1 from A, 2 from B, 3 from A...
    Nth,
    /// Each connection from A or B with probability 1/2.
    Random,
    /// Always A (a NAT with one address).
    Single,
}

impl Snat {
    pub fn label(self) -> &'static str {
        match self {
            Snat::Nth => "nth (alternating)",
            Snat::Random => "random (p=0.5)",
            Snat::Single => "single address",
        }
    }
}

/// The four namespaces and their wiring; dropped (deleted) in reverse.
pub struct NatLab {
    pub client: Netns,
    pub attacker: Netns,
    pub server: Netns,
    pub router: Netns,
    iptables: &'static str,
}

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

impl NatLab {
    pub fn build() -> Result<NatLab, String> {
        sweep_stale_namespaces();
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let router = Netns::create(format!("{id}-r"))?;
        let server = Netns::create(format!("{id}-s"))?;
        let attacker = Netns::create(format!("{id}-a"))?;
        let client = Netns::create(format!("{id}-c"))?;
        // veth pairs created straight into their namespaces: the host's own
        // interfaces never change.
        for (ns, inside, outside) in [
            (&client, "eth0", "to-client"),
            (&server, "eth0", "to-server"),
            (&attacker, "eth0", "to-attacker"),
        ] {
            let line = format!(
                "link add {inside} netns {} type veth peer name {outside} netns {}",
                ns.name(),
                router.name()
            );
            ip(&line.split_whitespace().collect::<Vec<_>>())?;
        }
        let side = |ns: &Netns, addr: &str, gateway: &str| -> Result<(), String> {
            ns.exec(&["ip", "addr", "add", addr, "dev", "eth0"])?;
            ns.exec(&["ip", "link", "set", "eth0", "up"])?;
            ns.exec(&["ip", "route", "add", "default", "via", gateway])
        };
        side(&client, "10.66.1.2/24", "10.66.1.1")?;
        side(&server, "10.66.2.2/24", "10.66.2.1")?;
        side(&attacker, "10.66.3.2/24", "10.66.3.1")?;
        for (addr, dev) in [
            ("10.66.1.1/24", "to-client"),
            ("10.66.3.1/24", "to-attacker"),
            ("10.66.2.1/24", "to-server"),
            // The egress addresses answer ARP for the translated connections.
            ("10.66.2.11/24", "to-server"),
            ("10.66.2.12/24", "to-server"),
        ] {
            router.exec(&["ip", "addr", "add", addr, "dev", dev])?;
        }
        for dev in ["to-client", "to-attacker", "to-server"] {
            router.exec(&["ip", "link", "set", dev, "up"])?;
        }
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // Debian's default is the nft flavour; legacy where nft is missing.
        let iptables = ["iptables", "iptables-legacy"]
            .into_iter()
            .find(|tool| router.exec(&[tool, "-t", "nat", "-S"]).is_ok())
            .ok_or("neither iptables (nft) nor iptables-legacy works in a namespace")?;
        let lab = NatLab {
            client,
            attacker,
            server,
            router,
            iptables,
        };
        lab.set_snat(Snat::Nth)?;
        Ok(lab)
    }

    /// Runs one iptables command in the router, written as on a shell line.
    fn iptables(&self, line: &str) -> Result<(), String> {
        let mut args = vec![self.iptables];
        args.extend(line.split_whitespace());
        self.router.exec(&args)
    }

    /// Replaces the router's source NAT for the client network. Only new
    /// connections are affected (conntrack keeps existing ones as they are).
    /// The `nat` table sees the first packet of each connection only, so
    /// `statistic` picks per connection.
    pub fn set_snat(&self, mode: Snat) -> Result<(), String> {
        self.iptables("-t nat -F POSTROUTING")?;
        let rule = "-t nat -A POSTROUTING -s 10.66.1.0/24 -o to-server";
        let pick = match mode {
            Snat::Nth => "-m statistic --mode nth --every 2 --packet 0",
            Snat::Random => "-m statistic --mode random --probability 0.5",
            Snat::Single => "",
        };
        self.iptables(&format!("{rule} {pick} -j SNAT --to-source {EGRESS_A}"))?;
        if mode != Snat::Single {
            // Whatever the first rule did not take.
            self.iptables(&format!("{rule} -j SNAT --to-source {EGRESS_B}"))?;
        }
        Ok(())
    }

    /// Puts the server behind the router's destination NAT: clients reach
    /// it only as [`VIP`]; its own address is unreachable from the client
    /// network (rejected, as a private address behind NAT would be).
    pub fn hide_server_behind_vip(&self) -> Result<(), String> {
        self.iptables(&format!(
            "-t nat -A PREROUTING -d {VIP} -j DNAT --to-destination {SERVER}"
        ))?;
        self.iptables(&format!(
            "-A FORWARD -s 10.66.1.0/24 -d {SERVER} -m conntrack ! --ctstate DNAT \
             -j REJECT --reject-with icmp-net-unreachable"
        ))
    }
}

/// Deletes `ftpb-<pid>-…` namespaces left by runs that died without their
/// guards running (their pid no longer exists).
fn sweep_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// A child process that is killed and reaped on drop (also on panic).
pub struct ChildGuard {
    child: Child,
    pub log: std::path::PathBuf,
}

impl ChildGuard {
    pub fn new(child: Child, log: std::path::PathBuf) -> ChildGuard {
        ChildGuard { child, log }
    }

    /// The last lines of the process's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address of the lab as a socket address.
pub fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}
