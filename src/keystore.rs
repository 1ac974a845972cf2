//! The key store: digests of every key, found in O(1), in about 70 bytes per key.
//!
//! Entries are 56 bytes (digest, expiry, consumer, id offset, flags, policy) in one vector;
//! an open-addressing table of 4-byte slots, probed by the digest's first 8 bytes,
//! finds them; key ids live in one shared arena. [`KeyIndexBuilder`] (`builder`) fills
//! it one key at a time while a keys file streams in, and reports conflicts and
//! repeated ids; [`KeyIndex`] is what the request path reads.

use std::hash::Hasher;

use bytes::Bytes;
use http::header::HeaderValue;
use subtle::ConstantTimeEq;

use crate::apikey::Digest;

/// One key in the index: 56 bytes, no per-key heap allocation.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// The full SHA-256 digest, confirmed in constant time.
    pub digest: Digest,
    /// Expiry in Unix seconds; `i64::MAX` when none.
    pub expires_at: i64,
    /// Index into `State::consumers`.
    pub consumer: u32,
    id_off: u32,
    id_len: u16,
    /// This key is disabled.
    pub disabled: bool,
    /// Index of its policy in `State::key_policies`; [`NO_POLICY`] when it has none.
    pub policy: u32,
}

/// [`KeyEntry::policy`] of a key with nothing beyond its consumer's settings.
pub const NO_POLICY: u32 = u32::MAX;

// An entry stays 56 bytes (a million keys: 56 MB of entries).
const _: () = assert!(std::mem::size_of::<KeyEntry>() == 56);

/// A hasher for digest prefixes: SHA-256 output is already uniform, so use it as is.
#[derive(Default)]
pub struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A fast hasher for key ids during validation. The ids come from the operator's
/// own files, so hash flooding is not a concern, and SipHash cost a third of the
/// time of loading a million keys.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // FNV-1a over 8-byte words, then a final avalanche.
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0000_0100_0000_01b3);
            h ^= h >> 29;
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        self.0 = h ^ (h >> 33);
    }
}

/// Decode 64 hex characters (either case) into a digest; false when malformed.
pub fn decode_digest(hex: &[u8], out: &mut Digest) -> bool {
    /// Nibble value of each byte; 0xff for non-hex.
    const NIBBLE: [u8; 256] = {
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    if hex.len() != 64 {
        return false;
    }
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    // Valid nibbles are < 16, so any 0xff shows in the high bits.
    bad & 0xf0 == 0
}

fn prefix(d: &Digest) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&d[..8]);
    u64::from_le_bytes(p)
}

/// An open-addressing table of entry indices, probed by the digest's first 8 bytes.
///
/// Four bytes per slot and at most half full: a million keys take 8 MiB here, against
/// 34 MiB for a `HashMap<u64, u32>`. SHA-256 output is uniform, so the prefix is the hash.
#[derive(Debug, Default)]
struct DigestTable {
    slots: Vec<u32>,
    len: usize,
}

const EMPTY: u32 = u32::MAX;

impl DigestTable {
    fn with_capacity(n: usize) -> Self {
        let size = (n.max(4) * 2).next_power_of_two();
        DigestTable {
            slots: vec![EMPTY; size],
            len: 0,
        }
    }

    /// The index of the entry whose digest starts like `d`, if any.
    fn find(&self, entries: &[KeyEntry], d: &Digest) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let want = prefix(d);
        let mut i = want as usize & mask;
        loop {
            let idx = self.slots[i];
            if idx == EMPTY {
                return None;
            }
            if entries
                .get(idx as usize)
                .is_some_and(|e| prefix(&e.digest) == want)
            {
                return Some(idx);
            }
            i = (i + 1) & mask;
        }
    }

    /// Insert entry `idx` (whose prefix is not in the table yet), growing at half load.
    fn insert(&mut self, entries: &[KeyEntry], idx: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            let mut bigger = DigestTable::with_capacity(self.slots.len().max(4));
            for &old in self.slots.iter().filter(|&&i| i != EMPTY) {
                bigger.place(entries, old);
            }
            *self = DigestTable {
                len: self.len,
                ..bigger
            };
        }
        self.place(entries, idx);
        self.len += 1;
    }

    fn place(&mut self, entries: &[KeyEntry], idx: u32) {
        let mask = self.slots.len() - 1;
        let mut i = entries.get(idx as usize).map_or(0, |e| prefix(&e.digest)) as usize & mask;
        while self.slots[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = idx;
    }
}

/// The key store: O(1) lookup by digest, compact (about 70 bytes per key).
#[derive(Debug, Default)]
pub struct KeyIndex {
    table: DigestTable,
    entries: Vec<KeyEntry>,
    ids: Bytes,
}

impl KeyIndex {
    /// Find the key whose digest equals `d`; the final comparison is constant-time.
    pub fn lookup(&self, d: &Digest) -> Option<(u32, &KeyEntry)> {
        // Probing compares 8-byte prefixes, which an attacker cannot steer (they would need
        // SHA-256 preimages); the full digest is then confirmed in constant time.
        let idx = self.table.find(&self.entries, d)?;
        let entry = self.entries.get(idx as usize)?;
        bool::from(entry.digest.ct_eq(d)).then_some((idx, entry))
    }

    /// The key's configured id.
    pub fn id(&self, idx: u32) -> &str {
        self.entries
            .get(idx as usize)
            .and_then(|e| {
                let start = e.id_off as usize;
                let raw = self.ids.get(start..start + usize::from(e.id_len))?;
                std::str::from_utf8(raw).ok()
            })
            .unwrap_or("")
    }

    /// The key's id as a header value, sharing the id arena (no copy).
    pub fn id_header(&self, idx: u32) -> Option<HeaderValue> {
        let e = self.entries.get(idx as usize)?;
        let start = e.id_off as usize;
        HeaderValue::from_maybe_shared(self.ids.slice(start..start + usize::from(e.id_len))).ok()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, for counting and gauges.
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    /// Heap bytes held by the index: table slots, entries and ids.
    pub fn heap_bytes(&self) -> usize {
        self.table.slots.capacity() * std::mem::size_of::<u32>()
            + self.entries.capacity() * std::mem::size_of::<KeyEntry>()
            + self.ids.len()
    }
}

mod builder;

pub use builder::KeyIndexBuilder;

#[cfg(test)]
mod tests;
