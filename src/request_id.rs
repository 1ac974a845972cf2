//! Request ids: keep a client's well-formed `x-request-id`, or make one.
//!
//! Ids travel in headers, logs and problem documents, so an incoming one is
//! kept only when it is 1–128 characters of `[A-Za-z0-9._:-]` (nothing to
//! escape anywhere); otherwise keygate generates 32 hex characters, unique
//! within the process and unpredictable across processes.

use std::sync::atomic::{AtomicU64, Ordering};

use http::header::HeaderValue;

/// Longest accepted incoming `x-request-id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether an incoming request id is safe to keep: 1–128 of `[A-Za-z0-9._:-]`.
pub fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID_LEN
        && v.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);
static REQUEST_ID_SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Generate a request id: 32 hex characters, unique within the process.
pub fn new_request_id() -> HeaderValue {
    let seed = *REQUEST_ID_SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        // A fixed seed only makes ids predictable across restarts, never duplicated within one.
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b)
    });
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    let (hi, lo) = (splitmix64(!seed), splitmix64(seed.wrapping_add(n)));
    let mut buf = [0u8; 32];
    for (i, byte) in hi
        .to_be_bytes()
        .iter()
        .chain(lo.to_be_bytes().iter())
        .enumerate()
    {
        buf[2 * i] = HEX[usize::from(byte >> 4)];
        buf[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(valid_request_id(b"abc-123_x.y:z"));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(b"a\"b"));
        assert!(!valid_request_id(&[b'a'; 129]));
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(valid_request_id(a.as_bytes()));
    }
}
