//! Property tests of what comes from outside an image import or a pull (`make fuzz`
//! runs them with many more cases): tar archives of any shape (sizes claimed beyond the
//! file, long-name and PAX headers, corrupt checksums, truncation), the index, manifest
//! and config documents, and the registry's `WWW-Authenticate` and docker config.json.
//! Each returns a value or an error naming the problem; none panics or allocates what a
//! header claims.

use std::io::Write;

use proptest::prelude::*;
use proptest::sample::Index;

use super::archive::Archive;
use super::{INDEX_OCI, MANIFEST_OCI, parse_config, parse_manifest, pick_platform};
use crate::Error;
use crate::pull::auth::{Challenge, parse_credentials};

/// One tar member as a hostile archive may write it.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    kind: u8,
    /// The size the header claims: the real one, or another.
    claimed: Option<u64>,
    data: Vec<u8>,
    /// A byte of the header to overwrite after the checksum is set (`fix`: set it again).
    corrupt: Option<(Index, u8, bool)>,
}

const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

fn member_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("index.json".to_string()),
        Just("./index.json".to_string()),
        Just("oci-layout".to_string()),
        Just(format!("blobs/sha256/{}", &DIGEST[7..])),
        "[a-z/._]{0,20}",
        "[a-z]{90,300}",
        "\\PC{0,30}",
    ]
}

/// JSON documents close to what an archive or registry holds, with wrong types and
/// values mixed in.
fn document() -> impl Strategy<Value = Vec<u8>> {
    let descriptor = (
        prop_oneof![Just(MANIFEST_OCI), Just(INDEX_OCI), Just("x")],
        prop_oneof![Just(DIGEST.to_string()), "[a-z0-9:]{0,12}"],
        any::<i64>(),
        prop_oneof![Just("linux"), Just("windows")],
        prop_oneof![Just("amd64"), Just("arm64"), Just("")],
    )
        .prop_map(|(media_type, digest, size, os, arch)| {
            format!(
                r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{size},"platform":{{"os":"{os}","architecture":"{arch}"}}}}"#
            )
        });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(descriptor.clone(), 0..3)
            .prop_map(|ds| {
                format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, ds.join(",")).into_bytes()
            }),
        (descriptor, proptest::collection::vec(Just(DIGEST), 0..3)).prop_map(|(config, layers)| {
            let layers: Vec<String> = layers
                .iter()
                .map(|d| format!(r#"{{"digest":"{d}","size":1}}"#))
                .collect();
            format!(r#"{{"config":{config},"layers":[{}]}}"#, layers.join(",")).into_bytes()
        }),
        proptest::collection::vec(Just(DIGEST), 0..3).prop_map(|ids| {
            let ids: Vec<String> = ids.iter().map(|d| format!("{d:?}")).collect();
            format!(
                r#"{{"config":{{"Cmd":["sh"],"Env":null}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
                ids.join(",")
            )
            .into_bytes()
        }),
    ]
}

fn member() -> impl Strategy<Value = Member> {
    (
        member_name(),
        prop_oneof![
            4 => Just(b'0'),
            1 => Just(b'L'),
            1 => Just(b'x'),
            1 => Just(b'5'),
            1 => Just(b'2'),
            1 => any::<u8>(),
        ],
        prop_oneof![
            6 => Just(None),
            1 => any::<u64>().prop_map(Some),
            1 => (0u64..4096).prop_map(Some),
            1 => Just(Some(1u64 << 62)),
        ],
        document(),
        prop_oneof![
            6 => Just(None),
            1 => (any::<Index>(), any::<u8>(), any::<bool>()).prop_map(Some),
        ],
    )
        .prop_map(|(name, kind, claimed, data, corrupt)| Member {
            name,
            kind,
            claimed,
            data,
            corrupt,
        })
}

fn tar_bytes(members: &[Member], end_blocks: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let mut h = tar::Header::new_gnu();
        if h.set_path(&m.name).is_err() {
            let raw = &mut h.as_old_mut().name;
            let n = m.name.len().min(raw.len());
            raw[..n].copy_from_slice(&m.name.as_bytes()[..n]);
        }
        h.set_size(m.claimed.unwrap_or(m.data.len() as u64));
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::new(m.kind));
        h.set_cksum();
        if let Some((at, byte, fix)) = &m.corrupt {
            let bytes = h.as_mut_bytes();
            bytes[at.index(bytes.len())] = *byte;
            if *fix {
                h.set_cksum();
            }
        }
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&m.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    if end_blocks {
        out.extend_from_slice(&[0u8; 1024]);
    }
    out
}

fn open(bytes: &[u8]) -> (tempfile::TempDir, Result<Archive, Error>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("image.tar");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(bytes))
        .expect("write archive");
    let archive = Archive::open(&path);
    (dir, archive)
}

/// Feeds a document to every parser that could receive it.
fn parse_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = pick_platform(bytes) {
        prop_assert!(!e.is_empty());
    }
    match parse_manifest(bytes) {
        Ok(manifest) => {
            if let Err(e) = parse_config(bytes, &manifest) {
                prop_assert!(!e.is_empty());
            }
        }
        Err(e) => prop_assert!(!e.is_empty()),
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_not_an_archive(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (_dir, archive) = open(&bytes);
        if let Err(e) = archive {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn hostile_archives_are_refused_by_name_or_read_within_bounds(
        members in proptest::collection::vec(member(), 0..6),
        end_blocks in any::<bool>(),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let mut bytes = tar_bytes(&members, end_blocks);
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let (_dir, archive) = open(&bytes);
        match archive {
            Err(Error::InvalidImage { detail, .. }) => prop_assert!(!detail.is_empty()),
            Err(Error::Io { source, .. }) => prop_assert!(!source.to_string().is_empty()),
            Err(other) => return Err(TestCaseError::fail(format!("unexpected error kind: {other}"))),
            Ok(archive) => {
                for m in &members {
                    let name = m.name.trim_start_matches("./");
                    if !archive.contains(name) {
                        continue;
                    }
                    match archive.read_document(name) {
                        Ok(doc) => {
                            prop_assert!(doc.len() as u64 <= super::MAX_DOCUMENT_BYTES);
                            parse_all(&doc)?;
                        }
                        Err(e) => prop_assert!(e.to_string().contains(name), "{e}"),
                    }
                }
                if let Err(e) = archive.blob_size(DIGEST) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    #[test]
    fn a_size_beyond_the_end_of_the_archive_is_named(
        claimed in 1u64..u64::MAX,
        data in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let padded = data.len().div_ceil(512) as u64 * 512;
        prop_assume!(claimed > padded + 1024);
        let member = Member {
            name: "blobs/sha256/aa".into(),
            kind: b'0',
            claimed: Some(claimed),
            data,
            corrupt: None,
        };
        let (_dir, archive) = open(&tar_bytes(&[member], true));
        match archive {
            Err(Error::InvalidImage { detail, .. }) => {
                prop_assert!(detail.contains(&format!("claims {claimed} bytes")), "{detail}");
            }
            Err(other) => return Err(TestCaseError::fail(other.to_string())),
            Ok(_) => {
                return Err(TestCaseError::fail(format!("accepted a header claiming {claimed} bytes")));
            }
        }
    }

    #[test]
    fn image_documents_parse_or_name_the_problem(doc in document()) {
        parse_all(&doc)?;
    }

    #[test]
    fn www_authenticate_headers_never_panic(
        header in prop_oneof![
            "\\PC{0,60}",
            "((Bearer|Basic|realm|service|scope|=|\"|\\\\|,| |\t|[a-zé]{1,4}|\u{1F600})){0,20}",
        ]
    ) {
        if let Some(Challenge::Bearer { realm, .. }) = Challenge::parse(&header) {
            prop_assert!(realm.len() <= header.len());
        }
    }

    #[test]
    fn docker_config_json_parses_or_names_the_entry(
        key in "[a-z.:/]{0,20}",
        auth in prop_oneof!["[A-Za-z0-9+/=]{0,24}", "\\PC{0,10}"],
        user in proptest::option::of("[a-z]{0,5}"),
        raw in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let user_field = user.map(|u| format!(r#","username":"{u}","password":"p""#)).unwrap_or_default();
        let text = format!(r#"{{"auths":{{{key:?}:{{"auth":{auth:?}{user_field}}}}}}}"#);
        for bytes in [text.as_bytes(), raw.as_slice()] {
            match parse_credentials(bytes, &key) {
                Ok(_) => {}
                Err(e) => prop_assert!(!e.is_empty()),
            }
        }
    }
}
