//! Unit tests for `keystore`.

use super::*;

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
    assert!(!b.insert_id("a"), "an id pushed is known");
    // An id whose key was refused (never pushed) is still known.
    assert!(b.insert_id("refused"));
    assert!(b.insert_id("b"));
    assert!(!b.insert_id("refused"));
    assert!(b.push(
        crate::apikey::digest(b"kb"),
        i64::MAX,
        0,
        "b",
        false,
        NO_POLICY
    ));
    assert!(!b.insert_id("b"));
    assert_eq!(b.conflict(&d), Some(("a", true)));
    let index = b.finish();
    let (idx, e) = index.lookup(&d).unwrap();
    assert_eq!(index.id(idx), "a");
    assert_eq!(e.consumer, 0);
    assert!(index.lookup(&crate::apikey::digest(b"other")).is_none());
}

#[test]
fn id_table_grows_and_finds_every_id() {
    let mut b = KeyIndexBuilder::default();
    for i in 0..50_000u32 {
        let id = format!("key-{i}");
        assert!(b.insert_id(&id), "{id}");
        assert!(b.push(
            crate::apikey::digest(&i.to_le_bytes()),
            i64::MAX,
            0,
            &id,
            false,
            NO_POLICY
        ));
    }
    for i in 0..50_000u32 {
        assert!(!b.insert_id(&format!("key-{i}")));
    }
    assert!(b.insert_id("key-50000"));
    assert_eq!(b.finish().len(), 50_000);
}
