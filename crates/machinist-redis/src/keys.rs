//! The keys machinist adds next to Go's (Go's own keys — queue lists, `delayed_tasks`, state
//! UUIDs, `TriggerChordMutex` — are used verbatim).
//!
//! | key | type | what |
//! |---|---|---|
//! | `<prefix>:processing:{<queue>}:<consumer>` | list | messages a consumer took from `<queue>` and has not settled |
//! | `<prefix>:dead:{<queue>}` | list | dead letters of `<queue>`: JSON `{"reason":…,"body":…}` |
//! | `<prefix>:consumer:<consumer>` | string with expiry | the consumer's lease |
//! | `<prefix>:consumers` | hash | consumer id → the queues it consumes (JSON array) |
//!
//! The `{<queue>}` hash tag puts the processing and dead-letter lists in the queue's own
//! cluster slot (a key whose tag is `{q}` hashes like the bare key `q`), so the scripts that
//! move messages between them run atomically on one node. A queue name that already carries a
//! hash tag (`a{b}c`) is embedded verbatim instead, which keeps the same slot.

/// Key names under a prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The list of messages `consumer` holds from `queue`.
    pub(crate) fn processing(&self, queue: &str, consumer: &str) -> String {
        format!("{}:processing:{}:{consumer}", self.prefix, slot_tag(queue))
    }

    /// The dead letters of `queue`.
    pub(crate) fn dead(&self, queue: &str) -> String {
        format!("{}:dead:{}", self.prefix, slot_tag(queue))
    }

    /// The lease of `consumer`.
    pub(crate) fn lease(&self, consumer: &str) -> String {
        format!("{}:consumer:{consumer}", self.prefix)
    }

    /// The consumer registry.
    pub(crate) fn registry(&self) -> String {
        format!("{}:consumers", self.prefix)
    }
}

/// `queue` in a form that, embedded in another key, hashes to `queue`'s own cluster slot.
fn slot_tag(queue: &str) -> String {
    if has_hash_tag(queue) {
        queue.to_owned()
    } else {
        format!("{{{queue}}}")
    }
}

/// Redis Cluster's rule: the part between the first `{` and the next `}` is hashed, if
/// non-empty.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// The cluster slot of `key` (CRC16/XMODEM of its hash tag, mod 16384); used by tests.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16_xmodem(hashed) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processing_and_dead_lists_share_the_queue_slot() {
        let k = Keys::new("machinist");
        for q in [
            "machinery_tasks",
            "q",
            "a{b}c",
            "with:colons",
            "x{}y",
            "ünï",
        ] {
            let p = k.processing(q, "c1");
            let d = k.dead(q);
            if !q.contains("{}") {
                assert_eq!(key_slot(&p), key_slot(q), "{p} vs {q}");
                assert_eq!(key_slot(&d), key_slot(q), "{d} vs {q}");
            }
        }
        assert_eq!(
            k.processing("machinery_tasks", "c1"),
            "machinist:processing:{machinery_tasks}:c1"
        );
        assert_eq!(k.dead("a{b}c"), "machinist:dead:a{b}c");
        assert_eq!(k.lease("c1"), "machinist:consumer:c1");
        assert_eq!(k.registry(), "machinist:consumers");
    }

    #[test]
    fn crc16_matches_redis() {
        // Values from the Redis Cluster specification.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
    }
}
