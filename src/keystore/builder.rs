//! Building a [`KeyIndex`] one key at a time, with conflicts and repeated ids found
//! on the way, in as little memory beyond the index itself as possible (a reload
//! builds the new index while the old one still serves).

use std::collections::HashSet;
use std::hash::Hasher;

use bytes::Bytes;

use super::{DigestTable, IdHasher, KeyEntry, KeyIndex, EMPTY};
use crate::apikey::Digest;

fn id_hash(id: &[u8]) -> u64 {
    let mut h = IdHasher::default();
    h.write(id);
    h.finish()
}

/// The ids of the keys added so far: an open-addressing table of entry indices probed
/// by a hash of the id. The builder keeps 32 more bits of that hash per entry
/// (`id_fps`, dropped with the table), so a probe reads the id arena only when those
/// match. Four bytes per slot and at most half
/// full: 8 MiB for a million keys, against 34 MiB for a set of 128-bit hashes.
#[derive(Debug, Default)]
struct IdTable {
    slots: Vec<u32>,
    len: usize,
}

/// The fingerprint kept in an entry for an id hashing to `h` (the bits the slot
/// position does not use).
fn id_fp(h: u64) -> u32 {
    (h >> 32) as u32
}

impl IdTable {
    fn contains(&self, entries: &[KeyEntry], fps: &[u32], ids: &[u8], id: &[u8]) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let h = id_hash(id);
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while let Some(&idx) = self.slots.get(i) {
            if idx == EMPTY {
                return false;
            }
            if fps.get(idx as usize) == Some(&id_fp(h))
                && entries
                    .get(idx as usize)
                    .is_some_and(|e| entry_id(ids, e) == Some(id))
            {
                return true;
            }
            i = (i + 1) & mask;
        }
        false
    }

    /// Add entry `idx`, whose id hashes to `h`, growing (rehashing from the arena) at
    /// half load.
    fn insert(&mut self, entries: &[KeyEntry], ids: &[u8], idx: u32, h: u64) {
        if (self.len + 1) * 2 > self.slots.len() {
            let size = (self.slots.len() * 2).max(16);
            let old = std::mem::replace(&mut self.slots, vec![EMPTY; size]);
            for i in old.into_iter().filter(|&i| i != EMPTY) {
                let id = entries
                    .get(i as usize)
                    .and_then(|e| entry_id(ids, e))
                    .unwrap_or_default();
                self.place(i, id_hash(id));
            }
        }
        self.place(idx, h);
        self.len += 1;
    }

    fn place(&mut self, idx: u32, h: u64) {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while self.slots.get(i).is_some_and(|&s| s != EMPTY) {
            i = (i + 1) & mask;
        }
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = idx;
        }
    }
}

fn entry_id<'a>(ids: &'a [u8], e: &KeyEntry) -> Option<&'a [u8]> {
    ids.get(e.id_off as usize..e.id_off as usize + usize::from(e.id_len))
}

/// Builds a [`KeyIndex`] one key at a time.
#[derive(Debug, Default)]
pub struct KeyIndexBuilder {
    table: DigestTable,
    entries: Vec<KeyEntry>,
    ids: Vec<u8>,
    id_table: IdTable,
    /// Per entry, 32 bits of its id's hash (see [`IdTable`]).
    id_fps: Vec<u32>,
    /// The id last given to [`Self::insert_id`], until its key is pushed.
    pending: String,
    has_pending: bool,
    /// Ids of keys that were refused (never pushed): known, so a repeat is still found.
    refused: HashSet<Box<str>>,
}

impl KeyIndexBuilder {
    /// Reserve room for about `n` keys (the tables grow as keys come, so that a generous
    /// hint costs no memory that is touched).
    pub fn with_capacity(n: usize) -> Self {
        KeyIndexBuilder {
            entries: Vec::with_capacity(n),
            ids: Vec::with_capacity(n * 12),
            ..KeyIndexBuilder::default()
        }
    }

    /// An id given to `insert_id` whose key was never pushed: remember it.
    fn settle(&mut self) {
        if self.has_pending {
            self.has_pending = false;
            self.refused.insert(self.pending.as_str().into());
        }
    }

    /// Record the id of the key about to be added; false when it was already used
    /// (by a key added, or by one refused since).
    pub fn insert_id(&mut self, id: &str) -> bool {
        self.settle();
        if self.refused.contains(id)
            || self
                .id_table
                .contains(&self.entries, &self.id_fps, &self.ids, id.as_bytes())
        {
            return false;
        }
        self.pending.clear();
        self.pending.push_str(id);
        self.has_pending = true;
        true
    }

    /// The id of a key already added whose digest starts like `d`, and whether the whole
    /// digest is the same.
    pub fn conflict(&self, d: &Digest) -> Option<(&str, bool)> {
        let idx = self.table.find(&self.entries, d)?;
        let e = self.entries.get(idx as usize)?;
        let id = entry_id(&self.ids, e)
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
        if self.has_pending && self.pending == id {
            self.has_pending = false;
        }
        let h = id_hash(id.as_bytes());
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
        self.id_fps.push(id_fp(h));
        self.table.insert(&self.entries, idx);
        self.id_table.insert(&self.entries, &self.ids, idx, h);
        true
    }

    /// The finished index, trimmed to size.
    pub fn finish(mut self) -> KeyIndex {
        drop(std::mem::take(&mut self.id_table));
        drop(std::mem::take(&mut self.refused));
        drop(std::mem::take(&mut self.id_fps));
        self.entries.shrink_to_fit();
        self.ids.shrink_to_fit();
        KeyIndex {
            table: self.table,
            entries: self.entries,
            ids: Bytes::from(self.ids),
        }
    }
}
