//! The real bundler (`cargo xtask bundle`, run as a process) against the
//! loopback release host. Nothing leaves 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use openwrk::supply::manifest::Manifest;
use openwrk_test_support::fixtures::{self, Entry};
use openwrk_test_support::{FakeAsset, FakeRelease, ReleaseHost};

const REPO: &str = "anomalyco/opencode";

struct Fx {
    tmp: tempfile::TempDir,
    host: ReleaseHost,
    prebuilt: PathBuf,
    bins: PathBuf,
}

impl Fx {
    /// A host with stable releases for `tags` (oldest first) and prereleases for `pre`.
    fn new(tags: &[&str], pre: &[&str]) -> Fx {
        Fx::on(ReleaseHost::start(), tags, pre)
    }

    /// The same on a given host (HTTPS, behind the test proxy).
    fn on(host: ReleaseHost, tags: &[&str], pre: &[&str]) -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let rel_dir = tmp.path().join("releases");
        std::fs::create_dir_all(&rel_dir).unwrap();
        for tag in tags {
            host.add_release(
                REPO,
                fixtures::opencode_release(&rel_dir, tag, None, 0).unwrap(),
            );
        }
        for tag in pre {
            let mut r = fixtures::opencode_release(&rel_dir, tag, None, 0).unwrap();
            r.prerelease = true;
            host.add_release(REPO, r);
        }
        let prebuilt =
            fixtures::prebuilt_dir(&tmp.path().join("prebuilt"), "0.3.0", &[], 0).unwrap();
        let bins = tmp.path().join("bins");
        std::fs::create_dir_all(&bins).unwrap();
        let host_bin = format!(
            "openwrk-{}{}",
            fixtures::host_target(),
            std::env::consts::EXE_SUFFIX
        );
        fixtures::write_binary(&bins.join(host_bin), "openwrk", None, 0).unwrap();
        Fx {
            tmp,
            host,
            prebuilt,
            bins,
        }
    }

    fn out(&self) -> PathBuf {
        self.tmp.path().join("out").join("dist")
    }

    fn bundle(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.arg("bundle")
            .arg("--out")
            .arg(self.out())
            .arg("--prebuilt")
            .arg(&self.prebuilt)
            .arg("--openwrk-bin-dir")
            .arg(&self.bins)
            .args(args)
            .env("OPENWRK_GITHUB_API_URL", self.host.api_url())
            .env("OPENWRK_RETRY_BACKOFF_MS", "5")
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("GITHUB_TOKEN")
            .env_remove("GH_TOKEN")
            .env_remove("OPENCODE_VERSION")
            .env_remove("OPENWRK_OPENCODE_REPO")
            .env_remove("OPENWRK_JOBS")
            .env_remove("OPENWRK_SIGNING_KEY_FILE")
            .env_remove("OPENWRK_SIGNING_KEY")
            .env_remove("OPENWRK_CA_BUNDLE")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn manifest(&self) -> Manifest {
        let bytes = std::fs::read(self.out().join("openwrk-sidecars.json")).unwrap();
        Manifest::from_json(&bytes).unwrap()
    }

    /// No dist and no staging or work directories were left behind.
    fn assert_nothing_written(&self) {
        assert!(!self.out().exists(), "dist was written");
        let parent = self.out().parent().unwrap().to_path_buf();
        if parent.exists() {
            let left: Vec<_> = std::fs::read_dir(&parent)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "left behind: {left:?}");
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "bundle failed:\n{}", stderr(o));
}

fn assert_fails_with(o: &Output, needles: &[&str]) -> String {
    assert!(
        !o.status.success(),
        "bundle unexpectedly succeeded:\n{}",
        stderr(o)
    );
    let err = stderr(o);
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    err
}

fn validate_schema(manifest_path: &Path) {
    let schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/openwrk-sidecars.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest_path).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "schema errors: {errors:?}");
}

#[test]
fn latest_release_bundles_every_target() {
    let fx = Fx::new(&["v1.0.0", "v1.1.0"], &["v1.2.0-beta.1"]);
    let o = fx.bundle(&[], &[]);
    assert_ok(&o);
    let m = fx.manifest();
    assert_eq!(m.entries["opencode"].version.as_str(), "1.1.0");
    assert_eq!(
        m.entries["opencode"].source.as_deref(),
        Some("github:anomalyco/opencode@v1.1.0")
    );
    assert_eq!(m.entries["openwork-server"].version.as_str(), "0.3.0");
    assert_eq!(m.generated_at.as_str(), "2023-11-14T22:13:20Z");
    for entry in m.entries.values() {
        assert_eq!(entry.targets.len(), 5);
        for t in entry.targets.values() {
            let d = openwrk::supply::digest::hash_file(&fx.out().join(t.asset.as_str())).unwrap();
            assert_eq!((d.sha256.as_str(), d.size), (t.sha256.as_str(), t.size));
        }
    }
    validate_schema(&fx.out().join("openwrk-sidecars.json"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&fx.out()),
            0o755,
            "dist/ is publishable whatever the umask"
        );
        assert_eq!(mode(&fx.out().join("SHA256SUMS")), 0o644);
    }

    // SHA256SUMS is what sha256sum -c accepts.
    let sums = std::fs::read_to_string(fx.out().join("SHA256SUMS")).unwrap();
    assert_eq!(
        sums.lines().count(),
        std::fs::read_dir(fx.out()).unwrap().count() - 1
    );
    if let Ok(check) = Command::new("sha256sum")
        .arg("-c")
        .arg("--quiet")
        .arg("SHA256SUMS")
        .current_dir(fx.out())
        .output()
    {
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
    }

    // Bundled archive for the host target only; the others are skipped with a warning.
    let host = fixtures::host_target();
    let ext = if host.starts_with("windows") {
        "zip"
    } else {
        "tar.gz"
    };
    let archive = fx
        .out()
        .join(format!("openwrk-{}-{host}.{ext}", openwrk::VERSION));
    assert!(archive.is_file());
    let err = stderr(&o);
    assert!(
        err.contains("skipping the bundled archive for darwin-arm64"),
        "{err}"
    );
    if ext == "tar.gz" {
        let mut names: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&archive).unwrap(),
        ))
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
        names.sort();
        let top = format!("openwrk-{}-{host}", openwrk::VERSION);
        for want in [
            "openwrk",
            "openwrk-sidecars.json",
            "sidecars/opencode",
            "sidecars/openwork-server",
            "sidecars/owpenbot",
        ] {
            assert!(names.contains(&format!("{top}/{want}")), "{names:?}");
        }
    }
    // The summary table names every sidecar and target.
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("opencode") && table.contains("windows-x64") && table.contains("1.1.0"),
        "{table}"
    );
}

#[test]
fn pinned_versions_with_and_without_v() {
    let fx = Fx::new(&["v1.0.0", "v1.1.0"], &[]);
    for (pin, want) in [("1.0.0", "1.0.0"), ("v1.0.0", "1.0.0"), ("latest", "1.1.0")] {
        let o = fx.bundle(
            &["--mode", "download", "--targets", "linux-x64"],
            &[("OPENCODE_VERSION", pin)],
        );
        assert_ok(&o);
        assert_eq!(
            fx.manifest().entries["opencode"].version.as_str(),
            want,
            "pin {pin}"
        );
    }
}

#[test]
fn nonexistent_and_malformed_versions() {
    let fx = Fx::new(&["v1.0.0", "v1.1.0", "v2.0.0"], &[]);
    let o = fx.bundle(&[], &[("OPENCODE_VERSION", "1.0.5")]);
    assert_fails_with(&o, &["has no release 1.0.5", "v1.0.0, v1.1.0, v2.0.0"]);
    fx.assert_nothing_written();
    let o = fx.bundle(&[], &[("OPENCODE_VERSION", "1.x")]);
    assert_fails_with(&o, &["`1.x`", "v1.2.3", "latest"]);
    fx.assert_nothing_written();
}

#[test]
fn prereleases_never_count_as_latest() {
    let fx = Fx::new(&["v1.0.0"], &["v2.0.0-rc.1"]);
    // Without the latest endpoint the bundler lists releases itself.
    fx.host
        .faults()
        .no_latest_endpoint
        .store(true, Ordering::SeqCst);
    let o = fx.bundle(&["--mode", "download", "--targets", "linux-x64"], &[]);
    assert_ok(&o);
    assert_eq!(fx.manifest().entries["opencode"].version.as_str(), "1.0.0");
}

#[test]
fn rate_limit_says_when_it_resets() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    fx.host.faults().rate_limited.store(true, Ordering::SeqCst);
    let o = fx.bundle(&[], &[]);
    assert_fails_with(
        &o,
        &[
            "rate limit",
            "resets at",
            "in 17 minutes",
            "GITHUB_TOKEN",
            "OPENCODE_VERSION",
        ],
    );
    fx.assert_nothing_written();
}

#[test]
fn api_rate_limits_that_reset_soon_are_waited_out() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    let faults = fx.host.faults();
    faults.too_many_requests.store(1, Ordering::SeqCst);
    *faults.retry_after.lock().unwrap() = Some("1".into());
    let started = std::time::Instant::now();
    let o = fx.bundle(&["--targets", "linux-x64", "--mode", "download"], &[]);
    assert_ok(&o);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(stderr(&o).contains("waiting 1 s"), "{}", stderr(&o));
    // Ten minutes away: fail at once (exit 4), naming when.
    let fx = Fx::new(&["v1.0.0"], &[]);
    let faults = fx.host.faults();
    faults.too_many_requests.store(100, Ordering::SeqCst);
    faults.ratelimit_reset_in.store(600, Ordering::SeqCst);
    let o = fx.bundle(&[], &[]);
    assert_fails_with(&o, &["rate limit", "(in 10 minutes)"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(fx.host.requests(), 1, "{:?}", fx.host.request_log());
}

#[test]
fn bundling_over_https_needs_the_ca_and_goes_through_the_proxy() {
    // The host's URLs (API and downloads) name a host only the proxy resolves.
    let fx = Fx::on(ReleaseHost::start_tls_proxied(), &["v1.0.0"], &[]);
    let proxy = openwrk_test_support::proxy::ForwardProxy::start();
    let ca = fx.tmp.path().join("ca.pem");
    std::fs::write(&ca, fx.host.ca_pem().unwrap()).unwrap();
    let args = ["--targets", "linux-x64,darwin-x64", "--mode", "download"];
    let o = fx.bundle(&args, &[("HTTPS_PROXY", &proxy.url())]);
    assert_fails_with(&o, &["TLS certificate", "OPENWRK_CA_BUNDLE"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    fx.assert_nothing_written();
    let o = fx.bundle(
        &args,
        &[
            ("HTTPS_PROXY", &proxy.url()),
            ("OPENWRK_CA_BUNDLE", ca.to_str().unwrap()),
        ],
    );
    assert_ok(&o);
    let log = fx.host.request_log();
    assert!(log.iter().any(|l| l.contains("/api/repos/")), "{log:?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("/releases/download/"))
            .count(),
        2,
        "{log:?}"
    );
    assert!(proxy.requests() >= 1);
}

#[test]
fn every_api_call_and_download_goes_through_an_http_proxy() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    let proxy = openwrk_test_support::proxy::ForwardProxy::start();
    let o = fx.bundle(
        &["--targets", "linux-x64", "--mode", "download"],
        &[("HTTP_PROXY", &proxy.url()), ("http_proxy", &proxy.url())],
    );
    assert_ok(&o);
    assert!(fx.host.requests() >= 2, "{:?}", fx.host.request_log());
    assert_eq!(
        proxy.requests(),
        fx.host.requests(),
        "not every request went through the proxy: {:?}",
        fx.host.request_log()
    );
}

#[test]
fn token_is_sent_and_never_printed() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    let o = fx.bundle(
        &["--mode", "download", "--targets", "linux-x64"],
        &[("GH_TOKEN", "sekrit-token-123")],
    );
    assert_ok(&o);
    let log = fx.host.request_log();
    assert!(
        log.iter()
            .any(|l| l.contains("/api/") && l.ends_with("[auth]")),
        "{log:?}"
    );
    let all = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(!all.contains("sekrit-token-123"));
}

#[test]
fn digest_mismatch_is_a_hard_error() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    fx.host.faults().wrong_digest.store(true, Ordering::SeqCst);
    let o = fx.bundle(&["--targets", "linux-x64"], &[]);
    let err = assert_fails_with(
        &o,
        &[
            "sha256 mismatch for opencode-linux-x64.tar.gz",
            "expected: 0000000000",
            "actual:",
        ],
    );
    assert!(
        err.contains("/releases/download/v1.0.0/opencode-linux-x64.tar.gz"),
        "{err}"
    );
    fx.assert_nothing_written();
}

#[test]
fn missing_digest_is_computed_and_noted() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    fx.host.faults().no_digest.store(true, Ordering::SeqCst);
    let o = fx.bundle(&["--mode", "download", "--targets", "linux-x64"], &[]);
    assert_ok(&o);
    assert!(stderr(&o).contains("GitHub gives no digest for opencode-linux-x64.tar.gz"));
}

#[test]
fn failing_and_truncated_downloads_are_retried_and_resumed() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    fx.host.faults().fail_downloads.store(2, Ordering::SeqCst);
    fx.host
        .faults()
        .truncate_downloads
        .store(1, Ordering::SeqCst);
    let o = fx.bundle(
        &[
            "--mode",
            "download",
            "--targets",
            "linux-x64",
            "--jobs",
            "1",
        ],
        &[],
    );
    assert_ok(&o);
    let downloads: Vec<String> = fx
        .host
        .request_log()
        .into_iter()
        .filter(|l| l.contains("/releases/download/"))
        .collect();
    assert_eq!(downloads.len(), 4, "{downloads:?}");
    assert!(
        downloads[3].contains("bytes="),
        "the retry after truncation resumes: {downloads:?}"
    );

    // Without Range support the retry starts over and still verifies.
    let fx = Fx::new(&["v1.0.0"], &[]);
    fx.host.faults().no_range.store(true, Ordering::SeqCst);
    fx.host
        .faults()
        .truncate_downloads
        .store(1, Ordering::SeqCst);
    let o = fx.bundle(&["--mode", "download", "--targets", "linux-x64"], &[]);
    assert_ok(&o);
    let log = fx.host.request_log();
    assert!(log.iter().all(|l| !l.contains("bytes=")), "{log:?}");
}

#[test]
fn truncation_after_all_retries_fails_cleanly() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    fx.host
        .faults()
        .truncate_downloads
        .store(1000, Ordering::SeqCst);
    let o = fx.bundle(&["--targets", "linux-x64"], &[]);
    assert_fails_with(
        &o,
        &["opencode-linux-x64.tar.gz", "cut short", "after 5 attempts"],
    );
    fx.assert_nothing_written();
}

#[test]
fn github_unreachable() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = fx.bundle(
        &[],
        &[("OPENWRK_GITHUB_API_URL", &format!("http://{closed}"))],
    );
    assert_fails_with(&o, &["could not reach the GitHub API", &closed.to_string()]);
    fx.assert_nothing_written();
}

#[test]
fn missing_asset_names_what_exists() {
    let fx = Fx::new(&[], &[]);
    let dir = fx.tmp.path().join("partial");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rel = fixtures::opencode_release(&dir, "v1.0.0", None, 0).unwrap();
    rel.assets.retain(|a| !a.name.contains("darwin-x64"));
    fx.host.add_release(REPO, rel);
    let o = fx.bundle(&[], &[]);
    assert_fails_with(
        &o,
        &[
            "has no asset opencode-darwin-x64.zip",
            "opencode-linux-x64.tar.gz",
        ],
    );
    fx.assert_nothing_written();
}

#[test]
fn unsafe_archives_are_refused() {
    let cases: Vec<(&str, Vec<(&str, Entry)>)> = vec![
        (
            "path contains `..`",
            vec![
                ("../evil", Entry::Bytes(b"x")),
                ("opencode", Entry::Bytes(b"x")),
            ],
        ),
        (
            "absolute path",
            vec![
                ("/tmp/evil", Entry::Bytes(b"x")),
                ("opencode", Entry::Bytes(b"x")),
            ],
        ),
        (
            "link points",
            vec![("opencode", Entry::Symlink("../../../etc/passwd"))],
        ),
        (
            "path contains `..`",
            vec![("opencode", Entry::Hardlink("../outside"))],
        ),
    ];
    for (want, entries) in cases {
        let fx = Fx::new(&[], &[]);
        let asset = fx.tmp.path().join("opencode-linux-x64.tar.gz");
        fixtures::tar_gz(&asset, &entries).unwrap();
        fx.host.add_release(
            REPO,
            FakeRelease::new(
                "v1.0.0",
                vec![FakeAsset {
                    name: "opencode-linux-x64.tar.gz".into(),
                    path: asset,
                }],
            ),
        );
        let o = fx.bundle(&["--targets", "linux-x64"], &[]);
        assert_fails_with(&o, &["unsafe entry", want]);
        // An unsafe archive entry is a verification error (SPEC §9).
        assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
        fx.assert_nothing_written();
    }
    // zip-slip and a zip symlink escaping the folder.
    for (entries, want) in [
        (
            vec![
                ("../../evil", Entry::Bytes(b"x")),
                ("opencode", Entry::Bytes(b"x")),
            ],
            "path contains `..`",
        ),
        (
            vec![("opencode", Entry::Symlink("/etc/passwd"))],
            "absolute path",
        ),
    ] {
        let fx = Fx::new(&[], &[]);
        let asset = fx.tmp.path().join("opencode-darwin-x64.zip");
        fixtures::zip(&asset, &entries).unwrap();
        fx.host.add_release(
            REPO,
            FakeRelease::new(
                "v1.0.0",
                vec![FakeAsset {
                    name: "opencode-darwin-x64.zip".into(),
                    path: asset,
                }],
            ),
        );
        let o = fx.bundle(&["--targets", "darwin-x64"], &[]);
        assert_fails_with(&o, &["unsafe entry", want]);
        assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
        fx.assert_nothing_written();
    }
}

/// A pid that belonged to a process that has exited.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_killed_bundlers_leftovers_are_removed_by_the_next_run() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    let parent = fx.out().parent().unwrap().to_path_buf();
    let dead = dead_pid();
    let stale = [
        format!(".dist-work-{dead}-abc123"),
        format!(".dist-staging-{dead}-def456"),
        // Named before the pid was part of the name.
        ".dist-work-Xq3rT9".to_string(),
    ];
    // A running bundler's directory (this test process) stays.
    let live = format!(".dist-work-{}-live", std::process::id());
    for d in stale.iter().chain([&live]) {
        std::fs::create_dir_all(parent.join(d).join("bin")).unwrap();
        std::fs::write(parent.join(d).join("bin/big"), b"x").unwrap();
    }
    let o = fx.bundle(&["--targets", "linux-x64", "--mode", "download"], &[]);
    assert_ok(&o);
    for d in &stale {
        assert!(!parent.join(d).exists(), "{d} was left:\n{}", stderr(&o));
    }
    assert!(stderr(&o).contains("no longer running"), "{}", stderr(&o));
    assert!(parent.join(&live).exists());
    std::fs::remove_dir_all(parent.join(&live)).unwrap();
    let left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["dist".to_string()]);
}

#[cfg(unix)]
#[test]
fn sigint_exits_130_and_leaves_no_work_dirs() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    // A dripping download keeps the bundler busy until the signal arrives.
    fx.host.faults().drip_ms.store(50, Ordering::SeqCst);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("bundle")
        .arg("--out")
        .arg(fx.out())
        .arg("--prebuilt")
        .arg(&fx.prebuilt)
        .arg("--openwrk-bin-dir")
        .arg(&fx.bins)
        .args(["--targets", "linux-x64", "--mode", "download"])
        .env("OPENWRK_GITHUB_API_URL", fx.host.api_url())
        .env_remove("GITHUB_TOKEN")
        .env_remove("GH_TOKEN")
        .env_remove("OPENCODE_VERSION")
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let parent = fx.out().parent().unwrap().to_path_buf();
    // Wait until it has created its work directories.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&parent).map_or(0, |d| d.count()) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no work dirs appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn missing_prebuilt_file_and_unknown_target() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    std::fs::remove_file(fx.prebuilt.join("owpenbot-darwin-arm64")).unwrap();
    let o = fx.bundle(&[], &[]);
    assert_fails_with(&o, &["missing prebuilt file", "owpenbot-darwin-arm64"]);
    fx.assert_nothing_written();

    let o = fx.bundle(&["--targets", "linux-x64,plan9-mips"], &[]);
    assert_fails_with(
        &o,
        &[
            "unknown target `plan9-mips`",
            "linux-x64, linux-arm64, darwin-x64, darwin-arm64, windows-x64",
        ],
    );
    fx.assert_nothing_written();
}

#[test]
fn two_runs_are_byte_identical_and_replace_dist_atomically() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    assert_ok(&fx.bundle(&[], &[]));
    let first = fx.tmp.path().join("first");
    std::fs::rename(fx.out(), &first).unwrap();
    // An old dist with a stale file is replaced as a whole.
    std::fs::create_dir_all(fx.out()).unwrap();
    std::fs::write(fx.out().join("stale"), "old").unwrap();
    assert_ok(&fx.bundle(&[], &[("TZ", "Asia/Kathmandu"), ("LC_ALL", "C")]));
    assert!(!fx.out().join("stale").exists());
    let mut names: Vec<_> = std::fs::read_dir(&first)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let mut second: Vec<_> = std::fs::read_dir(fx.out())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    second.sort();
    assert_eq!(names, second);
    for name in names {
        let a = std::fs::read(first.join(&name)).unwrap();
        let b = std::fs::read(fx.out().join(&name)).unwrap();
        assert!(a == b, "{name:?} differs between runs");
    }

    // A failing run leaves the previous dist untouched.
    fx.host.faults().wrong_digest.store(true, Ordering::SeqCst);
    assert!(!fx.bundle(&[], &[]).status.success());
    assert!(fx.out().join("openwrk-sidecars.json").is_file());
}

#[test]
fn sidecars_toml_pins_no_opencode_version() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/sidecars.toml"),
    )
    .unwrap();
    for (n, line) in text.lines().enumerate() {
        let code = line.split('#').next().unwrap();
        let has_version = code
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .any(|tok| {
                tok.split('.')
                    .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                    .count()
                    >= 2
            });
        assert!(
            !has_version,
            "manifests/sidecars.toml:{}: looks like a pinned version: {line}",
            n + 1
        );
        assert!(
            !code.trim_start().starts_with("version"),
            "manifests/sidecars.toml:{}: pins a version: {line}",
            n + 1
        );
    }
}

fn xtask(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .env_remove("OPENWRK_MANIFEST_PUBKEY")
        .env_remove("OPENWRK_SIGNING_KEY")
        .env_remove("OPENWRK_SIGNING_KEY_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn signed_bundles_and_verify_dist() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    let prefix = fx.tmp.path().join("release-key");
    assert_ok(&xtask(&["keygen", "--out", prefix.to_str().unwrap()], &[]));
    let (key, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    assert_ok(&fx.bundle(&["--sign", key.to_str().unwrap()], &[]));
    let out = fx.out();
    assert!(out.join("openwrk-sidecars.json.minisig").is_file());
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert!(
        sums.contains("  openwrk-sidecars.json.minisig\n"),
        "SHA256SUMS lists the signature: {sums}"
    );
    // The signature is minisign's format: the minisign crate itself accepts it.
    let pk = minisign::PublicKey::from_file(&public).unwrap();
    let sig = minisign::SignatureBox::from_file(out.join("openwrk-sidecars.json.minisig")).unwrap();
    let manifest = std::fs::read(out.join("openwrk-sidecars.json")).unwrap();
    minisign::verify(
        &pk,
        &sig,
        std::io::Cursor::new(&manifest),
        true,
        false,
        false,
    )
    .unwrap();
    // Signed twice from the same inputs and key: byte-identical, archives included.
    let first = fx.tmp.path().join("first");
    copy_dir(&out, &first);
    assert_ok(&fx.bundle(&["--sign", key.to_str().unwrap()], &[]));
    for e in std::fs::read_dir(&first).unwrap() {
        let name = e.unwrap().file_name();
        assert_eq!(
            std::fs::read(first.join(&name)).unwrap(),
            std::fs::read(out.join(&name)).unwrap(),
            "{name:?} differs between two signed runs"
        );
    }

    let verify = |dir: &str, key: &Path| {
        xtask(
            &["verify-dist", dir, "--pubkey", key.to_str().unwrap()],
            &[],
        )
    };
    let o = verify(out.to_str().unwrap(), &public);
    assert_ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("signature valid"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // The same dist served as a mirror.
    let mirror = ReleaseHost::mirror(&out);
    assert_ok(&verify(&mirror.url(), &public));
    drop(mirror);

    // Incomplete: an asset is gone.
    let broken = fx.tmp.path().join("incomplete");
    copy_dir(&out, &broken);
    std::fs::remove_file(broken.join("owpenbot-darwin-x64")).unwrap();
    let o = verify(broken.to_str().unwrap(), &public);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("owpenbot-darwin-x64 (owpenbot darwin-x64) is missing"));

    // Tampered: one byte of an asset.
    let tampered = fx.tmp.path().join("tampered");
    copy_dir(&out, &tampered);
    let asset = tampered.join("opencode-linux-arm64.tar.gz");
    let mut bytes = std::fs::read(&asset).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&asset, bytes).unwrap();
    let o = verify(tampered.to_str().unwrap(), &public);
    assert!(!o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("opencode-linux-arm64.tar.gz (opencode linux-arm64): expected sha256"),
        "{text}"
    );
    assert!(
        text.contains("opencode-linux-arm64.tar.gz: SHA256SUMS says"),
        "{text}"
    );

    // A tampered manifest fails its signature; another key fails too.
    let forged = fx.tmp.path().join("forged");
    copy_dir(&out, &forged);
    let m = std::fs::read_to_string(forged.join("openwrk-sidecars.json")).unwrap();
    std::fs::write(
        forged.join("openwrk-sidecars.json"),
        m.replace("\"0.3.0\"", "\"0.3.1\""),
    )
    .unwrap();
    let o = verify(forged.to_str().unwrap(), &public);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stdout).contains("signature INVALID")
    );
    let other = fx.tmp.path().join("other-key");
    assert_ok(&xtask(&["keygen", "--out", other.to_str().unwrap()], &[]));
    let o = verify(out.to_str().unwrap(), &other.with_extension("pub"));
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stdout).contains("different key"));

    // Missing signature while a key is required.
    std::fs::remove_file(tampered.join("openwrk-sidecars.json.minisig")).unwrap();
    let o = verify(tampered.to_str().unwrap(), &public);
    assert!(String::from_utf8_lossy(&o.stdout).contains("signature MISSING"));
}

#[test]
fn encrypted_signing_key_needs_its_password() {
    let fx = Fx::new(&["v1.0.0"], &[]);
    let prefix = fx.tmp.path().join("enc");
    assert_ok(&xtask(
        &["keygen", "--out", prefix.to_str().unwrap()],
        &[("OPENWRK_SIGNING_KEY_PASSWORD", "pw")],
    ));
    let key = prefix.with_extension("key");
    let o = fx.bundle(
        &["--sign", key.to_str().unwrap()],
        &[("OPENWRK_SIGNING_KEY_PASSWORD", "")],
    );
    assert_fails_with(&o, &["encrypted", "OPENWRK_SIGNING_KEY_PASSWORD"]);
    fx.assert_nothing_written();
    // The key in an env var (CI secret), with its password.
    let text = std::fs::read_to_string(&key).unwrap();
    let o = fx.bundle(
        &["--mode", "download", "--targets", "linux-x64"],
        &[
            ("OPENWRK_SIGNING_KEY", &text),
            ("OPENWRK_SIGNING_KEY_PASSWORD", "pw"),
        ],
    );
    assert_ok(&o);
    assert!(fx.out().join("openwrk-sidecars.json.minisig").is_file());
}
