//! Reading the files a user names: the manifest (`-f`), var files (`--var-file`), `--var name=@PATH`
//! values and the files of Lambda code. Every one of them goes through [`read_bytes`] / [`read_text`]
//! (and `watch` reads the manifest it follows through them too), so that:
//!
//! - only a regular file is read: a FIFO, a device, a socket or a folder is an error naming the path.
//!   The file is opened with `O_NONBLOCK` and checked with `fstat` on the open descriptor, so a FIFO
//!   with no writer never blocks and a file swapped after a check is still caught;
//! - a read stops at a limit chosen per input (the `MAX_*` constants below, documented in README's
//!   "Input limits"): `/dev/zero` or a runaway file is an error, never a read until memory runs out;
//! - text that is not UTF-8 is an error with the line:column of the first bad byte and the encoding it
//!   looks like (UTF-16, Latin-1/Windows-1252, binary). The error never quotes the content (a var file or
//!   an `@PATH` may hold a secret).

use std::io::Read;
use std::path::{Path, PathBuf};

/// A manifest (`-f`): far larger than any stack written by hand.
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
/// A var file (`--var-file`).
pub const MAX_VAR_FILE: u64 = 1024 * 1024;
/// A value read with `--var name=@PATH` (a key, a certificate, a policy document).
pub const MAX_VAR_VALUE_FILE: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {}: {}", path.display(), self.reason())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}: {}", path.display(), self.reason())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("cannot read {}: {}", path.display(), self.reason())]
    TooLarge { path: PathBuf, limit: u64, what: &'static str },
    #[error("{}:{line}:{column}: {detail}", path.display())]
    NotUtf8 { path: PathBuf, line: usize, column: usize, detail: String },
}

impl InputError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            InputError::Io { path, .. }
            | InputError::NotRegular { path, .. }
            | InputError::TooLarge { path, .. }
            | InputError::NotUtf8 { path, .. } => path,
        }
    }

    /// Why, without the path (for messages that name the path their own way).
    pub fn reason(&self) -> String {
        match self {
            InputError::Io { source, .. } => source.to_string(),
            InputError::NotRegular { what, .. } => format!("it is {what}, not a regular file"),
            InputError::TooLarge { limit, what, .. } => {
                format!("it is larger than the {} reconcile reads for {what} (README, \"Input limits\")", size(*limit))
            }
            InputError::NotUtf8 { line, column, detail, .. } => format!("at {line}:{column}: {detail}"),
        }
    }
}

/// `n` bytes in MiB or KiB.
fn size(n: u64) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// The bytes of the regular file at `path`, at most `limit` of them (more is [`InputError::TooLarge`]);
/// `what` names the input in that error ("a manifest"). Never blocks on a FIFO.
pub fn read_bytes(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, InputError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| InputError::Io { path: path.to_path_buf(), source };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It changes nothing for
    // a regular file, the only kind read below.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(what) = not_regular(&meta.file_type()) {
        return Err(InputError::NotRegular { path: path.to_path_buf(), what });
    }
    if meta.len() > limit {
        return Err(InputError::TooLarge { path: path.to_path_buf(), limit, what });
    }
    // The file may grow after the fstat: the read itself is bounded too.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLarge { path: path.to_path_buf(), limit, what });
    }
    Ok(bytes)
}

/// What a file that is not a regular one is ("a FIFO (named pipe)"), or `None` for a regular file.
fn not_regular(ty: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    Some(if ty.is_file() {
        return None;
    } else if ty.is_dir() {
        "a folder"
    } else if ty.is_fifo() {
        "a FIFO (named pipe)"
    } else if ty.is_char_device() {
        "a character device"
    } else if ty.is_block_device() {
        "a block device"
    } else if ty.is_socket() {
        "a socket"
    } else {
        "not a file"
    })
}

/// The metadata of `path` (symlinks followed) when it is a regular file, without opening it (the
/// watcher's cheap check between reads): anything else is [`InputError::NotRegular`].
pub fn check_regular(path: &Path) -> Result<std::fs::Metadata, InputError> {
    let meta = std::fs::metadata(path).map_err(|source| InputError::Io { path: path.to_path_buf(), source })?;
    match not_regular(&meta.file_type()) {
        Some(what) => Err(InputError::NotRegular { path: path.to_path_buf(), what }),
        None => Ok(meta),
    }
}

/// [`read_bytes`], then the bytes as UTF-8 text: otherwise [`InputError::NotUtf8`] at the first bad byte.
pub fn read_text(path: &Path, limit: u64, what: &'static str) -> Result<String, InputError> {
    let bytes = read_bytes(path, limit, what)?;
    text(path, bytes)
}

/// `bytes` (read from `path`) as UTF-8 text, or where and why not. A NUL byte counts as bad too: no
/// text input reconcile reads may hold one (TOML forbids it), and UTF-16 of ASCII is valid UTF-8 with
/// a NUL in every other byte.
pub fn text(path: &Path, bytes: Vec<u8>) -> Result<String, InputError> {
    let invalid = std::str::from_utf8(&bytes).err().map(|e| e.valid_up_to());
    let nul = bytes.iter().position(|b| *b == 0);
    let at = match (invalid, nul) {
        (None, None) => {
            return String::from_utf8(bytes).map_err(|e| InputError::Io { path: path.to_path_buf(), source: std::io::Error::other(e) });
        }
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
    };
    let good = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
    let line = good.matches('\n').count() + 1;
    let column = good[good.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
    let what = if bytes[at] == 0 { "a NUL byte" } else { "not UTF-8 text" };
    let detail = format!("{what}: {}; save it as UTF-8", looks_like(&bytes));
    Err(InputError::NotUtf8 { path: path.to_path_buf(), line, column, detail })
}

/// What text that is not UTF-8 most likely is, from its byte-order mark or its NUL bytes.
fn looks_like(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(&[0xFF, 0xFE, 0, 0]) || bytes.starts_with(&[0, 0, 0xFE, 0xFF]) {
        return "it starts with a UTF-32 byte-order mark";
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return "it starts with a UTF-16 byte-order mark";
    }
    let sample = &bytes[..bytes.len().min(4096)];
    let (even, odd) =
        sample.iter().enumerate().filter(|(_, b)| **b == 0).fold((0, 0), |(e, o), (i, _)| if i % 2 == 0 { (e + 1, o) } else { (e, o + 1) });
    let half = sample.len() / 2;
    // ASCII text in UTF-16: every other byte is NUL (the high bytes: odd ones little-endian).
    if half > 0 && (odd * 10 >= half * 8 || even * 10 >= half * 8) {
        return "it looks like UTF-16 (every other byte is NUL)";
    }
    if even + odd > 0 {
        return "it holds NUL bytes, so it looks like binary data rather than text";
    }
    "it looks like a single-byte encoding such as Latin-1 (ISO-8859-1) or Windows-1252"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn reads_a_regular_file_within_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "m.toml", b"a = 1\n");
        assert_eq!(read_text(&p, 6, "a manifest").unwrap(), "a = 1\n");
        let err = read_text(&p, 5, "a manifest").unwrap_err();
        assert!(matches!(err, InputError::TooLarge { limit: 5, .. }), "{err}");
        assert!(err.to_string().contains("m.toml"), "{err}");
    }

    #[test]
    fn devices_folders_and_fifos_are_refused_without_reading() {
        let err = read_bytes(Path::new("/dev/zero"), MAX_MANIFEST, "a manifest").unwrap_err();
        assert!(matches!(err, InputError::NotRegular { what: "a character device", .. }), "{err}");
        assert!(err.to_string().contains("/dev/zero"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_bytes(dir.path(), 10, "a manifest"), Err(InputError::NotRegular { what: "a folder", .. })));
        // A FIFO nobody writes to: opening it must not wait for a writer (this test would hang).
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_bytes(&fifo, 10, "a manifest").unwrap_err();
        assert!(matches!(err, InputError::NotRegular { what: "a FIFO (named pipe)", .. }), "{err}");
    }

    #[test]
    fn non_utf8_names_the_first_bad_byte_and_the_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "latin1.toml", b"[stack]\nname = \"caf\xe9\"\n");
        match read_text(&p, 100, "a manifest").unwrap_err() {
            InputError::NotUtf8 { line, column, detail, .. } => {
                assert_eq!((line, column), (2, 12));
                assert!(detail.contains("Latin-1"), "{detail}");
            }
            e => panic!("{e}"),
        }
        let utf16: Vec<u8> = [0xFF, 0xFE].into_iter().chain("a = 1\n".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        let p = write(&dir, "utf16.toml", &utf16);
        let err = read_text(&p, 100, "a manifest").unwrap_err();
        assert!(err.to_string().contains(":1:1: not UTF-8 text: it starts with a UTF-16 byte-order mark"), "{err}");
        let utf16be: Vec<u8> = "a = 1\n\u{e9}".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let p = write(&dir, "utf16be.toml", &utf16be);
        // Without a byte-order mark: the first NUL, at 1:1.
        let err = read_text(&p, 100, "a manifest").unwrap_err();
        assert!(err.to_string().contains(":1:1: a NUL byte: it looks like UTF-16 (every other byte"), "{err}");
    }
}
