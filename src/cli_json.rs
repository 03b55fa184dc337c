//! `--write-out json` for the CLI's read commands, in etcdctl's shape: a header with the
//! cluster id and the revision the read saw, then every key-value with its metadata, keys
//! and values base64-encoded (they are bytes, and JSON strings are text).

use corekv::kv::KeyValue;

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let triple = chunk.iter().enumerate().fold(0u32, |acc, (index, &byte)| {
            acc | u32::from(byte) << (16 - 8 * index)
        });
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (triple >> (18 - 6 * position)) & 0x3f;
                out.push(BASE64_ALPHABET[index as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One line of JSON for a read: header, key-values, count, more.
pub fn range(cluster_id: u64, revision: u64, kvs: &[KeyValue], count: u64, more: bool) -> String {
    let pairs: Vec<String> = kvs.iter().map(key_value).collect();
    format!(
        "{{\"header\":{{\"cluster_id\":{cluster_id},\"revision\":{revision}}},\"kvs\":[{}],\
         \"count\":{count},\"more\":{more}}}",
        pairs.join(",")
    )
}

fn key_value(pair: &KeyValue) -> String {
    format!(
        "{{\"key\":\"{}\",\"create_revision\":{},\"mod_revision\":{},\"version\":{},\
         \"value\":\"{}\",\"lease\":{}}}",
        base64(&pair.key),
        pair.create_revision,
        pair.mod_revision,
        pair.version,
        base64(&pair.value),
        pair.lease
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The RFC 4648 test vectors, and a read's line.
    #[test]
    fn base64_and_lines() {
        for (text, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(text.as_bytes()), encoded);
        }
        let pair = KeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: 1,
            mod_revision: 2,
            version: 3,
            lease: 0,
        };
        assert_eq!(
            range(9, 2, &[pair], 1, false),
            "{\"header\":{\"cluster_id\":9,\"revision\":2},\"kvs\":[{\"key\":\"aw==\",\
             \"create_revision\":1,\"mod_revision\":2,\"version\":3,\"value\":\"dg==\",\
             \"lease\":0}],\"count\":1,\"more\":false}"
        );
    }
}
