//! Brute-force resistance: failed authentications counted per client address.
//!
//! A fixed-size table of atomic counters (a count-min sketch with two hashed
//! slots per address) bounds memory whatever the number of addresses; keys of
//! the hash are random per process, so nobody can aim collisions at a victim's
//! slots. Each slot holds the current window number and a failure count in one
//! `AtomicU64`: no lock, no allocation. An address is blocked when *both* its
//! slots reached the limit in the current window; a collision can therefore only
//! over-count, never let an attacker through. IPv6 addresses count per /64,
//! since one host usually holds a whole /64.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Brute-force settings (reloadable, except the table size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures allowed per address per window; 0 disables the limiter.
    pub max_failures: u32,
    /// Window length in seconds.
    pub window_seconds: u32,
}

/// The per-address failure table.
pub struct FailureLimiter {
    slots: Box<[AtomicU64]>,
    hashers: [RandomState; 2],
}

fn bucket(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        // Count per /64: one host usually holds a whole /64.
        IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 127),
    }
}

impl FailureLimiter {
    /// Create a table of `slots` counters (rounded up to a power of two, at least 1024).
    pub fn new(slots: usize) -> Self {
        let n = slots.max(1024).next_power_of_two();
        FailureLimiter {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            hashers: [RandomState::new(), RandomState::new()],
        }
    }

    /// Memory held by the table, in bytes.
    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<AtomicU64>()
    }

    fn indices(&self, ip: IpAddr) -> [usize; 2] {
        let key = bucket(ip);
        let mask = self.slots.len() - 1;
        [
            self.hashers[0].hash_one(key) as usize & mask,
            self.hashers[1].hash_one(key) as usize & mask,
        ]
    }

    /// Seconds until `ip` may try again, when it is blocked at time `now` (Unix seconds).
    pub fn blocked(&self, ip: IpAddr, policy: Policy, now: u64) -> Option<u64> {
        if policy.max_failures == 0 || policy.window_seconds == 0 {
            return None;
        }
        let window = now / u64::from(policy.window_seconds);
        let over = self.indices(ip).iter().all(|&i| {
            let v = self.slots[i].load(Ordering::Relaxed);
            v >> 32 == window & 0xffff_ffff && (v & 0xffff_ffff) >= u64::from(policy.max_failures)
        });
        over.then(|| (window + 1) * u64::from(policy.window_seconds) - now)
    }

    /// Count one failed authentication from `ip` at time `now`.
    pub fn record_failure(&self, ip: IpAddr, policy: Policy, now: u64) {
        if policy.max_failures == 0 || policy.window_seconds == 0 {
            return;
        }
        let window = (now / u64::from(policy.window_seconds)) & 0xffff_ffff;
        for i in self.indices(ip) {
            let slot = &self.slots[i];
            let mut cur = slot.load(Ordering::Relaxed);
            loop {
                let next = if cur >> 32 == window {
                    (window << 32) | ((cur & 0xffff_ffff) + 1).min(0xffff_ffff)
                } else {
                    (window << 32) | 1
                };
                match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(actual) => cur = actual,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        max_failures: 3,
        window_seconds: 60,
    };

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let l = FailureLimiter::new(1024);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.blocked(ip, P, 600), None);
            l.record_failure(ip, P, 600);
        }
        assert_eq!(l.blocked(ip, P, 610), Some(50));
        assert_eq!(
            l.blocked(other, P, 610),
            None,
            "other clients are unaffected"
        );
        // The next window starts afresh.
        assert_eq!(l.blocked(ip, P, 660), None);
    }

    #[test]
    fn ipv6_counts_per_slash_64_and_zero_disables() {
        let l = FailureLimiter::new(1024);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff".parse().unwrap();
        for _ in 0..3 {
            l.record_failure(a, P, 0);
        }
        assert!(l.blocked(b, P, 1).is_some());
        let off = Policy {
            max_failures: 0,
            ..P
        };
        assert_eq!(l.blocked(a, off, 1), None);
    }

    #[test]
    fn memory_is_bounded_whatever_the_number_of_addresses() {
        let l = FailureLimiter::new(4096);
        for i in 0..100_000u32 {
            l.record_failure(IpAddr::from(i.to_be_bytes()), P, 0);
        }
        assert_eq!(l.bytes(), 4096 * 8);
    }
}
