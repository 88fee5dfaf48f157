//! The five target ids (SPEC §1), host detection and per-target naming.

use std::fmt;
use std::str::FromStr;

use crate::supply::archive::ArchiveKind;

/// One of the five platforms openwrk ships for. The id (`linux-x64`, …) is used
/// everywhere: manifest keys, asset names and `--targets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    LinuxX64,
    LinuxArm64,
    DarwinX64,
    DarwinArm64,
    WindowsX64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("unknown target `{0}`\nhint: use one of {ids}", ids = Target::id_list())]
    UnknownTarget(String),
    #[error("this host ({os}/{arch}) is not a supported target\nhint: openwrk runs on {ids}", ids = Target::id_list())]
    UnsupportedHost { os: String, arch: String },
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::LinuxX64,
        Target::LinuxArm64,
        Target::DarwinX64,
        Target::DarwinArm64,
        Target::WindowsX64,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Target::LinuxX64 => "linux-x64",
            Target::LinuxArm64 => "linux-arm64",
            Target::DarwinX64 => "darwin-x64",
            Target::DarwinArm64 => "darwin-arm64",
            Target::WindowsX64 => "windows-x64",
        }
    }

    /// The Rust triple openwrk itself is compiled for on this target.
    pub fn triple(self) -> &'static str {
        match self {
            Target::LinuxX64 => "x86_64-unknown-linux-gnu",
            Target::LinuxArm64 => "aarch64-unknown-linux-gnu",
            Target::DarwinX64 => "x86_64-apple-darwin",
            Target::DarwinArm64 => "aarch64-apple-darwin",
            Target::WindowsX64 => "x86_64-pc-windows-msvc",
        }
    }

    pub fn is_windows(self) -> bool {
        self == Target::WindowsX64
    }

    /// `name` with `.exe` on Windows.
    pub fn exe_name(self, name: &str) -> String {
        if self.is_windows() {
            format!("{name}.exe")
        } else {
            name.to_string()
        }
    }

    /// How OpenCode packs its release asset for this target.
    pub fn opencode_archive(self) -> ArchiveKind {
        match self {
            Target::LinuxX64 | Target::LinuxArm64 => ArchiveKind::TarGz,
            _ => ArchiveKind::Zip,
        }
    }

    /// OpenCode's release asset name (the plain variant), e.g. `opencode-linux-x64.tar.gz`.
    pub fn opencode_asset(self) -> String {
        format!(
            "opencode-{}.{}",
            self.id(),
            self.opencode_archive().extension()
        )
    }

    /// The file name a release pipeline gives a prebuilt sidecar: `<name>-<target>[.exe]`.
    pub fn prebuilt_file(self, name: &str) -> String {
        self.exe_name(&format!("{name}-{}", self.id()))
    }

    /// The target this process runs on.
    pub fn host() -> Result<Target, PlatformError> {
        Self::from_os_arch(std::env::consts::OS, std::env::consts::ARCH)
    }

    pub fn from_os_arch(os: &str, arch: &str) -> Result<Target, PlatformError> {
        match (os, arch) {
            ("linux", "x86_64") => Ok(Target::LinuxX64),
            ("linux", "aarch64") => Ok(Target::LinuxArm64),
            ("macos", "x86_64") => Ok(Target::DarwinX64),
            ("macos", "aarch64") => Ok(Target::DarwinArm64),
            ("windows", "x86_64") => Ok(Target::WindowsX64),
            _ => Err(PlatformError::UnsupportedHost {
                os: os.to_string(),
                arch: arch.to_string(),
            }),
        }
    }

    fn id_list() -> String {
        Target::ALL.map(Target::id).join(", ")
    }

    /// Parses `a,b,c` (`all` for every target); duplicates collapse, order follows [`Target::ALL`].
    pub fn parse_list(list: &str) -> Result<Vec<Target>, PlatformError> {
        let mut out = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                out.extend(Target::ALL);
            } else {
                out.push(part.parse()?);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl FromStr for Target {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.id() == s)
            .ok_or_else(|| PlatformError::UnknownTarget(s.to_string()))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in Target::ALL {
            assert_eq!(t.id().parse::<Target>().unwrap(), t);
        }
    }

    #[test]
    fn asset_names_follow_the_spec_table() {
        assert_eq!(
            Target::LinuxX64.opencode_asset(),
            "opencode-linux-x64.tar.gz"
        );
        assert_eq!(
            Target::DarwinArm64.opencode_asset(),
            "opencode-darwin-arm64.zip"
        );
        assert_eq!(
            Target::WindowsX64.opencode_asset(),
            "opencode-windows-x64.zip"
        );
        assert_eq!(Target::WindowsX64.exe_name("opencode"), "opencode.exe");
        assert_eq!(
            Target::WindowsX64.prebuilt_file("owpenbot"),
            "owpenbot-windows-x64.exe"
        );
    }

    #[test]
    fn unknown_target_lists_the_five() {
        let err = "linux-riscv".parse::<Target>().unwrap_err().to_string();
        assert!(err.contains("linux-riscv"));
        for t in Target::ALL {
            assert!(err.contains(t.id()), "{err}");
        }
        let err = Target::from_os_arch("freebsd", "x86_64")
            .unwrap_err()
            .to_string();
        assert!(err.contains("freebsd/x86_64") && err.contains("windows-x64"));
    }

    #[test]
    fn target_lists() {
        assert_eq!(Target::parse_list("all").unwrap().len(), 5);
        assert_eq!(
            Target::parse_list("windows-x64, linux-x64,linux-x64").unwrap(),
            vec![Target::LinuxX64, Target::WindowsX64]
        );
        assert!(Target::parse_list("linux-x64,nope").is_err());
    }
}
