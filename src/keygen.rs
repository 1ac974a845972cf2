//! `keygate keygen`: a new key, shown once, and exactly where its digest goes.
//!
//! [`generate`] makes the key and renders both forms an operator needs: the
//! entry to add under an existing consumer's `keys:`, and a whole consumer
//! block for a new one. [`append`] adds a new consumer's block to a YAML keys
//! file in place — atomically (written aside, then renamed over), keeping every
//! comment and the rest of the text as it was — and checks that the result
//! parses with exactly one consumer more. For an existing consumer or a JSON
//! file it edits nothing and says what to add, and where.

use std::io::Write as _;
use std::path::{Path, PathBuf};

mod rotate;

pub use rotate::{parse_grace, rotate, write_rotation, Rotation};

use crate::apikey;
use crate::config::KeysFile;
use crate::state::valid_id;
use crate::timestamp;

/// Why no key was made or the file was not changed.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    /// The consumer or key id has characters outside `[A-Za-z0-9._-]`.
    #[error("{0} may contain only A-Z a-z 0-9 . _ - (at most 128 characters)")]
    BadId(&'static str),
    /// The expiry is not RFC 3339.
    #[error("--expires-at `{0}` is not an RFC 3339 date-time such as 2027-01-01T00:00:00Z (a date alone is not enough: say the time and the zone)")]
    BadExpiry(String),
    /// The OS random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Random(getrandom::Error),
    /// The keys file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The keys file does not parse now; it is left alone.
    #[error("{0}")]
    Invalid(crate::config::ConfigError),
    /// `--grace` is not a duration such as `72h`.
    #[error("--grace `{0}` is not a duration such as 72h, 3d or 90m")]
    BadGrace(String),
    /// The key to rotate is not in the keys file.
    #[error("{path}: there is no key with id `{id}`")]
    NoSuchKey {
        /// The keys file.
        path: PathBuf,
        /// The id asked for.
        id: String,
    },
}

/// What to make.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// The consumer the key is for.
    pub consumer: &'a str,
    /// The key's id; default `CONSUMER-YYYYMMDD-RANDOM`.
    pub key_id: Option<&'a str>,
    /// Optional expiry, RFC 3339.
    pub expires_at: Option<&'a str>,
}

/// A freshly generated key and the YAML that goes with it.
#[derive(Debug, Clone)]
pub struct Keygen {
    /// The consumer.
    pub consumer: String,
    /// The key (shown once).
    pub key: String,
    /// Its id.
    pub key_id: String,
    /// Its SHA-256, hex.
    pub digest: String,
    /// The expiry as given.
    pub expires_at: Option<String>,
    /// Remarks for the operator (e.g. an expiry in the past).
    pub warnings: Vec<String>,
    /// More fields of the entry, as `name: value` YAML (a rotation copies the old key's
    /// routes, methods, scopes and limits).
    pub fields: Vec<(&'static str, String)>,
}

/// Make a key for `req.consumer` at time `now` (Unix seconds).
///
/// # Errors
/// [`KeygenError::BadId`], [`KeygenError::BadExpiry`], or the random generator's failure.
pub fn generate(req: &Request<'_>, now: i64) -> Result<Keygen, KeygenError> {
    if !valid_id(req.consumer) {
        return Err(KeygenError::BadId("--consumer"));
    }
    let mut warnings = Vec::new();
    if let Some(t) = req.expires_at {
        match timestamp::parse_rfc3339(t) {
            None => return Err(KeygenError::BadExpiry(t.to_string())),
            Some(at) if at <= now => warnings.push(format!(
                "--expires-at {t} is in the past: keygate will refuse this key as expired_api_key from the start"
            )),
            Some(_) => {}
        }
    }
    let key_id = match req.key_id {
        Some(id) if valid_id(id) => id.to_string(),
        Some(_) => return Err(KeygenError::BadId("--key-id")),
        None => {
            let day = timestamp::format_rfc3339(now);
            let suffix = apikey::random_base62(4).map_err(KeygenError::Random)?;
            format!("{}-{}-{suffix}", req.consumer, day[..10].replace('-', ""))
        }
    };
    let key = apikey::generate().map_err(KeygenError::Random)?;
    Ok(Keygen {
        consumer: req.consumer.to_string(),
        digest: hex::encode(apikey::digest(key.as_bytes())),
        key,
        key_id,
        expires_at: req.expires_at.map(str::to_string),
        warnings,
        fields: Vec::new(),
    })
}

impl Keygen {
    /// The key entry, indented by `indent` spaces (`- id: …` at that column).
    pub fn entry(&self, indent: usize) -> String {
        let pad = " ".repeat(indent);
        let mut e = format!(
            "{pad}- id: {}\n{pad}  sha256: \"{}\"\n",
            self.key_id, self.digest
        );
        if let Some(t) = &self.expires_at {
            e.push_str(&format!("{pad}  expires_at: {t}\n"));
        }
        for (name, value) in &self.fields {
            e.push_str(&format!("{pad}  {name}: {value}\n"));
        }
        e
    }

    /// A whole consumer block with this key, its `- id:` at column `indent`.
    pub fn consumer_block(&self, indent: usize) -> String {
        let pad = " ".repeat(indent);
        format!(
            "{pad}- id: {}\n{pad}  keys:\n{}",
            self.consumer,
            self.entry(indent + 4)
        )
    }

    /// What `keygate keygen` prints: the key, then both ways to add it.
    pub fn text(&self) -> String {
        format!(
            "# New API key for consumer `{c}`. It is shown only this once: hand it to the client now.\n{key}\n\n\
             # If `{c}` is a new consumer, add this block under `consumers:` in keys.yaml\n\
             # (or let keygate do it: keygate keygen --consumer {c} --append keys.yaml), then reload keygate:\n{block}\n\
             # If `{c}` already exists, add this entry under its `keys:`, then reload keygate:\n{entry}",
            c = self.consumer,
            key = self.key,
            block = self.consumer_block(2),
            entry = self.entry(6),
        )
    }
}

/// What [`append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The new consumer's block was added to the file.
    Added,
    /// The file was left alone; add this by hand.
    Instructions(String),
}

/// Add `k`'s consumer, as a new consumer, to the YAML keys file at `path`.
///
/// The file is rewritten atomically (a temporary file in the same folder, synced, then
/// renamed over it, with the same permissions) and everything already in it — comments
/// included — stays byte for byte; the result must parse with exactly one consumer
/// more. A JSON file, or a consumer that already exists, is not edited: the returned
/// instructions say what to add and where.
///
/// # Errors
/// The file cannot be read, does not parse as it is, or cannot be written.
pub fn append(path: &Path, k: &Keygen) -> Result<Appended, KeygenError> {
    let io = |source| KeygenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let before = KeysFile::from_yaml(&text, path).map_err(KeygenError::Invalid)?;
    if text.trim_start().starts_with('{') {
        return Ok(Appended::Instructions(format!(
            "{} is JSON, which keygate does not edit. Add this object to its \"consumers\" list, then reload keygate:\n{{\"id\": \"{}\", \"keys\": [{{\"id\": \"{}\", \"sha256\": \"{}\"{}}}]}}\n",
            path.display(),
            k.consumer,
            k.key_id,
            k.digest,
            k.expires_at
                .as_ref()
                .map_or(String::new(), |t| format!(", \"expires_at\": \"{t}\""))
        )));
    }
    if let Some(i) = before.consumers.iter().position(|c| c.id == k.consumer) {
        let line = consumer_line(&text, &k.consumer);
        return Ok(Appended::Instructions(format!(
            "consumer `{}` already exists in {}{}: add this entry under its `keys:` (consumers[{i}]), then reload keygate:\n{}",
            k.consumer,
            path.display(),
            line.map_or(String::new(), |l| format!(" (line {l})")),
            k.entry(6)
        )));
    }
    let Some(new_text) = with_consumer(&text, k) else {
        return Ok(Appended::Instructions(format!(
            "{} is not laid out as `consumers:` followed by a list keygate can extend; add this block under `consumers:`, then reload keygate:\n{}",
            path.display(),
            k.consumer_block(2)
        )));
    };
    let after = KeysFile::from_yaml(&new_text, path).map_err(KeygenError::Invalid)?;
    let added = after.consumers.len() == before.consumers.len() + 1
        && after.consumers.last().is_some_and(|c| {
            c.id == k.consumer && c.keys.len() == 1 && c.keys[0].sha256 == k.digest
        });
    if !added {
        return Ok(Appended::Instructions(format!(
            "cannot extend {} safely; add this block under `consumers:`, then reload keygate:\n{}",
            path.display(),
            k.consumer_block(2)
        )));
    }
    write_atomically(path, &new_text).map_err(io)?;
    Ok(Appended::Added)
}

/// The 1-based line of `- id: consumer` in a YAML keys file, if found.
fn consumer_line(text: &str, consumer: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches("- ").trim();
            l == format!("id: {consumer}") || l == format!("id: \"{consumer}\"")
        })
        .map(|i| i + 1)
}

/// `text` with `k`'s consumer block added at the end of the `consumers:` list, or `None`
/// when the layout is not one this can extend (the caller then gives instructions).
fn with_consumer(text: &str, k: &Keygen) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let top = lines.iter().position(|l| l.starts_with("consumers:"))?;
    let after_key = lines[top].trim_start_matches("consumers:");
    let (value, comment) = match after_key.split_once('#') {
        Some((v, c)) => (v.trim(), Some(c)),
        None => (after_key.trim(), None),
    };
    let rest = value;
    // `consumers: []`: replace the empty flow list by a block list (keeping a comment).
    if rest == "[]" {
        let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        out[top] = match comment {
            Some(c) => format!("consumers:   #{c}"),
            None => "consumers:".to_string(),
        };
        out.insert(top + 1, k.consumer_block(2).trim_end().to_string());
        return Some(out.join("\n") + "\n");
    }
    if !rest.is_empty() {
        return None;
    }
    // A block list: `consumers:` must be the last top-level key, so appending at the end of
    // the file extends the list. Use the indentation of its items.
    let later_top_level = lines[top + 1..].iter().any(|l| {
        !l.is_empty() && !l.starts_with(' ') && !l.starts_with('#') && !l.starts_with('-')
    });
    if later_top_level {
        return None;
    }
    let indent = lines[top + 1..]
        .iter()
        .find_map(|l| {
            let t = l.trim_start();
            t.starts_with("- ").then(|| l.len() - t.len())
        })
        .unwrap_or(2);
    let mut out = text.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&k.consumer_block(indent));
    Some(out)
}

/// Replace `path` by `text` atomically, keeping its permissions; a symbolic link is
/// followed, so its target is replaced and the link stays.
pub(crate) fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let real = std::fs::canonicalize(path)?;
    let path = real.as_path();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path
        .file_name()
        .map_or("keys".into(), |n| n.to_string_lossy());
    let tmp = dir
        .unwrap_or(Path::new("."))
        .join(format!(".{name}.keygate-{}", std::process::id()));
    let perms = std::fs::metadata(path)?.permissions();
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, perms)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests;
