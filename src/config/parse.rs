//! Parsing configuration text: YAML read with positions, located errors, file reading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::compat;
use super::error::{ConfigError, Location, Problem};
use crate::yaml;

/// Parse YAML text (or JSON, which is YAML) into `T`, reporting *every* problem with
/// the file, line, column and field path.
///
/// Scalars are read as `serde_yaml` 0.9 read them (YAML 1.2 core schema), unknown
/// fields are errors wherever the type says so, and a problem in one field does not
/// hide the problems in the others. A text that is not valid YAML 1.2 but that
/// earlier keygate versions accepted is read as they read it (see `compat`).
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, ConfigError> {
    parse_yaml_compat(text, file).map(|(v, _)| v)
}

/// [`parse_yaml`], with the warning to give when the text had to be read the way
/// earlier keygate versions read it (it is not valid YAML 1.2).
pub fn parse_yaml_compat<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<(T, Option<String>), ConfigError> {
    let invalid = |errors: Vec<yaml::Error>| {
        ConfigError::Invalid(errors.into_iter().map(|e| problem(e, file)).collect())
    };
    match yaml::parse(text) {
        Ok(root) => yaml::from_node(&root, &yaml::Path::Root)
            .map(|v| (v, None))
            .map_err(invalid),
        Err(syntax) => match compat::parse(text) {
            Some(v) => Ok((v, Some(compat::warning(file, &syntax)))),
            None => Err(invalid(vec![syntax])),
        },
    }
}

/// A problem the YAML reader found, in `file`.
pub(super) fn problem(e: yaml::Error, file: &Path) -> Problem {
    Problem {
        at: Location {
            file: file.to_path_buf(),
            line_col: e.mark.map(|m| (m.line, m.col)),
            field: e.path,
        },
        message: e.message,
    }
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

/// A serde_json message without its " at line L column C" suffix.
pub(super) fn strip_position(mut msg: String) -> String {
    if let Some(pos) = msg.rfind(" at line ") {
        msg.truncate(pos);
    }
    msg
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

/// Fill in the line and column of each problem in `file` that names a field but has
/// no position yet (problems found while building the state), reading `text`.
pub fn locate_in_text(text: &str, file: &Path, problems: &mut [Problem]) {
    let paths = unlocated(problems, file);
    if !paths.is_empty() {
        let found = yaml::locate(&mut yaml::Reader::from_str(text), &paths);
        fill(&found, file, problems);
    }
}

/// [`locate_in_text`], reading the file at `file` as a stream (a keys file may be
/// large); a file that cannot be read leaves the problems as they are.
pub fn locate_in_file(file: &Path, problems: &mut [Problem]) {
    let paths = unlocated(problems, file);
    if paths.is_empty() {
        return;
    }
    if locate_json_consumers(file, &paths, problems) {
        return;
    }
    if let Ok(f) = std::fs::File::open(file) {
        let found = yaml::locate(
            &mut yaml::Reader::from_read(std::io::BufReader::new(f)),
            &paths,
        );
        fill(&found, file, problems);
    }
}

/// The consumer index a field path starts with (`consumers[12].keys[0].sha256` → 12).
fn consumer_index(field: &str) -> Option<usize> {
    field
        .strip_prefix("consumers[")?
        .split_once(']')?
        .0
        .parse()
        .ok()
}

/// For a JSON keys file, locate each problem at the start of its consumer; false when
/// `file` is not one (or cannot be read).
fn locate_json_consumers(file: &Path, paths: &[String], problems: &mut [Problem]) -> bool {
    let Some(last) = paths.iter().filter_map(|p| consumer_index(p)).max() else {
        return false;
    };
    let Ok(f) = std::fs::File::open(file) else {
        return false;
    };
    let Ok(Some(starts)) = super::json::consumer_starts(std::io::BufReader::new(f), last) else {
        return false;
    };
    for p in problems.iter_mut().filter(|p| needs_position(p, file)) {
        if let Some(&at) = consumer_index(&p.at.field).and_then(|i| starts.get(i)) {
            p.at.line_col = Some(at);
        }
    }
    true
}

fn needs_position(p: &Problem, file: &Path) -> bool {
    p.at.file == file && p.at.line_col.is_none() && !p.at.field.is_empty()
}

/// The field paths of the problems in `file` that have no position.
fn unlocated(problems: &[Problem], file: &Path) -> Vec<String> {
    problems
        .iter()
        .filter(|p| needs_position(p, file))
        .map(|p| p.at.field.clone())
        .collect()
}

fn fill(found: &HashMap<String, yaml::Mark>, file: &Path, problems: &mut [Problem]) {
    for p in problems.iter_mut().filter(|p| needs_position(p, file)) {
        if let Some(m) = found.get(&p.at.field) {
            p.at.line_col = Some((m.line, m.col));
        }
    }
}
