//! `ci/release.sh --dry-run` end to end: openwrk from a given bin dir (no
//! release build), the stand-in sidecars from the loopback release host, the
//! checks, and no upload. A `gh` that records its calls and fails sits first on
//! PATH, to prove the dry run never calls it.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use openwrk_test_support::fixtures;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn release_dry_run_bundles_checks_and_uploads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let host = fixtures::host_target();

    // Stand-ins and openwrk as marker files: the dry run builds nothing.
    let standins = tmp.path().join("standins");
    std::fs::create_dir_all(&standins).unwrap();
    for name in [
        "standin-opencode",
        "standin-openwork-server",
        "standin-owpenbot",
        "openwrk",
    ] {
        fixtures::write_binary(&standins.join(name), name, None, 0).unwrap();
    }
    let bin_dir = tmp.path().join("openwrk-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    fixtures::write_binary(&bin_dir.join(format!("openwrk-{host}")), "openwrk", None, 0).unwrap();

    let fake = tmp.path().join("fake-bin");
    std::fs::create_dir_all(&fake).unwrap();
    let gh_log = tmp.path().join("gh-called");
    std::fs::write(
        fake.join("gh"),
        format!(
            "#!/bin/sh\necho \"gh $*\" >> '{}'\necho 'fake gh: must not be called' >&2\nexit 1\n",
            gh_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(fake.join("gh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let out = tmp.path().join("dist");
    let o = Command::new("bash")
        .arg(root().join("ci/release.sh"))
        .arg("--dry-run")
        .arg("--version")
        .arg(format!("openwrk-v{}", openwrk::VERSION))
        .arg("--out")
        .arg(&out)
        .env("PATH", path)
        .env("XTASK", env!("CARGO_BIN_EXE_xtask"))
        .env("OPENWRK_BIN_DIR", &bin_dir)
        .env("OPENWRK_STANDIN_BINS", &standins)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("OPENWRK_PREBUILT_DIR")
        .env_remove("OPENCODE_VERSION")
        .env_remove("GH_TOKEN")
        .env_remove("GITHUB_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "release.sh --dry-run failed:\n{stdout}\n{stderr}"
    );

    assert!(out.join("openwrk-sidecars.json").is_file());
    assert!(out.join("SHA256SUMS").is_file());
    let ext = if host.starts_with("windows") {
        "zip"
    } else {
        "tar.gz"
    };
    assert!(out
        .join(format!("openwrk-{}-{host}.{ext}", openwrk::VERSION))
        .is_file());
    let files = std::fs::read_dir(&out).unwrap().count();
    assert!(
        stdout.contains(&format!(
            "dry run: would upload {files} files to the GitHub release openwrk-v{}",
            openwrk::VERSION
        )),
        "{stdout}"
    );
    assert!(stdout.contains("dry run: nothing was uploaded"), "{stdout}");
    assert!(stdout.contains("byte-identical"), "{stdout}");
    assert!(
        !gh_log.exists(),
        "the dry run called gh: {}",
        std::fs::read_to_string(&gh_log).unwrap_or_default()
    );
}

#[test]
fn release_refuses_a_version_that_is_not_cargo_toml_s() {
    let o = Command::new("bash")
        .arg(root().join("ci/release.sh"))
        .args(["--dry-run", "--version", "99.0.0"])
        .env("XTASK", "false")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--version 99.0.0 does not match Cargo.toml's version")
            && stderr.contains("hint:"),
        "{stderr}"
    );
}
