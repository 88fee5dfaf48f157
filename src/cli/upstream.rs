//! Environment variables of upstream openwrk (0.11.x, `OPENWRK_…` and
//! `OPENWORK_…` names) and of its successor openwork-orchestrator, read as
//! ours when ours are unset, so an operator's existing environment keeps
//! working. clap takes one `env` per flag, so the upstream names are copied
//! to ours before the command line is parsed; precedence stays flag > our
//! variable > upstream's variable > default. The README's "Coming from
//! upstream openwrk" table lists the same pairs.

/// `(upstream name, ours)`; when several upstream names map to one of ours,
/// the first that is set wins.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    // Directories and sources.
    ("OPENWORK_DATA_DIR", "OPENWRK_DATA_DIR"),
    ("OPENWORK_SIDECAR_BASE_URL", "OPENWRK_SIDECAR_BASE_URL"),
    (
        "OPENWORK_SIDECAR_MANIFEST_URL",
        "OPENWRK_SIDECAR_MANIFEST_URL",
    ),
    ("OPENWORK_SIDECAR_SOURCE", "OPENWRK_SIDECAR_SOURCE"),
    ("OPENWORK_OPENCODE_SOURCE", "OPENWRK_OPENCODE_SOURCE"),
    ("OPENWORK_ALLOW_EXTERNAL", "OPENWRK_ALLOW_EXTERNAL"),
    // Output.
    ("OPENWORK_VERBOSE", "OPENWRK_VERBOSE"),
    ("OPENWORK_LOG_FORMAT", "OPENWRK_LOG_FORMAT"),
    ("OPENWORK_COLOR", "OPENWRK_COLOR"),
    ("OPENWORK_RUN_ID", "OPENWRK_RUN_ID"),
    // start / serve.
    ("OPENWORK_WORKSPACE", "OPENWRK_WORKSPACE"),
    ("OPENWORK_DETACH", "OPENWRK_DETACH"),
    ("OPENWORK_OPENCODE_BIN", "OPENWRK_OPENCODE_BIN"),
    ("OPENWORK_OPENCODE_BIND_HOST", "OPENWRK_OPENCODE_HOST"),
    ("OPENWORK_OPENCODE_HOST", "OPENWRK_OPENCODE_HOST"),
    ("OPENWORK_OPENCODE_PORT", "OPENWRK_OPENCODE_PORT"),
    ("OPENWORK_OPENCODE_USERNAME", "OPENWRK_OPENCODE_USERNAME"),
    ("OPENWORK_OPENCODE_PASSWORD", "OPENWRK_OPENCODE_PASSWORD"),
    ("OPENWORK_OPENCODE_AUTH", "OPENWRK_OPENCODE_AUTH"),
    ("OPENWORK_OPENCODE_LOG_LEVEL", "OPENWRK_OPENCODE_LOG_LEVEL"),
    (
        "OPENWORK_OPENCODE_HOT_RELOAD",
        "OPENWRK_OPENCODE_HOT_RELOAD",
    ),
    (
        "OPENWORK_OPENCODE_HOT_RELOAD_DEBOUNCE_MS",
        "OPENWRK_OPENCODE_HOT_RELOAD_DEBOUNCE_MS",
    ),
    (
        "OPENWORK_OPENCODE_HOT_RELOAD_COOLDOWN_MS",
        "OPENWRK_OPENCODE_HOT_RELOAD_COOLDOWN_MS",
    ),
    ("OPENWORK_SERVER_BIN", "OPENWRK_OPENWORK_SERVER_BIN"),
    ("OPENWORK_HOST", "OPENWRK_OPENWORK_HOST"),
    ("OPENWORK_PORT", "OPENWRK_OPENWORK_PORT"),
    ("OPENWORK_TOKEN", "OPENWRK_OPENWORK_TOKEN"),
    ("OPENWORK_HOST_TOKEN", "OPENWRK_HOST_TOKEN"),
    ("OPENWORK_APPROVAL_MODE", "OPENWRK_APPROVAL"),
    ("OPENWORK_APPROVAL_TIMEOUT_MS", "OPENWRK_APPROVAL_TIMEOUT"),
    ("OPENWORK_READONLY", "OPENWRK_READ_ONLY"),
    ("OPENWORK_REMOTE_ACCESS", "OPENWRK_REMOTE_ACCESS"),
    ("OPENWRK_OPENCODE_CORS", "OPENWRK_CORS"),
    ("OPENWORK_OPENCODE_CORS", "OPENWRK_CORS"),
    ("OPENWORK_CORS_ORIGINS", "OPENWRK_CORS"),
    // Owpenbot, upstream's later opencodeRouter.
    ("OPENCODE_ROUTER_BIN", "OPENWRK_OWPENBOT_BIN"),
    (
        "OPENCODE_ROUTER_HEALTH_PORT",
        "OPENWRK_OWPENBOT_HEALTH_PORT",
    ),
    (
        "OPENWRK_OPENCODE_ROUTER_REQUIRED",
        "OPENWRK_OWPENBOT_REQUIRED",
    ),
    // Sandbox.
    ("OPENWORK_SANDBOX", "OPENWRK_SANDBOX"),
    ("OPENWORK_SANDBOX_IMAGE", "OPENWRK_SANDBOX_IMAGE"),
    (
        "OPENWORK_SANDBOX_PERSIST_DIR",
        "OPENWRK_SANDBOX_PERSIST_DIR",
    ),
    ("OPENWRK_SANDBOX_MOUNT", "OPENWRK_SANDBOX_MOUNTS"),
    ("OPENWORK_SANDBOX_MOUNT", "OPENWRK_SANDBOX_MOUNTS"),
    // The daemon.
    ("OPENWORK_DAEMON_PORT", "OPENWRK_DAEMON_PORT"),
    ("OPENWORK_OPENCODE_WORKDIR", "OPENWRK_OPENCODE_WORKDIR"),
    // approvals / status.
    ("OPENWORK_URL", "OPENWRK_OPENWORK_URL"),
    ("OPENWORK_SERVER_URL", "OPENWRK_OPENWORK_URL"),
];

/// The `(ours, value)` pairs to set: for each of ours that is unset, the
/// first upstream alias that is set and not empty.
pub fn resolve(get: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for (upstream, ours) in ENV_ALIASES {
        if get(ours).is_some() || out.iter().any(|(o, _)| o == ours) {
            continue;
        }
        if let Some(v) = get(upstream).filter(|v| !v.is_empty()) {
            out.push((ours, v));
        }
    }
    out
}

/// Copies upstream's variables to ours in this process's environment. Call
/// it first thing in `main`, while no other thread runs.
pub fn apply_env_aliases() {
    for (ours, value) in resolve(|k| std::env::var(k).ok()) {
        std::env::set_var(ours, value);
    }
}

/// Values `--color` takes (its variants and their aliases).
const COLOR_VALUES: [&str; 11] = [
    "auto", "always", "never", "true", "false", "yes", "no", "on", "off", "1", "0",
];

/// Upstream's `--color` is a switch; ours also takes a value. A bare
/// `--color` followed by anything but a color value (`openwrk --color serve`)
/// becomes `--color=always`, so clap does not take the next word as its value.
pub fn normalize_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = args.into_iter().peekable();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(rest);
            break;
        }
        let bare_color = arg == "--color"
            && !rest
                .peek()
                .and_then(|next| next.to_str())
                .is_some_and(|next| COLOR_VALUES.contains(&next.to_ascii_lowercase().as_str()));
        out.push(if bare_color {
            "--color=always".into()
        } else {
            arg
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_color_switch_never_takes_the_next_word() {
        let norm = |a: &[&str]| -> Vec<String> {
            normalize_args(a.iter().map(|s| (*s).into()).collect())
                .into_iter()
                .map(|s| s.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            norm(&["openwrk", "--color", "serve"]),
            ["openwrk", "--color=always", "serve"]
        );
        assert_eq!(
            norm(&["openwrk", "serve", "--color"]),
            ["openwrk", "serve", "--color=always"]
        );
        assert_eq!(
            norm(&["openwrk", "--color", "never", "serve"]),
            ["openwrk", "--color", "never", "serve"]
        );
        assert_eq!(
            norm(&["openwrk", "x", "--", "--color", "y"]),
            ["openwrk", "x", "--", "--color", "y"]
        );
    }
    use std::collections::HashMap;

    #[test]
    fn ours_win_then_the_first_upstream_name() {
        let env: HashMap<&str, &str> = [
            ("OPENWORK_TOKEN", "up"),
            ("OPENWRK_OPENWORK_TOKEN", "ours"),
            ("OPENWRK_OPENCODE_CORS", "a"),
            ("OPENWORK_CORS_ORIGINS", "b"),
            ("OPENCODE_ROUTER_HEALTH_PORT", "7"),
            ("OPENWORK_PORT", ""),
        ]
        .into();
        let got = resolve(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(
            got,
            vec![
                ("OPENWRK_CORS", "a".to_string()),
                ("OPENWRK_OWPENBOT_HEALTH_PORT", "7".to_string()),
            ]
        );
    }

    #[test]
    fn every_alias_names_a_variable_of_ours() {
        use clap::CommandFactory;
        fn envs(cmd: &clap::Command, out: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if let Some(e) = a.get_env() {
                    out.push(e.to_string_lossy().into_owned());
                }
            }
            for sub in cmd.get_subcommands() {
                envs(sub, out);
            }
        }
        let mut cli = crate::cli::Cli::command();
        cli.build();
        let mut ours = Vec::new();
        envs(&cli, &mut ours);
        for (upstream, mine) in ENV_ALIASES {
            assert!(ours.iter().any(|o| o == mine), "{upstream} → {mine}");
        }
    }
}
