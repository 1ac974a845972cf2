//! Unit tests for `yaml`: scalar parity with `serde_yaml`, positions, every error at once.

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use serde::Deserialize;

use super::*;

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
    for (name, text) in &docs {
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

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Route {
    name: String,
    #[serde(default)]
    host: Option<String>,
    auth: Mode,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Required,
    None,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    threads: u32,
    routes: Vec<Route>,
    #[serde(default)]
    upstreams: BTreeMap<String, Upstream>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Upstream {
    address: String,
    #[serde(default)]
    tls: bool,
}

fn errors(text: &str) -> Vec<String> {
    from_str::<Doc>(text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn typed_values_read_as_serde_yaml_reads_them() {
    for text in [
        "routes: []",
        "threads: 0x10\nroutes:\n  - {name: 12, auth: !none }\n  - name: a\n    host:\n    auth: required\n",
        "routes: [{name: x, host: '', auth: none}]\nupstreams: {o: {address: 'h:1', tls: True}}",
        "routes:\nupstreams:\n",
    ] {
        let ours: Doc = from_str(text).unwrap();
        let theirs: Doc = serde_yaml::from_str(text).unwrap();
        assert_eq!(ours, theirs, "{text}");
    }
}

#[test]
fn every_schema_error_is_reported_with_line_column_and_field() {
    let text = "\
threads: many
routes:
  - name: a
    auth: requird
  - name: b
    auth: none
    strip: true
upstreams:
  origin:
    adress: x
    tls: maybe
";
    assert_eq!(
        errors(text),
        [
            "1:10: threads: invalid type: string \"many\", expected u32",
            "4:11: routes[0].auth: unknown variant `requird`, expected `required` or `none`",
            "7:5: routes[1]: unknown field `strip`, expected one of `name`, `host`, `auth`",
            "10:5: upstreams.origin: unknown field `adress`, expected `address` or `tls`",
            "10:5: upstreams.origin: missing field `address`",
            "11:10: upstreams.origin.tls: invalid type: string \"maybe\", expected a boolean",
        ]
    );
}

#[test]
fn a_hidden_required_field_is_not_reported_missing_too() {
    // `auth` is wrong, not missing; the route has nothing else wrong.
    assert_eq!(
        errors("routes:\n  - {name: a, auth: [x]}\n  - {name: [b], auth: none}\n"),
        [
            "2:21: routes[0].auth: invalid type: sequence, expected a YAML tag starting with '!'",
            "3:12: routes[1].name: invalid type: sequence, expected a string",
        ]
    );
    // A missing field that is really missing is reported, at its mapping.
    assert_eq!(
        errors("routes:\n  - name: a\n"),
        ["2:5: routes[0]: missing field `auth`"]
    );
    assert_eq!(errors("threads: 1\n"), ["1:1: missing field `routes`"]);
}

#[test]
fn repeated_keys_are_errors_where_they_repeat() {
    assert_eq!(
        errors("routes: []\nupstreams:\n  o: {address: a}\n  o: {address: b}\n"),
        ["4:3: upstreams: duplicate key `o`"]
    );
    // `1` and `'1'` are different keys; `a` and `'a'` are the same.
    assert!(from_str::<serde_yaml::Value>("1: x\n'1': y\n").is_ok());
    assert!(from_str::<serde_yaml::Value>("a: x\n'a': y\n").is_err());
}

#[test]
fn syntax_errors_and_limits_are_located() {
    let e = from_str::<serde_yaml::Value>("a: [1, 2\nb: 3\n").unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(e[0].mark.is_some(), "{e:?}");
    let e = from_str::<serde_yaml::Value>("a: 1\n---\nb: 2\n").unwrap_err();
    assert!(e[0].message.contains("more than one document"), "{e:?}");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let e = from_str::<serde_yaml::Value>(&deep).unwrap_err();
    assert_eq!(e[0].message, "recursion limit exceeded");
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, c) in "bcdefghij".chars().enumerate() {
        let prev = (b'a' + i as u8) as char;
        laughs.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let e = from_str::<serde_yaml::Value>(&laughs).unwrap_err();
    assert_eq!(e[0].message, "repetition limit exceeded");
    let e = from_str::<serde_yaml::Value>("a: *nope\n").unwrap_err();
    assert!(e[0].message.contains("unknown anchor"), "{e:?}");
}

#[test]
fn positions_are_where_values_start() {
    let text = "a:\n  b: [x, {c: d}]\n  e:\n    - f\n    - 'g'\n";
    let root = Reader::from_str(text).document().unwrap();
    let Kind::Map(top) = &root.kind else { panic!() };
    assert_eq!(root.mark, Mark { line: 1, col: 1 });
    let (_, a) = &top[0];
    // A block mapping starts at its first key.
    assert_eq!(a.mark, Mark { line: 2, col: 3 });
    let found = locate(
        &mut Reader::from_str(text),
        &["a", "a.b", "a.b[1].c", "a.e[1]", "a.e", "nope", "a.b[1]"],
    );
    let at = |p: &str| found.get(p).map(|m| (m.line, m.col));
    // Scalars and flow collections at themselves; block collections at their key.
    assert_eq!(at("a"), Some((1, 1)));
    assert_eq!(at("a.b"), Some((2, 3)));
    assert_eq!(at("a.b[1]"), Some((2, 10)));
    assert_eq!(at("a.b[1].c"), Some((2, 14)));
    assert_eq!(at("a.e"), Some((3, 3)));
    assert_eq!(at("a.e[1]"), Some((5, 7)));
    assert_eq!(at("nope"), None);
}

/// A reader that hands out one byte at a time (multi-byte characters split).
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((b, rest)), Some(out)) => {
                *out = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn streams_read_the_same_as_strings_and_refuse_bad_utf8() {
    let text = "list:\n  - {id: é, n: 1}\n  - {id: 'ü'}\n  - 漢字\nother: 1\n";
    let mut seen = Vec::new();
    let mut reader = Reader::from_read(Trickle(text.as_bytes()));
    let problems = for_each_element(&mut reader, "list", "a list", &mut |i, node, path| {
        seen.push((
            i,
            node.mark,
            path.to_string(),
            node.as_str().map(String::from),
        ));
    })
    .unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[2],
        (
            2,
            Mark { line: 4, col: 5 },
            "list[2]".into(),
            Some("漢字".into())
        )
    );
    assert_eq!(problems.elements, 3);
    assert_eq!(problems.syntax, None);
    assert_eq!(problems.problems.len(), 1);
    assert_eq!(
        problems.problems[0].to_string(),
        "5:1: unknown field `other`, expected `list`"
    );

    let mut bad = b"list: [a]\n".to_vec();
    bad.extend_from_slice(b"x: \xff\n");
    let mut reader = Reader::from_read(Trickle(&bad));
    let e = for_each_element(&mut reader, "list", "a list", &mut |_, _, _| {}).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    // Cut inside a character.
    let mut reader = Reader::from_read(Trickle(&"list: [é]".as_bytes()[..8]));
    assert!(for_each_element(&mut reader, "list", "a list", &mut |_, _, _| {}).is_err());
}

#[test]
fn element_streams_refuse_what_is_not_a_list() {
    let run = |text: &str| {
        let mut n = 0;
        let walk = for_each_element(
            &mut Reader::from_str(text),
            "list",
            "a list",
            &mut |_, _, _| n += 1,
        )
        .unwrap();
        let problems = walk
            .problems
            .iter()
            .chain(&walk.syntax)
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        (n, problems)
    };
    assert_eq!(run(""), (0, vec![]));
    assert_eq!(run("list:\n"), (0, vec![]));
    assert_eq!(run("{list: [a, b]}"), (2, vec![]));
    assert_eq!(
        run("list: 5").1,
        ["1:7: list: invalid type: integer `5`, expected a sequence"]
    );
    assert_eq!(
        run("- a").1,
        ["1:1: invalid type: sequence, expected a list"]
    );
    assert_eq!(run("list: []\nlist: []").1, ["2:1: duplicate key `list`"]);
    assert!(
        run("list: [a\n").1[0].starts_with("2:1: "),
        "{:?}",
        run("list: [a\n")
    );
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
        total += 1;
        if let (Ok(a), Ok(b)) = both(&text) {
            compared += 1;
            assert_eq!(a, b, "reading {text:?}");
        }
    }
    assert!(compared > total / 4, "{compared} of {total}");
}
