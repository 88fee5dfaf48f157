//! `openwrk sidecars …` (the real binary) against a loopback static mirror.

use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use openwrk_test_support::fixtures;
use openwrk_test_support::ReleaseHost;
use serde_json::{json, Value};

mod common;

use common::{fails, ok, rows, target, Mirror};

#[test]
fn fetch_then_warm_list_makes_no_requests() {
    let m = Mirror::new();
    let v = ok(&m.run(&["sidecars", "fetch", "--json"]));
    assert!(rows(&v).iter().all(|(_, s, _)| s == "downloaded"), "{v}");
    let before = m.host.requests();
    assert_eq!(before, 4, "{:?}", m.host.request_log());
    // Warm: the manifest is kept in the data dir, the binaries are verified by their records.
    let v = ok(&m.run(&["sidecars", "list", "--json"]));
    assert_eq!(
        rows(&v),
        vec![
            ("opencode".into(), "cache".into(), "yes".into()),
            ("openwork-server".into(), "cache".into(), "yes".into()),
            ("owpenbot".into(), "cache".into(), "yes".into())
        ]
    );
    assert_eq!(
        m.host.requests(),
        before,
        "a warm list made requests: {:?}",
        m.host.request_log()
    );
    // The extracted opencode is executable and nothing but the binary and records remain.
    let mut names: Vec<String> = std::fs::read_dir(m.cache_dir("opencode"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![".lock", ".verified", "opencode"]);
    ok(&m.run(&["sidecars", "verify", "--json"]));
}

#[test]
fn wrong_digest_on_download_caches_nothing() {
    let m = Mirror::new();
    m.host
        .faults()
        .corrupt_downloads
        .store(true, Ordering::SeqCst);
    // The manifest is local (a mirror serving bad assets is the case under test).
    let manifest = m.tmp.path().join("dist/openwrk-sidecars.json");
    let o = m.run(&[
        "sidecars",
        "fetch",
        "--sidecar-manifest",
        manifest.to_str().unwrap(),
    ]);
    fails(
        &o,
        5,
        &[
            "sha256 mismatch for opencode",
            "expected:",
            "actual:",
            "nothing was kept",
        ],
    );
    let left: Vec<_> = std::fs::read_dir(m.cache_dir("opencode"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from(".lock")]);
}

#[test]
fn corrupt_cache_is_detected_moved_aside_and_refetched() {
    let m = Mirror::new();
    ok(&m.run(&["sidecars", "fetch"]));
    let bin = m.cache_dir("owpenbot").join("owpenbot");
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&bin, &bytes).unwrap();
    fails(
        &m.run(&["sidecars", "verify"]),
        5,
        &["owpenbot", "does not match"],
    );
    let o = m.run(&["sidecars", "fetch"]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("did not match the manifest") && err.contains(".corrupt-"),
        "{err}"
    );
    ok(&m.run(&["sidecars", "verify"]));
}

#[test]
fn truncated_and_failing_downloads_are_retried() {
    let m = Mirror::new();
    m.host
        .faults()
        .truncate_downloads
        .store(1, Ordering::SeqCst);
    m.host.faults().fail_downloads.store(1, Ordering::SeqCst);
    ok(&m.run(&["sidecars", "fetch"]));
    ok(&m.run(&["sidecars", "verify"]));
}

#[test]
fn manifest_errors_name_the_url_or_field() {
    let m = Mirror::new();
    let missing = format!("{}/nope/openwrk-sidecars.json", m.host.url());
    let o = m.run(&["sidecars", "list", "--sidecar-manifest", &missing]);
    fails(&o, 3, &[&missing, "HTTP 404", "--sidecar-base-url"]);

    let bad = m.tmp.path().join("bad.json");
    let text = std::fs::read_to_string(m.tmp.path().join("dist/openwrk-sidecars.json")).unwrap();
    std::fs::write(&bad, text.replacen("\"size\": ", "\"size\": -", 1)).unwrap();
    let o = m.run(&[
        "sidecars",
        "list",
        "--sidecar-manifest",
        bad.to_str().unwrap(),
    ]);
    fails(&o, 3, &["invalid sidecar manifest", ".size"]);

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = m
        .cmd(&["sidecars", "list"])
        .env("OPENWRK_SIDECAR_BASE_URL", format!("http://{closed}"))
        .output()
        .unwrap();
    fails(
        &o,
        4,
        &["could not fetch the sidecar manifest", &closed.to_string()],
    );
}

#[test]
fn external_sources_need_allow_external() {
    let m = Mirror::new();
    let o = m.run(&["sidecars", "list", "--sidecar-source", "external"]);
    fails(&o, 2, &["--allow-external", "OPENWRK_ALLOW_EXTERNAL"]);
    // OpenCode needs no permission; a missing binary is named.
    let o = m.run(&[
        "sidecars",
        "list",
        "--opencode-source",
        "external",
        "--sidecar-source",
        "external",
        "--allow-external",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("external"));
}

#[test]
fn local_manifest_and_mirror_directory() {
    let m = Mirror::new();
    let manifest = m.tmp.path().join("dist/openwrk-sidecars.json");
    let o = m
        .cmd(&[
            "sidecars",
            "fetch",
            "--json",
            "--sidecar-manifest",
            manifest.to_str().unwrap(),
        ])
        .env_remove("OPENWRK_SIDECAR_BASE_URL")
        .output()
        .unwrap();
    let v = ok(&o);
    assert_eq!(rows(&v).len(), 3);
    assert_eq!(m.host.requests(), 0, "a local mirror needs no network");
}

#[test]
fn bundled_beats_cache_beats_download() {
    let m = Mirror::new();
    ok(&m.run(&["sidecars", "fetch"]));
    // A bundled install: openwrk, the manifest and sidecars/ side by side.
    let install = m.tmp.path().join("install");
    std::fs::create_dir_all(install.join("sidecars")).unwrap();
    let exe = install.join("openwrk");
    std::fs::copy(env!("CARGO_BIN_EXE_openwrk"), &exe).unwrap();
    std::fs::copy(
        m.tmp.path().join("dist/openwrk-sidecars.json"),
        install.join("openwrk-sidecars.json"),
    )
    .unwrap();
    std::fs::copy(
        m.cache_dir("owpenbot").join("owpenbot"),
        install.join("sidecars/owpenbot"),
    )
    .unwrap();
    let o = Command::new(&exe)
        .args(["sidecars", "list", "--json"])
        .env("OPENWRK_DATA_DIR", m.data())
        .env_remove("OPENWRK_SIDECAR_BASE_URL")
        .output()
        .unwrap();
    let r = rows(&ok(&o));
    assert_eq!(r[0], ("opencode".into(), "cache".into(), "yes".into()));
    assert_eq!(r[2], ("owpenbot".into(), "bundled".into(), "yes".into()));
    // --sidecar-source bundled refuses what is not bundled.
    let o = Command::new(&exe)
        .args(["sidecars", "fetch"])
        .env("OPENWRK_DATA_DIR", m.data())
        .output()
        .unwrap();
    ok(&o);
}

#[test]
fn prune_keeps_what_the_manifest_names() {
    let m = Mirror::new();
    ok(&m.run(&["sidecars", "fetch"]));
    let old = m.data().join("sidecars/opencode/0.9.0").join(target());
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("opencode"), "old").unwrap();
    let v = ok(&m.run(&["sidecars", "prune", "--dry-run", "--json"]));
    assert_eq!(v["removed"].as_array().unwrap().len(), 1);
    assert!(old.exists());
    ok(&m.run(&["sidecars", "prune"]));
    assert!(!old.exists());
    assert!(m.cache_dir("opencode").join("opencode").is_file());
}

#[test]
fn two_processes_fetch_once_and_both_succeed() {
    let m = Mirror::with_pad(8 * 1024 * 1024);
    m.host
        .faults()
        .throttle_bytes_per_sec
        .store(16 * 1024 * 1024, Ordering::SeqCst);
    let a = m
        .cmd(&["sidecars", "fetch"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = m
        .cmd(&["sidecars", "fetch"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(&a);
    ok(&b);
    let downloads = m
        .host
        .request_log()
        .iter()
        .filter(|l| l.contains("opencode-"))
        .count();
    assert_eq!(downloads, 1, "{:?}", m.host.request_log());
    let both = format!(
        "{}{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert!(
        both.contains("waiting for another openwrk to finish downloading opencode"),
        "{both}"
    );
}

#[test]
fn killed_mid_download_then_run_again() {
    let m = Mirror::with_pad(16 * 1024 * 1024);
    m.host
        .faults()
        .throttle_bytes_per_sec
        .store(8 * 1024 * 1024, Ordering::SeqCst);
    let mut child = m
        .cmd(&["sidecars", "fetch"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    let dir = m.cache_dir("opencode");
    assert!(
        !dir.join("opencode").exists(),
        "no binary at the final path after a kill"
    );
    m.host
        .faults()
        .throttle_bytes_per_sec
        .store(0, Ordering::SeqCst);
    ok(&m.run(&["sidecars", "fetch"]));
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".part-"))
        .collect();
    assert!(left.is_empty(), "stale temp files: {left:?}");
    ok(&m.run(&["sidecars", "verify"]));
}

/// A mirror whose manifest has no opencode entry, and a GitHub host with OpenCode releases.
struct GithubFx {
    mirror: Mirror,
    github: ReleaseHost,
}

impl GithubFx {
    fn new(tags: &[&str]) -> GithubFx {
        let mirror = Mirror::new();
        let dist = mirror.tmp.path().join("dist");
        let path = dist.join("openwrk-sidecars.json");
        let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        manifest["entries"]
            .as_object_mut()
            .unwrap()
            .remove("opencode");
        std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
        std::fs::remove_file(dist.join(format!("opencode-{}.tar.gz", target()))).unwrap();
        let github = ReleaseHost::start();
        let releases = mirror.tmp.path().join("releases");
        std::fs::create_dir_all(&releases).unwrap();
        for tag in tags {
            github.add_release(
                "anomalyco/opencode",
                fixtures::opencode_release(&releases, tag, None, 0).unwrap(),
            );
        }
        GithubFx { mirror, github }
    }

    /// The manifest by URL (not `--sidecar-base-url`: a mirror never sends
    /// anyone to GitHub), its assets from the same directory.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.mirror.cmd(args);
        cmd.env_remove("OPENWRK_SIDECAR_BASE_URL")
            .env(
                "OPENWRK_SIDECAR_MANIFEST_URL",
                format!("{}/openwrk-sidecars.json", self.mirror.host.url()),
            )
            .env("OPENWRK_GITHUB_API_URL", self.github.api_url())
            .env_remove("OPENCODE_VERSION")
            .env_remove("OPENWRK_OPENCODE_REPO")
            .env_remove("GITHUB_TOKEN")
            .env_remove("GH_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn opencode_row(&self, v: &Value) -> (String, String, String) {
        let r = v["sidecars"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "opencode")
            .unwrap();
        (
            r["version"].as_str().unwrap().into(),
            r["source"].as_str().unwrap().into(),
            r["verified"].as_str().unwrap().into(),
        )
    }
}

#[test]
fn opencode_comes_from_github_when_the_manifest_has_none() {
    let fx = GithubFx::new(&["v1.1.0", "v1.2.0"]);
    let v = ok(&fx.run(&["sidecars", "fetch", "--json"], &[]));
    assert_eq!(
        fx.opencode_row(&v),
        ("1.2.0".into(), "downloaded".into(), "sha256".into())
    );
    let api_calls = fx.github.requests();
    // Warm: the resolved latest is remembered and the binary is cached; GitHub is not asked again.
    let v = ok(&fx.run(&["sidecars", "fetch", "--json"], &[]));
    assert_eq!(fx.opencode_row(&v).1, "cache");
    let v = ok(&fx.run(&["sidecars", "list", "--json"], &[]));
    assert_eq!(
        fx.opencode_row(&v),
        ("1.2.0".into(), "cache".into(), "yes".into())
    );
    assert_eq!(
        fx.github.requests(),
        api_calls,
        "{:?}",
        fx.github.request_log()
    );

    // A pinned version, `v`-prefixed.
    let v = ok(&fx.run(
        &["sidecars", "fetch", "--json"],
        &[("OPENCODE_VERSION", "v1.1.0")],
    ));
    assert_eq!(fx.opencode_row(&v).0, "1.1.0");
}

#[test]
fn rate_limited_github_falls_back_to_the_remembered_version() {
    let fx = GithubFx::new(&["v1.2.0"]);
    ok(&fx.run(&["sidecars", "fetch"], &[]));
    // Two days later, GitHub rate-limits us.
    let memo = fx.mirror.data().join("opencode-latest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&memo).unwrap()).unwrap();
    m["resolvedAt"] = json!(m["resolvedAt"].as_u64().unwrap() - 2 * 24 * 3600);
    std::fs::write(&memo, m.to_string()).unwrap();
    fx.github
        .faults()
        .rate_limited
        .store(true, Ordering::SeqCst);
    let o = fx.run(&["sidecars", "fetch", "--json"], &[]);
    let v = ok(&o);
    assert_eq!(
        fx.opencode_row(&v),
        ("1.2.0".into(), "cache".into(), "warm".into())
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("offline: using OpenCode 1.2.0 remembered 48 h ago")
            && err.contains("rate limit"),
        "{err}"
    );

    // With nothing remembered or cached, the rate limit is the error.
    std::fs::remove_dir_all(fx.mirror.data()).unwrap();
    let o = fx.run(&["sidecars", "fetch"], &[]);
    fails(&o, 4, &["rate limit", "resets at", "GITHUB_TOKEN"]);
}

#[test]
fn github_digest_mismatch_caches_nothing() {
    let fx = GithubFx::new(&["v1.2.0"]);
    fx.github
        .faults()
        .wrong_digest
        .store(true, Ordering::SeqCst);
    let o = fx.run(&["sidecars", "fetch"], &[]);
    fails(&o, 5, &["sha256 mismatch for opencode-", "expected: 0000"]);
    let dir = fx
        .mirror
        .data()
        .join("sidecars/opencode/1.2.0")
        .join(target());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from(".lock")]);
}

#[test]
fn a_mirror_without_opencode_is_an_error_and_github_is_never_asked() {
    let fx = GithubFx::new(&["v1.2.0"]);
    for args in [&["sidecars", "fetch"][..], &["sidecars", "list"][..]] {
        let o = fx
            .mirror
            .cmd(args)
            .env("OPENWRK_GITHUB_API_URL", fx.github.api_url())
            .output()
            .unwrap();
        if args[1] == "fetch" {
            fails(
                &o,
                3,
                &["the mirror", "has no OpenCode", "--sidecar-base-url"],
            );
        }
    }
    // Nor does a start: the mirror is the only host asked.
    let ws = fx.mirror.tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let o = fx
        .mirror
        .cmd(&["serve", "--check", "--workspace", ws.to_str().unwrap()])
        .env("OPENWRK_GITHUB_API_URL", fx.github.api_url())
        .output()
        .unwrap();
    fails(&o, 3, &["has no OpenCode"]);
    assert_eq!(
        fx.github.requests(),
        0,
        "asked GitHub: {:?}",
        fx.github.request_log()
    );
}

#[test]
fn each_source_mode() {
    let m = Mirror::new();
    // bundled: only the copy next to openwrk counts (there is none here).
    let v = ok(&m.run(&["sidecars", "list", "--json", "--sidecar-source", "bundled"]));
    assert_eq!(
        rows(&v)[1],
        ("openwork-server".into(), "bundled".into(), "no".into())
    );
    // downloaded: straight to the cache.
    let v = ok(&m.run(&[
        "sidecars",
        "list",
        "--json",
        "--sidecar-source",
        "downloaded",
        "--opencode-source",
        "downloaded",
    ]));
    assert!(
        rows(&v)
            .iter()
            .all(|(_, s, v)| s == "download" && v == "no"),
        "{v}"
    );
    // external: OpenCode by path needs no permission and is not verified.
    let fake = m.tmp.path().join("my-opencode");
    fixtures::write_binary(&fake, "my opencode", None, 0).unwrap();
    let external_list = || {
        m.cmd(&[
            "sidecars",
            "list",
            "--json",
            "--opencode-source",
            "external",
        ])
        .env("PATH", m.tmp.path())
        .output()
        .unwrap()
    };
    let o = external_list();
    fails(&o, 3, &["external opencode not found", "not on PATH"]);
    std::fs::rename(&fake, m.tmp.path().join("opencode")).unwrap();
    let o = external_list();
    let v = ok(&o);
    assert_eq!(
        rows(&v)[0],
        ("opencode".into(), "external".into(), "external".into())
    );
}

/// The resolver itself (what `start` uses): `bundled` without a bundled copy is an error.
#[tokio::test]
async fn bundled_mode_without_a_bundled_copy_is_an_error() {
    use openwrk::supply::resolve::{Resolver, Settings, SourceMode};
    let m = Mirror::new();
    let settings = Settings {
        data_dir: m.data(),
        sidecar_dir: m.data().join("sidecars"),
        manifest: None,
        base_url: Some(m.host.url()),
        sidecar_source: SourceMode::Bundled,
        opencode_source: SourceMode::Auto,
        allow_external: false,
        opencode_bin: None,
        openwork_server_bin: None,
        owpenbot_bin: None,
        exe_dir: Some(m.tmp.path().to_path_buf()),
        verbose: false,
        allow_unsigned_manifest: false,
        manifest_pubkey: None,
        allow_downgrade: false,
        github: openwrk::supply::resolve::GithubSettings {
            version: None,
            repo: "anomalyco/opencode".into(),
            api_url: "http://127.0.0.1:9".into(),
            token: None,
        },
    };
    let resolver = Resolver::new(
        settings,
        openwrk::supply::download::Downloader::from_env().unwrap(),
    );
    let loaded = resolver.load_manifest(false).await.unwrap();
    let err = resolver
        .resolve("owpenbot", Some(&loaded))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().contains("no bundled owpenbot"), "{err}");
    // auto falls through to a download into the cache and verifies it.
    let r = resolver.resolve("opencode", Some(&loaded)).await.unwrap();
    assert_eq!((r.origin.as_str(), r.verified), ("downloaded", "sha256"));
    let r = resolver.resolve("opencode", Some(&loaded)).await.unwrap();
    assert_eq!((r.origin.as_str(), r.verified), ("cache", "warm"));
}

/// Signs `dir/openwrk-sidecars.json`; returns the public key (base64).
fn sign_dist(dir: &std::path::Path, sk: &minisign::SecretKey) {
    let manifest = std::fs::read(dir.join("openwrk-sidecars.json")).unwrap();
    let sig = minisign::sign(
        None,
        sk,
        std::io::Cursor::new(manifest),
        Some("openwrk test"),
        None,
    )
    .unwrap();
    std::fs::write(dir.join("openwrk-sidecars.json.minisig"), sig.into_string()).unwrap();
}

fn keypair() -> (String, minisign::SecretKey) {
    let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    (kp.pk.to_base64(), kp.sk)
}

#[test]
fn signed_manifests_verify_and_tampering_is_refused() {
    let m = Mirror::new();
    let dist = m.tmp.path().join("dist");
    let (pk, sk) = keypair();
    sign_dist(&dist, &sk);
    let with_key = |args: &[&str]| {
        m.cmd(args)
            .env("OPENWRK_MANIFEST_PUBKEY", &pk)
            .output()
            .unwrap()
    };
    ok(&with_key(&["sidecars", "fetch"]));
    // Warm: the kept manifest is re-verified with the kept signature, offline.
    let before = m.host.requests();
    ok(&with_key(&["sidecars", "list"]));
    assert_eq!(m.host.requests(), before);

    // A tampered manifest (still valid JSON) is refused.
    let path = dist.join("openwrk-sidecars.json");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replace("\"version\": \"0.1.0\"", "\"version\": \"0.1.1\""),
    )
    .unwrap();
    fails(
        &with_key(&["sidecars", "fetch"]),
        3,
        &["does not verify", "do not use this mirror"],
    );
    std::fs::write(&path, &good).unwrap();

    // A tampered signature is refused.
    let sig_path = dist.join("openwrk-sidecars.json.minisig");
    let sig = std::fs::read_to_string(&sig_path).unwrap();
    let mut lines: Vec<String> = sig.lines().map(str::to_string).collect();
    let flipped: String = lines[1].chars().rev().collect();
    lines[1] = flipped;
    std::fs::write(&sig_path, lines.join("\n")).unwrap();
    fails(
        &with_key(&["sidecars", "fetch"]),
        3,
        &["signature of the manifest"],
    );

    // Signed with another key.
    let (_, other) = keypair();
    sign_dist(&dist, &other);
    fails(&with_key(&["sidecars", "fetch"]), 3, &["different key"]);

    // No signature at all.
    std::fs::remove_file(&sig_path).unwrap();
    fails(
        &with_key(&["sidecars", "fetch"]),
        3,
        &["is not signed", "openwrk-sidecars.json.minisig: HTTP 404"],
    );
}

#[test]
fn unsigned_local_manifest_needs_the_development_flag() {
    let m = Mirror::new();
    let (pk, _) = keypair();
    let manifest = m.tmp.path().join("dist/openwrk-sidecars.json");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "sidecars",
            "list",
            "--sidecar-manifest",
            manifest.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        m.cmd(&args)
            .env("OPENWRK_MANIFEST_PUBKEY", &pk)
            .output()
            .unwrap()
    };
    fails(
        &run(&[]),
        3,
        &["is not signed", "--allow-unsigned-manifest"],
    );
    let o = run(&["--allow-unsigned-manifest"]);
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("warning: using the unsigned local manifest")
    );
    // The flag does not make a mirror's unsigned manifest acceptable.
    let o = m
        .cmd(&["sidecars", "list", "--allow-unsigned-manifest"])
        .env("OPENWRK_MANIFEST_PUBKEY", &pk)
        .output()
        .unwrap();
    fails(&o, 3, &["is not signed"]);
}

#[cfg(unix)]
#[test]
fn unsafe_sidecar_dirs_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let m = Mirror::new();
    let dir = m.data().join("sidecars");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    fails(
        &m.run(&["sidecars", "list"]),
        3,
        &["world-writable (mode 777)", "chmod 700"],
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    ok(&m.run(&["sidecars", "fetch"]));
    // Created dirs are private.
    let mode = std::fs::metadata(m.cache_dir("opencode"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let fresh = m.tmp.path().join("fresh-data");
    let o = m
        .cmd(&["sidecars", "list"])
        .env("OPENWRK_DATA_DIR", &fresh)
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Owned by someone else (only root can arrange that; CI runs as root).
    if openwrk_test_support::root("chown of the sidecar dir to another user") {
        let chowned = std::process::Command::new("chown")
            .arg("65534")
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(chowned, "chown 65534 {} failed as root", dir.display());
        fails(
            &m.run(&["sidecars", "list"]),
            3,
            &["owned by uid 65534", "chown -R"],
        );
    }
}

#[test]
fn downloads_go_through_http_proxy_unless_no_proxy() {
    let m = Mirror::new();
    let proxy = openwrk_test_support::proxy::ForwardProxy::start();
    let o = m
        .cmd(&["sidecars", "fetch"])
        .env("HTTP_PROXY", proxy.url())
        .env("http_proxy", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(
        proxy.requests(),
        4,
        "manifest and three sidecars through the proxy"
    );

    // NO_PROXY bypasses it.
    std::fs::remove_dir_all(m.data()).unwrap();
    let o = m
        .cmd(&["sidecars", "fetch"])
        .env("HTTP_PROXY", proxy.url())
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(proxy.requests(), 4);
}

#[test]
fn a_bad_ca_bundle_is_named() {
    let m = Mirror::new();
    let bundle = m.tmp.path().join("ca.pem");
    std::fs::write(&bundle, "not a certificate").unwrap();
    let o = m
        .cmd(&["sidecars", "fetch"])
        .env("OPENWRK_CA_BUNDLE", &bundle)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("OPENWRK_CA_BUNDLE") && err.contains("ca.pem"),
        "{err}"
    );
    let o = m
        .cmd(&["sidecars", "fetch"])
        .env("OPENWRK_CA_BUNDLE", m.tmp.path().join("missing.pem"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.pem"));
}
