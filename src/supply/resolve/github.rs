//! OpenCode at run time when the manifest has no entry for it (SPEC §3.3):
//! `OPENCODE_VERSION`, else the latest GitHub release, remembered for 24 h so
//! warm starts make no network call, verified against GitHub's digest.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::context::Resolver;
use super::error::ResolveError;
use super::resolved::{Origin, Recheck, Resolved};
use crate::supply::archive;
use crate::supply::cache::Check;
use crate::supply::download::Expected;
use crate::supply::events::Notice;
use crate::supply::github::{GitHub, GithubError, Release, Repo, VersionRequest};
use crate::supply::manifest::{BinaryDigest, OPENCODE};
use crate::supply::platform::Target;

/// How long a resolved "latest" is trusted without asking GitHub again.
pub const LATEST_TTL: Duration = Duration::from_secs(24 * 60 * 60);
const MEMO_FILE: &str = "opencode-latest.json";

/// `<data dir>/opencode-latest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Memo {
    repo: String,
    version: String,
    resolved_at: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Release asset names to try for `target`, best first, with why each variant.
/// On the host, a musl libc picks `-musl` and an x86-64 CPU without AVX2 `-baseline`.
pub fn asset_candidates(target: Target, host: bool) -> Vec<(String, &'static str)> {
    let plain = target.opencode_asset();
    let ext = target.opencode_archive().extension();
    let stem = format!("opencode-{}", target.id());
    let musl = host && target.id().starts_with("linux") && is_musl();
    let baseline = host && target.id().ends_with("x64") && !has_avx2();
    let mut out = Vec::new();
    if musl && baseline {
        out.push((
            format!("{stem}-baseline-musl.{ext}"),
            "musl libc, CPU without AVX2",
        ));
    }
    if musl {
        out.push((format!("{stem}-musl.{ext}"), "musl libc"));
    }
    if baseline {
        out.push((format!("{stem}-baseline.{ext}"), "CPU without AVX2"));
    }
    out.push((plain, "plain build"));
    out
}

fn is_musl() -> bool {
    cfg!(target_env = "musl")
        || std::fs::read_dir("/lib").is_ok_and(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("ld-musl-"))
        })
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

impl Resolver {
    fn memo_path(&self) -> PathBuf {
        self.settings.data_dir.join(MEMO_FILE)
    }

    fn read_memo(&self, repo: &Repo) -> Option<Memo> {
        let memo: Memo = serde_json::from_slice(&std::fs::read(self.memo_path()).ok()?).ok()?;
        (memo.repo == repo.to_string()).then_some(memo)
    }

    fn github(&self) -> Result<(GitHub, Repo), ResolveError> {
        let g = &self.settings.github;
        let repo: Repo = g.repo.parse()?;
        let client = self.downloader.client()?.clone();
        let github = GitHub::new(&g.api_url, g.token.clone(), client)?
            .with_reporter(self.downloader.reporter().clone());
        Ok((github, repo))
    }

    /// The highest cached OpenCode version that has a verification record.
    fn newest_cached(&self, target: Target) -> Option<String> {
        let mut versions: Vec<semver::Version> = self
            .cache
            .list()
            .into_iter()
            .filter(|(name, _, dir)| {
                name == OPENCODE && dir.ends_with(target.id()) && dir.join(".verified").is_file()
            })
            .filter_map(|(_, v, _)| semver::Version::parse(&v).ok())
            .collect();
        versions.sort();
        versions.pop().map(|v| v.to_string())
    }

    /// Which OpenCode version to use, and the release if GitHub was asked.
    async fn opencode_version(
        &self,
        target: Target,
    ) -> Result<(String, Option<Release>), ResolveError> {
        let g = &self.settings.github;
        let request = VersionRequest::from_str(g.version.as_deref().unwrap_or("latest"))?;
        if let VersionRequest::Exact(v) = request {
            return Ok((v.to_string(), None));
        }
        let repo: Repo = g.repo.parse()?;
        let memo = self.read_memo(&repo);
        if let Some(m) = memo
            .as_ref()
            .filter(|m| now().saturating_sub(m.resolved_at) < LATEST_TTL.as_secs())
        {
            return Ok((m.version.clone(), None));
        }
        // Only now is a client worth building (it loads the system's TLS roots).
        let (github, repo) = self.github()?;
        match github.latest_release(&repo).await {
            Ok(release) => {
                let version = release.version().map(|v| v.to_string()).ok_or_else(|| {
                    GithubError::BadResponse {
                        url: github.api_url().to_string(),
                        reason: format!(
                            "latest release tag `{}` is not a version",
                            release.tag_name
                        ),
                    }
                })?;
                let memo = Memo {
                    repo: repo.to_string(),
                    version: version.clone(),
                    resolved_at: now(),
                };
                let _ = crate::fsutil::write_atomic(
                    &self.memo_path(),
                    serde_json::to_string(&memo).expect("serializes").as_bytes(),
                );
                Ok((version, Some(release)))
            }
            Err(e @ (GithubError::Unreachable { .. } | GithubError::RateLimited { .. })) => {
                let why = e.to_string().lines().next().unwrap_or_default().to_string();
                if let Some(m) = memo {
                    let hours = now().saturating_sub(m.resolved_at) / 3600;
                    self.notice(Notice::Offline {
                        version: m.version.clone(),
                        remembered_hours: Some(hours),
                        why,
                    });
                    return Ok((m.version, None));
                }
                if let Some(v) = self.newest_cached(target) {
                    self.notice(Notice::Offline {
                        version: v.clone(),
                        remembered_hours: None,
                        why,
                    });
                    return Ok((v, None));
                }
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Without any network request: the OpenCode version that would be used
    /// (pinned, or the remembered latest) and its cache entry if it verifies.
    pub fn opencode_offline(&self, target: Target) -> (Option<String>, Option<PathBuf>) {
        let g = &self.settings.github;
        let version = match VersionRequest::from_str(g.version.as_deref().unwrap_or("latest")) {
            Ok(VersionRequest::Exact(v)) => Some(v.to_string()),
            _ => g
                .repo
                .parse()
                .ok()
                .and_then(|repo| self.read_memo(&repo))
                .map(|m| m.version),
        };
        let Some(version) = version else {
            return (None, None);
        };
        let Ok(entry) = self
            .cache
            .entry(OPENCODE, &version, target, &target.exe_name(OPENCODE))
        else {
            return (None, None);
        };
        let ok = entry.read_verified().is_some_and(|rec| {
            matches!(
                entry.check(&BinaryDigest {
                    sha256: &rec.sha256,
                    size: rec.size
                }),
                Ok(Check::Warm | Check::Rehashed)
            )
        });
        (Some(version), ok.then_some(entry.binary))
    }

    /// OpenCode from GitHub releases, cached and verified (never with a mirror).
    pub async fn opencode_from_github(
        &self,
        target: Target,
        host: bool,
    ) -> Result<Resolved, ResolveError> {
        // With a mirror, nothing goes to any other host (SPEC §3.1): its
        // manifest must name OpenCode.
        if let Some(mirror) = &self.settings.base_url {
            return Err(ResolveError::MirrorLacksOpenCode {
                mirror: crate::sanitize::strip_userinfo(mirror),
                target,
            });
        }
        let (version, release) = self.opencode_version(target).await?;
        let entry = self
            .cache
            .entry(OPENCODE, &version, target, &target.exe_name(OPENCODE))?;
        let resolved = |origin, verified| -> Resolved {
            // Later executions are checked against the digest recorded now.
            let rec = entry.read_verified();
            Resolved {
                name: OPENCODE.into(),
                version: version.clone(),
                target,
                origin,
                path: entry.binary.clone(),
                verified,
                recheck: Recheck::Cache {
                    entry: entry.clone(),
                    sha256: rec.as_ref().map(|r| r.sha256.clone()).unwrap_or_default(),
                    size: rec.map_or(0, |r| r.size),
                },
            }
        };
        // The cache record holds the digest verified against GitHub's at download
        // time, and says whether GitHub gave one (else only the size was checked).
        let recorded =
            |e: &crate::supply::cache::CacheEntry| -> Result<Option<&'static str>, ResolveError> {
                let Some(rec) = e.read_verified() else {
                    return Ok(None);
                };
                let size_only = rec.checked == "size";
                match e.check(&BinaryDigest {
                    sha256: &rec.sha256,
                    size: rec.size,
                })? {
                    Check::Warm if size_only => Ok(Some("warm-size")),
                    Check::Rehashed if size_only => Ok(Some("size")),
                    Check::Warm => Ok(Some("warm")),
                    Check::Rehashed => Ok(Some("sha256")),
                    Check::Corrupt { moved_to, actual } => {
                        self.notice(Notice::MovedAside {
                            name: OPENCODE.into(),
                            version: version.clone(),
                            against: "its verification record",
                            expected: rec.sha256.clone(),
                            found: actual.sha256,
                            moved_to,
                        });
                        Ok(None)
                    }
                    Check::Missing => Ok(None),
                }
            };
        if let Some(how) = recorded(&entry)? {
            return Ok(resolved(Origin::Cache, how));
        }
        let _lock = entry.lock(|| {
            self.notice(Notice::WaitingForLock {
                name: OPENCODE.into(),
            })
        })?;
        entry.check_trust()?;
        if let Some(how) = recorded(&entry)? {
            return Ok(resolved(Origin::Cache, how));
        }
        entry.clean_stale_parts();
        let release = match release {
            Some(r) => r,
            None => {
                let (github, repo) = self.github()?;
                let v = semver::Version::parse(&version)
                    .map_err(|_| GithubError::BadVersion(version.clone()))?;
                github
                    .resolve(&repo, &VersionRequest::Exact(v), "v{version}")
                    .await?
            }
        };
        let candidates = asset_candidates(target, host);
        let (asset, why) = candidates
            .iter()
            .find_map(|(name, why)| Some((release.asset(name)?, *why)))
            .ok_or_else(|| ResolveError::NotInRelease {
                tag: release.tag_name.clone(),
                wanted: candidates
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                assets: release.asset_names(),
            })?;
        self.notice(Notice::Variant {
            version: version.clone(),
            asset: asset.name.clone(),
            why,
        });
        let sha256 = asset.sha256();
        let sha256_given = sha256.is_some();
        if sha256.is_none() {
            self.notice(Notice::NoDigest {
                asset: asset.name.clone(),
            });
        }
        let expected = Expected::exactly(sha256, asset.size);
        let archive_path = entry.dir.join(format!(".{}", asset.name));
        self.downloader
            .download(&asset.browser_download_url, &archive_path, &expected)
            .await?;
        let kind = target.opencode_archive();
        let (ap, dest, inner) = (
            archive_path.clone(),
            entry.binary.clone(),
            target.exe_name(OPENCODE),
        );
        let extracted = tokio::task::spawn_blocking(move || {
            archive::extract_binary(&ap, kind, &inner, &dest, archive::MAX_BINARY_SIZE)
        })
        .await
        .expect("extraction task");
        let _ = std::fs::remove_file(&archive_path);
        let extracted = extracted?;
        if sha256_given {
            entry.record_digest(&extracted)?;
            Ok(resolved(Origin::Downloaded, "sha256"))
        } else {
            entry.record_size_checked(&extracted)?;
            Ok(resolved(Origin::Downloaded, "size"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_asset_is_always_a_candidate() {
        for t in Target::ALL {
            let c = asset_candidates(t, false);
            assert_eq!(c, vec![(t.opencode_asset(), "plain build")]);
            assert_eq!(
                asset_candidates(t, true).last().unwrap().0,
                t.opencode_asset()
            );
        }
    }
}
