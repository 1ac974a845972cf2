//! The key store: digests of every key, found in O(1), in about 70 bytes per key.
//!
//! Entries are 56 bytes (digest, expiry, consumer, id offset, flags, policy) in one vector;
//! an open-addressing table of 4-byte slots, probed by the digest's first 8 bytes,
//! finds them; key ids live in one shared arena. [`KeyIndexBuilder`] fills it one
//! key at a time while a keys file streams in, and reports conflicts; [`KeyIndex`] is
//! what the request path reads.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

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

/// A 128-bit hash of a key id, for duplicate detection without keeping a million strings.
/// Two different ids colliding is a 2^-128 event; no adversary writes the keys file.
fn id_hash(id: &[u8]) -> u128 {
    let mut a = IdHasher(0);
    a.write(id);
    let mut b = IdHasher(0x9e37_79b9_7f4a_7c15);
    b.write(id);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// Builds a [`KeyIndex`] one key at a time.
#[derive(Debug, Default)]
pub struct KeyIndexBuilder {
    table: DigestTable,
    entries: Vec<KeyEntry>,
    ids: Vec<u8>,
    seen_ids: HashSet<u128, BuildHasherDefault<PrefixHasher>>,
}

impl KeyIndexBuilder {
    /// Reserve room for about `n` keys.
    pub fn with_capacity(n: usize) -> Self {
        KeyIndexBuilder {
            table: DigestTable::with_capacity(n),
            entries: Vec::with_capacity(n),
            ids: Vec::with_capacity(n * 12),
            seen_ids: HashSet::with_capacity_and_hasher(n, Default::default()),
        }
    }

    /// Record a key id; false when it was already used.
    pub fn insert_id(&mut self, id: &str) -> bool {
        self.seen_ids.insert(id_hash(id.as_bytes()))
    }

    /// The id of a key already added whose digest starts like `d`, and whether the whole
    /// digest is the same.
    pub fn conflict(&self, d: &Digest) -> Option<(&str, bool)> {
        let idx = self.table.find(&self.entries, d)?;
        let e = self.entries.get(idx as usize)?;
        let id = self
            .ids
            .get(e.id_off as usize..e.id_off as usize + usize::from(e.id_len))
            .and_then(|raw| std::str::from_utf8(raw).ok())
            .unwrap_or("");
        Some((id, e.digest == *d))
    }

    /// Add a key (after [`Self::conflict`] said none); false when the index is full (4 Gi).
    /// `policy` is [`KeyEntry::policy`].
    pub fn push(
        &mut self,
        digest: Digest,
        expires_at: i64,
        consumer: u32,
        id: &str,
        disabled: bool,
        policy: u32,
    ) -> bool {
        let (Ok(idx), Ok(id_off), Ok(id_len)) = (
            u32::try_from(self.entries.len()),
            u32::try_from(self.ids.len()),
            u16::try_from(id.len()),
        ) else {
            return false;
        };
        self.ids.extend_from_slice(id.as_bytes());
        self.entries.push(KeyEntry {
            digest,
            expires_at,
            consumer,
            id_off,
            id_len,
            disabled,
            policy,
        });
        self.table.insert(&self.entries, idx);
        true
    }

    /// The finished index, trimmed to size.
    pub fn finish(mut self) -> KeyIndex {
        drop(self.seen_ids);
        self.entries.shrink_to_fit();
        // The capacity hint may have over-sized the table: rebuild it at the real size.
        if self.table.slots.len() > (self.entries.len().max(4) * 2).next_power_of_two() {
            let mut table = DigestTable::with_capacity(self.entries.len());
            for idx in 0..self.entries.len() as u32 {
                table.insert(&self.entries, idx);
            }
            self.table = table;
        }
        self.ids.shrink_to_fit();
        KeyIndex {
            table: self.table,
            entries: self.entries,
            ids: Bytes::from(self.ids),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_stays_56_bytes() {
        assert_eq!(std::mem::size_of::<KeyEntry>(), 56);
    }

    #[test]
    fn digest_table_grows_and_finds_every_key() {
        let mut entries = Vec::new();
        let mut table = DigestTable::default();
        for i in 0..10_000u32 {
            entries.push(KeyEntry {
                digest: crate::apikey::digest(&i.to_le_bytes()),
                expires_at: i64::MAX,
                consumer: 0,
                id_off: 0,
                id_len: 0,
                disabled: false,
                policy: NO_POLICY,
            });
            table.insert(&entries, i);
        }
        assert!(table.slots.len() >= 2 * entries.len());
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(table.find(&entries, &e.digest), Some(i as u32));
        }
        for i in 10_000u32..20_000 {
            assert_eq!(
                table.find(&entries, &crate::apikey::digest(&i.to_le_bytes())),
                None
            );
        }
        assert_eq!(
            DigestTable::default().find(&entries, &entries[0].digest),
            None
        );
    }

    #[test]
    fn digests_decode_in_either_case_and_reject_junk() {
        let d = crate::apikey::digest(b"x");
        let mut out = [0u8; 32];
        assert!(decode_digest(hex::encode(d).as_bytes(), &mut out));
        assert_eq!(out, d);
        assert!(decode_digest(hex::encode_upper(d).as_bytes(), &mut out));
        assert_eq!(out, d);
        assert!(!decode_digest(b"zz", &mut out));
        let mut bad = hex::encode(d).into_bytes();
        bad[63] = b'g';
        assert!(!decode_digest(&bad, &mut out));
    }

    #[test]
    fn builder_reports_conflicts_and_duplicate_ids() {
        let mut b = KeyIndexBuilder::with_capacity(2);
        let d = crate::apikey::digest(b"k");
        assert!(b.insert_id("a"));
        assert!(!b.insert_id("a"));
        assert_eq!(b.conflict(&d), None);
        assert!(b.push(d, i64::MAX, 0, "a", false, NO_POLICY));
        assert_eq!(b.conflict(&d), Some(("a", true)));
        let index = b.finish();
        let (idx, e) = index.lookup(&d).unwrap();
        assert_eq!(index.id(idx), "a");
        assert_eq!(e.consumer, 0);
        assert!(index.lookup(&crate::apikey::digest(b"other")).is_none());
    }
}
