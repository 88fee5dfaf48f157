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

/// clap builds a command's arguments only when that command is parsed
/// (`cli::Lazy`); every command's help must read exactly as if the whole
/// tree had been built up front, which is how this test process builds it.
#[test]
fn every_command_reads_as_if_built_up_front() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
        let mut cmd = cmd.clone();
        out.push((path.clone(), cmd.render_long_help().to_string()));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
    }
    openwrk::cli::build_eagerly();
    let mut cli = openwrk::cli::Cli::command();
    cli.build();
    let mut expected = Vec::new();
    walk(&cli, Vec::new(), &mut expected);
    assert!(expected.len() > 20, "{}", expected.len());
    for (path, eager) in expected {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        assert_eq!(help(&args), eager, "openwrk {}", args.join(" "));
    }
}
