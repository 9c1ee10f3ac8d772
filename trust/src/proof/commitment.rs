//! The node's side of the space proof: a file of random bytes it keeps (0600, in its
//! state directory) and the BLAKE3 Merkle tree over its 1 KiB leaves, kept in memory
//! (32 bytes per leaf and as much again for the inner levels: 64 MiB of tree for the
//! largest commitment, [`MAX_COMMITMENT_BYTES`]).
//!
//! The bytes come from a BLAKE3 XOF keyed with a random key that is never stored, so
//! nobody (the node included) can regenerate a leaf it threw away. A restarted agent
//! reopens the file and rebuilds the tree by reading it once.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hypermesh_api::v1::MerkleOpening;

use super::space::{LEAF_SIZE, inner_hash, leaf_hash, sample_indices};

/// Largest commitment one file may hold.
pub const MAX_COMMITMENT_BYTES: u64 = 1 << 30;

/// Why a commitment could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum CommitmentError {
    /// Reading or writing the file failed.
    #[error("space commitment file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The size asked for is zero, not a multiple of the leaf size, or too large.
    #[error(
        "space commitment of {0} bytes: must be a positive multiple of {LEAF_SIZE} bytes, at most {MAX_COMMITMENT_BYTES}"
    )]
    Size(u64),
}

/// A committed file and its Merkle tree.
pub struct SpaceCommitment {
    path: PathBuf,
    file: std::fs::File,
    bytes: u64,
    /// `levels[0]` the leaf hashes, the last level the root alone.
    levels: Vec<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for SpaceCommitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaceCommitment")
            .field("path", &self.path)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

fn build_levels(leaves: Vec<[u8; 32]>) -> Vec<Vec<[u8; 32]>> {
    let mut levels = vec![leaves];
    while levels.last().is_some_and(|l| l.len() > 1) {
        let Some(below) = levels.last() else { break };
        let next: Vec<[u8; 32]> = below
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => inner_hash(l, r),
                [one] => *one,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
        levels.push(next);
    }
    levels
}

impl SpaceCommitment {
    /// Opens the commitment at `path` if it holds exactly `bytes`, otherwise writes a
    /// new one of that size (replacing the file).
    pub fn open_or_create(path: &Path, bytes: u64) -> Result<Self, CommitmentError> {
        if bytes == 0 || !bytes.is_multiple_of(LEAF_SIZE as u64) || bytes > MAX_COMMITMENT_BYTES {
            return Err(CommitmentError::Size(bytes));
        }
        let io = |source| CommitmentError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(m) if m.len() == bytes => return Self::open(path),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut leaves = Vec::with_capacity((bytes / LEAF_SIZE as u64) as usize);
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            let mut xof = blake3::Hasher::new_keyed(&rand::random::<[u8; 32]>()).finalize_xof();
            let mut buf = vec![0u8; 256 * LEAF_SIZE];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                let chunk = &mut buf[..n];
                xof.fill(chunk);
                leaves.extend(chunk.chunks(LEAF_SIZE).map(leaf_hash));
                out.write_all(chunk).map_err(io)?;
                left -= n as u64;
            }
            out.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        let file = std::fs::File::open(path).map_err(io)?;
        Ok(SpaceCommitment {
            path: path.to_path_buf(),
            file,
            bytes,
            levels: build_levels(leaves),
        })
    }

    /// Opens an existing commitment file and rebuilds its tree.
    pub fn open(path: &Path) -> Result<Self, CommitmentError> {
        let io = |source| CommitmentError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        if bytes == 0 || !bytes.is_multiple_of(LEAF_SIZE as u64) || bytes > MAX_COMMITMENT_BYTES {
            return Err(CommitmentError::Size(bytes));
        }
        let mut leaves = Vec::with_capacity((bytes / LEAF_SIZE as u64) as usize);
        let mut buf = vec![0u8; 256 * LEAF_SIZE];
        let mut offset = 0;
        while offset < bytes {
            let n = (bytes - offset).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], offset).map_err(io)?;
            leaves.extend(buf[..n].chunks(LEAF_SIZE).map(leaf_hash));
            offset += n as u64;
        }
        Ok(SpaceCommitment {
            path: path.to_path_buf(),
            file,
            bytes,
            levels: build_levels(leaves),
        })
    }

    /// Bytes committed.
    pub fn committed_bytes(&self) -> u64 {
        self.bytes
    }

    /// The Merkle root.
    pub fn root(&self) -> [u8; 32] {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The openings a challenge with `nonce` and `samples` asks for.
    pub fn openings(
        &self,
        nonce: &[u8],
        samples: u32,
    ) -> Result<Vec<MerkleOpening>, CommitmentError> {
        let leaves = self.bytes / LEAF_SIZE as u64;
        sample_indices(nonce, &self.root(), leaves, samples)
            .into_iter()
            .map(|index| self.opening(index))
            .collect()
    }

    fn opening(&self, index: u64) -> Result<MerkleOpening, CommitmentError> {
        let mut leaf = vec![0u8; LEAF_SIZE];
        self.file
            .read_exact_at(&mut leaf, index * LEAF_SIZE as u64)
            .map_err(|source| CommitmentError::Io {
                path: self.path.clone(),
                source,
            })?;
        let mut path = Vec::new();
        let mut i = index as usize;
        for level in &self.levels[..self.levels.len().saturating_sub(1)] {
            if let Some(sibling) = level.get(i ^ 1) {
                path.push(sibling.to_vec());
            }
            i >>= 1;
        }
        Ok(MerkleOpening { index, leaf, path })
    }
}
