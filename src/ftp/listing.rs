//! Directory listing formats. Pure: entries in, bytes out.
//!
//! - LIST: RFC 959 leaves the format open; clients (FileZilla, WinSCP, lftp,
//!   .NET, commons-net) all parse the Unix `ls -l` form, so that is what we send.
//! - NLST: one name per line (RFC 959 §4.1.3).
//! - MLSD/MLST: RFC 3659 §7 facts, `fact=value;` pairs, one space, the name.

use chrono::{DateTime, Datelike, Utc};

use crate::upstream::{FileKind, Metadata};

/// Entries older than this (or in the future) show the year instead of the time, as `ls` does.
const RECENT_SECONDS: i64 = 180 * 24 * 3600;

fn permission_string(meta: &Metadata) -> [u8; 10] {
    let type_char = match meta.kind {
        FileKind::Directory => b'd',
        FileKind::Symlink => b'l',
        FileKind::File | FileKind::Other => b'-',
    };
    let mode = meta.permissions.unwrap_or(match meta.kind {
        FileKind::Directory => 0o755,
        _ => 0o644,
    });
    let mut out = [b'-'; 10];
    out[0] = type_char;
    for (i, letter) in b"rwxrwxrwx".iter().enumerate() {
        if mode & (0o400 >> i) != 0 {
            out[i + 1] = *letter;
        }
    }
    out
}

fn list_date(modified: Option<i64>, now: i64) -> String {
    let Some(time) = modified.and_then(|t| DateTime::<Utc>::from_timestamp(t, 0)) else {
        return "Jan 01  1970".to_owned();
    };
    let age = now - time.timestamp();
    if (0..RECENT_SECONDS).contains(&age) || (age < 0 && age > -3600) {
        time.format("%b %d %H:%M").to_string()
    } else {
        format!("{} {:>5}", time.format("%b %d"), time.year())
    }
}

/// One `ls -l` line, CRLF-terminated. `now` decides between time and year.
pub fn list_line(name: &[u8], meta: &Metadata, now: i64) -> Vec<u8> {
    let size = if meta.is_dir() { 4096 } else { meta.size };
    let mut line = Vec::with_capacity(64 + name.len());
    line.extend_from_slice(&permission_string(meta));
    line.extend_from_slice(
        format!(
            "    1 ftp      ftp      {size:>12} {} ",
            list_date(meta.modified, now)
        )
        .as_bytes(),
    );
    line.extend_from_slice(name);
    line.extend_from_slice(b"\r\n");
    line
}

/// One NLST line.
pub fn name_line(name: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(name.len() + 2);
    line.extend_from_slice(name);
    line.extend_from_slice(b"\r\n");
    line
}

/// RFC 3659 §7.5.5 `perm` letters from the owner permission bits: the
/// upstream account normally owns what it stores.
fn perm_fact(meta: &Metadata) -> &'static str {
    let mode = meta.permissions.unwrap_or(0o755);
    let (readable, writable) = (mode & 0o400 != 0, mode & 0o200 != 0);
    match (meta.is_dir(), readable, writable) {
        (true, true, true) => "cdeflmp",
        (true, true, false) => "el",
        (true, false, true) => "cdfmp",
        (true, false, false) => "",
        (false, true, true) => "adfrw",
        (false, true, false) => "r",
        (false, false, true) => "adfw",
        (false, false, false) => "",
    }
}

/// The MLSx facts we offer, in FEAT order (RFC 3659 §7.8).
const FACT_NAMES: [&str; 6] = ["type", "size", "modify", "perm", "unique", "UNIX.mode"];

/// Which facts MLSD/MLST show; `OPTS MLST` changes it per session (RFC 3659 §7.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts([bool; 6]);

impl Default for Facts {
    fn default() -> Self {
        Facts([true; 6])
    }
}

impl Facts {
    /// The facts named in `OPTS MLST`, case-insensitively; unknown names are ignored.
    pub fn select(names: &[String]) -> Facts {
        let mut selected = [false; 6];
        for name in names {
            if let Some(i) = FACT_NAMES.iter().position(|f| f.eq_ignore_ascii_case(name)) {
                selected[i] = true;
            }
        }
        Facts(selected)
    }

    fn shows(&self, fact: &str) -> bool {
        FACT_NAMES
            .iter()
            .position(|f| *f == fact)
            .is_some_and(|i| self.0[i])
    }

    /// `type;size;`: the selected facts, as the reply to OPTS MLST lists them.
    pub fn selected_names(&self) -> String {
        FACT_NAMES
            .iter()
            .zip(self.0)
            .filter(|(_, on)| *on)
            .map(|(name, _)| format!("{name};"))
            .collect()
    }

    /// The FEAT line: every fact offered, `*` after the selected ones.
    pub fn feat_line(&self) -> String {
        let facts: String = FACT_NAMES
            .iter()
            .zip(self.0)
            .map(|(name, on)| format!("{name}{};", if on { "*" } else { "" }))
            .collect();
        format!("MLST {facts}")
    }
}

/// MLSx facts followed by one space and `name` (RFC 3659 §7.2), no line end.
/// `unique` identifies the file on the upstream (RFC 3659 §7.5.2).
pub fn mlsx_facts(name: &[u8], meta: &Metadata, unique: u64, shown: Facts) -> Vec<u8> {
    let kind = match meta.kind {
        FileKind::Directory => "dir",
        FileKind::File => "file",
        FileKind::Symlink => "OS.unix=symlink",
        FileKind::Other => "OS.unix=special",
    };
    let mut facts = String::new();
    if shown.shows("type") {
        facts.push_str(&format!("type={kind};"));
    }
    if shown.shows("size") && !meta.is_dir() {
        facts.push_str(&format!("size={};", meta.size));
    }
    let modified = meta
        .modified
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
    if let Some(time) = modified.filter(|_| shown.shows("modify")) {
        facts.push_str(&format!("modify={};", time.format("%Y%m%d%H%M%S")));
    }
    if shown.shows("perm") {
        facts.push_str(&format!("perm={};", perm_fact(meta)));
    }
    if let Some(mode) = meta.permissions.filter(|_| shown.shows("UNIX.mode")) {
        facts.push_str(&format!("UNIX.mode=0{mode:o};"));
    }
    if shown.shows("unique") {
        facts.push_str(&format!("unique={unique:x};"));
    }
    facts.push(' ');
    let mut out = facts.into_bytes();
    out.extend_from_slice(name);
    out
}

/// A stable identifier for a path (FNV-1a): SFTP v3 exposes no inode numbers.
pub fn unique_id(path: &[u8]) -> u64 {
    path.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The MDTM reply value (RFC 3659 §3): `YYYYMMDDHHMMSS` in UTC.
pub fn mdtm_value(modified: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp(modified, 0).map(|t| t.format("%Y%m%d%H%M%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

    fn file(size: u64, modified: i64, mode: u32) -> Metadata {
        Metadata {
            kind: FileKind::File,
            size,
            modified: Some(modified),
            permissions: Some(mode),
        }
    }

    fn dir(modified: i64) -> Metadata {
        Metadata {
            kind: FileKind::Directory,
            size: 0,
            modified: Some(modified),
            permissions: Some(0o755),
        }
    }

    #[test]
    fn list_line_of_a_recent_file_shows_the_time() {
        let line = list_line(b"report.csv", &file(1234, NOW - 3600, 0o644), NOW);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "-rw-r--r--    1 ftp      ftp              1234 Nov 14 21:13 report.csv\r\n"
        );
    }

    #[test]
    fn list_line_of_an_old_file_shows_the_year() {
        let line = list_line(b"old", &file(1, 1_500_000_000, 0o600), NOW);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "-rw-------    1 ftp      ftp                 1 Jul 14  2017 old\r\n"
        );
    }

    #[test]
    fn list_line_of_a_directory_starts_with_d() {
        let line = String::from_utf8(list_line(b"sub dir", &dir(NOW), NOW)).unwrap();
        assert!(line.starts_with("drwxr-xr-x"));
        assert!(line.ends_with(" sub dir\r\n"));
    }

    #[test]
    fn list_line_keeps_non_utf8_names() {
        let line = list_line(b"caf\xe9", &file(0, NOW, 0o644), NOW);
        assert!(line.ends_with(b" caf\xe9\r\n"));
    }

    #[test]
    fn mlsx_facts_for_a_file() {
        let facts = mlsx_facts(b"a b.txt", &file(42, NOW, 0o644), 0xabc, Facts::default());
        assert_eq!(
            String::from_utf8(facts).unwrap(),
            "type=file;size=42;modify=20231114221320;perm=adfrw;UNIX.mode=0644;unique=abc; a b.txt"
        );
    }

    #[test]
    fn mlsx_facts_for_a_directory_have_no_size() {
        let facts = String::from_utf8(mlsx_facts(b"d", &dir(NOW), 1, Facts::default())).unwrap();
        assert!(facts.starts_with("type=dir;modify=20231114221320;perm=cdeflmp;"));
        assert!(!facts.contains("size="));
    }

    #[test]
    fn opts_mlst_selects_facts_case_insensitively() {
        let shown = Facts::select(&["SIZE".into(), "type".into(), "bogus".into()]);
        assert_eq!(shown.selected_names(), "type;size;");
        let facts = mlsx_facts(b"f", &file(7, NOW, 0o644), 1, shown);
        assert_eq!(String::from_utf8(facts).unwrap(), "type=file;size=7; f");
        assert_eq!(
            shown.feat_line(),
            "MLST type*;size*;modify;perm;unique;UNIX.mode;"
        );
    }

    #[test]
    fn no_facts_leaves_only_the_name() {
        let facts = mlsx_facts(b"f", &file(7, NOW, 0o644), 1, Facts::select(&[]));
        assert_eq!(facts, b" f");
    }

    #[test]
    fn read_only_file_permits_only_retrieval() {
        assert_eq!(perm_fact(&file(0, 0, 0o444)), "r");
    }

    #[test]
    fn unique_ids_differ_by_path() {
        assert_ne!(unique_id(b"/a"), unique_id(b"/b"));
        assert_eq!(unique_id(b"/a"), unique_id(b"/a"));
    }

    #[test]
    fn mdtm_is_utc_with_seconds() {
        assert_eq!(mdtm_value(NOW).unwrap(), "20231114221320");
    }
}
