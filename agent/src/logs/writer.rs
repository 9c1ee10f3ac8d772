//! Writing a container's output: the body of `hm-logger`.
//!
//! containerd's runc shim starts `hm-logger` for each container run (stdio URI
//! `binary:///…/hm-logger?file=…&max-size=…&max-files=…`) with the container's stdout
//! pipe as fd 3, stderr as fd 4 and a readiness pipe as fd 5. It belongs to the shim, not
//! the agent, so output keeps being written while the agent restarts. Each stream is
//! split into lines stored as CRI records in a [`RotatingLog`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The longest piece of a line stored in one record; longer lines are split into
/// partial (`P`) records.
pub const MAX_LINE: usize = 16 * 1024;

/// A log file rotated by size: when a record would take `file` past `max_bytes`, the
/// file becomes `file.1` (older ones shift up) and at most `max_files` files are kept.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    written: u64,
}

impl RotatingLog {
    /// Opens (appending to) `path`; `max_files` counts the live file, at least 1.
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> io::Result<RotatingLog> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            max_files: max_files.max(1),
            file,
            written,
        })
    }

    /// Appends one record: `<time> <stream> <F|P> <text>\n`.
    pub fn record(&mut self, stream: &str, partial: bool, text: &[u8]) -> io::Result<()> {
        let stamp = hypermesh_api::time::rfc3339(SystemTime::now(), true);
        let tag = if partial { "P" } else { "F" };
        let mut line = Vec::with_capacity(stamp.len() + stream.len() + text.len() + 5);
        line.extend_from_slice(stamp.as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_bytes());
        line.push(b' ');
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        line.extend_from_slice(text);
        line.push(b'\n');
        let len = line.len() as u64;
        if self.written > 0 && self.written + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.written += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.max_files - 1;
        if keep == 0 {
            self.file.set_len(0)?;
            self.written = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(super::rotated(&self.path, keep));
        for n in (1..keep).rev() {
            let _ = std::fs::rename(
                super::rotated(&self.path, n),
                super::rotated(&self.path, n + 1),
            );
        }
        std::fs::rename(&self.path, super::rotated(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// Copies `input` into `log` as records of `stream` until EOF: one `F` record per line
/// (without its newline), `P` records for pieces of lines longer than [`MAX_LINE`], and
/// an `F` record for a last line without newline.
pub fn copy_lines(mut input: impl Read, stream: &str, log: &Mutex<RotatingLog>) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_LINE];
    let mut filled = 0;
    loop {
        let n = match input.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if filled > 0 {
                write(log, stream, false, &buf[..filled])?;
            }
            return Ok(());
        }
        filled += n;
        let mut start = 0;
        while let Some(pos) = buf[start..filled].iter().position(|b| *b == b'\n') {
            write(log, stream, false, &buf[start..start + pos])?;
            start += pos + 1;
        }
        if start == 0 && filled == buf.len() {
            write(log, stream, true, &buf[..filled])?;
            filled = 0;
        } else {
            buf.copy_within(start..filled, 0);
            filled -= start;
        }
    }
}

fn write(log: &Mutex<RotatingLog>, stream: &str, partial: bool, text: &[u8]) -> io::Result<()> {
    log.lock()
        .map_err(|_| io::Error::other("log writer poisoned"))?
        .record(stream, partial, text)
}

/// What `hm-logger` was asked to do.
#[derive(Clone, Debug)]
pub struct LoggerArgs {
    pub file: PathBuf,
    pub max_bytes: u64,
    pub max_files: u32,
}

/// `hm-logger`'s work: signal readiness on fd 5, copy fd 3 (stdout) and fd 4 (stderr)
/// into the log until both end, then create the done marker. The descriptors are
/// reached through `/proc/self/fd`, which reopens the same pipes.
pub fn run_logger(args: &LoggerArgs) -> io::Result<()> {
    let log = Arc::new(Mutex::new(RotatingLog::open(
        &args.file,
        args.max_bytes,
        args.max_files,
    )?));
    let stdout = File::open("/proc/self/fd/3")?;
    let stderr = File::open("/proc/self/fd/4")?;
    // The shim waits until it reads from (or sees EOF on) its end of this pipe.
    if let Ok(mut ready) = OpenOptions::new().write(true).open("/proc/self/fd/5") {
        let _ = ready.write_all(b"\0");
    }
    let err_log = log.clone();
    let err_thread = std::thread::spawn(move || copy_lines(stderr, "stderr", &err_log));
    let out = copy_lines(stdout, "stdout", &log);
    let err = err_thread
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("stderr copier panicked")));
    File::create(super::done_marker(&args.file))?;
    out.and(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .expect("read log")
            .lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                let _stamp = parts.next().expect("stamp");
                (
                    parts.next().expect("stream").to_string(),
                    parts.next().expect("tag").to_string(),
                    parts.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_become_records_and_long_lines_are_split() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("0.log");
        let log = Mutex::new(RotatingLog::open(&path, 1 << 30, 3).expect("open"));
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("one\n\ntwo\n{long}\nlast");
        copy_lines(input.as_bytes(), "stdout", &log).expect("copy");
        let r = records(&path);
        assert_eq!(r[0], ("stdout".into(), "F".into(), "one".into()));
        assert_eq!(r[1], ("stdout".into(), "F".into(), String::new()));
        assert_eq!(r[2], ("stdout".into(), "F".into(), "two".into()));
        assert_eq!(r[3].1, "P");
        assert_eq!(r[3].2.len(), MAX_LINE);
        assert_eq!(r[4], ("stdout".into(), "F".into(), "x".repeat(10)));
        assert_eq!(r[5], ("stdout".into(), "F".into(), "last".into()));
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn rotation_keeps_max_files() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("0.log");
        let mut log = RotatingLog::open(&path, 200, 3).expect("open");
        for i in 0..40 {
            log.record("stdout", false, format!("line {i:03}").as_bytes())
                .expect("record");
        }
        assert!(path.exists());
        assert!(super::super::rotated(&path, 1).exists());
        assert!(super::super::rotated(&path, 2).exists());
        assert!(!super::super::rotated(&path, 3).exists());
        for p in [
            path.clone(),
            super::super::rotated(&path, 1),
            super::super::rotated(&path, 2),
        ] {
            let len = std::fs::metadata(&p).expect("meta").len();
            assert!(len <= 200, "{} is {len} bytes", p.display());
        }
        let last = records(&path);
        assert_eq!(last.last().expect("records").2, "line 039");
    }
}
