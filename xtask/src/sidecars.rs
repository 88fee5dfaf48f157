//! `manifests/sidecars.toml`: which sidecars exist and where they come from (SPEC §2.1).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use openwrk::supply::archive::ArchiveKind;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarsConfig {
    pub sidecars: BTreeMap<String, Sidecar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// The executable's name without `.exe`.
    pub binary: String,
    pub source: Source,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    Github {
        repo: String,
        /// Tag pattern; `{version}` is replaced.
        tag: String,
        assets: BTreeMap<String, GithubAsset>,
    },
    Prebuilt {
        #[serde(default)]
        version: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubAsset {
    pub asset: String,
    pub archive: ArchiveKind,
    pub binary: String,
}

impl SidecarsConfig {
    pub fn load(path: &Path) -> anyhow::Result<SidecarsConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: SidecarsConfig = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid sidecars file", path.display()))?;
        for (name, sidecar) in &config.sidecars {
            if let Source::Github { assets, .. } = &sidecar.source {
                for target in assets.keys() {
                    if target.parse::<openwrk::supply::platform::Target>().is_err() {
                        bail!(
                            "{}: sidecars.{name}.source.assets.{target}: unknown target",
                            path.display()
                        );
                    }
                }
            }
        }
        Ok(config)
    }
}

/// The default `manifests/sidecars.toml` of this workspace.
pub fn default_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/sidecars.toml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use openwrk::supply::platform::Target;

    #[test]
    fn repo_config_matches_the_platform_table() {
        let config = SidecarsConfig::load(&default_path()).unwrap();
        let opencode = &config.sidecars["opencode"];
        let Source::Github { assets, tag, .. } = &opencode.source else {
            panic!("opencode is a github sidecar")
        };
        assert!(tag.contains("{version}"));
        for target in Target::ALL {
            let a = &assets[target.id()];
            assert_eq!(a.asset, target.opencode_asset());
            assert_eq!(a.archive, target.opencode_archive());
            assert_eq!(a.binary, target.exe_name("opencode"));
        }
        for name in ["openwork-server", "owpenbot"] {
            assert!(matches!(
                config.sidecars[name].source,
                Source::Prebuilt { .. }
            ));
        }
    }
}
