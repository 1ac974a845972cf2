//! Keeps the module layers one-way: a module may only `use crate::` modules of a lower
//! layer (or its own submodules). Test code (after `#[cfg(test)]`, in a `tests.rs`, or
//! in a `tests/` folder of submodules beside one) may use anything, fixtures included.

use std::collections::BTreeMap;
use std::path::Path;

/// Every module and its layer; see the diagram in the crate documentation.
const LAYERS: &[(&str, u8)] = &[
    ("apikey", 0),
    ("balance", 0),
    ("access", 0),
    ("cors", 0),
    ("timestamp", 0),
    ("text", 0),
    ("limits", 1),
    ("headers", 0),
    ("host", 0),
    ("path", 0),
    ("limiter", 0),
    ("problem", 0),
    ("request_id", 0),
    ("proxy_protocol", 0),
    ("yaml", 0),
    ("config", 1),
    ("metrics", 0),
    ("logging", 1),
    ("tls", 0),
    ("origin", 0),
    ("forwarded", 1),
    ("keystore", 1),
    ("state", 2),
    ("auth", 3),
    ("health", 3),
    ("fleet", 3),
    ("conn", 3),
    ("admission", 4),
    ("keylist", 4),
    ("admin", 5),
    ("proxy", 5),
    ("telemetry", 5),
    ("reload", 6),
    ("service", 5),
    ("server", 7),
    ("cli", 8),
    ("keygen", 8),
    ("demo", 8),
    ("fixture", 9),
    ("fuzz", 10),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The `crate::` modules a source text uses, outside its tests and comments (a doc
/// link to a higher layer is not a dependency).
fn uses(text: &str) -> Vec<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|s| s.trim().split("::").next().unwrap_or(""))
                .collect()
        } else {
            vec![rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")]
        };
        out.extend(
            names
                .into_iter()
                .filter(|n| !n.is_empty())
                .map(String::from),
        );
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a file name");
        let module = top.trim_end_matches(".rs");
        if matches!(module, "lib" | "main" | "sys" | "layering")
            || rel.file_name().is_some_and(|n| n == "tests.rs")
            || rel.components().any(|c| c.as_os_str() == "tests")
        {
            continue;
        }
        let own = layer(module).unwrap_or_else(|| panic!("src/{top}: add it to LAYERS"));
        for used in uses(&std::fs::read_to_string(file).expect("readable source")) {
            if used == module {
                continue;
            }
            let theirs =
                layer(&used).unwrap_or_else(|| panic!("{}: unknown module {used}", rel.display()));
            if theirs >= own {
                violations
                    .entry(rel.display().to_string())
                    .or_insert_with(Vec::new)
                    .push(used);
            }
        }
    }
    assert!(
        violations.is_empty(),
        "modules using a module of their own or a higher layer: {violations:?}"
    );
}

#[test]
fn the_scanner_sees_grouped_and_nested_uses() {
    let text = "use crate::{a::B, c};\n/// [`crate::y`]\nfn f() { crate::d::e(); }\n#[cfg(test)]\nuse crate::z;";
    assert_eq!(uses(text), ["a", "c", "d"]);
}
