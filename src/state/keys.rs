//! Consumers and the key index, built one consumer at a time as the keys file streams in.
//!
//! Counters and last-use times carry over from the previous state: a consumer's by
//! its id, a key's by its digest (the key itself, whatever its id), a route
//! default's by route name. What a reload removes is dropped with the old state.
//!
//! Over the ~400-line guideline because building consumers, keys and their policies
//! streams one consumer at a time through one builder, whose checks are reported
//! together.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use http::header::HeaderValue;

use super::problems::Problems;
use super::routes::Routes;
use super::{policy, valid_id, Consumer, KeyPolicy, Limit, RouteCounters, State};
use crate::access::{Methods, Scopes};
use crate::config::{ConfigError, ConsumerConfig, KeyConfig, Location, Problem};
use crate::keystore::{decode_digest, KeyIndex, KeyIndexBuilder, NO_POLICY};
use crate::limits::{Counter, Spec};
use crate::timestamp;

/// What the keys builder needs from the rest of the configuration.
pub(super) struct Context<'a> {
    /// The keys file (for problems).
    pub(super) file: &'a Path,
    /// The routes, their names and the scopes they require.
    pub(super) routes: &'a Routes<'a>,
    /// The state being replaced, whose counters and last-use times carry over.
    pub(super) previous: Option<&'a State>,
}

/// Everything built from the keys file.
pub(super) struct Built {
    pub(super) consumers: Vec<Consumer>,
    pub(super) index: KeyIndex,
    pub(super) policies: Vec<KeyPolicy>,
    pub(super) last_use: Box<[AtomicU32]>,
    pub(super) problems: Problems,
}

/// Builds consumers and the key index one consumer at a time, collecting problems.
pub(super) struct KeysBuilder<'a> {
    cx: Context<'a>,
    consumers: Vec<Consumer>,
    consumer_ids: HashSet<String>,
    index: KeyIndexBuilder,
    policies: Vec<KeyPolicy>,
    last_use: Vec<u32>,
    problems: Problems,
    /// Previous consumers that hold counters, by id.
    previous_consumers: HashMap<&'a str, &'a Consumer>,
    /// For each route slot, the previous state's slot of the same route.
    previous_slots: Vec<Option<usize>>,
    /// Report allow-list names that are not routes (false when the routes are unknown).
    check_routes: bool,
}

/// A counter carried over, or a fresh one.
fn counter(previous: Option<&Arc<Counter>>) -> Arc<Counter> {
    previous.cloned().unwrap_or_default()
}

/// A limit for `spec`, counting on in `previous` when there was one.
fn limit(spec: Option<Spec>, previous: Option<&Limit>) -> Option<Limit> {
    Some(Limit {
        spec: spec?,
        counter: counter(previous.map(|l| &l.counter)),
    })
}

/// A header value of printable ASCII (spaces allowed), or a problem.
fn printable(
    v: &str,
    file: &Path,
    field: &dyn Fn() -> String,
    p: &mut Problems,
) -> Option<HeaderValue> {
    match HeaderValue::from_str(v) {
        Ok(h) if !v.is_empty() && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) => Some(h),
        _ => {
            p.add(file, field(), "must be non-empty printable ASCII");
            None
        }
    }
}

impl<'a> KeysBuilder<'a> {
    pub(super) fn new(cx: Context<'a>, capacity: usize) -> Self {
        let previous_consumers = cx
            .previous
            .map(|prev| {
                prev.consumers
                    .iter()
                    .filter(|c| {
                        c.rate.is_some() || c.quota.is_some() || !c.route_counters.is_empty()
                    })
                    .map(|c| (c.id.as_str(), c))
                    .collect()
            })
            .unwrap_or_default();
        let previous_slots = cx
            .routes
            .routes
            .iter()
            .filter(|r| r.limit_slot.is_some())
            .map(|r| {
                cx.previous.and_then(|prev| {
                    prev.routes
                        .iter()
                        .find(|o| o.name == r.name)
                        .and_then(|o| o.limit_slot)
                })
            })
            .collect();
        KeysBuilder {
            cx,
            consumers: Vec::new(),
            consumer_ids: HashSet::new(),
            index: KeyIndexBuilder::with_capacity(capacity),
            policies: Vec::new(),
            last_use: Vec::with_capacity(capacity),
            problems: Problems { list: Vec::new() },
            previous_consumers,
            previous_slots,
            check_routes: true,
        }
    }

    /// A route allow-list: `allowed[route]`, with unknown names reported.
    fn allow_list(
        &mut self,
        names: &Option<Vec<String>>,
        field: &dyn Fn() -> String,
    ) -> Option<Box<[bool]>> {
        let names = names.as_ref()?;
        let routes = self.cx.routes;
        let check = self.check_routes;
        let mut allowed = vec![false; routes.routes.len()].into_boxed_slice();
        for (ri, n) in names.iter().enumerate() {
            match routes.index.get(n.as_str()) {
                // (A route known by name only, when `keygate.yaml` did not parse, has no slot.)
                Some(&idx) => {
                    if let Some(slot) = allowed.get_mut(idx) {
                        *slot = true;
                    }
                }
                None if !check => {}
                None => self.problems.add(
                    self.cx.file,
                    format!("{}[{ri}]", field()),
                    format!("unknown route `{n}`"),
                ),
            }
        }
        Some(allowed)
    }

    pub(super) fn add(&mut self, ci: usize, c: &ConsumerConfig) {
        let kp = self.cx.file;
        let f = |leaf: &str| format!("consumers[{ci}]{leaf}");
        if !valid_id(&c.id) {
            self.problems.add(
                kp,
                f(".id"),
                "ids may contain only A-Z a-z 0-9 . _ - (at most 128)",
            );
        }
        if !self.consumer_ids.insert(c.id.clone()) {
            self.problems.add(
                kp,
                f(".id"),
                format!("consumer `{}` is defined twice", c.id),
            );
        }
        let p = &mut self.problems;
        let name_header = c
            .name
            .as_ref()
            .and_then(|n| printable(n, kp, &|| f(".name"), p));
        let custom_id_header = c
            .custom_id
            .as_ref()
            .and_then(|n| printable(n, kp, &|| f(".custom_id"), p));
        for (gi, g) in c.groups.iter().enumerate() {
            if g.is_empty()
                || g.contains(',')
                || !g.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
            {
                p.add(
                    kp,
                    f(&format!(".groups[{gi}]")),
                    "group names are printable ASCII without commas",
                );
            }
        }
        let groups_header = (!c.groups.is_empty())
            .then(|| HeaderValue::from_str(&c.groups.join(",")).ok())
            .flatten();
        let methods = policy::methods(&c.methods, kp, &|| f(".methods"), p);
        let routes = self.cx.routes;
        let scopes = policy::scopes(&c.scopes, &routes.scope_bits, kp, &|| f(".scopes"), p);
        let rate = policy::rate(&c.rate_limit, kp, &|| f(".rate_limit"), p);
        let quota = policy::quota(&c.quota, kp, &|| f(".quota"), p);
        let allowed = self.allow_list(&c.routes, &|| f(".routes"));

        let previous = self.previous_consumers.get(c.id.as_str()).copied();
        let route_counters = self.route_counters(rate.is_none(), quota.is_none(), previous);
        let consumer_idx = u32::try_from(self.consumers.len()).unwrap_or(u32::MAX);
        let consumer = Consumer {
            id: c.id.clone(),
            id_header: HeaderValue::from_str(&c.id).unwrap_or(HeaderValue::from_static("invalid")),
            name_header,
            custom_id_header,
            groups_header,
            disabled: c.disabled,
            allowed,
            methods,
            scopes,
            rate: limit(rate, previous.and_then(|o| o.rate.as_ref())),
            quota: limit(quota, previous.and_then(|o| o.quota.as_ref())),
            route_counters,
        };
        for (ki, k) in c.keys.iter().enumerate() {
            self.add_key(ci, ki, k, c, &consumer, consumer_idx);
        }
        self.consumers.push(consumer);
    }

    /// A consumer's counters for route defaults it does not override (empty when none).
    fn route_counters(
        &self,
        uses_rate: bool,
        uses_quota: bool,
        previous: Option<&Consumer>,
    ) -> Box<[RouteCounters]> {
        let routes = &self.cx.routes.routes;
        if routes.iter().all(|r| {
            !(uses_rate && r.default_rate.is_some() || uses_quota && r.default_quota.is_some())
        }) {
            return Box::default();
        }
        routes
            .iter()
            .filter(|r| r.limit_slot.is_some())
            .enumerate()
            .map(|(slot, r)| {
                let old = self
                    .previous_slots
                    .get(slot)
                    .copied()
                    .flatten()
                    .and_then(|s| previous?.route_counters.get(s));
                RouteCounters {
                    rate: (uses_rate && r.default_rate.is_some())
                        .then(|| counter(old.and_then(|o| o.rate.as_ref()))),
                    quota: (uses_quota && r.default_quota.is_some())
                        .then(|| counter(old.and_then(|o| o.quota.as_ref()))),
                }
            })
            .collect()
    }

    fn add_key(
        &mut self,
        ci: usize,
        ki: usize,
        k: &KeyConfig,
        c: &ConsumerConfig,
        consumer: &Consumer,
        consumer_idx: u32,
    ) {
        let kp = self.cx.file;
        // Field paths are built only when a problem is reported (1M keys, 1M strings).
        let kf = |leaf: &str| format!("consumers[{ci}].keys[{ki}]{leaf}");
        let p = &mut self.problems;
        if !valid_id(&k.id) {
            p.add(
                kp,
                kf(".id"),
                "ids may contain only A-Z a-z 0-9 . _ - (at most 128)",
            );
            return;
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
            return;
        }
        let time = |v: &Option<String>, leaf: &str, p: &mut Problems| match v {
            None => Some(None),
            Some(t) => match timestamp::parse_rfc3339(t) {
                Some(t) => Some(Some(t)),
                None => {
                    p.add(
                        kp,
                        kf(leaf),
                        format!("`{t}` is not an RFC 3339 date-time such as 2027-01-01T00:00:00Z"),
                    );
                    None
                }
            },
        };
        let (Some(expires_at), Some(not_before)) = (
            time(&k.expires_at, ".expires_at", p),
            time(&k.not_before, ".not_before", p),
        ) else {
            return;
        };
        let expires_at = expires_at.unwrap_or(i64::MAX);
        if let Some(nb) = not_before {
            if nb >= expires_at {
                p.add(kp, kf(".not_before"), "must be earlier than `expires_at`");
            }
        }
        if let Some((other_id, same)) = self.index.conflict(&digest) {
            let message = if same {
                format!("the same key digest is already used by key `{other_id}`")
            } else {
                format!("digest collides with key `{other_id}` in its first 8 bytes; generate a new key")
            };
            p.add(kp, kf(".sha256"), message);
            return;
        }
        let previous = self
            .cx
            .previous
            .and_then(|prev| Some((prev, prev.keys.lookup(&digest)?)));
        let policy = self.key_policy(
            k,
            c,
            consumer,
            not_before,
            &kf,
            previous.and_then(|(prev, (_, e))| prev.key_policy(e)),
        );
        let policy_idx = match policy {
            Some(pol) => {
                self.policies.push(pol);
                u32::try_from(self.policies.len() - 1).unwrap_or(NO_POLICY)
            }
            None => NO_POLICY,
        };
        if self.index.push(
            digest,
            expires_at,
            consumer_idx,
            &k.id,
            k.disabled,
            policy_idx,
        ) {
            let used = previous
                .and_then(|(prev, (idx, _))| prev.last_used(idx))
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(0);
            self.last_use.push(used);
        } else {
            self.problems.add(kp, kf(""), "too many keys");
        }
    }

    /// A key's policy, when it sets anything beyond its consumer's; its limits count on
    /// in `previous` (the same key's policy before the reload).
    fn key_policy(
        &mut self,
        k: &KeyConfig,
        c: &ConsumerConfig,
        consumer: &Consumer,
        not_before: Option<i64>,
        kf: &dyn Fn(&str) -> String,
        previous: Option<&KeyPolicy>,
    ) -> Option<KeyPolicy> {
        if not_before.is_none()
            && k.routes.is_none()
            && k.methods.is_none()
            && k.scopes.is_none()
            && k.rate_limit.is_none()
            && k.quota.is_none()
        {
            return None;
        }
        let kp = self.cx.file;
        let allowed = self.allow_list(&k.routes, &|| kf(".routes"));
        let p = &mut self.problems;
        if let (Some(mine), Some(theirs)) = (&allowed, &consumer.allowed) {
            if let Some(ri) = mine.iter().zip(theirs.iter()).position(|(m, t)| *m && !*t) {
                let name = &self.cx.routes.routes[ri].name;
                p.add(
                    kp,
                    kf(".routes"),
                    format!("route `{name}` is not in the consumer's `routes`; a key can only narrow them"),
                );
            }
        }
        let methods = match &k.methods {
            None => Methods::ALL,
            Some(_) => {
                let m = policy::methods(&k.methods, kp, &|| kf(".methods"), p);
                if !m.within(consumer.methods) {
                    p.add(
                        kp,
                        kf(".methods"),
                        "a key can only narrow its consumer's `methods`",
                    );
                }
                m
            }
        };
        let scopes = match &k.scopes {
            None => Scopes::ALL,
            Some(list) => {
                for (si, s) in list.iter().enumerate() {
                    if !c.scopes.contains(s) {
                        p.add(
                            kp,
                            kf(&format!(".scopes[{si}]")),
                            format!("scope `{s}` is not granted to the consumer; a key can only narrow its consumer's `scopes`"),
                        );
                    }
                }
                policy::scopes(list, &self.cx.routes.scope_bits, kp, &|| kf(".scopes"), p)
            }
        };
        let rate = policy::rate(&k.rate_limit, kp, &|| kf(".rate_limit"), p);
        let quota = policy::quota(&k.quota, kp, &|| kf(".quota"), p);
        Some(KeyPolicy {
            name: format!("{}:{}", c.id, k.id).into(),
            not_before: not_before.unwrap_or(i64::MIN),
            allowed,
            methods,
            scopes,
            rate: limit(rate, previous.and_then(|o| o.rate.as_ref())),
            quota: limit(quota, previous.and_then(|o| o.quota.as_ref())),
        })
    }

    pub(super) fn finish(self) -> Built {
        Built {
            consumers: self.consumers,
            index: self.index.finish(),
            policies: self.policies,
            last_use: self.last_use.into_iter().map(AtomicU32::new).collect(),
            problems: self.problems,
        }
    }
}

/// Check the keys file at `path` on its own, for a `keygate.yaml` that does not parse:
/// every problem of the file, allow-lists checked against the route names `routes` when
/// they could be read (scopes and limits are checked for their own form only).
pub(super) fn check_keys_file(path: &Path, routes: Option<&[String]>) -> Vec<Problem> {
    let known = Routes {
        routes: Vec::new(),
        index: routes
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect(),
        scope_names: Vec::new(),
        scope_bits: HashMap::new(),
    };
    let cx = Context {
        file: path,
        routes: &known,
        previous: None,
    };
    let mut keys = KeysBuilder::new(cx, 0);
    keys.check_routes = routes.is_some();
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
    problems.extend(keys.finish().problems.list);
    problems
}
