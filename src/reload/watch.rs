//! `server.watch_files`: noticing that the files a configuration was loaded from changed.
//!
//! Each file's *folder* is watched (inotify, through the `notify` crate), not the file:
//! a file replaced by a rename (editors, `keygate keygen --write`, configuration
//! management) is a new inode that a watch on the old one would never see, and a
//! Kubernetes ConfigMap or Secret volume updates by renaming a `..data` symbolic link
//! over the old one, so only the folder's events show it. An event counts when it
//! names one of the files, or `..data`; reading a file (keygate's own loads included)
//! does not count. This module only reports changes: the [`super::Reloader`] debounces
//! them and reloads through the same path as SIGHUP.
//!
//! Not seen: a change inside another folder that a file's symbolic link points to while
//! the link itself stays (watch the real path, or send SIGHUP), and a systemd
//! credential (`{credential: …}`), which does not change while the service runs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use log::{info, warn};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{resolve_relative, Config, SecretSource};

/// The entry a Kubernetes volume renames to publish new contents atomically.
const KUBERNETES_DATA: &str = "..data";

/// Changes waiting for the reloader; more than this while it is busy coalesce.
const QUEUE: usize = 64;

/// The files to watch, by folder: which names in each folder matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets(BTreeMap<PathBuf, BTreeSet<OsString>>);

impl Targets {
    /// What to watch for `config` loaded from `config_path`: nothing unless
    /// `server.watch_files` is on; else `keygate.yaml`, the keys file and the secrets
    /// read from files (`file:` sources, relative to `config_path`'s folder).
    pub fn of(config_path: &Path, config: &Config) -> Targets {
        let mut t = Targets::default();
        if !config.server.watch_files {
            return t;
        }
        t.add(config_path);
        t.add(&resolve_relative(config_path, &config.auth.keys_file));
        let secrets = [
            Some(&config.secret.source),
            config.server.admin_token.as_ref(),
        ];
        for source in secrets.into_iter().flatten() {
            if let SecretSource::File(f) = source {
                t.add(&resolve_relative(config_path, f));
            }
        }
        t
    }

    /// Watch `file`: its folder (`.` for a bare name), for its name and `..data`.
    fn add(&mut self, file: &Path) {
        let Some(name) = file.file_name() else {
            return;
        };
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Events name absolute paths: `-c keygate.yaml` run from its folder watches it
        // as `/etc/keygate`, not `.`.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let names = self.0.entry(dir).or_default();
        names.insert(name.to_os_string());
        names.insert(OsString::from(KUBERNETES_DATA));
    }

    /// The watched name that `path` (a path in an event) is, if any.
    fn matches(&self, path: &Path) -> Option<String> {
        let name = path.file_name()?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        self.0
            .get(&dir)
            .filter(|names| names.contains(name))
            .map(|_| name.to_string_lossy().into_owned())
    }

    /// Whether there is nothing to watch.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a watched file (or the link to it, or a `..data` link) was written,
    /// renamed or replaced after `since`: a change the watch, started later, missed.
    /// Judged by the change and modification times, to the filesystem's precision;
    /// a file that cannot be read counts as unchanged (the load reports it).
    pub fn changed_since(&self, since: std::time::SystemTime) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(since) = since.duration_since(std::time::UNIX_EPOCH) else {
            return false;
        };
        let stamp = |m: std::fs::Metadata| {
            let ctime = (m.ctime(), m.ctime_nsec());
            let mtime = (m.mtime(), m.mtime_nsec());
            ctime.max(mtime)
        };
        let since = (
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            i64::from(since.subsec_nanos()),
        );
        self.0.iter().any(|(dir, names)| {
            names.iter().any(|name| {
                let path = dir.join(name);
                let link = std::fs::symlink_metadata(&path).map(stamp);
                let target = std::fs::metadata(&path).map(stamp);
                [link, target].into_iter().flatten().any(|t| t > since)
            })
        })
    }
}

/// Whether an event of `kind` can mean new contents: anything but opening or reading.
fn changes_contents(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The folders watched now and the changes seen in them, for the reloader's loop.
pub struct FileWatch {
    targets: Targets,
    /// Dropped (which stops its thread) when the targets change or the watch ends.
    watcher: Option<RecommendedWatcher>,
    tx: mpsc::Sender<String>,
    rx: mpsc::Receiver<String>,
}

impl Default for FileWatch {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        FileWatch {
            targets: Targets::default(),
            watcher: None,
            tx,
            rx,
        }
    }
}

impl FileWatch {
    /// Watch exactly `targets` from now on (nothing, for empty targets); keeps the
    /// current watch when they did not change. A folder that cannot be watched is logged
    /// and left out (reload it with SIGHUP). Returns whether a new watch started.
    pub fn set(&mut self, targets: Targets) -> bool {
        if targets == self.targets {
            return false;
        }
        self.watcher = None;
        self.targets = targets.clone();
        if targets.is_empty() {
            info!(target: "keygate::reload", "not watching the configuration files (server.watch_files is off)");
            return false;
        }
        let tx = self.tx.clone();
        let wanted = targets.clone();
        let handler = move |event: notify::Result<Event>| match event {
            Ok(event) => {
                let changed = if event.need_rescan() {
                    // The kernel's queue overflowed: events were lost, any file may have changed.
                    Some("(events lost)".to_string())
                } else if changes_contents(&event.kind) {
                    event.paths.iter().find_map(|p| wanted.matches(p))
                } else {
                    None
                };
                if let Some(name) = changed {
                    // Full: a reload is already due, this change will be part of it.
                    let _ = tx.try_send(name);
                }
            }
            Err(e) => {
                warn!(target: "keygate::reload", "watching the configuration files: {e}");
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                warn!(target: "keygate::reload", "cannot watch the configuration files, reload with SIGHUP: {e}");
                return false;
            }
        };
        let mut watched = Vec::new();
        for dir in targets.0.keys() {
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => watched.push(dir.display().to_string()),
                Err(e) => {
                    warn!(target: "keygate::reload", "cannot watch {} for changes, reload with SIGHUP: {e}", dir.display());
                }
            }
        }
        if !watched.is_empty() {
            info!(target: "keygate::reload", "watching {} for changes to the configuration files", watched.join(", "));
        }
        self.watcher = Some(watcher);
        !watched.is_empty()
    }

    /// The name of the next watched file that changed (waits until one does).
    pub async fn changed(&mut self) -> String {
        match self.rx.recv().await {
            Some(name) => name,
            // Never: `self` holds a sender.
            None => std::future::pending().await,
        }
    }

    /// Take every change already queued (their names, deduplicated), without waiting.
    pub fn drain(&mut self, names: &mut BTreeSet<String>) {
        while let Ok(name) = self.rx.try_recv() {
            names.insert(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str, secret: &str) -> Config {
        let text = format!(
            "server: {{ {server} }}\nsecret: {secret}\nauth:\n  keys_file: keys/k.json\nupstreams: {{ o: {{ address: \"127.0.0.1:1\" }} }}\nroutes: [ {{ name: api, upstream: o, auth: required }} ]\n"
        );
        Config::from_yaml(&text, Path::new("c")).unwrap()
    }

    #[test]
    fn targets_are_the_folders_of_the_files_and_only_with_watch_files() {
        let path = Path::new("/etc/keygate/keygate.yaml");
        assert!(Targets::of(path, &config("", "{ env: X }")).is_empty());
        let t = Targets::of(
            path,
            &config("watch_files: true", "{ file: /run/secrets/s }"),
        );
        let yes = [
            "/etc/keygate/keygate.yaml",
            "/etc/keygate/..data",
            "/etc/keygate/keys/k.json",
            "/etc/keygate/keys/..data",
            "/run/secrets/s",
        ];
        for p in yes {
            assert!(t.matches(Path::new(p)).is_some(), "{p}");
        }
        let no = [
            "/etc/keygate/keygate.yaml~",
            "/etc/keygate/.keygate.yaml.swp",
            "/etc/keygate/k.json",
            "/etc/keygate/..2026_01_01_00_00_00.123",
            "/run/secrets/other",
            "/etc/keygate",
        ];
        for p in no {
            assert!(t.matches(Path::new(p)).is_none(), "{p}");
        }
        // A bare name is in the current folder.
        let t = Targets::of(
            Path::new("keygate.yaml"),
            &config("watch_files: true", "{ env: X }"),
        );
        assert!(t.matches(Path::new("./keygate.yaml")).is_some());
        assert!(t.matches(Path::new("keys/k.json")).is_some());
        // Events carry absolute paths: they match a relative configuration too.
        let here = std::env::current_dir().unwrap();
        assert!(t.matches(&here.join("keygate.yaml")).is_some());
        assert!(t.matches(&here.join("keys/k.json")).is_some());
        assert!(t.matches(&here.join("other.yaml")).is_none());
    }

    #[test]
    fn reading_a_file_is_not_a_change() {
        use notify::event::{CreateKind, ModifyKind, RenameMode};
        assert!(!changes_contents(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_contents(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Create(CreateKind::Any),
            EventKind::Other,
        ] {
            assert!(changes_contents(&kind), "{kind:?}");
        }
    }
}
