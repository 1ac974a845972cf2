//! Parsing configuration text: YAML (with a JSON fast path), located errors, file reading.

use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location, Problem};

/// Parse YAML text into `T`, reporting the file, line, column and field path on error.
///
/// A document that is JSON (YAML 1.2 is a superset of JSON) takes a fast path
/// through `serde_json`: the same data and the same strictness, many times
/// faster, which matters for keys files with a million entries. Flow-style YAML
/// that merely starts with `{` but is not JSON falls back to the YAML parser.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, ConfigError> {
    if text.trim_start().starts_with('{') {
        match serde_json::from_str(text) {
            Ok(v) => return Ok(v),
            Err(e) if e.is_data() => return Err(json_error(&e, file)),
            Err(_) => {}
        }
    }
    serde_yaml::from_str(text).map_err(|e| yaml_error(e, file))
}

/// A serde_json error as a located problem: file, line/column, message.
pub(super) fn json_error(e: &serde_json::Error, file: &Path) -> ConfigError {
    ConfigError::Invalid(vec![Problem {
        at: Location {
            file: file.to_path_buf(),
            line_col: Some((e.line(), e.column())),
            field: String::new(),
        },
        message: strip_position(e.to_string()),
    }])
}

/// A serde_yaml error as a located problem: file, line/column, field path, message.
pub(super) fn yaml_error(e: serde_yaml::Error, file: &Path) -> ConfigError {
    {
        let line_col = e.location().map(|l| (l.line(), l.column()));
        // serde_yaml prefixes the message with the field path ("routes[0]: ...") and
        // suffixes the position; split those out so the location is uniform.
        let msg = strip_position(e.to_string());
        let (field, message) = match msg.split_once(": ") {
            Some((path, rest)) if looks_like_path(path) => (path.to_string(), rest.to_string()),
            _ => (String::new(), msg),
        };
        ConfigError::Invalid(vec![Problem {
            at: Location {
                file: file.to_path_buf(),
                line_col,
                field,
            },
            message,
        }])
    }
}

fn strip_position(mut msg: String) -> String {
    if let Some(pos) = msg.rfind(" at line ") {
        msg.truncate(pos);
    }
    msg
}

fn looks_like_path(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.[]-".contains(&b))
}

/// Read a whole file as UTF-8, with the path in the error.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Resolve `p` against the folder of `config_path` when it is relative.
pub fn resolve_relative(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    }
}
