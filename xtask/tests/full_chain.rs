//! The whole chain with the real OpenCode, nothing stubbed in our code: the
//! npm OpenCode binary packed as a release asset (`.ci/run` packs it), served
//! by the loopback GitHub host; `cargo xtask bundle` resolves, downloads,
//! extracts, hashes and signs it into `dist/`; that `dist/` is served as a
//! mirror; and `openwrk serve --check --check-events --opencode-source
//! downloaded` downloads, extracts, verifies and runs it. Under `CI=true` the
//! test fails when the real OpenCode is missing.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use openwrk_test_support::fixtures::{self, Entry};
use openwrk_test_support::{FakeAsset, FakeRelease, ReleaseHost};

const ASSET: &str = "opencode-linux-x64.tar.gz";

/// The release-shaped archive: `.ci/run`'s (`OPENWRK_TEST_OPENCODE_ARCHIVE`),
/// else packed here from the binary.
fn release_archive(bin: &Path, work: &Path) -> PathBuf {
    if let Some(a) = std::env::var_os("OPENWRK_TEST_OPENCODE_ARCHIVE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        return a;
    }
    let archive = work.join(ASSET);
    fixtures::tar_gz(&archive, &[("opencode", Entry::File(bin))]).unwrap();
    archive
}

fn version_of(bin: &Path) -> String {
    let out = Command::new(bin).arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        semver::Version::parse(&v).is_ok(),
        "`{} --version` printed {v:?}",
        bin.display()
    );
    v
}

fn openwrk_bin() -> PathBuf {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let bin = openwrk_test_support::target_dir()
        .join(profile)
        .join("openwrk");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo test --workspace` builds it",
        bin.display()
    );
    bin
}

#[test]
fn the_real_opencode_goes_from_a_release_through_the_bundler_and_a_mirror_to_a_healthy_run() {
    let Some(real) = openwrk_test_support::real_opencode() else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("openwrk-chain-")
        .tempdir()
        .unwrap();
    let t = tmp.path();
    let version = version_of(&real);

    // A GitHub release of the real OpenCode, on loopback.
    let github = ReleaseHost::start();
    github.add_release(
        "anomalyco/opencode",
        FakeRelease::new(
            &format!("v{version}"),
            vec![FakeAsset {
                name: ASSET.into(),
                path: release_archive(&real, t),
            }],
        ),
    );
    let prebuilt = fixtures::prebuilt_dir(
        &t.join("prebuilt"),
        "0.3.0",
        &[
            (
                "openwork-server",
                &openwrk_test_support::standin("standin-openwork-server"),
            ),
            (
                "owpenbot",
                &openwrk_test_support::standin("standin-owpenbot"),
            ),
        ],
        0,
    )
    .unwrap();

    // The bundler, signing with a fresh key.
    let xtask = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("OPENWRK_GITHUB_API_URL", github.api_url())
            .env("OPENCODE_VERSION", &version)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("GITHUB_TOKEN")
            .env_remove("GH_TOKEN")
            .env_remove("OPENWRK_SIGNING_KEY")
            .env_remove("OPENWRK_SIGNING_KEY_FILE")
            .env_remove("OPENWRK_SIGNING_KEY_PASSWORD")
            .output()
            .unwrap()
    };
    let key = t.join("release-key");
    let o = xtask(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dist = t.join("dist");
    let o = xtask(&[
        "bundle",
        "--out",
        dist.to_str().unwrap(),
        "--targets",
        "linux-x64",
        "--mode",
        "download",
        "--prebuilt",
        prebuilt.to_str().unwrap(),
        "--sign",
        key.with_extension("key").to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "bundle failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dist.join("openwrk-sidecars.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["entries"]["opencode"]["version"], version.as_str());

    // The dist/ as a mirror; openwrk downloads, extracts, verifies and runs it.
    let mirror = ReleaseHost::mirror(&dist);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let public = public.lines().nth(1).unwrap().trim().to_string();
    let ws = t.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let data = t.join("data");
    let mut serve = Command::new(openwrk_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("OPENWRK_") || k.starts_with("OPENCODE_") || k.starts_with("STANDIN_") {
            serve.env_remove(k);
        }
    }
    serve
        .args([
            "serve",
            "--check",
            "--check-events",
            "--verbose",
            "--opencode-source",
            "downloaded",
            "--sidecar-source",
            "downloaded",
            "--openwork-port",
            "0",
            "--color",
            "never",
            "--startup-timeout",
            "120",
        ])
        .arg("--sidecar-base-url")
        .arg(mirror.url())
        .arg("--manifest-pubkey")
        .arg(&public)
        .arg("--data-dir")
        .arg(&data)
        .arg("--workspace")
        .arg(&ws)
        .stdin(Stdio::null());
    openwrk_test_support::private_opencode_env(&mut serve, &t.join("home"));
    let o = serve.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "serve --check failed:\n{stderr}");
    assert!(stdout.contains("openwrk is ready"), "{stdout}");
    assert!(
        stdout.contains(&format!("(opencode {version})")),
        "the real OpenCode did not answer: {stdout}"
    );
    assert!(
        stderr.contains(&format!("opencode {version} linux-x64: downloaded"))
            && stderr.contains("size and sha256 checked"),
        "{stderr}"
    );
    assert!(
        stderr.contains("first event `server.connected`"),
        "{stderr}"
    );
    let cached = data.join(format!("sidecars/opencode/{version}/linux-x64"));
    assert!(cached.join("opencode").is_file());
    assert!(cached.join(".verified").is_file());
    // Every asset came from the mirror; GitHub served only the bundler.
    assert!(mirror.request_log().iter().any(|l| l.contains(ASSET)));
}
