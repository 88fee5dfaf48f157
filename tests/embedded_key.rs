//! An `openwrk` built with `OPENWRK_MANIFEST_PUBKEY` compiled in (build.rs)
//! trusts that key alone: unsigned and wrongly signed manifests are refused
//! and `--manifest-pubkey` cannot replace it. The binary is built here, into
//! its own target dir, with the test key of `test-support/keys/`.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{fails, ok, Mirror};

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test-support/keys")
}

/// The base64 line of the test public key.
fn public_key() -> String {
    let text = std::fs::read_to_string(keys().join("embedded-test.pub")).unwrap();
    text.lines().nth(1).unwrap().trim().to_string()
}

/// Hard-links `from`'s compiled dependencies into `to`, so the embedded-key
/// build only compiles openwrk itself (cargo writes new files, never into a
/// linked one). Best effort: without it the build is only slower.
fn seed(from: &Path, to: &Path) {
    for sub in ["deps", "build", ".fingerprint"] {
        let (src, dst) = (from.join(sub), to.join(sub));
        if src.is_dir() && !dst.exists() {
            let _ = Command::new("cp").arg("-al").arg(&src).arg(&dst).status();
        }
    }
}

/// Builds `openwrk` with the test key compiled in; returns the binary.
fn build_with_embedded_key() -> PathBuf {
    let target = openwrk_test_support::target_dir();
    let dir = target.join("embedded-key");
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    std::fs::create_dir_all(dir.join(profile)).unwrap();
    seed(&target.join(profile), &dir.join(profile));
    let mut cmd = Command::new(env!("CARGO"));
    // Only what a shell would have: variables cargo set for this test process
    // would count as a changed environment and rebuild the dependencies.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k == "OUT_DIR" {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.args([
        "build",
        "--locked",
        "--package",
        "openwrk",
        "--bin",
        "openwrk",
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"))
    .env("CARGO_TARGET_DIR", &dir)
    .env("OPENWRK_MANIFEST_PUBKEY", public_key())
    .env_remove("OPENWRK_RELEASE_REPO");
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "building openwrk with an embedded key failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(profile)
        .join(format!("openwrk{}", std::env::consts::EXE_SUFFIX))
}

fn sign(dist: &Path, key: &minisign::SecretKey) {
    let manifest = std::fs::read(dist.join("openwrk-sidecars.json")).unwrap();
    let sig = minisign::sign(
        None,
        key,
        std::io::Cursor::new(manifest),
        Some("test"),
        None,
    )
    .unwrap();
    std::fs::write(
        dist.join("openwrk-sidecars.json.minisig"),
        sig.into_string(),
    )
    .unwrap();
}

#[test]
fn a_compiled_in_key_is_the_only_key_trusted() {
    let bin = build_with_embedded_key();
    let m = Mirror::new();
    let dist = m.tmp.path().join("dist");
    let run = |args: &[&str]| {
        // The mirror's environment, on the binary built above.
        let cmd = m.cmd(args);
        let mut real = Command::new(&bin);
        real.args(args);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => real.env(k, v),
                None => real.env_remove(k),
            };
        }
        real.env_remove("OPENWRK_MANIFEST_PUBKEY").output().unwrap()
    };

    // Unsigned: refused, even with the development escape hatch (a mirror is never trusted).
    fails(&run(&["sidecars", "list"]), 3, &["is not signed"]);
    fails(
        &run(&["sidecars", "list", "--allow-unsigned-manifest"]),
        3,
        &["is not signed"],
    );

    // Signed with another key: refused, and naming that key at run time changes nothing.
    let other = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    sign(&dist, &other.sk);
    fails(
        &run(&["sidecars", "list"]),
        3,
        &["does not verify", "different key"],
    );
    let o = run(&[
        "sidecars",
        "list",
        "--manifest-pubkey",
        &other.pk.to_base64(),
    ]);
    fails(&o, 3, &["different key"]);

    // Signed with the compiled-in key: accepted.
    let text = std::fs::read_to_string(keys().join("embedded-test.key")).unwrap();
    let key = minisign::SecretKeyBox::from_string(&text)
        .unwrap()
        .into_unencrypted_secret_key()
        .unwrap();
    sign(&dist, &key);
    ok(&run(&["sidecars", "fetch", "--json"]));
}
