//! `keygate keygen --rotate KEY_ID --grace 72h`: a successor key, and the old one's end.
//!
//! Rotation with grace is two edits to the keys file, applied by one reload: a new
//! key under the same consumer (with the old key's routes, methods, scopes and
//! limits), and `expires_at` on the old key at the end of the grace period (never
//! later than an expiry it already had). During the grace period both keys work
//! and responses to the old one carry `Deprecation` and `Sunset` (the grace lies
//! inside the expiry warning window whenever it is shorter than
//! `auth.key_expiry_warning_seconds`). [`rotate`] prints both edits;
//! [`write_rotation`] makes them in place when the file is laid out as keygate
//! writes it, and checks the result parses to exactly the intended change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{generate, write_atomically, Appended, Keygen, KeygenError, Request};
use crate::config::{KeyConfig, KeysFile, QuotaPeriod};
use crate::timestamp;

/// A rotation: the new key, and the old key's new expiry.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The new key, with the old key's settings copied.
    pub new: Keygen,
    /// The key being replaced.
    pub old_id: String,
    /// When the old key stops working, RFC 3339.
    pub old_expires_at: String,
    /// The keys file.
    pub path: PathBuf,
}

/// The longest grace period: a year (a key meant to live longer wants `expires_at`).
pub const MAX_GRACE: Duration = Duration::from_secs(366 * 86_400);

/// Parse a grace period: `72h`, `3d`, `90m`, `1h 30m`, `3600s`; at most `MAX_GRACE` (a year).
///
/// # Errors
/// [`KeygenError::BadGrace`] for anything else, zero, or more than a year.
pub fn parse_grace(s: &str) -> Result<Duration, KeygenError> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() && d <= MAX_GRACE => Ok(d),
        _ => Err(KeygenError::BadGrace(s.to_string())),
    }
}

/// The old key's optional settings, as fields for the new key, each value in JSON
/// syntax (which is also YAML flow syntax, so `a:`, `1.0` or `true` stay strings).
fn copied_fields(k: &KeyConfig) -> Vec<(&'static str, String)> {
    use serde_json::json;
    let mut f = Vec::new();
    let mut add = |name, value: serde_json::Value| f.push((name, value.to_string()));
    if let Some(v) = &k.routes {
        add("routes", json!(v));
    }
    if let Some(v) = &k.methods {
        add("methods", json!(v));
    }
    if let Some(v) = &k.scopes {
        add("scopes", json!(v));
    }
    if let Some(r) = &k.rate_limit {
        add(
            "rate_limit",
            json!({"requests": r.requests, "window_seconds": r.window_seconds}),
        );
    }
    if let Some(q) = &k.quota {
        let period = match q.period {
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
        };
        add("quota", json!({"requests": q.requests, "period": period}));
    }
    f
}

/// Plan the rotation of key `old_id` in the keys file at `path` at time `now` (Unix
/// seconds): a new key for its consumer (id `new_id` or generated; optional
/// `expires_at`), and the old key expiring after `grace` (or at its own expiry, if
/// that comes first).
///
/// # Errors
/// The file cannot be read or parsed, the key is not in it, or an argument is invalid.
pub fn rotate(
    path: &Path,
    old_id: &str,
    grace: Duration,
    new_id: Option<&str>,
    expires_at: Option<&str>,
    now: i64,
) -> Result<Rotation, KeygenError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeygenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = KeysFile::from_yaml(&text, path).map_err(KeygenError::Invalid)?;
    let (consumer, old) = file
        .consumers
        .iter()
        .find_map(|c| c.keys.iter().find(|k| k.id == old_id).map(|k| (c, k)))
        .ok_or_else(|| KeygenError::NoSuchKey {
            path: path.to_path_buf(),
            id: old_id.to_string(),
        })?;
    let grace_end = now.saturating_add(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
    let end = match old.expires_at.as_deref().and_then(timestamp::parse_rfc3339) {
        Some(t) if t < grace_end => t,
        _ => grace_end,
    };
    let mut new = generate(
        &Request {
            consumer: &consumer.id,
            key_id: new_id,
            expires_at,
        },
        now,
    )?;
    new.fields = copied_fields(old);
    Ok(Rotation {
        new,
        old_id: old_id.to_string(),
        old_expires_at: timestamp::format_rfc3339(end),
        path: path.to_path_buf(),
    })
}

impl Rotation {
    /// Whether the keys file is JSON (a document starting with `{`).
    fn json(&self) -> bool {
        std::fs::read_to_string(&self.path).is_ok_and(|t| t.trim_start().starts_with('{'))
    }

    /// What `keygate keygen --rotate` prints: the new key, then the two edits (in JSON
    /// for a JSON keys file).
    pub fn text(&self) -> String {
        if self.json() {
            let mut entry = serde_json::json!({"id": self.new.key_id, "sha256": self.new.digest});
            if let Some(t) = &self.new.expires_at {
                entry["expires_at"] = t.clone().into();
            }
            for (name, value) in &self.new.fields {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(value) {
                    entry[*name] = v;
                }
            }
            return format!(
                "# New API key for consumer `{c}`, replacing `{old}`. It is shown only this once: hand it to the client now.\n{key}\n\n\
                 # {file} is JSON, which keygate does not edit. Make both changes, then reload keygate:\n\
                 # 1. on the old key {{\"id\": \"{old}\", ...}}, set \"expires_at\": \"{end}\"\n\
                 # 2. add this object to consumer `{c}`'s \"keys\":\n{entry}\n",
                c = self.new.consumer,
                old = self.old_id,
                key = self.new.key,
                file = self.path.display(),
                end = self.old_expires_at,
                entry = entry,
            );
        }
        format!(
            "# New API key for consumer `{c}`, replacing `{old}`. It is shown only this once: hand it to the client now.\n{key}\n\n\
             # In {file}, make both changes, then reload keygate (systemctl reload keygate):\n\
             # 1. under the old key `- id: {old}`, set (or replace) its expiry: it keeps working until then,\n\
             #    and responses to it carry Deprecation and Sunset inside the warning window\n      \
             expires_at: {end}\n\
             # 2. under consumer `{c}`'s `keys:`, add the new key\n{entry}\
             # (or let keygate make both changes: add --write)\n",
            c = self.new.consumer,
            old = self.old_id,
            key = self.new.key,
            file = self.path.display(),
            end = self.old_expires_at,
            entry = self.new.entry(6),
        )
    }
}

/// Whether `line` is `- id: ID` (optionally quoted, optionally commented), and at which
/// column its `-` is.
fn id_line(line: &str, id: &str) -> Option<usize> {
    let body = line.trim_start();
    let col = line.len() - body.len();
    let rest = body.strip_prefix("- ")?.trim_start().strip_prefix("id:")?;
    let value = rest.split(" #").next().unwrap_or("").trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    (value == id).then_some(col)
}

/// `text` with the rotation applied, when the old key is a block entry this can edit.
fn edited(text: &str, r: &Rotation) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let found: Vec<(usize, usize)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| id_line(l, &r.old_id).map(|c| (i, c)))
        .collect();
    // A consumer sharing the key's id, or a flow-style entry: leave it to the operator.
    let [(at, col)] = found[..] else {
        return None;
    };
    let field_pad = " ".repeat(col + 2);
    let indent = |l: &str| l.len() - l.trim_start().len();
    let end = lines[at + 1..]
        .iter()
        .position(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#') && indent(l) <= col
        })
        .map_or(lines.len(), |p| at + 1 + p);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let expiry = format!("{field_pad}expires_at: {}", r.old_expires_at);
    let existing = (at + 1..end)
        .find(|&i| indent(lines[i]) == col + 2 && lines[i].trim_start().starts_with("expires_at:"));
    // The new entry goes after the old key's block, before the blank and comment lines
    // that end it (they introduce what follows).
    let mut insert_at = end;
    while insert_at > at + 1 && {
        let t = lines[insert_at - 1].trim();
        t.is_empty() || t.starts_with('#')
    } {
        insert_at -= 1;
    }
    let entry = r.new.entry(col);
    for (n, l) in entry.lines().enumerate() {
        out.insert(insert_at + n, l.to_string());
    }
    match existing {
        Some(i) => out[i] = expiry,
        None => out.insert(at + 1, expiry),
    }
    Some(out.join("\n") + "\n")
}

/// Apply the rotation to its keys file in place (atomically, comments kept), checking
/// that the result parses with the new key added to the consumer and the old key's
/// expiry set, and nothing else changed in number. When the layout is not one this can
/// edit safely, the file is left alone and the instructions are returned instead.
///
/// # Errors
/// The file cannot be read, parsed or written.
pub fn write_rotation(r: &Rotation) -> Result<Appended, KeygenError> {
    let path = &r.path;
    let io = |source| KeygenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let before = KeysFile::from_yaml(&text, path).map_err(KeygenError::Invalid)?;
    let refuse = || Ok(Appended::Instructions(r.text()));
    if timestamp::parse_rfc3339(&r.old_expires_at).is_none() {
        return refuse();
    }
    if text.trim_start().starts_with('{') {
        return refuse();
    }
    let Some(new_text) = edited(&text, r) else {
        return refuse();
    };
    let Ok(after) = KeysFile::from_yaml(&new_text, path) else {
        return refuse();
    };
    let count = |f: &KeysFile| f.consumers.iter().map(|c| c.keys.len()).sum::<usize>();
    let consumer = after.consumers.iter().find(|c| c.id == r.new.consumer);
    let ok = after.consumers.len() == before.consumers.len()
        && count(&after) == count(&before) + 1
        && consumer.is_some_and(|c| {
            c.keys
                .iter()
                .any(|k| k.sha256 == r.new.digest && k.id == r.new.key_id)
                && c.keys.iter().any(|k| {
                    k.id == r.old_id && k.expires_at.as_deref() == Some(r.old_expires_at.as_str())
                })
        });
    if !ok {
        return refuse();
    }
    write_atomically(path, &new_text).map_err(io)?;
    Ok(Appended::Added)
}
