//! The trust boundary (README "Security model"): a hostile mirror, manifest,
//! child or local user never gets a byte run or written where it should not.
//! Every test drives the real `openwrk` binary against loopback hosts.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openwrk_test_support::{fixtures, processes_under, standin, ReleaseHost};
use serde_json::{json, Value};

mod common;

use common::{fails, ok, target, Mirror};

fn manifest_path(m: &Mirror) -> PathBuf {
    m.tmp.path().join("dist/openwrk-sidecars.json")
}

/// Rewrites the mirror's manifest.
fn edit_manifest(m: &Mirror, edit: impl FnOnce(&mut Value)) {
    let path = manifest_path(m);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Root-only checks run in CI (which runs as root) and fail there without it.
fn require_root(what: &str) -> bool {
    openwrk_test_support::root(what)
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------- 1. paths

#[test]
fn manifest_versions_and_targets_never_become_paths() {
    let m = Mirror::new();
    let outside = m.tmp.path().join("outside");
    let original = std::fs::read(manifest_path(&m)).unwrap();
    let bad_versions = [
        format!("../../../../..{}", outside.display()),
        outside.display().to_string(),
        "1.0/../../x".to_string(),
        "..".to_string(),
        "v".repeat(65),
        "1.0\u{1b}[2J".to_string(),
    ];
    for bad in &bad_versions {
        std::fs::write(manifest_path(&m), &original).unwrap();
        edit_manifest(&m, |v| v["entries"]["opencode"]["version"] = json!(bad));
        let o = m.run(&["sidecars", "fetch"]);
        let err = fails(
            &o,
            3,
            &["entries.opencode.version", "invalid sidecar manifest"],
        );
        assert!(
            !err.contains('\u{1b}'),
            "a control character reached the terminal: {err}"
        );
        assert!(!outside.exists(), "{bad}: wrote {}", outside.display());
    }
    // A target key that is not one of the five targets.
    std::fs::write(manifest_path(&m), &original).unwrap();
    edit_manifest(&m, |v| {
        let targets = v["entries"]["owpenbot"]["targets"].as_object_mut().unwrap();
        let t = targets.remove(target()).unwrap();
        targets.insert("../../outside".into(), t);
    });
    fails(
        &m.run(&["sidecars", "fetch"]),
        3,
        &["entries.owpenbot.targets.../../outside", "unknown target"],
    );
    assert!(!outside.exists());
    assert!(!m.data().join("sidecars/outside").exists());

    // An entry this openwrk does not know is ignored, with a note, and never touched.
    std::fs::write(manifest_path(&m), &original).unwrap();
    edit_manifest(&m, |v| {
        let copy = v["entries"]["owpenbot"].clone();
        v["entries"]["../../outside"] = copy;
        v["entries"]["../../outside"]["version"] = json!("../../x");
    });
    let o = m.run(&["sidecars", "fetch", "--json"]);
    ok(&o);
    assert!(
        stderr(&o).contains("does not know (../../outside); ignored"),
        "{}",
        stderr(&o)
    );
    assert!(!outside.exists());
    let names: Vec<String> = std::fs::read_dir(m.data().join("sidecars"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

// ---------------------------------------------------------------- 2. rollback

fn keypair() -> (String, minisign::SecretKey) {
    let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    (kp.pk.to_base64(), kp.sk)
}

/// Sets the mirror manifest's `version` and `generatedAt` and signs it.
fn publish(m: &Mirror, sk: &minisign::SecretKey, version: &str, generated_at: &str) {
    edit_manifest(m, |v| {
        v["version"] = json!(version);
        v["generatedAt"] = json!(generated_at);
    });
    let bytes = std::fs::read(manifest_path(m)).unwrap();
    let sig = minisign::sign(None, sk, std::io::Cursor::new(bytes), Some("test"), None).unwrap();
    std::fs::write(
        m.tmp.path().join("dist/openwrk-sidecars.json.minisig"),
        sig.into_string(),
    )
    .unwrap();
}

#[test]
fn a_replayed_older_or_foreign_signed_manifest_is_refused() {
    let m = Mirror::new();
    let (pk, sk) = keypair();
    let fetch = |extra: &[(&str, &str)]| {
        let mut cmd = m.cmd(&["sidecars", "fetch"]);
        cmd.env("OPENWRK_MANIFEST_PUBKEY", &pk);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let ours = openwrk::VERSION;
    publish(&m, &sk, ours, "2026-02-01T00:00:00Z");
    ok(&fetch(&[]));
    let state = m.data().join("manifest-state.json");
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .contains("2026-02-01T00:00:00Z"));

    // The mirror replays an older manifest, validly signed.
    publish(&m, &sk, ours, "2026-01-01T00:00:00Z");
    fails(
        &fetch(&[]),
        5,
        &[
            "2026-01-01T00:00:00Z",
            "2026-02-01T00:00:00Z",
            "--allow-downgrade",
        ],
    );
    // Accepted for one run when asked, saying so; the newest stays remembered.
    let o = fetch(&[("OPENWRK_ALLOW_DOWNGRADE", "1")]);
    ok(&o);
    assert!(stderr(&o).contains("--allow-downgrade"), "{}", stderr(&o));
    fails(&fetch(&[]), 5, &["2026-02-01T00:00:00Z"]);
    let o = m
        .cmd(&["sidecars", "fetch", "--allow-downgrade"])
        .env("OPENWRK_MANIFEST_PUBKEY", &pk)
        .output()
        .unwrap();
    ok(&o);

    // A newer manifest of another openwrk release, signed with the same key.
    publish(&m, &sk, "0.0.9", "2026-03-01T00:00:00Z");
    fails(
        &fetch(&[]),
        5,
        &["openwrk 0.0.9", &format!("this is openwrk {ours}")],
    );
    // A newer one of ours moves the mark forward.
    publish(&m, &sk, ours, "2026-03-01T00:00:00Z");
    ok(&fetch(&[]));
    publish(&m, &sk, ours, "2026-02-01T00:00:00Z");
    fails(&fetch(&[]), 5, &["2026-03-01T00:00:00Z"]);
}

// ---------------------------------------------------------------- 3. forged cache entries

#[test]
fn cache_entries_another_user_could_write_are_refused() {
    let m = Mirror::new();
    ok(&m.run(&["sidecars", "fetch"]));
    let entry = m.cache_dir("opencode");
    chmod(&entry, 0o770);
    let err = fails(
        &m.run(&["sidecars", "list"]),
        3,
        &["group-writable (mode 770)", "chmod 700"],
    );
    assert!(err.contains(&entry.display().to_string()), "{err}");
    chmod(&entry, 0o700);
    let record = m.cache_dir("owpenbot").join(".verified");
    chmod(&record, 0o602);
    fails(
        &m.run(&["sidecars", "list"]),
        3,
        &["world-writable", ".verified", "chmod go-w"],
    );
    chmod(&record, 0o600);
    let version_dir = entry.parent().unwrap();
    chmod(version_dir, 0o777);
    fails(
        &m.run(&["sidecars", "fetch"]),
        3,
        &["world-writable (mode 777)"],
    );
    chmod(version_dir, 0o700);
    ok(&m.run(&["sidecars", "list"]));

    if !require_root("chown of a cache entry to another user") {
        return;
    }
    let chown = |path: &Path, uid: u32| {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), uid, uid) }, 0);
    };
    // Another user's entry, with a binary and record that would pass the warm check.
    chown(&entry, 65534);
    let err = fails(
        &m.run(&["sidecars", "list"]),
        3,
        &["owned by uid 65534", "chown -R"],
    );
    assert!(err.contains(&entry.display().to_string()), "{err}");
    chown(&entry, 0);
    chown(&entry.join("opencode"), 65534);
    fails(&m.run(&["sidecars", "list"]), 3, &["owned by uid 65534"]);
    chown(&entry.join("opencode"), 0);
    ok(&m.run(&["sidecars", "list"]));
}

#[test]
fn a_tampered_binary_with_its_mtime_set_back_is_caught() {
    let m = Mirror::new();
    ok(&m.run(&["sidecars", "fetch"]));
    let bin = m.cache_dir("owpenbot").join("owpenbot");
    let mtime = std::fs::metadata(&bin).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&bin).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&bin, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&bin)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let o = m.run(&["sidecars", "fetch", "--json"]);
    let v = ok(&o);
    let row = v["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "owpenbot")
        .unwrap()
        .clone();
    assert_eq!(row["source"], "downloaded", "{v}");
    assert!(stderr(&o).contains(".corrupt-"), "{}", stderr(&o));

    // A record without ctime and device (older format) is rehashed, not trusted.
    let record = m.cache_dir("opencode").join(".verified");
    let mut r: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    r.as_object_mut().unwrap().remove("ctimeNs");
    std::fs::write(&record, r.to_string()).unwrap();
    let v = ok(&m.run(&["sidecars", "fetch", "--json"]));
    let row = v["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "opencode")
        .unwrap()
        .clone();
    assert_eq!(row["verified"], "sha256", "{v}");
}

/// A mirror of runnable stand-ins, so a run starts what it downloaded.
fn runnable_mirror() -> Mirror {
    let tmp = tempfile::Builder::new()
        .prefix("openwrk-trust-")
        .tempdir()
        .unwrap();
    let bins = [
        standin("standin-opencode"),
        standin("standin-openwork-server"),
        standin("standin-owpenbot"),
    ];
    fixtures::runnable_host_dist(
        &tmp.path().join("dist"),
        "1.0.0",
        [&bins[0], &bins[1], &bins[2]],
    )
    .unwrap();
    let host = ReleaseHost::mirror(&tmp.path().join("dist"));
    Mirror { tmp, host }
}

fn kill_all_under(dir: &Path) {
    for (pid, _) in processes_under(dir) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

fn daemon_status(m: &Mirror) -> Value {
    let o = m.run(&["daemon", "status", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

#[test]
fn the_daemon_verifies_opencode_again_before_every_restart() {
    let m = runnable_mirror();
    let o = m.run(&["daemon", "start"]);
    let guard = scopeguard(m.tmp.path());
    ok(&o);
    let first = daemon_status(&m);
    let old = first["opencode"]["pid"].as_u64().unwrap();
    // OpenCode dies; while the daemon waits to restart it (1 s), someone
    // rewrites the cached binary (same size) and restores its mtime.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(old as i32, libc::SIGKILL);
    }
    while std::fs::read_to_string(format!("/proc/{old}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let bin = m.cache_dir("opencode").join("opencode");
    let mtime = std::fs::metadata(&bin).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&bin).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&bin, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&bin)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = daemon_status(&m);
        let pid = s["opencode"]["pid"].as_u64();
        if s["healthy"] == true && pid.is_some() && pid != Some(old) {
            break;
        }
        assert!(Instant::now() < deadline, "no verified restart: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(m.data().join("daemon.log")).unwrap();
    assert!(log.contains("changed since it was verified"), "{log}");
    let moved = std::fs::read_dir(m.cache_dir("opencode"))
        .unwrap()
        .any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".corrupt-")
        });
    assert!(moved, "the changed binary was not moved aside");
    // What runs now is the verified copy again.
    ok(&m.run(&["sidecars", "verify"]));
    ok(&m.run(&["daemon", "stop"]));
    drop(guard);
}

/// Kills whatever a test left under `dir` when it ends (also on a panic).
struct Guard(PathBuf);
fn scopeguard(dir: &Path) -> Guard {
    Guard(dir.to_path_buf())
}
impl Drop for Guard {
    fn drop(&mut self) {
        kill_all_under(&self.0);
    }
}

// ---------------------------------------------------------------- 4. local reads

#[test]
fn local_manifests_and_signatures_are_read_with_the_size_cap() {
    let m = Mirror::new();
    let started = Instant::now();
    fails(
        &m.run(&["sidecars", "list", "--sidecar-manifest", "/dev/zero"]),
        3,
        &["/dev/zero", "larger than 8388608 bytes"],
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let (pk, _) = keypair();
    let local = m.tmp.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::copy(manifest_path(&m), local.join("openwrk-sidecars.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", local.join("openwrk-sidecars.json.minisig")).unwrap();
    let o = m
        .cmd(&["sidecars", "list", "--sidecar-manifest"])
        .arg(local.join("openwrk-sidecars.json"))
        .env("OPENWRK_MANIFEST_PUBKEY", &pk)
        .env_remove("OPENWRK_SIDECAR_BASE_URL")
        .output()
        .unwrap();
    fails(&o, 3, &["is not signed", "larger than"]);
}

// ---------------------------------------------------------------- 5. secrets

#[test]
fn url_credentials_never_show_in_output_or_logs() {
    let m = Mirror::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let with_creds = format!("http://alice:s3cr3t-pw@{closed}/mirror");
    let o = m
        .cmd(&["sidecars", "list"])
        .env("OPENWRK_SIDECAR_BASE_URL", &with_creds)
        .output()
        .unwrap();
    let err = fails(&o, 4, &["could not fetch the sidecar manifest", "***@"]);
    assert!(
        !err.contains("s3cr3t-pw") && !err.contains("alice"),
        "{err}"
    );
    // The same through serve's JSON log records.
    let ws = m.tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let o = m
        .cmd(&["serve", "--check", "--log-format", "json", "--workspace"])
        .arg(&ws)
        .env("OPENWRK_SIDECAR_BASE_URL", &with_creds)
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    let all = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(all.contains("***@"), "{all}");
    assert!(!all.contains("s3cr3t-pw"), "{all}");
    // A mirror that takes the credentials works, and its URL is shown without them.
    let url = m.host.url().replacen("http://", "http://bob:pa55w0rd@", 1);
    let o = m
        .cmd(&["sidecars", "fetch", "--json"])
        .env("OPENWRK_SIDECAR_BASE_URL", &url)
        .output()
        .unwrap();
    ok(&o);
    let all = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(!all.contains("pa55w0rd"), "{all}");
}

/// A wrapper that records its environment (and prints `say` to stderr), then runs the stand-in.
fn wrapper(dir: &Path, name: &str, real: &Path, say: &str) -> PathBuf {
    let path = dir.join(name);
    let script = format!(
        "#!/bin/sh\nenv > '{}'\nprintf '{say}' >&2\nexec '{}' \"$@\"\n",
        dir.join(format!("{name}.env")).display(),
        real.display()
    );
    std::fs::write(&path, script).unwrap();
    chmod(&path, 0o755);
    path
}

fn check_run(m: &Mirror, bins: [&Path; 3], env: &[(&str, &str)]) -> Output {
    let ws = m.tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let mut cmd = m.cmd(&[
        "serve",
        "--check",
        "--allow-external",
        "--openwork-port",
        "0",
        "--color",
        "never",
    ]);
    cmd.arg("--workspace")
        .arg(&ws)
        .arg("--opencode-bin")
        .arg(bins[0])
        .arg("--openwork-server-bin")
        .arg(bins[1])
        .arg("--owpenbot-bin")
        .arg(bins[2]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn github_tokens_and_signing_keys_never_reach_the_sidecars() {
    let m = Mirror::new();
    let dir = m.tmp.path().join("wrappers");
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["opencode", "openwork-server", "owpenbot"];
    let bins = names.map(|n| wrapper(&dir, n, &standin(&format!("standin-{n}")), ""));
    let o = check_run(
        &m,
        [&bins[0], &bins[1], &bins[2]],
        &[
            ("GITHUB_TOKEN", "ghp_secret-token"),
            ("GH_TOKEN", "gho_secret-token"),
            ("OPENWRK_SIGNING_KEY", "secret-key"),
        ],
    );
    ok(&o);
    for n in names {
        let env = std::fs::read_to_string(dir.join(format!("{n}.env"))).unwrap();
        for secret in [
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "OPENWRK_SIGNING_KEY",
            "secret-token",
        ] {
            assert!(!env.contains(secret), "{n} got {secret}:\n{env}");
        }
    }
}

// ---------------------------------------------------------------- 6. terminal injection

#[test]
fn a_childs_terminal_control_sequences_are_shown_escaped() {
    let m = Mirror::new();
    let dir = m.tmp.path().join("wrappers");
    std::fs::create_dir_all(&dir).unwrap();
    let opencode = wrapper(
        &dir,
        "opencode",
        &standin("standin-opencode"),
        "\\033]0;pwned\\007 title\\n\\033[2J cleared \\233 c1\\n",
    );
    let server = standin("standin-openwork-server");
    let bot = standin("standin-owpenbot");
    let o = check_run(&m, [&opencode, &server, &bot], &[]);
    ok(&o);
    let err = stderr(&o);
    assert!(
        !o.stderr.contains(&0x1b),
        "raw ESC reached the terminal:\n{err}"
    );
    assert!(
        !o.stderr.contains(&0x07),
        "raw BEL reached the terminal:\n{err}"
    );
    assert!(err.contains("\\x1b]0;pwned\\x07 title"), "{err}");
    assert!(err.contains("\\x1b[2J cleared"), "{err}");
}

// ---------------------------------------------------------------- 7. daemon proxy

#[test]
fn the_daemon_proxy_strips_encoded_directory_keys() {
    let m = Mirror::new();
    let ws = m.tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let o = m.run(&[
        "daemon",
        "start",
        "--opencode-bin",
        standin("standin-opencode").to_str().unwrap(),
    ]);
    let guard = scopeguard(m.tmp.path());
    ok(&o);
    let url = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let token = std::fs::read_to_string(m.data().join("daemon.token")).unwrap();
    let id = String::from_utf8(m.run(&["workspace", "add", ws.to_str().unwrap()]).stdout)
        .unwrap()
        .trim()
        .to_string();
    let get = |path: &str| -> (u16, String) {
        openwrk::install_crypto_provider();
        let url = format!("{url}/w/{id}/{path}");
        let token = token.trim().to_string();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let r = client.get(url).bearer_auth(token).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
    };
    let q = "global/health?dir%65ctory=/etc&%64irectory=/root&DIRECTORY=/x&directory+=/y";
    assert_eq!(get(q).0, 200);
    let seen = get("_standin/directories").1;
    let ws = ws.canonicalize().unwrap();
    assert!(seen.contains(ws.to_str().unwrap()), "{seen}");
    for smuggled in ["/etc", "/root", "\"/x\"", "\"/y\""] {
        assert!(
            !seen.contains(smuggled),
            "{smuggled} reached OpenCode: {seen}"
        );
    }
    ok(&m.run(&["daemon", "stop"]));
    drop(guard);
}

// ---------------------------------------------------------------- 8. truthful lines

#[test]
fn a_release_without_digests_says_only_the_size_was_checked() {
    let m = Mirror::new();
    edit_manifest(&m, |v| {
        v["entries"].as_object_mut().unwrap().remove("opencode");
    });
    let github = ReleaseHost::start();
    let releases = m.tmp.path().join("releases");
    std::fs::create_dir_all(&releases).unwrap();
    github.add_release(
        "anomalyco/opencode",
        fixtures::opencode_release(&releases, "v1.2.0", None, 0).unwrap(),
    );
    github.faults().no_digest.store(true, Ordering::SeqCst);
    let run = |json: bool| {
        let mut cmd = m.cmd(&["sidecars", "fetch"]);
        if json {
            cmd.arg("--json");
        }
        cmd.env_remove("OPENWRK_SIDECAR_BASE_URL")
            .env("OPENWRK_SIDECAR_MANIFEST_URL", manifest_path(&m))
            .env("OPENWRK_GITHUB_API_URL", github.api_url())
            .env_remove("OPENCODE_VERSION")
            .env_remove("GITHUB_TOKEN")
            .env_remove("GH_TOKEN")
            .output()
            .unwrap()
    };
    let opencode_line = |o: &Output| {
        let err = stderr(o);
        err.lines()
            .find(|l| l.starts_with("opencode 1.2.0"))
            .unwrap_or_else(|| panic!("no opencode line:\n{err}"))
            .to_string()
    };
    let o = run(false);
    ok(&o);
    let line = opencode_line(&o);
    assert!(line.contains("only the size could be checked"), "{line}");
    assert!(!line.contains("sha256 checked"), "{line}");
    let v = ok(&run(true));
    let row = v["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "opencode")
        .unwrap()
        .clone();
    assert_eq!(row["verified"], "warm-size", "{v}");
    let line = opencode_line(&run(false));
    assert!(line.contains("by size only"), "{line}");
}

// ---------------------------------------------------------------- 10. exit codes

#[test]
fn a_content_length_other_than_the_manifests_fails_at_once() {
    let m = Mirror::new();
    let asset = m.tmp.path().join(format!("dist/owpenbot-{}", target()));
    let bytes = std::fs::read(&asset).unwrap();
    std::fs::write(&asset, &bytes[..bytes.len() - 10]).unwrap();
    let o = m.run(&["sidecars", "fetch"]);
    fails(
        &o,
        5,
        &["announces", "but the manifest says", "nothing was kept"],
    );
    let tries = m
        .host
        .request_log()
        .iter()
        .filter(|l| l.contains("owpenbot-"))
        .count();
    assert_eq!(tries, 1, "retried: {:?}", m.host.request_log());
}

#[test]
fn manifest_urls_take_https_loopback_http_files_and_paths_only() {
    let m = Mirror::new();
    for (flag, value) in [
        (
            "--sidecar-manifest",
            "ftp://127.0.0.1/openwrk-sidecars.json",
        ),
        (
            "--sidecar-manifest",
            "http://mirror.example/openwrk-sidecars.json",
        ),
        ("--sidecar-base-url", "gopher://mirror.example/dist"),
    ] {
        let o = m.run(&["sidecars", "list", flag, value]);
        fails(&o, 2, &[flag, "https://", "loopback"]);
    }
    // A local path and a file:// URL are fine.
    let local = manifest_path(&m);
    let file_url = format!("file://{}", local.display());
    for value in [local.to_str().unwrap(), file_url.as_str()] {
        let o = m
            .cmd(&["sidecars", "list", "--sidecar-manifest", value])
            .env_remove("OPENWRK_SIDECAR_BASE_URL")
            .output()
            .unwrap();
        ok(&o);
    }
}
