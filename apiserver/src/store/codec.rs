//! Byte layouts of stored records and history entries (little-endian, length-prefixed).

use super::{KeyValue, StoreError, StoreEvent};

/// A value as stored: `create_revision | mod_revision | value`.
pub fn encode_record(create_revision: u64, mod_revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Reverses [`encode_record`].
pub fn decode_record(key: &str, bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let mut r = Reader { bytes, key };
    let create_revision = r.u64()?;
    let mod_revision = r.u64()?;
    Ok(KeyValue {
        key: key.to_string(),
        value: r.bytes.to_vec(),
        create_revision,
        mod_revision,
    })
}

/// A history entry: `key | current? | previous?`, each record length-prefixed.
pub fn encode_event(event: &StoreEvent) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, event.key.as_bytes());
    for kv in [&event.current, &event.previous] {
        match kv {
            Some(kv) => {
                out.push(1);
                put_bytes(
                    &mut out,
                    &encode_record(kv.create_revision, kv.mod_revision, &kv.value),
                );
            }
            None => out.push(0),
        }
    }
    out
}

/// Reverses [`encode_event`].
pub fn decode_event(revision: u64, bytes: &[u8]) -> Result<StoreEvent, StoreError> {
    let mut r = Reader {
        bytes,
        key: "<history>",
    };
    let key = String::from_utf8(r.take_prefixed()?.to_vec()).map_err(|_| corrupt("<history>"))?;
    let mut records = [None, None];
    for slot in &mut records {
        if r.u8()? == 1 {
            *slot = Some(decode_record(&key, r.take_prefixed()?)?);
        }
    }
    let [current, previous] = records;
    Ok(StoreEvent {
        revision,
        key,
        current,
        previous,
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn corrupt(key: &str) -> StoreError {
    StoreError::Backend(format!("corrupt record for {key:?}"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    key: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(corrupt(self.key));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn take_prefixed(&mut self) -> Result<&'a [u8], StoreError> {
        let n = usize::try_from(self.u64()?).map_err(|_| corrupt(self.key))?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_events_round_trip() {
        let kv = KeyValue {
            key: "/a".into(),
            value: b"hello".to_vec(),
            create_revision: 3,
            mod_revision: 7,
        };
        assert_eq!(
            decode_record("/a", &encode_record(3, 7, b"hello")).unwrap(),
            kv
        );
        let ev = StoreEvent {
            revision: 9,
            key: "/a".into(),
            current: None,
            previous: Some(kv),
        };
        assert_eq!(decode_event(9, &encode_event(&ev)).unwrap(), ev);
        assert!(decode_event(9, &[1, 2]).is_err());
    }
}
