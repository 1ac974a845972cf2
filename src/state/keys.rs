//! Consumers and the key index, built one consumer at a time as the keys file streams in.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use http::header::HeaderValue;

use super::problems::Problems;
use super::{valid_id, Consumer};
use crate::config::{ConfigError, ConsumerConfig, Location, Problem};
use crate::keystore::{decode_digest, KeyIndex, KeyIndexBuilder};
use crate::timestamp;

/// Builds consumers and the key index one consumer at a time, collecting problems.
pub(super) struct KeysBuilder<'a> {
    file: &'a Path,
    /// Route names to indices; `None` when the routes are unknown (only the keys file
    /// is being checked), and allow-lists are not checked.
    route_index: Option<&'a HashMap<&'a str, usize>>,
    n_routes: usize,
    consumers: Vec<Consumer>,
    consumer_ids: HashSet<String>,
    index: KeyIndexBuilder,
    problems: Problems,
}

impl<'a> KeysBuilder<'a> {
    pub(super) fn new(
        file: &'a Path,
        route_index: Option<&'a HashMap<&'a str, usize>>,
        n_routes: usize,
        capacity: usize,
    ) -> Self {
        KeysBuilder {
            file,
            route_index,
            n_routes,
            consumers: Vec::new(),
            consumer_ids: HashSet::new(),
            index: KeyIndexBuilder::with_capacity(capacity),
            problems: Problems { list: Vec::new() },
        }
    }

    pub(super) fn add(&mut self, ci: usize, c: &ConsumerConfig) {
        let kp = self.file;
        let p = &mut self.problems;
        let f = |leaf: &str| format!("consumers[{ci}]{leaf}");
        if !valid_id(&c.id) {
            p.add(
                kp,
                f(".id"),
                "ids may contain only A-Z a-z 0-9 . _ - (at most 128)",
            );
        }
        if !self.consumer_ids.insert(c.id.clone()) {
            p.add(
                kp,
                f(".id"),
                format!("consumer `{}` is defined twice", c.id),
            );
        }
        let name_header = match &c.name {
            Some(n) => match HeaderValue::from_str(n) {
                Ok(v) if n.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) => Some(v),
                _ => {
                    p.add(kp, f(".name"), "must be printable ASCII");
                    None
                }
            },
            None => None,
        };
        let allowed = c
            .routes
            .as_ref()
            .zip(self.route_index)
            .map(|(names, index)| {
                let mut allowed = vec![false; self.n_routes].into_boxed_slice();
                for (ri, n) in names.iter().enumerate() {
                    match index.get(n.as_str()) {
                        Some(&idx) => allowed[idx] = true,
                        None => p.add(
                            kp,
                            f(&format!(".routes[{ri}]")),
                            format!("unknown route `{n}`"),
                        ),
                    }
                }
                allowed
            });
        let consumer_idx = u32::try_from(self.consumers.len()).unwrap_or(u32::MAX);
        for (ki, k) in c.keys.iter().enumerate() {
            // Field paths are built only when a problem is reported (1M keys, 1M strings).
            let kf = |leaf: &str| format!("consumers[{ci}].keys[{ki}]{leaf}");
            if !valid_id(&k.id) {
                p.add(
                    kp,
                    kf(".id"),
                    "ids may contain only A-Z a-z 0-9 . _ - (at most 128)",
                );
                continue;
            }
            if !self.index.insert_id(&k.id) {
                p.add(kp, kf(".id"), format!("key id `{}` is used twice", k.id));
            }
            let mut digest = [0u8; 32];
            if !decode_digest(k.sha256.as_bytes(), &mut digest) {
                p.add(
                    kp,
                    kf(".sha256"),
                    "must be 64 hex characters (the SHA-256 of the key; see `keygate hash`)",
                );
                continue;
            }
            let expires_at = match &k.expires_at {
                Some(t) => {
                    match timestamp::parse_rfc3339(t) {
                        Some(t) => t,
                        None => {
                            p.add(kp, kf(".expires_at"), format!("`{t}` is not an RFC 3339 date-time such as 2027-01-01T00:00:00Z"));
                            continue;
                        }
                    }
                }
                None => i64::MAX,
            };
            if let Some((other_id, same)) = self.index.conflict(&digest) {
                let message = if same {
                    format!("the same key digest is already used by key `{other_id}`")
                } else {
                    format!("digest collides with key `{other_id}` in its first 8 bytes; generate a new key")
                };
                p.add(kp, kf(".sha256"), message);
                continue;
            }
            if !self
                .index
                .push(digest, expires_at, consumer_idx, &k.id, k.disabled)
            {
                p.add(kp, kf(""), "too many keys");
            }
        }
        self.consumers.push(Consumer {
            id: c.id.clone(),
            id_header: HeaderValue::from_str(&c.id).unwrap_or(HeaderValue::from_static("invalid")),
            name_header,
            disabled: c.disabled,
            allowed,
        });
    }

    pub(super) fn finish(self) -> (Vec<Consumer>, KeyIndex, Problems) {
        (self.consumers, self.index.finish(), self.problems)
    }
}

/// Check the keys file at `path` on its own, for a `keygate.yaml` that does not parse:
/// every problem of the file, allow-lists checked against `routes` when known.
pub(super) fn check_keys_file(path: &Path, routes: Option<&[String]>) -> Vec<Problem> {
    let index: Option<HashMap<&str, usize>> = routes.map(|names| {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect()
    });
    let n_routes = routes.map_or(0, <[String]>::len);
    let mut keys = KeysBuilder::new(path, index.as_ref(), n_routes, 0);
    let mut problems = match crate::config::stream_consumers(path, &mut |ci, c| keys.add(ci, c)) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(list)) => list,
        Err(e) => vec![Problem {
            at: Location {
                file: path.to_path_buf(),
                line_col: None,
                field: String::new(),
            },
            message: e.to_string(),
        }],
    };
    problems.extend(keys.finish().2.list);
    problems
}
