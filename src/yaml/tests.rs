//! Unit tests for `yaml`: every error at once, positions, streams; parity with
//! `serde_yaml` is in `parity`.

mod parity;

use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;

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
