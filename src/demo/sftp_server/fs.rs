//! Filesystem helpers: blocking std::fs work behind the SFTP requests, and
//! the attribute/listing formats SFTP clients expect.

use std::collections::VecDeque;
use std::fs::{self, File as StdFile, FileTimes, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh_sftp::protocol::{File, FileAttributes, OpenFlags};

use super::handler::DirListing;

/// Translates SFTP open flags into `OpenOptions`.
///
/// Combinations std rejects (e.g. CREAT without WRITE, TRUNC with APPEND) fail
/// with `InvalidInput`, which reaches the client as a plain failure.
pub(super) fn open_options(pflags: OpenFlags, attrs: &FileAttributes) -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .read(pflags.contains(OpenFlags::READ))
        .write(pflags.contains(OpenFlags::WRITE))
        .append(pflags.contains(OpenFlags::APPEND))
        .truncate(pflags.contains(OpenFlags::TRUNCATE))
        // SFTPv3: EXCL only means something together with CREAT.
        .create(pflags.contains(OpenFlags::CREATE) && !pflags.contains(OpenFlags::EXCLUDE))
        .create_new(pflags.contains(OpenFlags::CREATE) && pflags.contains(OpenFlags::EXCLUDE))
        // Like OpenSSH: the client's permissions (or 0666) go through the umask.
        .mode(attrs.permissions.map_or(0o666, |mode| mode & 0o7777));
    options
}

/// Reads up to `len` bytes at `offset`; fewer only at end of file.
pub(super) fn read_at_most(file: &StdFile, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        // The offset comes from the peer: never let it overflow.
        let Some(position) = offset.checked_add(filled as u64) else {
            break;
        };
        match file.read_at(&mut buf[filled..], position) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// SFTPv3 RENAME: fails when the target exists.
///
/// For regular files link+unlink (as OpenSSH does) makes the check atomic;
/// directories, and filesystems without hard links, fall back to
/// check-then-rename, which has a small race that a demo can live with.
pub(super) fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(from)?.is_file() {
        match fs::hard_link(from, to) {
            Ok(()) => {
                return fs::remove_file(from).inspect_err(|_| {
                    // Undo the link so a failed rename leaves things as they were.
                    let _ = fs::remove_file(to);
                });
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Err(error),
            Err(_) => {} // e.g. EPERM on filesystems without hard links
        }
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "target already exists",
        ));
    }
    fs::rename(from, to)
}

/// SETSTAT on a path. Times are set before permissions so that a request
/// that also removes read access can still open the file.
pub(super) fn set_path_attributes(path: &Path, attrs: &FileAttributes) -> io::Result<()> {
    if let Some(size) = attrs.size {
        OpenOptions::new().write(true).open(path)?.set_len(size)?;
    }
    if let Some(times) = file_times(attrs) {
        // std has no path-based utimes; an O_RDONLY descriptor suffices for
        // futimens(2) when we own the file, and also works for directories.
        StdFile::open(path)?.set_times(times)?;
    }
    if let Some(mode) = attrs.permissions {
        fs::set_permissions(path, Permissions::from_mode(mode & 0o7777))?;
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::chown(path, attrs.uid, attrs.gid)?;
    }
    Ok(())
}

/// FSETSTAT on an open file, same order as [`set_path_attributes`].
pub(super) fn set_file_attributes(file: &StdFile, attrs: &FileAttributes) -> io::Result<()> {
    if let Some(size) = attrs.size {
        file.set_len(size)?;
    }
    if let Some(times) = file_times(attrs) {
        file.set_times(times)?;
    }
    if let Some(mode) = attrs.permissions {
        file.set_permissions(Permissions::from_mode(mode & 0o7777))?;
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::fchown(file, attrs.uid, attrs.gid)?;
    }
    Ok(())
}

fn file_times(attrs: &FileAttributes) -> Option<FileTimes> {
    let at = |secs: u32| UNIX_EPOCH + Duration::from_secs(secs.into());
    let mut times = FileTimes::new();
    if let Some(atime) = attrs.atime {
        times = times.set_accessed(at(atime));
    }
    if let Some(mtime) = attrs.mtime {
        times = times.set_modified(at(mtime));
    }
    (attrs.atime.is_some() || attrs.mtime.is_some()).then_some(times)
}

/// SFTP attributes for a file, including the file type bits in `permissions`.
pub(super) fn attributes(metadata: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(metadata.len()),
        uid: Some(metadata.uid()),
        user: None,
        gid: Some(metadata.gid()),
        group: None,
        permissions: Some(metadata.mode()),
        atime: Some(clamp_u32(metadata.atime())),
        mtime: Some(clamp_u32(metadata.mtime())),
    }
}

/// SFTPv3 times are unsigned 32-bit seconds.
fn clamp_u32(secs: i64) -> u32 {
    u32::try_from(secs.max(0)).unwrap_or(u32::MAX)
}

/// Lists `dir` (names only) plus `.` and `..`, as readdir(3) does.
pub(super) fn snapshot_dir(dir: PathBuf, parent: PathBuf) -> io::Result<DirListing> {
    let mut pending = VecDeque::from([(".".to_owned(), dir.clone()), ("..".to_owned(), parent)]);
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        // SFTP names are strings here; a non-UTF-8 name is shown lossily.
        pending.push_back((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    Ok(DirListing { path: dir, pending })
}

/// lstat()s a batch of directory entries, skipping those that vanished.
pub(super) fn stat_entries(batch: Vec<(String, PathBuf)>) -> Vec<File> {
    let now = SystemTime::now();
    batch
        .into_iter()
        .filter_map(|(name, path)| {
            let metadata = fs::symlink_metadata(path).ok()?;
            let longname = long_name(&name, &metadata, now);
            Some(File {
                filename: name,
                longname,
                attrs: attributes(&metadata),
            })
        })
        .collect()
}

/// An `ls -l` line in the layout OpenSSH's sftp-server uses (numeric owners:
/// resolving names would need libc).
fn long_name(name: &str, metadata: &Metadata, now: SystemTime) -> String {
    format!(
        "{} {:>3} {:<8} {:<8} {:>8} {} {}",
        mode_string(metadata.mode()),
        metadata.nlink(),
        metadata.uid(),
        metadata.gid(),
        metadata.len(),
        ls_date(metadata.mtime(), now),
        name
    )
}

/// `drwxr-xr-x`-style rendering of a Unix mode, including setuid/setgid/sticky.
fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170_000 {
        0o040_000 => 'd',
        0o120_000 => 'l',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o010_000 => 'p',
        0o140_000 => 's',
        _ => '-',
    };
    let mut out = String::with_capacity(10);
    out.push(kind);
    for (shift, special_bit, special) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 0o7;
        out.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        out.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        out.push(match (bits & 0o1 != 0, mode & special_bit != 0) {
            (true, true) => special,
            (false, true) => special.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// `ls` date column: time of day for the last six months, else the year.
fn ls_date(mtime: i64, now: SystemTime) -> String {
    let Some(utc) = chrono::DateTime::from_timestamp(mtime, 0) else {
        return "?".to_owned();
    };
    let local = utc.with_timezone(&chrono::Local);
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let recent = now - 365 * 24 * 60 * 60 / 2 < mtime && now >= mtime;
    let format = if recent { "%b %e %H:%M" } else { "%b %e  %Y" };
    local.format(format).to_string()
}

/// Takes one SSH `string` (u32 big-endian length + bytes) off the front of
/// `buf`; `None` if truncated or not UTF-8.
pub(super) fn take_ssh_string(buf: &mut &[u8]) -> Option<String> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    *buf = rest;
    String::from_utf8(value.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_render_like_ls() {
        assert_eq!(mode_string(0o040_755), "drwxr-xr-x");
        assert_eq!(mode_string(0o100_640), "-rw-r-----");
        assert_eq!(mode_string(0o120_777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o104_755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o041_776), "drwxrwxrwT");
    }

    #[test]
    fn ssh_strings_are_parsed_strictly() {
        let mut payload: &[u8] = &[0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0];
        assert_eq!(take_ssh_string(&mut payload).as_deref(), Some("hi"));
        assert_eq!(take_ssh_string(&mut payload).as_deref(), Some(""));
        assert_eq!(take_ssh_string(&mut payload), None);
        let mut truncated: &[u8] = &[0, 0, 0, 9, b'x'];
        assert_eq!(take_ssh_string(&mut truncated), None);
    }
}
