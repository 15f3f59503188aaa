//! Back-off arithmetic: Go Machinery's Fibonacci retry delays (1, 2, 3, 5, 8 … s, seeded by
//! `RetryTimeout`), and the capped back-off used for requeueing unregistered tasks.

use std::time::Duration;

/// The smallest Fibonacci number (1, 1, 2, 3, 5, 8 …) strictly greater than `current`: the next
/// `RetryTimeout` in seconds. From 0 the delays run 1, 2, 3, 5, 8, 13 …; a seed of 10 starts at 13.
pub fn fibonacci_next(current: i64) -> i64 {
    let (mut a, mut b) = (1i64, 1i64);
    while b <= current {
        let next = a.saturating_add(b);
        if next == b {
            return b;
        }
        a = b;
        b = next;
    }
    b
}

/// Delay before the `n`-th requeue (0-based) of a message nobody can run yet: Fibonacci seconds
/// capped at `cap`.
pub fn requeue_delay(n: u32, cap: Duration) -> Duration {
    let mut secs = 0i64;
    for _ in 0..=n.min(40) {
        secs = fibonacci_next(secs);
    }
    Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_fibonacci_sequence() {
        let mut t = 0;
        let mut seen = vec![];
        for _ in 0..7 {
            t = fibonacci_next(t);
            seen.push(t);
        }
        assert_eq!(seen, [1, 2, 3, 5, 8, 13, 21]);
        assert_eq!(fibonacci_next(10), 13);
        assert_eq!(fibonacci_next(-5), 1);
        assert!(fibonacci_next(i64::MAX) > 0);
    }

    #[test]
    fn requeue_delay_is_capped() {
        let cap = Duration::from_secs(60);
        assert_eq!(requeue_delay(0, cap), Duration::from_secs(1));
        assert_eq!(requeue_delay(3, cap), Duration::from_secs(5));
        assert_eq!(requeue_delay(30, cap), cap);
    }
}
