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

const ROTATE: &str = "# keys\nconsumers:\n  - id: acme\n    keys:\n      - id: old   # first key\n        sha256: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n        scopes: [\"a:\", \"1.0\", \"true\"]\n        rate_limit: { requests: 5, window_seconds: 1 }\n      # the next key belongs to the ops team\n      - id: other\n        sha256: \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"\n";

#[test]
fn rotation_copies_settings_expires_the_old_key_and_writes_in_place() {
    let p = temp("rotate", ROTATE);
    let grace = parse_grace("72h").unwrap();
    let r = rotate(&p, "old", grace, Some("new"), None, NOW).unwrap();
    assert_eq!(r.old_expires_at, timestamp::format_rfc3339(NOW + 72 * 3600));
    assert_eq!(write_rotation(&r).unwrap(), Appended::Added);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.starts_with("# keys\n") && text.contains("- id: old   # first key"));
    // The new key sits right after the old one, before the comment about the next.
    let new_at = text.find("- id: new").unwrap();
    assert!(new_at < text.find("# the next key").unwrap(), "{text}");
    let file = KeysFile::from_yaml(&text, &p).unwrap();
    let keys = &file.consumers[0].keys;
    assert_eq!(keys.len(), 3);
    let new = keys.iter().find(|k| k.id == "new").unwrap();
    assert_eq!(new.sha256, r.new.digest);
    // Scope names that YAML would read as other types stay strings.
    assert_eq!(
        new.scopes.as_deref(),
        Some(&["a:".to_string(), "1.0".into(), "true".into()][..])
    );
    assert_eq!(new.rate_limit.map(|l| l.requests), Some(5));
    let old = keys.iter().find(|k| k.id == "old").unwrap();
    assert_eq!(old.expires_at.as_deref(), Some(r.old_expires_at.as_str()));
    // An earlier expiry is kept, never extended.
    let again = rotate(&p, "old", parse_grace("30d").unwrap(), None, None, NOW).unwrap();
    assert_eq!(again.old_expires_at, r.old_expires_at);
}

#[test]
fn rotation_follows_symlinks_and_refuses_what_it_cannot_edit() {
    let target = temp("rotate-target", ROTATE);
    let link = target.with_file_name(format!("link-{}.yaml", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let r = rotate(&link, "old", parse_grace("1d").unwrap(), None, None, NOW).unwrap();
    assert_eq!(write_rotation(&r).unwrap(), Appended::Added);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&target)
        .unwrap()
        .contains(&r.new.digest));
    std::fs::remove_file(&link).unwrap();

    // JSON: left alone, instructions in JSON.
    let json = temp(
        "rotate-json",
        "{\"consumers\": [{\"id\": \"acme\", \"keys\": [{\"id\": \"j1\", \"sha256\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"methods\": [\"GET\"]}]}]}",
    );
    let before = std::fs::read_to_string(&json).unwrap();
    let r = rotate(&json, "j1", parse_grace("1d").unwrap(), None, None, NOW).unwrap();
    let Appended::Instructions(text) = write_rotation(&r).unwrap() else {
        panic!("a JSON file was edited")
    };
    assert_eq!(std::fs::read_to_string(&json).unwrap(), before);
    let object = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(object).unwrap();
    assert_eq!(v["sha256"], r.new.digest.as_str());
    assert_eq!(v["methods"][0], "GET");
    // A flow-style entry, and a key id that is also a consumer id: left alone.
    for (name, text) in [
        ("flow", "consumers:\n  - id: acme\n    keys:\n      - { id: old, sha256: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" }\n"),
        ("same-id", "consumers:\n  - id: old\n    keys:\n      - id: old\n        sha256: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n"),
    ] {
        let p = temp(name, text);
        let r = rotate(&p, "old", parse_grace("1d").unwrap(), None, None, NOW).unwrap();
        assert!(matches!(write_rotation(&r).unwrap(), Appended::Instructions(_)), "{name}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text, "{name}");
    }
    // Grace periods beyond a year (and nonsense) are refused.
    for bad in ["3000000d", "0s", "soon", "400d"] {
        assert!(parse_grace(bad).is_err(), "{bad}");
    }
}
