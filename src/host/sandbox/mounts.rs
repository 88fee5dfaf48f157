//! Extra sandbox mounts (`--sandbox-mount hostPath:containerPath[:ro|rw]`,
//! SPEC §5.9): parsed, canonicalized, and accepted only when the host path
//! lies under an entry of the allowlist file and matches none of the
//! built-in blocked patterns, neither in its own path nor anywhere in the
//! subtree it would expose.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// Where the sandbox keeps what it adds; nothing else may be mounted there.
pub const RESERVED: &str = "/openwrk";

/// Path components that name credentials, matched exactly (`.config/gcloud`
/// is two consecutive components; `id_*` is a prefix, see [`blocked_component`]).
pub const BLOCKED: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".netrc",
    ".git-credentials",
    "id_*",
];

/// How many entries of a mount's subtree are looked at for blocked names
/// before the mount is refused as too large to check.
pub const SCAN_LIMIT: usize = 50_000;

/// One accepted mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Canonical host path.
    pub host: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
    pub writable: bool,
    /// As given, for messages.
    pub given: String,
}

/// Why a mount was refused (usage error, exit 2) or the allowlist is unusable (exit 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    pub message: String,
    pub code: i32,
}

fn usage(message: String) -> MountError {
    MountError { message, code: 2 }
}

/// `{"allow":["/data/shared", …]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowFile {
    allow: Vec<PathBuf>,
}

/// `<config dir>/openwrk/sandbox-allowlist.json`: `$XDG_CONFIG_HOME` or
/// `~/.config` on Linux and the other Unixes, `~/Library/Application Support`
/// on macOS, `%APPDATA%` on Windows.
pub fn allowlist_path() -> PathBuf {
    config_dir().join("openwrk").join("sandbox-allowlist.json")
}

fn config_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if cfg!(windows) {
        return var("APPDATA").unwrap_or_else(|| PathBuf::from("."));
    }
    let home = var("HOME").unwrap_or_else(|| PathBuf::from("/"));
    if cfg!(target_os = "macos") {
        return home.join("Library/Application Support");
    }
    var("XDG_CONFIG_HOME")
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".config"))
}

/// The allowlist's entries, canonicalized (entries that do not exist are
/// dropped: nothing can be mounted from them). A missing file allows nothing.
pub fn load_allowlist(path: &Path) -> Result<Option<Vec<PathBuf>>, MountError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(MountError {
                message: format!("cannot read the sandbox allowlist {}: {e}", path.display()),
                code: 3,
            })
        }
    };
    let file: AllowFile = serde_json::from_slice(&bytes).map_err(|e| MountError {
        message: format!(
            "the sandbox allowlist {} is not valid: {e}\nhint: it holds {{\"allow\": [\"/absolute/dir\", …]}}",
            path.display()
        ),
        code: 3,
    })?;
    let mut entries = Vec::new();
    for entry in file.allow {
        if !entry.is_absolute() {
            return Err(MountError {
                message: format!(
                    "the sandbox allowlist {} names a relative path {:?}\nhint: every entry must be an absolute directory",
                    path.display(),
                    entry
                ),
                code: 3,
            });
        }
        if let Ok(c) = entry.canonicalize() {
            entries.push(c);
        }
    }
    Ok(Some(entries))
}

/// Whether one path component is blocked (`id_*` matches `id_rsa`, `id_ed25519.pub`, …).
fn blocked_component(c: &str) -> Option<&'static str> {
    if c.starts_with("id_") {
        return Some("id_*");
    }
    BLOCKED.iter().copied().find(|b| *b == c)
}

/// The blocked pattern `path` matches, if any: a component equal to one of
/// the names, `id_*`, or `.config` followed by `gcloud`.
pub fn blocked_pattern(path: &Path) -> Option<&'static str> {
    let names: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    for (i, name) in names.iter().enumerate() {
        if let Some(p) = blocked_component(name) {
            return Some(p);
        }
        if name == ".config" && names.get(i + 1).is_some_and(|n| n == "gcloud") {
            return Some(".config/gcloud");
        }
    }
    None
}

/// The first entry under `root` (symlinks are not followed: what they point
/// to is not mounted) whose name is blocked, or an error when the subtree has
/// more than `limit` entries.
pub fn scan_subtree(root: &Path, limit: usize) -> Result<Option<(PathBuf, &'static str)>, usize> {
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > limit {
                return Err(limit);
            }
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path);
            // `.config/gcloud` needs the parent, so match on the relative path.
            if let Some(p) = blocked_pattern(rel) {
                return Ok(Some((path, p)));
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    Ok(None)
}

/// Parses `hostPath:containerPath[:ro|rw]` (read-only unless `rw`).
pub fn parse(spec: &str) -> Result<(PathBuf, PathBuf, bool), MountError> {
    let bad = |why: &str| {
        usage(format!(
            "invalid --sandbox-mount {spec:?}: {why}\nhint: the form is hostPath:containerPath[:ro|rw] (absolute paths, no `:` or `,` in them)"
        ))
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, target, writable) = match parts.as_slice() {
        [h, t] => (*h, *t, false),
        [h, t, "ro"] => (*h, *t, false),
        [h, t, "rw"] => (*h, *t, true),
        [_, _, mode] => return Err(bad(&format!("unknown mode `{mode}` (ro or rw)"))),
        _ => return Err(bad("expected two or three `:`-separated fields")),
    };
    if host.is_empty() || target.is_empty() {
        return Err(bad("empty path"));
    }
    let target = PathBuf::from(target);
    if !target.is_absolute() {
        return Err(bad("the container path must be absolute"));
    }
    Ok((PathBuf::from(host), target, writable))
}

/// Lexically normalized absolute path (no `.` or `..`), for comparing targets.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Validates every mount against the allowlist (read from `allowlist`) and
/// the blocked patterns; `workspaces` are the paths the sandbox mounts
/// already (a target may not shadow them).
pub fn validate(
    specs: &[String],
    allowlist: &Path,
    workspaces: &[PathBuf],
) -> Result<Vec<Mount>, MountError> {
    let specs: Vec<&String> = specs.iter().filter(|s| !s.trim().is_empty()).collect();
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let allowed = load_allowlist(allowlist)?;
    let mut out: Vec<Mount> = Vec::new();
    for given in specs {
        let given = given.trim();
        let (host, target, writable) = parse(given)?;
        let refuse = |rule: String| {
            usage(format!(
                "sandbox mount {given} refused: {rule}\nhint: see the README's \"Sandbox\" section; the allowlist is {}",
                allowlist.display()
            ))
        };
        let host = host.canonicalize().map_err(|e| {
            refuse(format!(
                "its host path {} cannot be resolved ({e})",
                host.display()
            ))
        })?;
        for s in [&host, &target] {
            if s.to_string_lossy().contains([',', ':']) {
                return Err(refuse(format!(
                    "the path {} contains `,` or `:`, which container runtimes cannot mount",
                    s.display()
                )));
            }
        }
        let Some(entries) = &allowed else {
            return Err(refuse(format!(
                "rule `allowlist`: there is no allowlist file {}; create it with {{\"allow\": [\"/dir/to/share\"]}}",
                allowlist.display()
            )));
        };
        if !entries.iter().any(|a| host.starts_with(a)) {
            return Err(refuse(format!(
                "rule `allowlist`: {} is under no entry of {}",
                host.display(),
                allowlist.display()
            )));
        }
        if let Some(p) = blocked_pattern(&host) {
            return Err(refuse(format!(
                "rule `blocked pattern {p}`: {} matches it",
                host.display()
            )));
        }
        if host.is_dir() {
            match scan_subtree(&host, SCAN_LIMIT) {
                Ok(None) => {}
                Ok(Some((found, p))) => {
                    return Err(refuse(format!(
                        "rule `blocked pattern {p}` (in the subtree): {} would be exposed",
                        found.display()
                    )))
                }
                Err(limit) => {
                    return Err(refuse(format!(
                        "rule `subtree check`: {} has more than {limit} entries, too many to check for blocked patterns; mount a narrower directory",
                        host.display()
                    )))
                }
            }
        }
        let target = normalize(&target);
        if target == Path::new("/") || target.starts_with(RESERVED) {
            return Err(refuse(format!(
                "rule `reserved path`: the container path {} is / or under {RESERVED}, which the sandbox uses itself",
                target.display()
            )));
        }
        for system in ["/proc", "/dev", "/sys", "/usr", "/etc", "/tmp"] {
            if target == Path::new(system) {
                return Err(refuse(format!(
                    "rule `reserved path`: the container path {} would replace a system directory",
                    target.display()
                )));
            }
        }
        if workspaces
            .iter()
            .any(|w| target.starts_with(w) || w.starts_with(&target))
        {
            return Err(refuse(format!(
                "rule `workspace`: the container path {} overlaps the workspace, which is mounted already",
                target.display()
            )));
        }
        if out.iter().any(|m| m.target == target) {
            return Err(refuse(format!(
                "rule `duplicate`: another mount already uses the container path {}",
                target.display()
            )));
        }
        out.push(Mount {
            host,
            target,
            writable,
            given: given.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_read_only_by_default() {
        assert_eq!(
            parse("/a:/b").unwrap(),
            (PathBuf::from("/a"), PathBuf::from("/b"), false)
        );
        assert!(parse("/a:/b:rw").unwrap().2);
        assert!(!parse("/a:/b:ro").unwrap().2);
        for bad in ["/a", "/a:b", "/a:/b:rx", "/a:/b:ro:x", ":/b"] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, 2, "{bad}");
            assert!(e.message.contains(bad), "{}", e.message);
        }
    }

    #[test]
    fn every_blocked_pattern_matches_components_not_substrings() {
        let cases = [
            ("/home/u/.ssh", ".ssh"),
            ("/home/u/.ssh/known_hosts", ".ssh"),
            ("/home/u/.gnupg", ".gnupg"),
            ("/home/u/.aws/credentials", ".aws"),
            ("/home/u/.azure", ".azure"),
            ("/home/u/.kube/config", ".kube"),
            ("/home/u/.docker/config.json", ".docker"),
            ("/home/u/.config/gcloud/creds", ".config/gcloud"),
            ("/home/u/.netrc", ".netrc"),
            ("/home/u/.git-credentials", ".git-credentials"),
            ("/keys/id_rsa", "id_*"),
            ("/keys/id_ed25519.pub", "id_*"),
        ];
        for (path, rule) in cases {
            assert_eq!(blocked_pattern(Path::new(path)), Some(rule), "{path}");
        }
        for fine in [
            "/data/ssh",
            "/data/my.ssh.notes",
            "/data/.config/other",
            "/data/gcloud",
            "/data/ids",
            "/data/aws",
            "/data/xid_rsa",
        ] {
            assert_eq!(blocked_pattern(Path::new(fine)), None, "{fine}");
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let shared = root.join("shared");
        std::fs::create_dir_all(shared.join("docs")).unwrap();
        let allow = root.join("allow.json");
        std::fs::write(
            &allow,
            format!(r#"{{"allow":["{}","/does/not/exist"]}}"#, shared.display()),
        )
        .unwrap();
        (tmp, shared, allow)
    }

    fn refused(specs: &[String], allow: &Path) -> MountError {
        validate(specs, allow, &[PathBuf::from("/ws")]).unwrap_err()
    }

    #[test]
    fn mounts_under_the_allowlist_pass() {
        let (_t, shared, allow) = setup();
        let got = validate(
            &[
                format!("{}:/data:rw", shared.display()),
                format!("{}/docs/../docs:/docs", shared.display()),
            ],
            &allow,
            &[PathBuf::from("/ws")],
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].host, shared);
        assert!(got[0].writable);
        assert_eq!(got[1].host, shared.join("docs"));
        assert!(!got[1].writable);
    }

    #[cfg(unix)]
    #[test]
    fn rule_allowlist_outside_and_missing_file() {
        let (t, shared, allow) = setup();
        let outside = t.path().canonicalize().unwrap();
        let e = refused(&[format!("{}:/x", outside.display())], &allow);
        assert_eq!(e.code, 2);
        assert!(
            e.message.contains("rule `allowlist`")
                && e.message.contains(&outside.display().to_string()),
            "{}",
            e.message
        );
        // A symlink inside the allowed dir that points outside is judged by its target.
        std::os::unix::fs::symlink(&outside, shared.join("escape")).unwrap();
        let e = refused(&[format!("{}/escape:/x", shared.display())], &allow);
        assert!(e.message.contains("rule `allowlist`"), "{}", e.message);
        let e = refused(
            &[format!("{}:/x", shared.display())],
            &t.path().join("none.json"),
        );
        assert!(
            e.message.contains("there is no allowlist file"),
            "{}",
            e.message
        );
    }

    #[test]
    fn rule_blocked_pattern_in_the_path_and_in_the_subtree() {
        let (_t, shared, allow) = setup();
        std::fs::create_dir_all(shared.join("home/.ssh")).unwrap();
        let e = refused(&[format!("{}/home/.ssh:/x", shared.display())], &allow);
        assert!(
            e.message.contains("rule `blocked pattern .ssh`"),
            "{}",
            e.message
        );
        let e = refused(&[format!("{}/home:/x", shared.display())], &allow);
        assert!(
            e.message
                .contains("rule `blocked pattern .ssh` (in the subtree)"),
            "{}",
            e.message
        );
        std::fs::remove_dir(shared.join("home/.ssh")).unwrap();
        std::fs::create_dir_all(shared.join("home/.config/gcloud")).unwrap();
        let e = refused(&[format!("{}/home:/x", shared.display())], &allow);
        assert!(
            e.message.contains("blocked pattern .config/gcloud"),
            "{}",
            e.message
        );
        std::fs::remove_dir_all(shared.join("home/.config")).unwrap();
        std::fs::write(shared.join("home/id_ed25519"), "key").unwrap();
        let e = refused(&[format!("{}/home:/x", shared.display())], &allow);
        assert!(e.message.contains("blocked pattern id_*"), "{}", e.message);
    }

    #[test]
    fn rule_subtree_check_refuses_what_it_cannot_scan() {
        let (_t, shared, _) = setup();
        for i in 0..5 {
            std::fs::write(shared.join(format!("f{i}")), "").unwrap();
        }
        assert_eq!(scan_subtree(&shared, 3), Err(3));
        assert_eq!(scan_subtree(&shared, 100), Ok(None));
    }

    #[test]
    fn rule_reserved_workspace_and_duplicate_targets() {
        let (_t, shared, allow) = setup();
        let host = shared.display();
        for (target, rule) in [
            ("/", "reserved path"),
            ("/openwrk/x", "reserved path"),
            ("/etc", "reserved path"),
            ("/ws/sub", "workspace"),
            ("/", "reserved path"),
        ] {
            let e = refused(&[format!("{host}:{target}")], &allow);
            assert!(
                e.message.contains(&format!("rule `{rule}`")),
                "{target}: {}",
                e.message
            );
        }
        let e = refused(&[format!("{host}:/a"), format!("{host}/docs:/a")], &allow);
        assert!(e.message.contains("rule `duplicate`"), "{}", e.message);
    }

    #[test]
    fn a_bad_allowlist_is_a_configuration_error() {
        let (t, shared, _) = setup();
        let bad = t.path().join("bad.json");
        std::fs::write(&bad, r#"{"allow":"x"}"#).unwrap();
        let e = refused(&[format!("{}:/x", shared.display())], &bad);
        assert_eq!(e.code, 3);
        std::fs::write(&bad, r#"{"allow":["relative"]}"#).unwrap();
        assert_eq!(refused(&[format!("{}:/x", shared.display())], &bad).code, 3);
    }
}
