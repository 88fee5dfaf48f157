//! Test support for openwrk (never shipped): a loopback GitHub-compatible
//! release host with fault switches, a static mirror, and fixture builders.
//! The stand-in sidecars are the binaries in `src/bin/`.

pub mod fixtures;
pub mod host;
pub mod proxy;

pub use host::{FakeAsset, FakeRelease, Faults, ReleaseHost};

/// Where the workspace's build output lives (for locating built binaries).
pub fn target_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return dir.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
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
