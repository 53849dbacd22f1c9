//! A log file rotated by size: when a line would take it past `max_bytes`, `path.N-1` ..
//! `path.1` are renamed one up (`path.keep` is overwritten, so `keep` old files remain),
//! `path` becomes `path.1`, and a new `path` is started. Control side only.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    out: BufWriter<File>,
    size: u64,
    /// Written before the first line of every new file (flow logs: the v2 header).
    header: Option<String>,
}

/// `path.n`
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open(path: &Path) -> io::Result<(BufWriter<File>, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let size = f.metadata()?.len();
    Ok((BufWriter::new(f), size))
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: u32, header: Option<&str>) -> io::Result<Self> {
        let (out, size) = open(path)?;
        let mut r = RotatingFile {
            path: path.to_path_buf(),
            max_bytes,
            keep: keep.max(1),
            out,
            size,
            header: header.map(str::to_string),
        };
        if r.size == 0 {
            r.write_header()?;
        }
        Ok(r)
    }

    fn write_header(&mut self) -> io::Result<()> {
        if let Some(h) = self.header.clone() {
            self.raw(&h)?;
        }
        Ok(())
    }

    fn raw(&mut self, line: &str) -> io::Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += line.len() as u64 + 1;
        Ok(())
    }

    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.max_bytes {
            self.rotate()?;
        }
        self.raw(line)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        for n in (1..self.keep).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        let (out, size) = open(&self.path)?;
        self.out = out;
        self.size = size;
        self.write_header()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = std::env::temp_dir().join(format!("fg-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = dir.join("x.log");
        let mut f = RotatingFile::open(&p, 40, 2, Some("HEADER")).unwrap();
        for i in 0..20 {
            f.write_line(&format!("line {i:02} ......")).unwrap();
        }
        f.flush().unwrap();
        let cur = std::fs::read_to_string(&p).unwrap();
        assert!(
            cur.starts_with("HEADER\n") && cur.contains("line 19"),
            "{cur}"
        );
        assert!(rotated(&p, 1).exists() && rotated(&p, 2).exists());
        assert!(!rotated(&p, 3).exists(), "keep 2");
        let one = std::fs::read_to_string(rotated(&p, 1)).unwrap();
        assert!(one.contains("line 17") || one.contains("line 18"), "{one}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
