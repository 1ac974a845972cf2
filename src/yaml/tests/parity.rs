//! The new reader reads what `serde_yaml` 0.9 read: scalars, structures and typed
//! files, on hand-picked edge cases, every document of the repository, and mutations
//! of them; and where the two disagree on what is valid YAML.

use std::path::Path as FsPath;

use super::super::*;

/// Both readers' verdicts on `text` as a generic value, in a comparable form.
fn both(text: &str) -> (Result<String, String>, Result<String, String>) {
    let ours = from_str::<serde_yaml::Value>(text)
        .map(|v| format!("{v:?}"))
        .map_err(|e| format!("{e:?}"));
    let theirs = serde_yaml::from_str::<serde_yaml::Value>(text)
        .map(|v| format!("{v:?}"))
        .map_err(|e| e.to_string());
    (ours, theirs)
}

/// Documents whose values both readers must read the same (scalar resolution above all).
const SAME: &[&str] = &[
    "true",
    "True",
    "TRUE",
    "false",
    "False",
    "FALSE",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "~",
    "null",
    "Null",
    "NULL",
    "nULL",
    "",
    "# only a comment\n",
    "12",
    "-12",
    "+12",
    "012",
    "-012",
    "0",
    "-0",
    "+0",
    "00",
    "0x1F",
    "0x-1",
    "-0x1F",
    "0o17",
    "-0o17",
    "0b101",
    "-0b101",
    "0xZZ",
    "1_000",
    "1,000",
    "1.5",
    "-1.5",
    "+1.5",
    ".5",
    "5.",
    "1e3",
    "1E3",
    "-1e-3",
    "1.5e+3",
    ".inf",
    "-.inf",
    "+.inf",
    ".Inf",
    ".INF",
    ".nan",
    ".NaN",
    ".NAN",
    "inf",
    "nan",
    "infinity",
    "-inf",
    "1e400",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "340282366920938463463374607431768211455",
    "99999999999999999999999999999999999999999",
    "2027-01-01T00:00:00Z",
    "2027-01-01",
    "12:30",
    "1:30:00",
    "0.1.2",
    "v1",
    "--1",
    "+-1",
    "'true'",
    "\"12\"",
    "'~'",
    "\"\"",
    "''",
    "'it''s'",
    "\"a\\tb\\u00e9\\n\"",
    "!!str 12",
    "!!str true",
    "!!int 12",
    "!!float 1",
    "!!bool true",
    "!!null ~",
    "!!str",
    "|\n  line\n  two\n",
    ">\n  folded\n  text\n",
    "|-\n  x\n",
    "!!int |\n  12\n",
    "a: 1\nb: [x, 'y', 2.5, ~]\nc: {d: e}\n",
    "- a\n- - b\n  - c\n- {}\n- []\n",
    "? complex\n: value\n",
    "[a, b, {c: d}]",
    "{a: 1, b: 2}",
    "a:\nb: ''\n",
    "a: &x [1, 2]\nb: *x\n",
    "base: &b {k: v}\nuse: *b\n",
    "x: !custom 5\n",
    "!tag {a: 1}",
    "key with spaces: value with spaces\n",
    "'quoted key': 1\n",
    "a: b # comment\n",
    "a: 'multi\n  line'\n",
    "a: plain\n  continued\n",
    "---\na: 1\n",
    "---\na: 1\n...\n",
    "\u{feff}a: 1\n",
    "a: \"\\x41\\u0041\\U00000041\"\n",
    "a: -\n",
    "a: '-'\n",
    "- -1\n",
    "{\"consumers\": [{\"id\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": \"00\"}]}]}",
    "a: 0x_1\n",
    "a: 1__0\n",
    "a: 0.\n",
    "a: -.5\n",
    "a: +.5e2\n",
    "a: 1e\n",
    "a: e1\n",
];

#[test]
fn scalars_and_structures_read_as_serde_yaml_reads_them() {
    for text in SAME {
        match both(text) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "reading {text:?}"),
            (Err(_), Err(_)) => {}
            (ours, theirs) => panic!("reading {text:?}: ours {ours:?}, serde_yaml {theirs:?}"),
        }
    }
}

/// Every YAML or JSON file of the repository, and both halves of each fuzz seed.
fn repository_documents() -> Vec<(String, String)> {
    let root = FsPath::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = Vec::new();
    for dir in ["conf", "conf/prometheus", "conf/grafana", "packaging"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
                docs.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }
    for entry in std::fs::read_dir(root.join("fuzz/corpus/config")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let (a, b) = crate::fuzz::split(&bytes);
        for (half, text) in [("config", a), ("keys", b)] {
            if let Ok(text) = std::str::from_utf8(text) {
                docs.push((format!("{} ({half})", path.display()), text.to_string()));
            }
        }
    }
    docs
}

#[test]
fn repository_files_read_the_same_with_both_readers() {
    let docs = repository_documents();
    assert!(docs.len() >= 10, "{}", docs.len());
    for (name, text) in docs
        .iter()
        .filter(|(_, t)| !crate::fuzz::known_divergence(t))
    {
        let (ours, theirs) = both(text);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{name}"),
            (Err(_), Err(_)) => {}
            _ => panic!("{name}: ours {ours:?}, serde_yaml {theirs:?}"),
        }
    }
    // The typed files too, through every field's type.
    let read = |name: &str| {
        std::fs::read_to_string(FsPath::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
    };
    let text = read("conf/keygate.yaml");
    let ours: crate::config::Config = from_str(&text).unwrap();
    let theirs: crate::config::Config = serde_yaml::from_str(&text).unwrap();
    assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
    for name in ["conf/keys.yaml", "packaging/keys.yaml"] {
        let text = read(name);
        let ours = crate::config::KeysFile::from_yaml(&text, FsPath::new(name)).unwrap();
        let theirs: crate::config::KeysFile = serde_yaml::from_str(&text).unwrap();
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{name}");
    }
}

/// A small deterministic generator (xorshift), for mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_documents_read_the_same_wherever_both_readers_accept_them() {
    // Fragments that change how YAML reads: indicators, quotes, numbers, tags, anchors.
    const BITS: &[&str] = &[
        "\n",
        " ",
        "  ",
        "- ",
        ": ",
        "? ",
        "#",
        "'",
        "\"",
        "[",
        "]",
        "{",
        "}",
        ",",
        "&a ",
        "*a",
        "!!str ",
        "!t ",
        "|\n  ",
        ">-\n  ",
        "~",
        "null",
        "true",
        "0x1f",
        "012",
        "1e3",
        ".inf",
        "-",
        "+",
        ".",
        "\t",
        "\\",
        "---\n",
        "...\n",
        "%YAML 1.2\n---\n",
        "é",
        "2027-01-01T00:00:00Z",
    ];
    let docs = repository_documents();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut compared, mut total) = (0, 0);
    for round in 0..4000 {
        let (_, base) = &docs[round % docs.len()];
        let mut text: Vec<char> = base.chars().collect();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(text.len() + 1);
            match rng.below(3) {
                0 if at < text.len() => {
                    text.remove(at);
                }
                _ => {
                    let bit = BITS[rng.below(BITS.len())];
                    for (i, c) in bit.chars().enumerate() {
                        text.insert(at + i, c);
                    }
                }
            }
        }
        let text: String = text.into_iter().collect();
        if crate::fuzz::known_divergence(&text) {
            continue;
        }
        total += 1;
        if let (Ok(a), Ok(b)) = both(&text) {
            compared += 1;
            assert_eq!(a, b, "reading {text:?}");
        }
    }
    assert!(compared > total / 4, "{compared} of {total}");
}

#[test]
fn only_syntax_that_yaml_1_2_forbids_is_refused_where_serde_yaml_accepted_it() {
    // What libyaml accepted and YAML 1.2 does not (config::compat reads such files the
    // old way, with a warning). Values are never read differently.
    for (text, why) in [
        (
            "a: \"multi\nline\"\n",
            "invalid indentation in quoted scalar",
        ),
        (
            "a: 'x'#c\n",
            "comments must be separated from other tokens by whitespace",
        ),
        ("a: [1,\n2]\n", "invalid indentation in flow construct"),
        ("a:\tb\n", "':' must be followed by a valid YAML whitespace"),
        (
            "a: [-,]\n",
            "plain scalar cannot start with '-' followed by ,[]{}",
        ),
    ] {
        let (ours, theirs) = both(text);
        assert!(theirs.is_ok(), "{text:?}");
        let ours = ours.unwrap_err();
        assert!(ours.contains(why), "{text:?}: {ours}");
    }
}

#[test]
fn a_question_mark_glued_to_text_in_flow_is_text_as_yaml_1_2_says() {
    // The one value the readers were found to read differently (by the fuzzer): libyaml
    // takes `?` as the explicit-key indicator in flow collections even when text follows.
    let (ours, theirs) = both("{?a: 1, b: c}");
    assert_eq!(
        ours.unwrap(),
        r#"Mapping {"?a": Number(1), "b": String("c")}"#
    );
    assert_eq!(
        theirs.unwrap(),
        r#"Mapping {"a": Number(1), "b": String("c")}"#
    );
}

#[test]
fn anchor_names_may_hold_any_non_blank_character_as_yaml_1_2_says() {
    // libyaml ends an anchor's name at the first character outside `[A-Za-z0-9_-]`.
    let (ours, theirs) = both("&a: b");
    assert_eq!(ours.unwrap(), r#"String("b")"#);
    assert_eq!(theirs.unwrap(), r#"Mapping {Null: String("b")}"#);
}

#[test]
fn a_document_that_is_a_block_scalar_may_start_its_lines_at_column_0_as_yaml_1_2_says() {
    // Found by the fuzzer (`| \r#\r`): libyaml ends a root block scalar at a line in
    // column 0 (here a comment); YAML 1.2 reads the line as content. Not a keygate file
    // either way: both files are mappings.
    for text in ["| \r#\r", "|\n#\n", "--- |\n#\n"] {
        let (ours, theirs) = both(text);
        assert_eq!(ours.unwrap(), r##"String("#\n")"##, "{text:?}");
        assert_eq!(theirs.unwrap(), r#"String("")"#, "{text:?}");
        assert!(crate::fuzz::known_divergence(text), "{text:?}");
    }
    // A block scalar inside a mapping ends at column 0 in both readers.
    for text in ["a: |\n  x\nb: 1\n", "# c\nk: >\n  y\n"] {
        assert!(!crate::fuzz::known_divergence(text), "{text:?}");
        let (ours, theirs) = both(text);
        assert_eq!(ours.unwrap(), theirs.unwrap(), "{text:?}");
    }
}

#[test]
fn a_block_scalar_that_ends_the_file_without_a_line_break_has_none() {
    for text in [
        "|+\r ]~",
        "|+\n ]~",
        "|+\n ]~\n",
        "a: |+\n  x",
        "a: |+\n  x\n",
        "a: >+\n  x",
        "|\n x",
        "|-\n x",
        "a: |\n  x",
        "a: |\n  x  ",
        "- |\n  x\n- y",
        "- >\n  x\n  y",
        "a: |\n  x\r\n",
        "a: |\n  x\n\n\n",
    ] {
        match both(text) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "reading {text:?}"),
            (Err(_), Err(_)) => {}
            (ours, theirs) => panic!("reading {text:?}: ours {ours:?}, serde_yaml {theirs:?}"),
        }
    }
}
