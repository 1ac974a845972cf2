//! Fuzzing entry points, shared by `fuzz/` (cargo-fuzz) and the corpus replay test.
//!
//! Each function takes arbitrary bytes and must never panic. They exercise the
//! pure parts of keygate: the configuration and keys parsers and validator,
//! the request decision (path normalization, credential extraction,
//! authentication), and the PROXY protocol header parser. Nothing here touches the network or the file system: fuzzed
//! upstream addresses are replaced by a loopback literal before validation,
//! because a name would be resolved through DNS.

use std::path::Path;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::{self, AuthOutcome, Credential};
use crate::config::{self, Config, KeysFile};
use crate::state::{self, State};

/// Split fuzz input in two at the first NUL byte (or the middle).
pub(crate) fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => data.split_at(data.len() / 2),
    }
}

/// Parse and validate a config (first half) and a keys file (second half).
pub fn config_input(data: &[u8]) {
    let (cfg, keys) = split(data);
    let (Ok(cfg), Ok(keys)) = (std::str::from_utf8(cfg), std::str::from_utf8(keys)) else {
        return;
    };
    // keygate's YAML reader reads what serde_yaml 0.9 read: wherever both accept a
    // text, they agree on every value and on the typed files.
    for text in [cfg, keys] {
        same_as_serde_yaml::<serde_yaml::Value>(text);
    }
    same_as_serde_yaml::<Config>(cfg);
    same_as_serde_yaml::<KeysFile>(keys);
    let file = Path::new("fuzz.yaml");
    let mut streamed = 0usize;
    let stream = config::for_each_consumer(keys, file, &mut |_, _| streamed += 1);
    let whole = KeysFile::from_yaml(keys, file);
    // The streaming parser and the whole-file parser agree on what is valid.
    if let (Ok(()), Ok(k)) = (&stream, &whole) {
        assert_eq!(streamed, k.consumers.len());
    }
    let Ok(mut config) = Config::from_yaml(cfg, file) else {
        return;
    };
    for u in config.upstreams.values_mut() {
        // No name lookups while fuzzing.
        if u.address.is_some() {
            u.address = Some("127.0.0.1:1".to_string());
        }
        for (i, s) in u.servers.iter_mut().flatten().enumerate() {
            s.address = format!("127.0.0.1:{}", i + 1);
        }
        u.ca_file = None;
    }
    config.server.tls_listen.clear();
    let keys = whole.unwrap_or_default();
    let inputs = state::Inputs {
        config: &config,
        config_path: file,
        keys_path: file,
        secret: crate::fixture::SECRET,
        metrics: None,
        previous: None,
        admin_token: None,
    };
    if let Ok(state) = state::build(inputs, &keys) {
        let _ = state.key_counts(0);
        let _ = state.keys.heap_bytes();
    }
}

/// Whether `text` has a construct the two readers are known to read differently (found
/// by this target; `yaml/tests/parity.rs` pins each):
/// - a `?` followed by a non-blank inside a flow collection (`{?a: 1}`): a plain scalar
///   `?a` in YAML 1.2 (keygate's reader), an explicit-key indicator to libyaml (`a`);
/// - an anchor or alias name with characters other than `[A-Za-z0-9_-]` (`&a: x`): YAML
///   1.2 allows them (the anchor is `a:`), libyaml ends the name there (`a`, then `:`);
/// - a `%` escape in a tag (`!a%00b`): decoded into the tag, or the tag ends before it;
/// - a block scalar (`|`, `>`) that runs to the end of a text that does not end with a
///   line break: the reader drops the line break the parser adds after its last line,
///   as libyaml does, but a last line of only spaces still counts as one more line;
/// - a document that is itself a block scalar (`| \n#\n`): YAML 1.2 lets its lines
///   start at column 0 (`"#\n"`), libyaml ends the scalar there (`""`, the `#` a comment).
pub(crate) fn known_divergence(text: &str) -> bool {
    let b = text.as_bytes();
    let question = b
        .windows(2)
        .any(|w| w[0] == b'?' && !w[1].is_ascii_whitespace());
    let odd_name = b.iter().enumerate().any(|(i, &c)| {
        (c == b'&' || c == b'*')
            && b.get(i + 1..)
                .unwrap_or_default()
                .iter()
                .take_while(|&&n| !n.is_ascii_whitespace() && !b",[]{}".contains(&n))
                .any(|&n| !(n.is_ascii_alphanumeric() || n == b'-' || n == b'_'))
    });
    let tag_escape = b.iter().enumerate().any(|(i, &c)| {
        c == b'!'
            && b.get(i + 1..)
                .unwrap_or_default()
                .iter()
                .take_while(|&&n| !n.is_ascii_whitespace() && !b",[]{}".contains(&n))
                .any(|&n| n == b'%')
    });
    let open_block = (text.contains('|') || text.contains('>')) && !text.ends_with(['\n', '\r']);
    question || odd_name || tag_escape || open_block || root_block_scalar(text)
}

/// Whether a document of `text` is a block scalar: its first token (after `---`, a tag
/// or an anchor, past blank, comment and directive lines) is `|` or `>`.
fn root_block_scalar(text: &str) -> bool {
    let mut at_start = true;
    for line in text.split(['\n', '\r']) {
        let rest = match line.strip_prefix("---") {
            Some(r) if r.is_empty() || r.starts_with([' ', '\t']) => r,
            _ if at_start => line,
            _ => continue,
        };
        let first = rest
            .split([' ', '\t'])
            .find(|t| !t.is_empty() && !t.starts_with(['!', '&']));
        match first {
            Some(t) if t.starts_with(['|', '>']) => return true,
            // Nothing yet on this line (blank, `---` alone, a tag or anchor alone): the
            // document's first token is on a later line.
            None => {}
            Some(t) if t.starts_with(['#', '%']) && at_start => {}
            Some(_) => at_start = false,
        }
    }
    false
}

/// Assert that keygate's reader and serde_yaml read `text` the same when both accept it.
fn same_as_serde_yaml<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) {
    if known_divergence(text) {
        return;
    }
    if let (Ok(ours), Ok(theirs)) = (
        crate::yaml::from_str::<T>(text),
        serde_yaml::from_str::<T>(text),
    ) {
        assert_eq!(
            format!("{ours:?}"),
            format!("{theirs:?}"),
            "reading {text:?}"
        );
    }
}

/// The keys known to the auth fuzzer's state.
pub const AUTH_KEYS: [&str; 3] = [
    "fuzz-key-1",
    "fuzz-key-2",
    "kg_fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuz_000000",
];

fn auth_state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut yaml = String::from("consumers:\n  - id: c\n    routes: [api, opt]\n    keys:\n");
        for (i, k) in AUTH_KEYS.iter().enumerate() {
            let d = crate::fixture::digest_hex(k);
            yaml.push_str(&format!("      - {{ id: k{i}, sha256: \"{d}\" }}\n"));
        }
        crate::fixture::state(
            "secret: { env: X }\nauth: { keys_file: k }\nupstreams: { o: { address: \"127.0.0.1:1\" } }\nroutes:\n  - { name: none, path_prefix: /open, upstream: o, auth: none }\n  - { name: opt, path_prefix: /opt, upstream: o, auth: optional }\n  - { name: api, path_prefix: /, upstream: o, auth: required }\n",
            &yaml,
        )
    })
}

/// Interpret input as `path\nname: value\n...` and run the whole request decision.
pub fn auth_input(data: &[u8]) {
    let state = auth_state();
    let mut lines = data.split(|&b| b == b'\n');
    let path = lines.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(i) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..i].trim_ascii()),
            HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    if let Some(h) = headers.get(http::header::HOST) {
        if let Ok(a) = crate::host::canonical(h.as_bytes()) {
            // A canonical host is canonical: parsing it again changes nothing.
            let again = crate::host::canonical(a.as_bytes()).expect("a canonical host parses");
            assert_eq!(again.as_bytes(), a.as_bytes());
            assert!(a.as_bytes().starts_with(a.host()) || a.as_bytes().starts_with(b"["));
        }
    }
    let routed = match crate::path::canonical(path) {
        Ok(Some(p)) => p,
        Ok(None) => path.to_vec(),
        Err(_) => return,
    };
    // A normalized path is normal: normalizing again changes nothing.
    assert_eq!(crate::path::canonical(&routed), Ok(None));
    let _ = crate::apikey::shape(path);
    let Some(route) = state.route(b"", &routed) else {
        return;
    };
    let outcome = auth::authenticate(state, route, &http::Method::GET, &headers, 1_800_000_000);
    if let AuthOutcome::Consumer { .. } = outcome {
        // Only a configured key may ever get through.
        match auth::extract(&headers, &state.sources) {
            Credential::Key { key, .. } => {
                assert!(
                    AUTH_KEYS.iter().any(|k| k.as_bytes() == key),
                    "unknown key accepted"
                );
            }
            other => panic!("authenticated without a single key: {other:?}"),
        }
    }
}

/// Parse arbitrary bytes as the start of a connection with a PROXY protocol header, and
/// check what the reader relies on: a header's length lies within the bytes and the
/// bounds, a verdict on a prefix never contradicts the verdict on the whole, and nothing
/// that is not a header (or an error) is mistaken for one.
pub fn proxy_header_input(data: &[u8]) {
    use crate::proxy_protocol::{parse, Parsed, MAX_HEADER_BYTES};
    let whole = parse(data);
    if let Ok(Parsed::Header { len, .. }) = whole {
        assert!(len <= data.len() && len <= MAX_HEADER_BYTES, "length {len}");
        // The header alone parses to the same header; what follows it does not matter.
        assert_eq!(parse(&data[..len]), whole);
    }
    if let Ok(Parsed::Incomplete) = whole {
        assert!(
            data.len() < MAX_HEADER_BYTES,
            "undecided after {} bytes",
            data.len()
        );
    }
    // Every prefix is either undecided or already says what the whole says.
    for n in 0..data.len().min(MAX_HEADER_BYTES + 1) {
        match parse(&data[..n]) {
            Ok(Parsed::Incomplete) => {}
            prefix => assert_eq!(prefix, whole, "prefix of {n} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replay the committed seed corpus (and every crash turned regression) in plain tests.
    #[test]
    fn corpus_replays_without_panics() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut n = 0;
        for (target, f) in [
            ("config", config_input as fn(&[u8])),
            ("auth", auth_input),
            ("proxy_header", proxy_header_input),
        ] {
            for entry in std::fs::read_dir(root.join(target)).unwrap() {
                f(&std::fs::read(entry.unwrap().path()).unwrap());
                n += 1;
            }
        }
        assert!(n >= 6, "seed corpus missing");
    }

    #[test]
    fn valid_key_input_authenticates() {
        auth_input(b"/v1\nx-api-key: fuzz-key-1");
        auth_input(b"/v1\nauthorization: Bearer fuzz-key-2\nx-api-key: fuzz-key-2");
    }
}
