#!/usr/bin/env python3
"""Accuracy and fairness of ftpbridge's tenant bandwidth limits.

    python3 bench/limits.py                 # 8 MiB/s, 1/4/16 sessions, ~10 s per case
    RATE_MIB=4 SECONDS=5 python3 bench/limits.py

A tenant "acme" limited to RATE_MIB MiB/s (burst 256 KiB) runs 1, 4 and 16
concurrent downloads, then uploads, each case moving RATE_MIB x SECONDS MiB
in total. For each case it prints the aggregate rate over the whole case
(all bytes from the first command to the last 226, so the burst counts) and
in the steady window while every session runs, its error against the
limit, and each session's bytes in that window relative to a fair share.
Progress is sampled 20 times a second: bytes received for downloads, the
size of the upload's temporary file on the SFTP server for uploads.
While the limited sessions run, a user of a second, unlimited tenant
downloads in a loop; its rate is compared with its rate alone, to show that
one tenant's limit does not slow another.

Runs its own sshd (files on /dev/shm) and ftpbridge (release build) on
127.0.0.1; needs openssh-server and python3 (scripts/test.sh installs them).
Times are taken at the client, after the proxy's 226, so data still in
socket buffers cannot flatter the figures.
"""

import ftplib
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

RATE_MIB = float(os.environ.get("RATE_MIB", "8"))
SECONDS = float(os.environ.get("SECONDS", "10"))
SESSIONS = [int(n) for n in os.environ.get("SESSIONS", "1 4 16").split()]
BURST = "256 KiB"
SSHD = os.environ.get("SSHD", "/usr/sbin/sshd")
SFTP_SERVER = os.environ.get("SFTP_SERVER", "/usr/lib/openssh/sftp-server")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ftpbridge")
PASSWORD = "bench"
MIB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, process):
    for _ in range(400):
        if process.poll() is not None:
            sys.exit(f"process exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on port {port}")


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout


class Lab:
    """sshd + ftpbridge in a temporary directory; stopped on exit."""

    def __init__(self):
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="ftpbridge-limits.", dir=base)
        self.processes = []

    def start(self):
        d = self.dir
        data = os.path.join(d, "data")
        for sub in ("acme", "free"):
            os.makedirs(os.path.join(data, sub))
        os.makedirs("/run/sshd", exist_ok=True)
        os.chmod(d, 0o755)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/host_key")
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/client_key")
        shutil.copy(f"{d}/client_key.pub", f"{d}/authorized_keys")
        sshd_port = free_port()
        with open(f"{d}/sshd_config", "w") as f:
            f.write(
                f"ListenAddress 127.0.0.1\nPort {sshd_port}\nHostKey {d}/host_key\n"
                f"PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n"
                "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "UsePAM no\nPermitRootLogin yes\nMaxStartups 100\nMaxSessions 100\n"
                f"Subsystem sftp {SFTP_SERVER}\n"
            )
        sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", f"{d}/sshd_config"],
                                stderr=open(f"{d}/sshd.log", "w"))
        self.processes.append(sshd)
        wait_port(sshd_port, sshd)
        fingerprint = run("ssh-keygen", "-lf", f"{d}/host_key.pub").split()[1]
        password_hash = run(BIN, "hash-password", input=PASSWORD + "\n").strip()
        self.port = free_port()
        user = run("id", "-un").strip()
        with open(f"{d}/proxy.toml", "w") as f:
            f.write(f"""
[server]
max_sessions = 200

[[listeners]]
name = "bench"
bind = "127.0.0.1:{self.port}"

[[upstreams]]
name = "sftp"
kind = "sftp"
address = "127.0.0.1:{sshd_port}"
host_key = "{fingerprint}"
auth = "key"
username = "{user}"
key = "{d}/client_key"
root = "{data}"

[tenants.acme]
download_rate = "{RATE_MIB} MiB/s"
upload_rate = "{RATE_MIB} MiB/s"
burst = "{BURST}"

[[users]]
name = "acme"
password_hash = "{password_hash}"
upstream = "sftp"
root = "/acme"
tenant = "acme"

[[users]]
name = "free"
password_hash = "{password_hash}"
upstream = "sftp"
root = "/free"
""")
        proxy = subprocess.Popen([BIN, "run", "--config", f"{d}/proxy.toml"],
                                 env={**os.environ, "RUST_LOG": "warn"},
                                 stderr=open(f"{d}/proxy.log", "w"))
        self.processes.append(proxy)
        wait_port(self.port, proxy)
        self.data = data

    def stop(self):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def ftp(self, user):
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", self.port, timeout=120)
        ftp.login(user, PASSWORD)
        ftp.voidcmd("TYPE I")
        return ftp


class Sink:
    def __init__(self):
        self.bytes = 0

    def __call__(self, block):
        self.bytes += len(block)


class Transfer:
    """One limited session's transfer and how far it has got."""

    def __init__(self, lab, direction, name, size, index):
        self.lab, self.direction, self.size, self.index = lab, direction, size, index
        self.name = name if direction == "download" else f"{name}.{index}"
        self.sink = Sink()
        self.started = self.ended = None

    def progress(self):
        if self.direction == "download":
            return self.sink.bytes
        if self.ended is not None:
            return self.size
        # The upload's temporary file on the SFTP server: what passed the limit.
        prefix = f".{self.name}."
        directory = os.path.join(self.lab.data, "acme")
        for entry in os.scandir(directory):
            if entry.name.startswith(prefix) and entry.name.endswith(".ftpbridge-upload"):
                try:
                    return entry.stat().st_size
                except FileNotFoundError:
                    return self.size
        return 0

    def run(self, barrier):
        ftp = self.lab.ftp("acme")
        payload = os.urandom(self.size) if self.direction == "upload" else None
        barrier.wait()
        self.started = time.monotonic()
        if self.direction == "download":
            ftp.retrbinary(f"RETR {self.name}", self.sink, blocksize=65536)
        else:
            ftp.storbinary(f"STOR {self.name}", io.BytesIO(payload), blocksize=65536)
        self.ended = time.monotonic()
        ftp.quit()

    def moved(self):
        return self.sink.bytes if self.direction == "download" else self.size


class Background:
    """The unlimited tenant: downloads in a loop until stopped."""

    def __init__(self, lab, name):
        self.lab, self.name = lab, name
        self.stop_flag = threading.Event()
        self.bytes = 0
        self.thread = threading.Thread(target=self.loop)

    def loop(self):
        ftp = self.lab.ftp("free")
        sink = Sink()
        self.started = time.monotonic()
        while not self.stop_flag.is_set():
            ftp.retrbinary(f"RETR {self.name}", sink, blocksize=262144)
        self.ended = time.monotonic()
        self.bytes = sink.bytes
        ftp.quit()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join()

    def rate(self):
        return self.bytes / (self.ended - self.started)


def run_case(lab, direction, sessions):
    total = int(RATE_MIB * SECONDS * MIB)
    size = total // sessions
    name = f"case-{sessions}.bin"
    if direction == "download":
        with open(os.path.join(lab.data, "acme", name), "wb") as f:
            f.write(os.urandom(size))
    transfers = [Transfer(lab, direction, name, size, i) for i in range(sessions)]
    barrier = threading.Barrier(sessions)
    threads = [threading.Thread(target=t.run, args=(barrier,)) for t in transfers]
    for t in threads:
        t.start()
    samples = []
    while any(t.is_alive() for t in threads):
        samples.append((time.monotonic(), [t.progress() for t in transfers]))
        time.sleep(0.05)
    for t in threads:
        t.join()
    if any(t.ended is None for t in transfers):
        sys.exit(f"a {direction} session failed; see {lab.dir}/proxy.log")
    first = min(t.started for t in transfers)
    last = max(t.ended for t in transfers)
    moved = sum(t.moved() for t in transfers)
    if moved != size * sessions:
        sys.exit(f"moved {moved} bytes, expected {size * sessions}")
    whole = moved / (last - first)
    # The steady window: every session running, the burst spent.
    begin = max(t.started for t in transfers) + 0.5
    end = min(t.ended for t in transfers) - 0.1
    window = [s for s in samples if begin <= s[0] <= end]
    if len(window) < 10:
        sys.exit("the case was too short for a steady window; raise SECONDS")
    (t0, at_begin), (t1, at_end) = window[0], window[-1]
    in_window = [b - a for a, b in zip(at_begin, at_end)]
    steady = sum(in_window) / (t1 - t0)
    mean = sum(in_window) / sessions
    shares = [b / mean for b in in_window]
    return whole, steady, shares


def main():
    if not os.path.exists(BIN) or os.environ.get("NO_BUILD") is None:
        print("building ftpbridge (release)...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    lab = Lab()
    try:
        lab.start()
        big = "free.bin"
        with open(os.path.join(lab.data, "free", big), "wb") as f:
            f.write(os.urandom(256 * MIB))
        limit = RATE_MIB * MIB
        with Background(lab, big) as alone:
            time.sleep(SECONDS / 2)
        alone_rate = alone.rate()
        rows = []
        for direction in ("download", "upload"):
            for sessions in SESSIONS:
                print(f"{direction}: {sessions} session(s)...", file=sys.stderr)
                with Background(lab, big) as other:
                    whole, steady, shares = run_case(lab, direction, sessions)
                rows.append((direction, sessions, whole, steady, shares, other.rate()))
        print()
        print(f"tenant limit {RATE_MIB:g} MiB/s (burst {BURST}), ~{SECONDS:g} s per case; "
              f"unlimited tenant alone: {alone_rate / MIB:.0f} MiB/s")
        print(f"{'direction':<10}{'sessions':>9}{'whole MiB/s':>13}{'error':>9}"
              f"{'steady MiB/s':>14}{'error':>9}{'shares min–max':>16}{'worst':>8}"
              f"{'other tenant':>14}")
        worst_error = worst_share = 0.0
        for direction, sessions, whole, steady, shares, other in rows:
            whole_error = (whole - limit) / limit * 100
            steady_error = (steady - limit) / limit * 100
            worst = max(abs(s - 1) for s in shares) * 100
            worst_error = max(worst_error, abs(whole_error), abs(steady_error))
            worst_share = max(worst_share, worst)
            print(f"{direction:<10}{sessions:>9}{whole / MIB:>13.3f}{whole_error:>+8.2f}%"
                  f"{steady / MIB:>14.3f}{steady_error:>+8.2f}%"
                  f"{min(shares):>10.2f}–{max(shares):<5.2f}{worst:>7.1f}%"
                  f"{other / alone_rate:>13.2f}×")
        print()
        print(f"largest aggregate error {worst_error:.2f}% (target ±3%): "
              f"{'met' if worst_error <= 3 else 'not met'}")
        print(f"largest deviation from a fair share {worst_share:.1f}% (target ±20%): "
              f"{'met' if worst_share <= 20 else 'not met'}")
        print("other tenant: its rate during each case relative to its rate alone "
              "(the machine's two cores are shared with the limited sessions)")
        for direction, sessions, _, _, shares, _ in rows:
            print(f"  {direction} x{sessions} shares: " + " ".join(f"{s:.2f}" for s in shares))
    finally:
        lab.stop()


if __name__ == "__main__":
    main()
