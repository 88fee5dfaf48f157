//! The command line itself: version, help with env vars, completions, usage errors.

use std::process::Command;

fn openwrk(args: &[&str]) -> std::process::Output {
    let data = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_openwrk"))
        .args(args)
        .env("OPENWRK_DATA_DIR", data.path())
        .output()
        .unwrap()
}

#[test]
fn version_help_and_completions() {
    let o = openwrk(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("openwrk {}", openwrk::VERSION)
    );

    let o = openwrk(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for env in [
        "OPENWRK_DATA_DIR",
        "OPENWRK_SIDECAR_BASE_URL",
        "OPENWRK_OPENCODE_PORT",
        "OPENWRK_LOG_FORMAT",
        "OPENWRK_RUN_ID",
    ] {
        assert!(help.contains(env), "serve --help lacks {env}");
    }
    assert!(
        help.to_lowercase().contains("prefer the env var"),
        "secret flags point to their env vars"
    );

    for shell in ["bash", "zsh", "fish"] {
        let o = openwrk(&["completions", shell]);
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("openwrk"),
            "{shell}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(openwrk(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        openwrk(&["sidecars", "list", "--sidecar-source", "sometimes"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(openwrk(&["completions", "tcsh"]).status.code(), Some(2));
    let o = openwrk(&["sidecars", "fetch", "--target", "plan9-x64"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("linux-x64, linux-arm64"));
}
