//! `cargo xtask repro-check` (the real binary) against the loopback release
//! host. The stand-ins are small marker files, so nothing is built and nothing
//! leaves 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use openwrk_test_support::fixtures;

/// A `--standin-bins` directory of marker "binaries" (the check compares bytes;
/// nothing is run).
fn standin_bins(dir: &Path) -> PathBuf {
    let bins = dir.join("standins");
    std::fs::create_dir_all(&bins).unwrap();
    for name in [
        "standin-opencode",
        "standin-openwork-server",
        "standin-owpenbot",
        "openwrk",
    ] {
        let file = bins.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        fixtures::write_binary(&file, name, None, 0).unwrap();
    }
    bins
}

/// `openwrk-<target>[.exe]` for all five targets, so every bundled archive
/// (tar.gz and zip) is written and compared.
fn openwrk_bins(dir: &Path) -> PathBuf {
    let bins = dir.join("openwrk-bin");
    std::fs::create_dir_all(&bins).unwrap();
    for t in fixtures::TARGETS {
        let exe = if t.starts_with("windows") { ".exe" } else { "" };
        fixtures::write_binary(
            &bins.join(format!("openwrk-{t}{exe}")),
            &format!("openwrk {t}"),
            None,
            0,
        )
        .unwrap();
    }
    bins
}

fn xtask(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("repro-check")
        .args(args)
        .env_remove("OPENCODE_VERSION")
        .env_remove("OPENWRK_STANDIN_BINS")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn repro_check_passes_on_the_loopback_host() {
    let tmp = tempfile::tempdir().unwrap();
    let standins = standin_bins(tmp.path());
    let bins = openwrk_bins(tmp.path());
    let out = tmp.path().join("kept").join("dist");
    let o = xtask(
        &[
            "--standin-bins",
            standins.to_str().unwrap(),
            "--openwrk-bin-dir",
            bins.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    let (stdout, stderr) = text(&o);
    assert!(
        o.status.success(),
        "repro-check failed:\n{stdout}\n{stderr}"
    );

    // 3 sidecars × 5 targets, 5 bundled archives, the manifest, its
    // signature (signed with a throwaway key) and SHA256SUMS.
    let files = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(files, 23, "{stdout}");
    assert!(out.join("openwrk-sidecars.json.minisig").is_file());
    assert!(
        stdout.contains(&format!("byte-identical: {files} files compared")),
        "{stdout}"
    );
    for want in [
        "SOURCE_DATE_EPOCH=1700000000",
        "TZ=UTC",
        "TZ=Asia/Kathmandu",
        "LC_ALL=C.UTF-8",
        "loopback release host http://127.0.0.1:",
    ] {
        assert!(stdout.contains(want), "stdout lacks {want:?}:\n{stdout}");
    }
    if cfg!(unix) {
        // The second run had another umask, and dist/ modes did not follow it.
        assert!(
            stdout.contains("umask 077") && stdout.contains("SHA256SUMS 0644 vs 0644"),
            "{stdout}"
        );
    }
    // The kept dist is a complete one: manifest, sums, a zip and a tar.gz bundle.
    let version = openwrk::VERSION;
    for name in [
        "openwrk-sidecars.json".to_string(),
        "SHA256SUMS".to_string(),
        format!("openwrk-{version}-windows-x64.zip"),
        format!("openwrk-{version}-linux-arm64.tar.gz"),
    ] {
        assert!(out.join(&name).is_file(), "{name} missing from {out:?}");
    }
    // Both runs' temporary directories are gone; only the kept dist remains.
    let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("dist")]);
}

#[test]
fn real_inputs_need_a_pinned_opencode_and_an_openwrk_bin_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let prebuilt = fixtures::prebuilt_dir(&tmp.path().join("prebuilt"), "0.3.0", &[], 0).unwrap();
    let bins = openwrk_bins(tmp.path());
    let prebuilt = prebuilt.to_str().unwrap();
    let bins = bins.to_str().unwrap();

    for env in [vec![], vec![("OPENCODE_VERSION", "latest")]] {
        let o = xtask(&["--prebuilt", prebuilt, "--openwrk-bin-dir", bins], &env);
        let (stdout, stderr) = text(&o);
        assert!(!o.status.success(), "{stdout}\n{stderr}");
        assert!(
            stderr.contains("pinned OpenCode version")
                || stderr.contains("refuses OPENCODE_VERSION"),
            "{stderr}"
        );
        assert!(stderr.contains("hint: pin it"), "{stderr}");
    }

    let o = xtask(&["--prebuilt", prebuilt], &[("OPENCODE_VERSION", "v1.2.3")]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("--prebuilt needs --openwrk-bin-dir") && stderr.contains("hint:"),
        "{stderr}"
    );
}
