//! `--help` of the commands an operator reads most, checked as snapshots
//! (tests/snapshots/), so every change of wording, grouping or default shows
//! up in review. Run with `INSTA_UPDATE=always` to accept a deliberate change
//! (or `cargo insta review`), then commit the .snap files.

use std::process::Command;

/// The help text with a hermetic environment: clap shows the value of every
/// flag's env var that is set, so nothing of the caller's may leak in.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_openwrk"))
        .env_clear()
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn top_level_help() {
    insta::assert_snapshot!(help(&["--help"]));
}

#[test]
fn serve_help_groups_flags_under_headings() {
    let text = help(&["serve", "--help"]);
    // The command's own headings come before the global ones.
    let order = [
        "\nSidecars:\n",
        "\nOpenCode:\n",
        "\nOpenWork server:\n",
        "\nOwpenbot (upstream: opencodeRouter):\n",
        "\nLogging:\n",
        "\nNetwork:\n",
        "\nGlobal: where sidecars come from:\n",
        "\nGlobal: output and logging:\n",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|h| text.find(h).unwrap_or_else(|| panic!("no heading {h:?}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    insta::assert_snapshot!(text);
}

#[test]
fn serve_short_help() {
    insta::assert_snapshot!(help(&["serve", "-h"]));
}

#[test]
fn daemon_run_help() {
    insta::assert_snapshot!(help(&["daemon", "run", "--help"]));
}

#[test]
fn workspace_help() {
    insta::assert_snapshot!(help(&["workspace", "--help"]));
}
