//! The identity the in-process controllers campaign under for their leader Lease, kept
//! in the data dir (`controllers.identity`) so that an apiserver restarted after a crash
//! (`kill -9`) finds itself as the Lease's holder and leads again at once, instead of
//! waiting a whole lease for its own dead predecessor.
//!
//! The file is locked (`flock`) for as long as the process runs; the kernel drops the
//! lock when the process dies. A second live process on the same data dir (possible
//! with an etcd store) finds the lock taken and campaigns under a fresh identity, so
//! two live processes never share one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use tracing::{info, warn};

/// The file in the data dir holding the identity.
pub const FILE: &str = "controllers.identity";
/// Longest identity accepted from the file (a Lease holder is a short name).
const MAX_LEN: usize = 253;

/// The identity, and the locked file that reserves it for this process.
#[derive(Debug)]
pub struct ControllerIdentity {
    /// The name to campaign under.
    pub name: String,
    /// Held open (and locked) for the life of the process.
    _lock: Option<File>,
}

fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The identity kept in `data_dir` (made with `fresh` and written there on first use),
/// or a fresh one not kept when another live process holds the file or it cannot be
/// written.
pub fn load_or_create(data_dir: &Path, fresh: impl Fn() -> String) -> ControllerIdentity {
    let path = data_dir.join(FILE);
    let unkept = |why: String| {
        let name = fresh();
        warn!(identity = %name, file = %path.display(), "{why}; the controllers campaign under a fresh identity");
        ControllerIdentity { name, _lock: None }
    };
    let mut file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) => return unkept(format!("cannot open the identity file: {e}")),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return unkept("another live process uses this data dir's identity".into());
        }
        Err(TryLockError::Error(e)) => {
            return unkept(format!("cannot lock the identity file: {e}"));
        }
    }
    let mut text = String::new();
    let read = Read::take(&mut file, MAX_LEN as u64 + 1).read_to_string(&mut text);
    let kept = text.trim();
    if read.is_ok() && valid(kept) {
        info!(identity = %kept, "the controllers campaign under this data dir's identity");
        return ControllerIdentity {
            name: kept.to_string(),
            _lock: Some(file),
        };
    }
    let name = fresh();
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(format!("{name}\n").as_bytes()))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        return unkept(format!("cannot write the identity file: {e}"));
    }
    ControllerIdentity {
        name,
        _lock: Some(file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_kept_and_reserved_for_one_live_process() {
        let dir = tempfile::tempdir().expect("dir");
        let first = load_or_create(dir.path(), || "host_1_aaaa".into());
        assert_eq!(first.name, "host_1_aaaa");
        // While the first holds it, another process (here: another open file
        // description) gets a fresh one.
        let second = load_or_create(dir.path(), || "host_2_bbbb".into());
        assert_eq!(second.name, "host_2_bbbb");
        drop(second);
        drop(first);
        // Once the holder is gone (a restart), the kept identity is used again.
        let again = load_or_create(dir.path(), || "host_3_cccc".into());
        assert_eq!(again.name, "host_1_aaaa");
        drop(again);
        // A damaged file is replaced.
        std::fs::write(dir.path().join(FILE), "not valid!\n").expect("write");
        let replaced = load_or_create(dir.path(), || "host_4_dddd".into());
        assert_eq!(replaced.name, "host_4_dddd");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).expect("read"),
            "host_4_dddd\n"
        );
    }
}
