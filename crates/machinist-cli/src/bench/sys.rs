//! What the bench reads about processes, from `/proc` (no `libc`, no `unsafe`): peak resident
//! memory (`VmHWM`), CPU time (`utime + stime`), and latency percentiles.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`): 100 on every Linux
/// architecture the kernel exposes to user space.
const TICKS_PER_SEC: f64 = 100.0;

/// A process: this one, or a child by pid.
#[derive(Debug, Clone, Copy)]
pub enum Pid {
    /// The bench's own process.
    Current,
    /// A child.
    Child(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Current => "/proc/self".to_owned(),
            Pid::Child(pid) => format!("/proc/{pid}"),
        }
    }
}

/// A field of `/proc/<pid>/status` in kB (`VmHWM`, `VmRSS`).
fn status_kb(pid: Pid, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("{}/status", pid.dir())).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Peak resident memory since the process started (or since [`reset_peak_rss`]), in MB.
pub fn peak_rss_mb(pid: Pid) -> Option<f64> {
    status_kb(pid, "VmHWM").map(|kb| kb as f64 / 1024.0)
}

/// Resident memory now, in MB.
pub fn rss_mb(pid: Pid) -> Option<f64> {
    status_kb(pid, "VmRSS").map(|kb| kb as f64 / 1024.0)
}

/// Resets this process's peak RSS to its current RSS (`echo 5 > /proc/self/clear_refs`,
/// Linux 4.0 and later); false when the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// User plus system CPU time of the whole process (every thread, living or exited), in seconds,
/// at the 10 ms resolution of `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: Pid) -> Option<f64> {
    let text = std::fs::read_to_string(format!("{}/stat", pid.dir())).ok()?;
    parse_stat_cpu(&text)
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so fields are counted after the last
/// `)`: field 3 (state) is the first there, `utime` (14) the 12th, `stime` (15) the 13th.
fn parse_stat_cpu(text: &str) -> Option<f64> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples`; `None` when there are none.
    pub fn of(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = (q * samples.len() as f64).ceil() as usize;
            ms(samples[rank.clamp(1, samples.len()) - 1])
        };
        Some(Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            max: ms(samples[samples.len() - 1]),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 31 0 0 20 0 \
                    3 0 100 1000 200";
        assert_eq!(parse_stat_cpu(text), Some(2.81));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn this_process_has_memory_and_cpu() {
        assert!(peak_rss_mb(Pid::Current).is_some_and(|mb| mb > 0.0));
        assert!(rss_mb(Pid::Current).is_some_and(|mb| mb > 0.0));
        assert!(cpu_seconds(Pid::Current).is_some());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples).expect("samples");
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        let mut one = vec![Duration::from_micros(1500)];
        let p = Percentiles::of(&mut one).expect("one sample");
        assert_eq!((p.p50, p.p99, p.max), (1.5, 1.5, 1.5));
        assert_eq!(Percentiles::of(&mut []), None);
    }
}
