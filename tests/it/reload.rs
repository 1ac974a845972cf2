//! SIGHUP reload through the real process.

use crate::harness::*;

#[test]
fn sighup_adds_and_removes_keys_and_a_broken_file_keeps_the_old_state() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    let newkey = keygate::apikey::generate().unwrap();
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &newkey)]).status(), 401);

    // Add a key and drop acme-good.
    let added = k.yaml.replace(
        &format!(
            "      - {{ id: acme-good, sha256: \"{}\" }}\n",
            hex::encode(keygate::apikey::digest(k.plain["good"].as_bytes()))
        ),
        &format!(
            "      - {{ id: acme-new, sha256: \"{}\" }}\n",
            hex::encode(keygate::apikey::digest(newkey.as_bytes()))
        ),
    );
    assert_ne!(added, k.yaml);
    dir.write("keys.yaml", &added);
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &newkey)]).status(), 200);
    assert_eq!(
        origin.last().header("x-credential-identifier").as_deref(),
        Some("acme-new")
    );
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        401
    );

    // A broken keys file is rejected whole: the previous keys keep working.
    dir.write(
        "keys.yaml",
        "consumers:\n  - id: acme\n    keys: [ { id: x, sha256: nothex } ]\n",
    );
    gw.sighup();
    gw.wait_log("configuration reload failed", 1);
    assert!(
        gw.log().contains("consumers[0].keys[0].sha256"),
        "{}",
        gw.log()
    );
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &newkey)]).status(), 200);

    // The next good reload succeeds.
    dir.write("keys.yaml", &k.yaml);
    gw.sighup();
    gw.wait_log("configuration reloaded", 2);
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &newkey)]).status(), 401);
}
