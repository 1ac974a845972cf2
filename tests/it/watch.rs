//! Files across a fleet: the loaded files' SHA-256 exported, logged and checked, and
//! `server.watch_files` reloading on a rename or a Kubernetes `..data` swap, no signal sent.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// How long a watched change may take to be served (the debounce is 200 ms).
const PICKED_UP: Duration = Duration::from_secs(20);

/// What `sha256sum FILE` prints for `path` (the hex digest).
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.split_whitespace().next().unwrap().to_string();
    assert_eq!(hex.len(), 64, "{text}");
    hex
}

/// Replace `name` in `dir` the way editors and `keygate keygen --write` do: write a
/// temporary file beside it, then rename it over.
fn replace_by_rename(dir: &TestDir, name: &str, text: &str) {
    let tmp = dir.path(&format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.path(name)).unwrap();
}

/// The keys file `yaml` with one more consumer `name` holding `key`.
fn with_key(yaml: &str, name: &str, key: &str) -> String {
    format!(
        "{yaml}  - id: {name}\n    keys:\n      - {{ id: {name}-1, sha256: \"{}\" }}\n",
        hex::encode(keygate::apikey::digest(key.as_bytes()))
    )
}

/// Poll until `key` gets `status` on the catch-all route.
fn until_status(gw: &Gateway, key: &str, status: u16) {
    eventually(
        &format!("a request with the new key answered {status}"),
        PICKED_UP,
        || {
            let got = get(gw.addr, "/v1", &[("x-api-key", key)]).status();
            if got == status {
                Ok(())
            } else {
                Err(format!("{got}; keygate's log:\n{}", gw.log()))
            }
        },
    );
}

/// The `keygate_config_info` lines of a scrape.
fn config_info(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("keygate_config_info{"))
        .map(str::to_string)
        .collect()
}

/// The one `keygate_config_info` line for files with these digests.
fn info_line(config: &str, keys: &str) -> String {
    format!("keygate_config_info{{config_sha256=\"{config}\",keys_sha256=\"{keys}\"}} 1")
}

#[test]
fn a_renamed_keys_file_is_served_without_a_signal_and_a_broken_one_keeps_the_old_keys() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let maddr = free_addr();
    let config = GatewayConfig::new(origin.addr)
        .metrics(maddr)
        .server("watch_files: true")
        .yaml();
    let mut gw = Gateway::start(&dir, &config, &k.yaml);
    gw.wait_ready(maddr);
    let (config_path, keys_path) = (dir.path("keygate.yaml"), dir.path("keys.yaml"));

    // The files' digests are logged at start-up and exported, equal to sha256sum's.
    let (c0, k0) = (sha256sum(&config_path), sha256sum(&keys_path));
    gw.wait_log("ready: listening", 1);
    assert!(
        gw.log()
            .contains(&format!("config_sha256={c0} keys_sha256={k0}")),
        "{}",
        gw.log()
    );
    assert_eq!(config_info(&scrape(maddr)), [info_line(&c0, &k0)]);

    // A new keys file renamed over the old one: the new key works, no signal sent.
    let newkey = keygate::apikey::generate().unwrap();
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &newkey)]).status(), 401);
    let added = with_key(&k.yaml, "newco", &newkey);
    replace_by_rename(&dir, "keys.yaml", &added);
    until_status(&gw, &newkey, 200);
    assert_eq!(
        origin.last().header("x-consumer-id").as_deref(),
        Some("newco")
    );
    gw.wait_log(
        "watched files changed (keys.yaml), reloading configuration",
        1,
    );
    let k1 = sha256sum(&keys_path);
    assert_ne!(k1, k0);
    gw.wait_log(&format!("keys_sha256={k1}"), 1);
    let text = scrape_until(
        maddr,
        r#"keygate_config_watch_reloads_total{result="success"}"#,
        1.0,
    );
    // Only the files now loaded are exported.
    assert_eq!(config_info(&text), [info_line(&c0, &k1)]);
    assert_eq!(
        sample(&text, r#"keygate_config_reloads_total{result="success"}"#),
        1.0
    );

    // A broken file renamed over it is rejected with its problem named; the keys loaded
    // before keep working and the exported digests stay those of the files serving.
    replace_by_rename(
        &dir,
        "keys.yaml",
        "consumers:\n  - id: acme\n    keys: [ { id: x, sha256: nothex } ]\n",
    );
    gw.wait_log("configuration reload failed", 1);
    let log = gw.log();
    assert!(log.contains("consumers[0].keys[0].sha256"), "{log}");
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &newkey)]).status(), 200);
    let text = scrape_until(
        maddr,
        r#"keygate_config_watch_reloads_total{result="failure"}"#,
        1.0,
    );
    assert_eq!(config_info(&text), [info_line(&c0, &k1)]);
    assert_eq!(sample(&text, "keygate_config_last_reload_successful"), 0.0);

    // keygate.yaml rewritten in place (another route) is watched too; SIGHUP still works
    // beside the watch, and both keep the metric right.
    let more = GatewayConfig::new(origin.addr)
        .metrics(maddr)
        .server("watch_files: true")
        .listen(gw.addr)
        .routes(
            &[
                &["name: extra, path_prefix: /extra, upstream: origin, auth: none"][..],
                &STANDARD_ROUTES[..],
            ]
            .concat(),
        )
        .yaml();
    dir.write("keys.yaml", &added);
    std::fs::write(&config_path, more).unwrap();
    eventually("the new route is served", PICKED_UP, || {
        let got = get(gw.addr, "/extra", &[]).status();
        if got == 200 {
            Ok(())
        } else {
            Err(format!("{got}"))
        }
    });
    let c2 = sha256sum(&config_path);
    assert_ne!(c2, c0);
    eventually(
        "keygate_config_info follows keygate.yaml",
        PICKED_UP,
        || {
            let info = config_info(&scrape(maddr));
            if info == [info_line(&c2, &k1)] {
                Ok(())
            } else {
                Err(format!("{info:?}"))
            }
        },
    );
}

#[test]
fn a_kubernetes_style_data_symlink_swap_is_served() {
    use std::os::unix::fs::symlink;
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let addr = free_addr();
    let config = GatewayConfig::new(origin.addr)
        .listen(addr)
        .server("watch_files: true")
        .yaml();
    // What the kubelet lays out for a ConfigMap volume: the files in a timestamped
    // folder, `..data` pointing at it, and each file a link through `..data`.
    let first = dir.path("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("keygate.yaml"), &config).unwrap();
    std::fs::write(first.join("keys.yaml"), &k.yaml).unwrap();
    symlink("..2026_01_01_00_00_00.000000001", dir.path("..data")).unwrap();
    for name in ["keygate.yaml", "keys.yaml"] {
        symlink(format!("..data/{name}"), dir.path(name)).unwrap();
    }
    let gw = Gateway::spawn(
        &dir,
        dir.path("keygate.yaml"),
        addr,
        &[("KEYGATE_SHARED_SECRET", SECRET)],
    );

    // An update: a new folder, a new link renamed over `..data`, the old folder removed.
    let newkey = keygate::apikey::generate().unwrap();
    let second = dir.path("..2026_01_01_00_01_00.000000002");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("keygate.yaml"), &config).unwrap();
    let without_good = k.yaml.replace(
        "      - { id: acme-good",
        "      - { id: acme-old, disabled: true",
    );
    assert_ne!(without_good, k.yaml);
    std::fs::write(
        second.join("keys.yaml"),
        with_key(&without_good, "newco", &newkey),
    )
    .unwrap();
    symlink("..2026_01_01_00_01_00.000000002", dir.path("..data_tmp")).unwrap();
    std::fs::rename(dir.path("..data_tmp"), dir.path("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();

    until_status(&gw, &newkey, 200);
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        401
    );
    gw.wait_log("watched files changed (..data), reloading configuration", 1);
    let keys_now = sha256sum(&dir.path("keys.yaml"));
    gw.wait_log(&format!("keys_sha256={keys_now}"), 1);
}

#[test]
fn watch_files_is_off_by_default_and_turns_on_with_a_reload() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    assert!(
        !gw.log().contains("for changes to the configuration files"),
        "{}",
        gw.log()
    );

    // Off: a renamed file is not loaded by itself (it is on the next SIGHUP).
    let first = keygate::apikey::generate().unwrap();
    let keys1 = with_key(&k.yaml, "first", &first);
    replace_by_rename(&dir, "keys.yaml", &keys1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &first)]).status(), 401);
    assert!(!gw.log().contains("configuration reloaded"), "{}", gw.log());

    // Turned on by a SIGHUP reload: no restart needed.
    let on = GatewayConfig::new(origin.addr)
        .listen(gw.addr)
        .server("watch_files: true")
        .yaml();
    replace_by_rename(&dir, "keygate.yaml", &on);
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &first)]).status(), 200);
    gw.wait_log("for changes to the configuration files", 1);

    let second = keygate::apikey::generate().unwrap();
    replace_by_rename(&dir, "keys.yaml", &with_key(&keys1, "second", &second));
    until_status(&gw, &second, 200);
    let log = gw.log();
    assert_eq!(log.matches("SIGHUP received").count(), 1, "{log}");
    assert!(log.contains("watched files changed (keys.yaml)"), "{log}");
}

#[test]
fn check_prints_the_digests_sha256sum_prints() {
    let dir = TestDir::new();
    let k = keys();
    let config = dir.write(
        "keygate.yaml",
        &GatewayConfig::new("127.0.0.1:9".parse().unwrap())
            .listen(free_addr())
            .yaml(),
    );
    let keys = dir.write("keys.yaml", &k.yaml);
    let out = keygate_with_config(&["check"], &config);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let want_config = format!("config_sha256={}  {}", sha256sum(&config), config.display());
    let want_keys = format!("keys_sha256={}  {}", sha256sum(&keys), keys.display());
    assert!(stdout.lines().any(|l| l == want_config), "{stdout}");
    assert!(stdout.lines().any(|l| l == want_keys), "{stdout}");
}

#[test]
fn a_renamed_secret_file_is_watched_but_never_hashed() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let config = GatewayConfig::new(origin.addr).server("watch_files: true");
    let gw = Gateway::start_with_secret_file(&dir, &config, &k.yaml, SECRET);
    let rotated = "rotated-shared-secret-0123456789abcdef";
    replace_by_rename(&dir, "secret", rotated);
    eventually("the origin receives the new secret", PICKED_UP, || {
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
        match origin.last().header("x-shared-secret") {
            Some(s) if s == rotated => Ok(()),
            _ => Err(gw.log()),
        }
    });
    gw.wait_log("watched files changed (secret), reloading configuration", 1);
    // The logged digests are of keygate.yaml and the keys file, never of the secret.
    let log = gw.log();
    assert!(!log.contains(&sha256sum(&dir.path("secret"))), "{log}");
    assert!(!log.contains(rotated), "{log}");
}
