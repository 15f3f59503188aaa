//! Identifiers as Go Machinery makes them: a prefix and a lowercase hyphenated UUIDv4.
//!
//! The random bits come from the operating system, as `uuid::Uuid::new_v4` takes them, but
//! fetched for 32 identifiers at a time into a per-thread buffer: one `getrandom` system
//! call per 32 identifiers instead of one per identifier (`send_task` makes one per task). Each
//! 16-byte slice is handed out once and wiped. A process that `fork`s without `exec` and makes
//! identifiers in both halves would repeat the buffered ones; a worker process is started with
//! `exec`, so this does not happen within machinist.

use std::cell::RefCell;

use uuid::Uuid;

/// Identifiers per refill of the per-thread buffer.
const BATCH: usize = 32;

struct Pool {
    bytes: [u8; 16 * BATCH],
    /// Index of the next unused 16-byte slice; `BATCH` when empty.
    next: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            bytes: [0; 16 * BATCH],
            next: BATCH,
        })
    };
}

/// 16 random bytes from the per-thread buffer, refilled from the OS when used up; `None` if
/// the OS refused.
fn random_bytes() -> Option<[u8; 16]> {
    POOL.with_borrow_mut(|pool| {
        if pool.next == BATCH {
            getrandom::fill(&mut pool.bytes).ok()?;
            pool.next = 0;
        }
        let slice = &mut pool.bytes[pool.next * 16..(pool.next + 1) * 16];
        let mut out = [0u8; 16];
        out.copy_from_slice(slice);
        slice.fill(0);
        pool.next += 1;
        Some(out)
    })
}

/// A random (version 4) UUID.
pub(crate) fn uuid_v4() -> Uuid {
    match random_bytes() {
        Some(bytes) => uuid::Builder::from_random_bytes(bytes).into_uuid(),
        // The OS refused to fill the buffer: let `uuid` try (and report) on its own.
        None => Uuid::new_v4(),
    }
}

/// `prefix` followed by a new lowercase hyphenated UUIDv4, built in one allocation.
fn prefixed(prefix: &str) -> String {
    let mut buf = Uuid::encode_buffer();
    let text = uuid_v4().hyphenated().encode_lower(&mut buf);
    let mut id = String::with_capacity(prefix.len() + text.len());
    id.push_str(prefix);
    id.push_str(text);
    id
}

/// `task_<uuid4>`
pub fn task_id() -> String {
    prefixed("task_")
}

/// `group_<uuid4>`
pub fn group_id() -> String {
    prefixed("group_")
}

/// `chord_<uuid4>`
pub fn chord_id() -> String {
    prefixed("chord_")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn prefixes_and_lowercase_v4() {
        let id = super::task_id();
        assert!(id.starts_with("task_"));
        let u = uuid::Uuid::parse_str(&id[5..]).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(id, id.to_lowercase());
        assert_eq!(id.len(), 5 + 36);
        assert!(super::group_id().starts_with("group_"));
        assert!(super::chord_id().starts_with("chord_"));
    }

    #[test]
    fn distinct_across_refills_and_threads() {
        // Several refills of the per-thread buffer, on two threads at once.
        let make = || {
            (0..super::BATCH * 5)
                .map(|_| super::task_id())
                .collect::<Vec<_>>()
        };
        let other = std::thread::spawn(make);
        let mut seen: HashSet<String> = make().into_iter().collect();
        for id in other.join().unwrap() {
            assert!(seen.insert(id), "repeated identifier");
        }
        assert_eq!(seen.len(), super::BATCH * 10);
        for id in &seen {
            let u = uuid::Uuid::parse_str(&id[5..]).unwrap();
            assert_eq!(u.get_version_num(), 4, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
    }

    #[test]
    #[ignore = "timing, not a check; run with --release --ignored --nocapture"]
    fn speed() {
        use std::hint::black_box;
        use std::time::Instant;
        let n = 1_000_000u32;
        let t = Instant::now();
        for _ in 0..n {
            black_box(super::task_id());
        }
        let batched = t.elapsed() / n;
        let t = Instant::now();
        for _ in 0..n {
            black_box(format!("task_{}", uuid::Uuid::new_v4()));
        }
        let per_call = t.elapsed() / n;
        println!("task_id: {batched:?} per id; one getrandom per id: {per_call:?} per id");
    }
}
