//! Test support for openwrk (never shipped): a loopback GitHub-compatible
//! release host with fault switches, a static mirror, and fixture builders.
//! The stand-in sidecars are the binaries in `src/bin/`.

pub mod fixtures;
mod github_api;
pub mod host;
pub mod proxy;
pub mod tls;

pub use host::{FakeAsset, FakeRelease, Faults, ReleaseHost};

/// Where the workspace's build output lives (for locating built binaries).
pub fn target_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return dir.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// A built stand-in binary, asserting it exists (tests need `cargo test --workspace`
/// or `cargo build -p openwrk-test-support --bins` to have built it).
pub fn standin(name: &str) -> std::path::PathBuf {
    let path = standin_bin(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p openwrk-test-support --bins` (`cargo test --workspace` builds it)",
        path.display()
    );
    path
}

/// Live processes (zombies excluded, this one too) whose cwd is under `dir` or
/// whose command line mentions it: what a test left running.
pub fn processes_under(dir: &std::path::Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    live_processes(|cmdline, cwd| cwd.starts_with(dir) || cmdline.contains(&needle))
}

/// Live processes (zombies excluded) whose command line contains `needle`,
/// such as the stand-ins' grandchildren (`STANDIN_MARKER`).
pub fn processes_matching(needle: &str) -> Vec<(u32, String)> {
    live_processes(|cmdline, _| cmdline.contains(needle))
}

/// Live processes other than this one for which `keep(cmdline, cwd)` holds.
fn live_processes(keep: impl Fn(&str, &std::path::Path) -> bool) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if keep(&cmdline, &cwd) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// A built stand-in binary (`standin-opencode`, …) from the current profile's target dir.
pub fn standin_bin(name: &str) -> std::path::PathBuf {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    target_dir()
        .join(profile)
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Gives the real OpenCode a private HOME and XDG dirs under `home` and turns
/// off its network fetches: another OpenCode holding the default database
/// makes it hang, and tests reach nothing beyond loopback.
pub fn private_opencode_env(cmd: &mut std::process::Command, home: &std::path::Path) {
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_LSP_DOWNLOAD", "1");
}

/// Whether this run is CI (`CI=true` or `CI=1`): there, every prerequisite of
/// a test (the real OpenCode, root, bubblewrap) is installed by `.ci/run`, and
/// a missing one fails the test instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A test's prerequisite (`key`: `opencode`, `root` or `bwrap`): `true` when
/// `available`. Missing under CI, the test fails naming it, unless the CI
/// configuration declares it unavailable on that runner
/// (`OPENWRK_TEST_UNAVAILABLE=opencode,root`, as the release workflow does
/// where no such package exists); missing locally, the test is skipped,
/// saying so on stderr and in `<target dir>/test-skips.txt` (which `.ci/run`
/// prints at the end).
pub fn prerequisite(key: &str, what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    let declared = std::env::var("OPENWRK_TEST_UNAVAILABLE")
        .is_ok_and(|v| v.split(',').any(|k| k.trim() == key));
    assert!(
        !under_ci() || declared,
        "{what} is required under CI=true (.ci/run provides it); this test must not skip there \
         (a runner that cannot have it lists `{key}` in OPENWRK_TEST_UNAVAILABLE)"
    );
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let line = format!("skipped {test}: needs {what}\n");
    eprint!("{line}");
    let skips = target_dir().join("test-skips.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skips)
    {
        let _ = std::io::Write::write_all(&mut f, line.as_bytes());
    }
    false
}

/// The real OpenCode (`OPENWRK_TEST_OPENCODE_BIN`, set by `.ci/run`), or
/// `None` after [`prerequisite`] said why the test skips.
pub fn real_opencode() -> Option<std::path::PathBuf> {
    let bin = std::env::var_os("OPENWRK_TEST_OPENCODE_BIN")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file());
    prerequisite(
        "opencode",
        "the real OpenCode (OPENWRK_TEST_OPENCODE_BIN; .ci/run fetches it from npm)",
        bin.is_some(),
    )
    .then_some(bin)
    .flatten()
}

/// Whether this test runs as root; tests that need it fail under CI without it.
pub fn root(what: &str) -> bool {
    #[cfg(unix)]
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    #[cfg(not(unix))]
    let is_root = false;
    prerequisite("root", &format!("root ({what})"), is_root)
}
