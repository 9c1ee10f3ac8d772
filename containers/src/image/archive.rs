//! OCI image archives from outside (`--image-dir`, `hmctl image import`): a tar file is
//! walked header by header without trusting it. Every size a header claims is checked
//! against the bytes that really follow it in the file before anything is read or
//! allocated; names, extension headers and the number of entries are capped; small
//! documents (`index.json`, manifests, configs) are read up to [`MAX_DOCUMENT_BYTES`];
//! layers stream from their offset in the file into the content store, never whole
//! into memory.
//!
//! The headers are parsed with the `tar` crate's [`tar::Header`] (number fields, entry
//! types), but the walk, the positions and the limits are ours: the crate's own entry
//! iterator reads GNU long names and PAX records of any claimed size into memory.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::Error;
use crate::content::BlobWriter;

/// The largest archive accepted (an upload or a file in `--image-dir`).
pub const MAX_ARCHIVE_BYTES: u64 = 64 << 30;
pub use crate::content::MAX_DOCUMENT_BYTES;
/// The most regular files an archive may hold.
pub const MAX_ENTRIES: usize = 100_000;
/// The largest GNU long-name or PAX extension entry.
const MAX_EXTENSION_BYTES: u64 = 64 << 10;
/// Tar's block size.
const BLOCK: u64 = 512;
/// Layers are copied in chunks of this size.
const COPY_CHUNK: usize = 1 << 20;

/// A regular file of the archive: where its bytes start and how many there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    offset: u64,
    size: u64,
}

/// An image archive whose headers were walked and checked: its regular files by path
/// (without a leading `./`).
#[derive(Debug)]
pub(crate) struct Archive {
    path: PathBuf,
    entries: HashMap<String, Entry>,
}

impl Archive {
    /// Walks the archive at `path` (blocking). Fails with [`Error::InvalidImage`] naming
    /// the problem (a size beyond the end of the file, a truncated header, too many
    /// entries, an archive over [`MAX_ARCHIVE_BYTES`]), or [`Error::Io`] when the file
    /// cannot be read.
    pub(crate) fn open(path: &Path) -> Result<Archive, Error> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |detail: String| Error::InvalidImage {
            path: path.to_path_buf(),
            detail,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len > MAX_ARCHIVE_BYTES {
            return Err(invalid(format!(
                "the archive has {len} bytes, more than the {MAX_ARCHIVE_BYTES} accepted"
            )));
        }
        let mut entries = HashMap::new();
        let mut long_name: Option<String> = None;
        let mut pos = 0u64;
        let mut block = [0u8; BLOCK as usize];
        loop {
            // A file that does not even start like a tar archive is unreadable as one.
            let not_tar = |detail: String| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a tar archive ({detail})"),
                ))
            };
            if len - pos < BLOCK {
                if pos == 0 {
                    return Err(not_tar("shorter than one header".into()));
                }
                return Err(invalid(format!(
                    "truncated: the archive ends at byte {len} inside the header at byte {pos}"
                )));
            }
            file.read_exact_at(&mut block, pos).map_err(io)?;
            if block.iter().all(|b| *b == 0) {
                break;
            }
            let header = tar::Header::from_byte_slice(&block);
            check_checksum(&block).map_err(|detail| {
                if pos == 0 {
                    not_tar(detail)
                } else {
                    invalid(format!("header at byte {pos}: not a tar header ({detail})"))
                }
            })?;
            let name_of = |h: &tar::Header| {
                String::from_utf8_lossy(&h.path_bytes())
                    .trim_start_matches("./")
                    .to_string()
            };
            let size = header.entry_size().map_err(|e| {
                invalid(format!("header at byte {pos}: size field unreadable: {e}"))
            })?;
            let data = pos + BLOCK;
            let available = len - data;
            if size > available {
                let name = long_name.clone().unwrap_or_else(|| name_of(header));
                return Err(invalid(format!(
                    "entry {name:?} (header at byte {pos}) claims {size} bytes, but only \
                     {available} bytes of the {len}-byte archive follow it"
                )));
            }
            let kind = header.entry_type();
            if kind.is_gnu_longname() || kind.is_pax_local_extensions() {
                if size > MAX_EXTENSION_BYTES {
                    return Err(invalid(format!(
                        "extension header at byte {pos} has {size} bytes, more than the \
                         {MAX_EXTENSION_BYTES} accepted"
                    )));
                }
                let mut bytes = vec![0u8; usize::try_from(size).unwrap_or(0)];
                file.read_exact_at(&mut bytes, data).map_err(io)?;
                let name = if kind.is_gnu_longname() {
                    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                    Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
                } else {
                    pax_path(&bytes)
                };
                if let Some(name) = name {
                    long_name = Some(name.trim_start_matches("./").to_string());
                }
            } else {
                let name = long_name.take().unwrap_or_else(|| name_of(header));
                if kind.is_file() {
                    if entries.len() >= MAX_ENTRIES && !entries.contains_key(&name) {
                        return Err(invalid(format!(
                            "more than {MAX_ENTRIES} files in the archive"
                        )));
                    }
                    entries.insert(name, Entry { offset: data, size });
                }
            }
            // `size <= available` above, so this stays within the file's length.
            pos = data + size.div_ceil(BLOCK) * BLOCK;
            if pos >= len {
                // No end-of-archive blocks: accepted, as tar itself does.
                break;
            }
        }
        Ok(Archive {
            path: path.to_path_buf(),
            entries,
        })
    }

    fn invalid(&self, detail: String) -> Error {
        Error::InvalidImage {
            path: self.path.clone(),
            detail,
        }
    }

    /// Whether the archive holds a regular file `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The size of file `name`, if the archive has it.
    fn entry(&self, name: &str) -> Result<Entry, Error> {
        self.entries
            .get(name)
            .copied()
            .ok_or_else(|| self.invalid(format!("{name} missing from the archive")))
    }

    /// The archive path of blob `digest` (`blobs/sha256/<hex>`).
    pub(crate) fn blob_name(&self, digest: &str) -> Result<String, Error> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| self.invalid(format!("unsupported digest {digest}")))?;
        Ok(format!("blobs/sha256/{hex}"))
    }

    /// The size of blob `digest` in the archive.
    pub(crate) fn blob_size(&self, digest: &str) -> Result<u64, Error> {
        Ok(self.entry(&self.blob_name(digest)?)?.size)
    }

    /// Reads document `name` (at most [`MAX_DOCUMENT_BYTES`]) into memory (blocking).
    pub(crate) fn read_document(&self, name: &str) -> Result<Vec<u8>, Error> {
        let entry = self.entry(name)?;
        if entry.size > MAX_DOCUMENT_BYTES {
            return Err(self.invalid(format!(
                "{name} has {} bytes, more than the {MAX_DOCUMENT_BYTES} accepted for a \
                 manifest, index or config",
                entry.size
            )));
        }
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let file = std::fs::File::open(&self.path).map_err(io)?;
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        // `take` stops at the entry's end even if the file changed meanwhile.
        let mut reader = std::io::BufReader::new(file);
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(entry.offset)).map_err(io)?;
        reader
            .take(entry.size)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 != entry.size {
            return Err(self.invalid(format!("{name}: the archive changed while it was read")));
        }
        Ok(bytes)
    }

    /// Streams blob `digest` into `writer` (which checks its size and digest).
    pub(crate) async fn copy_blob(
        &self,
        digest: &str,
        writer: &mut BlobWriter,
    ) -> Result<(), Error> {
        let entry = self.entry(&self.blob_name(digest)?)?;
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = tokio::fs::File::open(&self.path).await.map_err(io)?;
        file.seek(std::io::SeekFrom::Start(entry.offset))
            .await
            .map_err(io)?;
        let mut reader = file.take(entry.size);
        let mut buf = vec![0u8; COPY_CHUNK];
        loop {
            let n = reader.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                return Ok(());
            }
            writer.write(&buf[..n]).await?;
        }
    }
}

/// Verifies a header's checksum (the sum of its bytes with the checksum field as spaces).
fn check_checksum(block: &[u8; BLOCK as usize]) -> Result<(), String> {
    let header = tar::Header::from_byte_slice(block);
    let stored = header.cksum().map_err(|e| format!("checksum field: {e}"))?;
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    if sum != stored {
        return Err(format!("checksum {stored} stored, {sum} computed"));
    }
    Ok(())
}

/// The `path` record of a PAX extension header, if it has one.
fn pax_path(bytes: &[u8]) -> Option<String> {
    tar::PaxExtensions::new(bytes)
        .filter_map(Result::ok)
        .find(|e| e.key() == Ok("path"))
        .and_then(|e| e.value().ok().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A header for `name` claiming `size` bytes (base-256 beyond octal's range).
    fn header(name: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).expect("path");
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        h
    }

    fn write(dir: &Path, parts: &[&[u8]]) -> PathBuf {
        let path = dir.join("a.tar");
        let mut f = std::fs::File::create(&path).expect("create");
        for p in parts {
            f.write_all(p).expect("write");
        }
        path
    }

    fn detail(e: Error) -> String {
        match e {
            Error::InvalidImage { detail, .. } => detail,
            other => panic!("not InvalidImage: {other}"),
        }
    }

    #[test]
    fn a_header_claiming_2_62_bytes_is_refused_before_any_allocation() {
        let dir = tempfile::tempdir().expect("dir");
        let h = header("blobs/sha256/aa", 1 << 62);
        let path = write(dir.path(), &[h.as_bytes(), &[7u8; 100], &[0u8; 1024]]);
        let error = detail(Archive::open(&path).expect_err("refused"));
        assert!(
            error.contains("claims 4611686018427387904 bytes"),
            "{error}"
        );
        assert!(error.contains("blobs/sha256/aa"), "{error}");
    }

    #[test]
    fn files_are_indexed_with_long_names_and_documents_capped() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ok.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create"));
        let long = format!("blobs/sha256/{}", "b".repeat(150));
        for (name, data) in [("./index.json", &b"{}"[..]), (long.as_str(), b"layer")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            builder.append_data(&mut h, name, data).expect("append");
        }
        builder.into_inner().expect("finish");
        let archive = Archive::open(&path).expect("valid");
        assert_eq!(archive.read_document("index.json").expect("doc"), b"{}");
        assert!(archive.contains(&long));
        assert_eq!(
            archive
                .blob_size(&format!("sha256:{}", "b".repeat(150)))
                .expect("size"),
            5
        );
        assert!(archive.read_document("nope").is_err());
    }

    #[test]
    fn truncated_and_corrupt_headers_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let h = header("index.json", 10);
        let path = write(dir.path(), &[&h.as_bytes()[..300]]);
        let short = Archive::open(&path).expect_err("short").to_string();
        assert!(
            short.contains("not a tar archive (shorter than one header)"),
            "{short}"
        );
        let mut bad = *h.as_bytes();
        bad[0] ^= 1;
        let path = write(dir.path(), &[&bad, &[0u8; 512]]);
        let junk = Archive::open(&path).expect_err("corrupt").to_string();
        assert!(junk.contains("not a tar archive (checksum"), "{junk}");
        let path = write(dir.path(), &[h.as_bytes(), &[1u8; 512], &bad, &[0u8; 1024]]);
        let corrupt = detail(Archive::open(&path).expect_err("corrupt"));
        assert!(
            corrupt.contains("header at byte 1024: not a tar header (checksum"),
            "{corrupt}"
        );
        let huge_name = {
            let mut h = tar::Header::new_gnu();
            h.set_path("././@LongLink").expect("path");
            h.set_entry_type(tar::EntryType::GNULongName);
            h.set_size(1 << 20);
            h.set_cksum();
            h
        };
        let path = write(dir.path(), &[huge_name.as_bytes(), &vec![b'a'; 1 << 20]]);
        assert!(detail(Archive::open(&path).expect_err("long")).contains("extension header"));
    }

    #[test]
    fn a_document_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let size = MAX_DOCUMENT_BYTES + 1;
        let h = header("index.json", size);
        let path = dir.path().join("big.tar");
        let f = std::fs::File::create(&path).expect("create");
        f.write_all_at(h.as_bytes(), 0).expect("header");
        // Sparse: the file is as long as the header says, without writing the bytes.
        f.set_len(BLOCK + size.div_ceil(BLOCK) * BLOCK)
            .expect("len");
        let archive = Archive::open(&path).expect("sizes fit the file");
        let error = detail(archive.read_document("index.json").expect_err("too big"));
        assert!(error.contains("more than the 8388608 accepted"), "{error}");
    }
}
