//! The environment inside a sandbox (SPEC §5.9): built from nothing. OpenCode
//! gets what its spawn spec sets (credentials, run id, hot-reload settings),
//! its HOME and XDG dirs in the persist dir, a fixed PATH, and from the host
//! only the variables [`passed_through`] names: locale, terminal, proxies,
//! OpenCode's own `OPENCODE_*` settings and model-provider credentials. The
//! rest of the operator's environment (tokens of other tools, `SSH_AUTH_SOCK`,
//! paths into the host HOME) stays outside.

/// Where the persist dir is mounted: OpenCode's HOME.
pub const HOME: &str = "/openwrk/home";

/// Fixed: the host's PATH may point into the host HOME.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host variables passed by exact name.
const EXACT: &[&str] = &[
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    // Amazon Bedrock, OpenCode's AWS provider.
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_BEARER_TOKEN_BEDROCK",
];

/// Host variables passed by prefix.
const PREFIXES: &[&str] = &["LC_", "OPENCODE_"];

/// Host variables passed by suffix: model providers' keys and endpoints
/// (`ANTHROPIC_API_KEY`, `OPENAI_BASE_URL`, …).
const SUFFIXES: &[&str] = &["_API_KEY", "_API_TOKEN", "_BASE_URL"];

/// Whether the host variable `name` is passed into the sandbox. openwrk's
/// own secrets (`GITHUB_TOKEN`, the signing key, `OPENWRK_*`) never are.
pub fn passed_through(name: &str) -> bool {
    if crate::host::supervise::NEVER_INHERITED.contains(&name) || name.starts_with("OPENWRK_") {
        return false;
    }
    EXACT.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || SUFFIXES
            .iter()
            .any(|s| name.len() > s.len() && name.ends_with(s))
}

/// The variables openwrk defines inside every sandbox (no secrets: these may
/// appear in argv).
pub fn fixed(shell: &str) -> Vec<(String, String)> {
    let home = |rel: &str| format!("{HOME}/{rel}");
    vec![
        ("HOME".into(), HOME.into()),
        ("XDG_CONFIG_HOME".into(), home(".config")),
        ("XDG_DATA_HOME".into(), home(".local/share")),
        ("XDG_CACHE_HOME".into(), home(".cache")),
        ("XDG_STATE_HOME".into(), home(".local/state")),
        ("PATH".into(), PATH.into()),
        ("SHELL".into(), shell.into()),
    ]
}

/// The names of the host variables to pass (set and non-empty now), sorted.
pub fn host_names() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            (passed_through(&k) && !v.is_empty()).then_some(k)
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_locale_and_proxies_pass_other_secrets_do_not() {
        for yes in [
            "ANTHROPIC_API_KEY",
            "OPENAI_BASE_URL",
            "OPENCODE_DISABLE_AUTOUPDATE",
            "LC_ALL",
            "LANG",
            "HTTPS_PROXY",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(passed_through(yes), "{yes}");
        }
        for no in [
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "OPENWRK_OPENCODE_PASSWORD",
            "OPENWRK_SIGNING_KEY",
            "SSH_AUTH_SOCK",
            "HOME",
            "PATH",
            "XDG_CONFIG_HOME",
            "KUBECONFIG",
            "AWS_PROFILE",
            "_API_KEY",
            "DOCKER_HOST",
        ] {
            assert!(!passed_through(no), "{no}");
        }
    }

    #[test]
    fn home_and_xdg_live_in_the_persist_dir() {
        let f = fixed("/bin/sh");
        for (k, v) in &f {
            if k.starts_with("XDG_") || k == "HOME" {
                assert!(v.starts_with(HOME), "{k}={v}");
            }
        }
    }
}
