//! A writer for the `newc` cpio format, the one the kernel unpacks as an initramfs (no compression: the
//! kernel takes a plain archive, and a few megabytes unpack faster than they decompress under TCG).

use std::collections::BTreeSet;

/// An archive being built in memory. Parent directories are added on demand.
#[derive(Debug, Default)]
pub struct Archive {
    out: Vec<u8>,
    dirs: BTreeSet<String>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (and its parents), mode 0755.
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_string());
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// A regular file with `mode`'s permission bits.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let path = self.parent(path);
        self.entry(&path, S_IFREG | (mode & 0o7777), 1, (0, 0), data);
    }

    /// A symbolic link at `path` to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = self.parent(path);
        self.entry(&path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// A character device node.
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        let path = self.parent(path);
        self.entry(&path, S_IFCHR | (mode & 0o7777), 1, (major, minor), &[]);
    }

    /// The archive's bytes, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }

    fn parent(&mut self, path: &str) -> String {
        let path = path.trim_start_matches('/').to_string();
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        path
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("cpio members are < 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short name"),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut a = Archive::new();
        a.file("/bin/x", 0o755, b"hi");
        let bytes = a.finish();
        // Header of "bin": magic, inode 1, a directory.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000041ED");
        // Every header starts 4-aligned, and the archive ends with the trailer, padded.
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches("070701").count(), 3);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("TRAILER!!!\0"));
        assert_eq!(bytes.len() % 4, 0);
        let second = text.find("bin/x").unwrap() - 110;
        assert_eq!(second % 4, 0);
        assert_eq!(&bytes[second + 14..second + 22], b"000081ED");
        assert_eq!(&bytes[second + 54..second + 62], b"00000002");
    }

    #[test]
    fn parents_once() {
        let mut a = Archive::new();
        a.file("/a/b/c", 0o644, b"");
        a.file("/a/b/d", 0o644, b"");
        a.dir("a");
        let text = String::from_utf8_lossy(&a.finish()).into_owned();
        assert_eq!(text.matches("a/b\0").count(), 1);
        assert_eq!(text.matches("070701").count(), 5);
    }
}
