//! The guest's root file system as a newc cpio archive (what the kernel unpacks into its
//! rootfs), written here so the harness needs no `cpio` on the machine.

use crate::{io_err, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// Directories of unpacked packages the guest never reads.
const SKIP: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/lintian",
    "usr/share/locale",
];

/// An archive being built. Parent directories are added on demand; a path added twice keeps
/// its first entry's type (the later one overrides a file's content in the kernel's unpack).
#[derive(Debug, Default)]
pub struct Archive {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn parents(&mut self, name: &str) {
        let mut at = 0;
        while let Some(i) = name[at..].find('/') {
            let d = &name[..at + i];
            self.dir(d);
            at += i + 1;
        }
    }

    /// A directory (mode 0755).
    pub fn dir(&mut self, name: &str) {
        let name = name.trim_matches('/');
        if name.is_empty() || self.dirs.contains(name) {
            return;
        }
        self.parents(name);
        self.dirs.insert(name.to_string());
        self.entry(name, 0o040755, &[]);
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        let name = name.trim_matches('/');
        self.parents(name);
        self.entry(name, 0o100000 | (perm & 0o7777), data);
    }

    /// A symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) {
        let name = name.trim_matches('/');
        self.parents(name);
        self.entry(name, 0o120777, target.as_bytes());
    }

    /// Everything below `host` (files, links, directories), at the archive's root, in a
    /// stable order, leaving out documentation.
    pub fn tree(&mut self, host: &Path) -> Result<()> {
        self.walk(host, "")
    }

    fn walk(&mut self, host: &Path, rel: &str) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(host)
            .map_err(io_err(host))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!("{rel}{}", e.file_name().to_string_lossy());
            if SKIP.contains(&name.as_str()) {
                continue;
            }
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).map_err(io_err(&p))?;
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).map_err(io_err(&p))?;
                self.symlink(&name, &t.to_string_lossy());
            } else if md.is_dir() {
                self.dir(&name);
                self.walk(&p, &format!("{name}/"))?;
            } else if md.is_file() {
                let data = std::fs::read(&p).map_err(io_err(&p))?;
                self.file(
                    &name,
                    std::os::unix::fs::PermissionsExt::mode(&md.permissions()),
                    &data,
                );
            }
        }
        Ok(())
    }

    /// The finished archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_parents_come_first() {
        let mut a = Archive::new();
        a.file("bin/tool", 0o755, b"abc");
        a.symlink("lib64/ld", "/lib/ld.so");
        let b = a.finish();
        assert_eq!(&b[..6], b"070701");
        assert_eq!(b.len() % 4, 0);
        let text = String::from_utf8_lossy(&b);
        let bin = text.find("bin\0").unwrap();
        let tool = text.find("bin/tool\0").unwrap();
        assert!(bin < tool, "the directory precedes its file");
        assert!(text.contains("/lib/ld.so"));
        assert!(text.contains("TRAILER!!!\0"));
        // Second entry header starts 4-byte aligned after the first's name and data.
        let first_name_len = usize::from_str_radix(&text[6 + 11 * 8..6 + 12 * 8], 16).unwrap();
        assert_eq!(first_name_len, "bin".len() + 1);
    }
}
