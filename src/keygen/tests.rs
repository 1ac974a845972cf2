//! Unit tests for `keygen`.

use super::*;

const NOW: i64 = 1_800_000_000;

fn key(consumer: &str) -> Keygen {
    generate(
        &Request {
            consumer,
            key_id: Some("k-1"),
            expires_at: None,
        },
        NOW,
    )
    .unwrap()
}

#[test]
fn the_printed_block_and_entry_parse_and_hold_the_keys_digest() {
    let k = generate(
        &Request {
            consumer: "acme",
            key_id: Some("acme-1"),
            expires_at: Some("2030-01-01T00:00:00Z"),
        },
        NOW,
    )
    .unwrap();
    assert!(k.warnings.is_empty());
    assert_eq!(k.digest, hex::encode(apikey::digest(k.key.as_bytes())));
    let text = k.text();
    assert!(text.contains(&k.key));
    let block = format!("consumers:\n{}", k.consumer_block(2));
    let parsed = KeysFile::from_yaml(&block, Path::new("k")).unwrap();
    assert_eq!(parsed.consumers[0].id, "acme");
    assert_eq!(parsed.consumers[0].keys[0].sha256, k.digest);
    assert_eq!(
        parsed.consumers[0].keys[0].expires_at.as_deref(),
        Some("2030-01-01T00:00:00Z")
    );
    let existing = format!("consumers:\n  - id: acme\n    keys:\n{}", k.entry(6));
    assert_eq!(
        KeysFile::from_yaml(&existing, Path::new("k"))
            .unwrap()
            .consumers[0]
            .keys[0]
            .id,
        "acme-1"
    );
}

#[test]
fn defaults_warnings_and_errors() {
    let k = generate(
        &Request {
            consumer: "acme",
            ..Request::default()
        },
        NOW,
    )
    .unwrap();
    assert!(k.key_id.starts_with("acme-2027"), "{}", k.key_id);
    let past = generate(
        &Request {
            consumer: "a",
            expires_at: Some("2020-01-01T00:00:00Z"),
            ..Request::default()
        },
        NOW,
    )
    .unwrap();
    assert!(
        past.warnings[0].contains("in the past"),
        "{:?}",
        past.warnings
    );
    assert!(generate(
        &Request {
            consumer: "bad id",
            ..Request::default()
        },
        NOW
    )
    .is_err());
    assert!(generate(
        &Request {
            consumer: "a",
            key_id: Some("x y"),
            ..Request::default()
        },
        NOW
    )
    .is_err());
    let e = generate(
        &Request {
            consumer: "a",
            expires_at: Some("2030-01-01"),
            ..Request::default()
        },
        NOW,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("a date alone"), "{e}");
}

fn temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keygate-keygen-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("keys.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn appending_keeps_comments_and_extends_the_list() {
    for (name, text) in [
        ("empty", "# production keys\nconsumers: []   # none yet\n"),
        (
            "block",
            "# keys\nconsumers:\n  - id: old   # the first\n    keys:\n      - { id: o1, sha256: \"00\" }\n# trailing comment\n",
        ),
        ("deep", "consumers:\n    - id: old\n      keys: []"),
    ] {
        let p = temp(name, text);
        let k = key("newco");
        assert_eq!(append(&p, &k).unwrap(), Appended::Added, "{name}");
        let after = std::fs::read_to_string(&p).unwrap();
        for comment in text.lines().filter_map(|l| l.split_once('#').map(|(_, c)| c)) {
            assert!(after.contains(comment), "{name}: lost comment {comment:?}:\n{after}");
        }
        let parsed = KeysFile::from_yaml(&after, &p).unwrap();
        let last = parsed.consumers.last().unwrap();
        assert_eq!(last.id, "newco", "{name}:\n{after}");
        assert_eq!(last.keys[0].sha256, k.digest);
        // No temporary file is left behind.
        let leftovers = std::fs::read_dir(p.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "{name}");
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}

#[test]
fn existing_consumers_json_and_odd_layouts_get_instructions_and_no_edit() {
    let cases = [
        (
            "exists",
            "consumers:\n  - id: newco\n    keys: []\n",
            "already exists",
        ),
        ("json", "{\"consumers\": []}", "is JSON"),
        (
            "flow",
            "consumers: [ { id: a, keys: [] } ]\n",
            "add this block",
        ),
    ];
    for (name, text, says) in cases {
        let p = temp(name, text);
        match append(&p, &key("newco")).unwrap() {
            Appended::Instructions(i) => assert!(i.contains(says), "{name}: {i}"),
            Appended::Added => panic!("{name}: edited"),
        }
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            text,
            "{name}: file changed"
        );
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
    let p = temp(
        "exists-line",
        "# c\nconsumers:\n  - id: x\n    keys: []\n  - id: newco\n    keys: []\n",
    );
    let Appended::Instructions(i) = append(&p, &key("newco")).unwrap() else {
        panic!("edited")
    };
    assert!(i.contains("(line 5)") && i.contains("consumers[1]"), "{i}");
    std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    // A file that does not parse is left alone with its error.
    let p = temp(
        "broken",
        "consumers:\n  - id: a\n    keys: [ { id: k, sha256: x, color: red } ]\n",
    );
    assert!(matches!(
        append(&p, &key("newco")),
        Err(KeygenError::Invalid(_))
    ));
    std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
}
