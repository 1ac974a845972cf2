//! Rate-limited warnings: at most one line per period for a recurring event, the
//! events in between counted and reported with the next line. Lock-free, so the
//! request path can hit one on every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lets one event through per period and counts the others.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Monotonic milliseconds from which the next event may pass.
    next_ms: AtomicU64,
    /// Events held back since the last one let through.
    held_back: AtomicU64,
}

impl Throttle {
    /// A throttle that lets the first event through.
    pub const fn new() -> Self {
        Throttle {
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// Record an event at `now_ms` (any monotonic milliseconds): `Some(n)` when it may be
    /// logged, `n` being the events held back since the last one logged; `None` when it
    /// is held back (and counted).
    pub fn admit(&self, now_ms: u64, period: Duration) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(period_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.held_back.swap(0, Ordering::Relaxed))
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// [`Throttle::admit`] at the current time.
    pub fn admit_now(&self, period: Duration) -> Option<u64> {
        self.admit(monotonic_ms(), period)
    }
}

/// Milliseconds since the first call in this process.
fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// ` (N more since the previous warning)` when events were held back, else nothing: the
/// end of a throttled line.
pub fn more(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} more since the previous warning)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_period_and_a_count_of_the_rest() {
        let t = Throttle::new();
        let minute = Duration::from_secs(60);
        assert_eq!(t.admit(1_000, minute), Some(0));
        for ms in [1_001, 30_000, 60_999] {
            assert_eq!(t.admit(ms, minute), None);
        }
        assert_eq!(t.admit(61_000, minute), Some(3));
        assert_eq!(t.admit(61_001, minute), None);
        assert_eq!(t.admit(500_000, minute), Some(1));
        assert_eq!(more(0), "");
        assert_eq!(more(4), " (4 more since the previous warning)");
    }

    #[test]
    fn racing_threads_let_one_through() {
        let t = std::sync::Arc::new(Throttle::new());
        let passed: u64 = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| t.admit(5, Duration::from_secs(60)).is_some())
                        .count() as u64
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(passed, 1);
        assert_eq!(t.admit(60_005, Duration::from_secs(60)), Some(7999));
    }
}
