//! Reading a file from outside, bounded: only a regular file (a FIFO, a device or a directory is
//! refused before a byte is read), and at most a stated number of bytes. Every file pingscope
//! reads (the config, target files, the web config and its TLS material) goes through here.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Largest config file: room for 200,000 targets with labels (about 15 MB) and then some.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `target_files` file, as large as a config.
pub const MAX_TARGET_FILE_BYTES: u64 = MAX_CONFIG_BYTES;
/// Largest web config file, certificate, key or CA bundle.
pub const MAX_WEB_FILE_BYTES: u64 = 1024 * 1024;

/// Why a file was not read. The message says what to do; the caller names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file cannot be opened or read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// Not a regular file.
    #[error("not a regular file ({0}); only regular files are read")]
    NotRegular(&'static str),
    /// Larger than the bound.
    #[error("larger than the limit of {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
    /// Not UTF-8 text.
    #[error("not UTF-8 text")]
    NotUtf8,
}

/// Reads `path` as text when it is a regular file of at most `limit` bytes. Opening never blocks
/// (a FIFO without a writer is refused, not waited for).
pub fn read_text(path: &Path, limit: u64) -> Result<String, ReadError> {
    let bytes = read_bytes(path, limit)?;
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// Reads `path` when it is a regular file of at most `limit` bytes.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    // Checked on the open file, so a swap between the check and the read changes nothing.
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt as _;
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a special file"
        };
        return Err(ReadError::NotRegular(what));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow after the stat: read one byte past the bound to notice.
    file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_bound_are_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("a.yml");
        std::fs::write(&file, "0123456789").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_text(&file, 10).ok().as_deref(), Some("0123456789"));
        let big = read_text(&file, 9).map_err(|e| e.to_string());
        assert_eq!(big, Err("larger than the limit of 9 bytes".to_owned()));
        let zero = read_text(Path::new("/dev/zero"), 1 << 20).map_err(|e| e.to_string());
        assert_eq!(
            zero,
            Err("not a regular file (a device); only regular files are read".to_owned())
        );
        let d = read_text(dir.path(), 10).map_err(|e| e.to_string());
        assert_eq!(
            d,
            Err("not a regular file (a directory); only regular files are read".to_owned())
        );
        let fifo = dir.path().join("fifo");
        let made = nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600));
        assert!(made.is_ok(), "{made:?}");
        let f = read_text(&fifo, 10).map_err(|e| e.to_string());
        assert_eq!(
            f,
            Err("not a regular file (a FIFO); only regular files are read".to_owned())
        );
    }
}
