//! In-memory adapters: a [`Broker`](crate::Broker), a [`Backend`](crate::Backend) and a
//! [`Lock`](crate::Lock) that need no network service.
//!
//! They exist for unit tests, the quickstart and users' own tests (Go Machinery's "eager"
//! mode): the whole producer → worker path runs inside one process with the same contracts as
//! the real adapters — ETAs kept by the broker, acknowledgements and at-least-once redelivery,
//! expiring results, an exactly-once chord trigger. Nothing survives the process.

mod backend;
mod broker;
mod lock;

pub use {backend::MemoryBackend, broker::MemoryBroker, lock::MemoryLock};

use std::hash::{BuildHasherDefault, Hasher};

/// The hasher of the in-memory adapters' maps keyed by names (queue names; task UUIDs where a
/// map uses it): SipHash costs more than the rest of a publish. Keys come from the application,
/// not from the open network, so flooding resistance is not needed here.
pub(crate) type FastHash = BuildHasherDefault<NameHasher>;

/// A small multiply-rotate hash over 8-byte words.
#[derive(Default)]
pub(crate) struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl NameHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn fast_hash_map_keeps_distinct_names_apart() {
        let mut m: HashMap<String, usize, super::FastHash> = HashMap::default();
        let names: Vec<String> = (0..2000)
            .map(|i| format!("machinist_tasks_{i}"))
            .chain([
                "".into(),
                "a".into(),
                "a\0".into(),
                "abcdefgh".into(),
                "abcdefgh\0".into(),
            ])
            .collect();
        for (i, n) in names.iter().enumerate() {
            assert!(m.insert(n.clone(), i).is_none(), "{n}");
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(m.get(n), Some(&i));
        }
    }
}
