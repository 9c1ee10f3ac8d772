//! Reading a container run's log for `hmctl logs`: the last N lines across the rotated
//! files, with or without timestamps, then (when following) the live file as it grows,
//! across rotations, until the logger marks the run's output as ended.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

/// How often a followed log is looked at for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What to show.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogOptions {
    /// Only the last N lines (all when `None`).
    pub tail: Option<usize>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Keep streaming new lines until the run's output ends.
    pub follow: bool,
}

/// The files of run `log`, oldest first (rotated ones, then the live one).
pub fn files_of(log: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> = (1..)
        .map(|n| super::rotated(log, n))
        .take_while(|p| p.exists())
        .collect();
    rotated.reverse();
    rotated.push(log.to_path_buf());
    rotated
}

/// Appends the display form of one stored record (a line without its newline) to `out`.
/// Lines that are not CRI records are shown as they are.
fn render(record: &[u8], timestamps: bool, out: &mut Vec<u8>) {
    let mut parts = record.splitn(4, |b| *b == b' ');
    let fields = (parts.next(), parts.next(), parts.next(), parts.next());
    let (Some(stamp), Some(_stream), Some(tag), text) = fields else {
        out.extend_from_slice(record);
        out.push(b'\n');
        return;
    };
    if timestamps {
        out.extend_from_slice(stamp);
        out.push(b' ');
    }
    out.extend_from_slice(text.unwrap_or_default());
    if tag != b"P" {
        out.push(b'\n');
    }
}

/// The whole run (every file), rendered; only the last `tail` records when set.
pub fn read(log: &Path, options: LogOptions) -> io::Result<Vec<u8>> {
    let mut stored = Vec::new();
    for file in files_of(log) {
        match std::fs::read(&file) {
            Ok(bytes) => stored.extend_from_slice(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(render_tail(&stored, options))
}

/// Renders complete records of `stored` (newline-terminated), the last `tail` if set.
fn render_tail(stored: &[u8], options: LogOptions) -> Vec<u8> {
    let records: Vec<&[u8]> = stored
        .split(|b| *b == b'\n')
        .filter(|r| !r.is_empty())
        .collect();
    let skip = options
        .tail
        .map(|n| records.len().saturating_sub(n))
        .unwrap_or(0);
    let mut out = Vec::new();
    for record in &records[skip..] {
        render(record, options.timestamps, &mut out);
    }
    out
}

/// Takes the complete (newline-terminated) records off the front of `buf`, leaving an
/// unfinished last record there to wait for the rest of its line.
fn take_complete(buf: &mut Vec<u8>) -> Vec<u8> {
    let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let rest = buf.split_off(end);
    std::mem::replace(buf, rest)
}

/// Sends run `log` (rendered) to `out`, then with `follow` its new lines until the
/// logger's done marker appears or `out` is closed. Errors end the stream with the error.
pub async fn stream(log: PathBuf, options: LogOptions, out: mpsc::Sender<io::Result<Vec<u8>>>) {
    if let Err(e) = stream_inner(&log, options, &out).await {
        let _ = out.send(Err(e)).await;
    }
}

async fn stream_inner(
    log: &Path,
    options: LogOptions,
    out: &mpsc::Sender<io::Result<Vec<u8>>>,
) -> io::Result<()> {
    // The live file is opened first, so a rotation while the rest is read is seen.
    let mut live = match File::open(log) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut stored = Vec::new();
    for file in files_of(log).iter().filter(|p| p.as_path() != log) {
        if let Ok(bytes) = std::fs::read(file) {
            stored.extend_from_slice(&bytes);
        }
    }
    if let Some(f) = live.as_mut() {
        f.read_to_end(&mut stored)?;
    }
    // An unfinished last record waits for the rest of its line.
    let complete = take_complete(&mut stored);
    let mut pending = stored;
    let first = render_tail(&complete, options);
    if !first.is_empty() && out.send(Ok(first)).await.is_err() {
        return Ok(());
    }
    if !options.follow {
        return Ok(());
    }
    loop {
        // Looked at before reading: the logger creates the marker after its last write.
        let finished = super::done_marker(log).exists();
        let before = pending.len();
        if let Some(f) = live.as_mut() {
            f.read_to_end(&mut pending)?;
        }
        let grew = pending.len() > before;
        let rotated = match (live.as_ref(), std::fs::metadata(log)) {
            (Some(f), Ok(now)) => f.metadata()?.ino() != now.ino(),
            (None, Ok(_)) => true,
            (_, Err(_)) => false,
        };
        if rotated {
            // The old file was read to its end above; files rotated after it (several
            // rotations between two looks) are read whole, then the new live file.
            let old = live
                .as_ref()
                .map(|f| f.metadata())
                .transpose()?
                .map(|m| m.ino());
            let files = files_of(log);
            let rotated_files = &files[..files.len() - 1];
            let start = rotated_files
                .iter()
                .position(|p| std::fs::metadata(p).is_ok_and(|m| Some(m.ino()) == old))
                .map_or(0, |i| i + 1);
            for file in &rotated_files[start..] {
                if let Ok(bytes) = std::fs::read(file) {
                    pending.extend_from_slice(&bytes);
                }
            }
            let mut f = File::open(log)?;
            f.seek(SeekFrom::Start(0))?;
            live = Some(f);
        }
        let text = render_tail(
            &take_complete(&mut pending),
            LogOptions {
                tail: None,
                ..options
            },
        );
        if !text.is_empty() && out.send(Ok(text)).await.is_err() {
            return Ok(());
        }
        if rotated || grew {
            continue;
        }
        if finished {
            return Ok(());
        }
        tokio::select! {
            _ = out.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::writer::RotatingLog;
    use super::*;

    #[test]
    fn tail_and_timestamps_across_rotated_files() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("0.log");
        let mut log = RotatingLog::open(&path, 300, 10).expect("open");
        for i in 0..30 {
            log.record("stdout", false, format!("line {i}").as_bytes())
                .expect("record");
        }
        log.record("stderr", true, b"half ").expect("record");
        log.record("stderr", false, b"done").expect("record");
        assert!(files_of(&path).len() > 2, "rotated");
        let all =
            String::from_utf8(read(&path, LogOptions::default()).expect("read")).expect("utf-8");
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines.len(), 31);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[30], "half done");
        let tail = read(
            &path,
            LogOptions {
                tail: Some(3),
                timestamps: true,
                follow: false,
            },
        )
        .expect("read");
        let tail = String::from_utf8(tail).expect("utf-8");
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), 2, "{tail}");
        assert!(lines[0].ends_with(" line 29"), "{tail}");
        assert!(lines[0].starts_with("20"), "{tail}");
    }

    #[tokio::test]
    async fn follow_sees_new_lines_and_rotation_and_ends_at_the_marker() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("0.log");
        let mut log = RotatingLog::open(&path, 200, 20).expect("open");
        log.record("stdout", false, b"before").expect("record");
        let (tx, mut rx) = mpsc::channel(16);
        let follower = tokio::spawn(stream(
            path.clone(),
            LogOptions {
                follow: true,
                ..Default::default()
            },
            tx,
        ));
        let mut seen = String::new();
        let mut next = async || {
            let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("chunk in time")
                .expect("stream open")
                .expect("chunk");
            String::from_utf8(chunk).expect("utf-8")
        };
        seen.push_str(&next().await);
        assert_eq!(seen, "before\n");
        for i in 0..20 {
            log.record("stdout", false, format!("after {i}").as_bytes())
                .expect("record");
        }
        while !seen.contains("after 19") {
            seen.push_str(&next().await);
        }
        let lines: Vec<&str> = seen.lines().collect();
        assert_eq!(lines.len(), 21, "every line once across rotations: {seen}");
        std::fs::File::create(super::super::done_marker(&path)).expect("marker");
        tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("follow ends at the marker")
            .expect("task");
    }
}
