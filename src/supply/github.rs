//! GitHub releases API (SPEC §2.2) through octocrab: latest, by tag, list.

use std::fmt;
use std::str::FromStr;

use http::StatusCode;
use octocrab::Octocrab;
use serde::Deserialize;

use crate::error_chain;
use crate::supply::events::{Event, Notice, Reporter};
use crate::supply::ratelimit;

pub const DEFAULT_API_URL: &str = "https://api.github.com";
pub const DEFAULT_OPENCODE_REPO: &str = "anomalyco/opencode";

/// `owner/name` of a GitHub repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub owner: String,
    pub name: String,
}

impl FromStr for Repo {
    type Err = GithubError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Repo {
                    owner: owner.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(GithubError::BadRepo(s.to_string())),
        }
    }
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// Which OpenCode to take: `latest`, or one exact version (`1.2.3` or `v1.2.3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRequest {
    Latest,
    Exact(semver::Version),
}

impl FromStr for VersionRequest {
    type Err = GithubError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("latest") {
            return Ok(VersionRequest::Latest);
        }
        let bare = s.strip_prefix('v').unwrap_or(s);
        semver::Version::parse(bare)
            .map(VersionRequest::Exact)
            .map_err(|_| GithubError::BadVersion(s.to_string()))
    }
}

impl fmt::Display for VersionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRequest::Latest => f.write_str("latest"),
            VersionRequest::Exact(v) => write!(f, "{v}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    pub tag_name: String,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
    #[serde(default)]
    pub assets: Vec<Asset>,
}

impl Release {
    /// The release's semver, from its tag with an optional `v`.
    pub fn version(&self) -> Option<semver::Version> {
        tag_version(&self.tag_name)
    }

    pub fn asset(&self, name: &str) -> Option<&Asset> {
        self.assets.iter().find(|a| a.name == name)
    }

    pub fn asset_names(&self) -> String {
        if self.assets.is_empty() {
            "(none)".to_string()
        } else {
            self.assets
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Asset {
    pub name: String,
    pub size: u64,
    pub browser_download_url: String,
    /// `sha256:<64 hex>` on newer releases.
    #[serde(default)]
    pub digest: Option<String>,
}

impl Asset {
    /// The SHA-256 GitHub reports for this asset, when it gives a well-formed one.
    pub fn sha256(&self) -> Option<String> {
        let hex = self
            .digest
            .as_deref()?
            .strip_prefix("sha256:")?
            .to_ascii_lowercase();
        crate::supply::digest::is_sha256_hex(&hex).then_some(hex)
    }
}

pub fn tag_version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error(
        "`{0}` is not a repository\nhint: write it as owner/name, e.g. {DEFAULT_OPENCODE_REPO}"
    )]
    BadRepo(String),
    #[error("OPENCODE_VERSION `{0}` is not a version\nhint: use an exact version such as 1.2.3 or v1.2.3, or `latest`")]
    BadVersion(String),
    #[error("invalid GitHub API URL `{url}`: {reason}\nhint: set OPENWRK_GITHUB_API_URL to a URL such as {DEFAULT_API_URL}")]
    BadApiUrl { url: String, reason: String },
    #[error("could not reach the GitHub API at {url}: {cause}\nhint: check the network (or OPENWRK_GITHUB_API_URL); pin OPENCODE_VERSION and use a mirror to work offline")]
    Unreachable { url: String, cause: String },
    #[error("the TLS certificate of the GitHub API at {url} is not trusted: {cause}\nhint: behind a TLS-inspecting proxy or with a private GitHub Enterprise CA, pass that CA's certificate with OPENWRK_CA_BUNDLE=FILE (PEM; --ca-bundle for openwrk)")]
    Certificate { url: String, cause: String },
    #[error("GitHub API rate limit exceeded ({url}, HTTP {status}){reset}\nhint: set GITHUB_TOKEN (or GH_TOKEN) for a higher limit, or pin OPENCODE_VERSION")]
    RateLimited {
        url: String,
        status: u16,
        reset: ResetTime,
    },
    #[error("repository {repo} not found at {url} (HTTP 404)\nhint: check OPENWRK_OPENCODE_REPO; private repositories need GITHUB_TOKEN")]
    RepoNotFound { repo: String, url: String },
    #[error("{repo} has no release {version}\n  nearest releases: {nearest}\nhint: set OPENCODE_VERSION to one of them, or to `latest`")]
    NoSuchRelease {
        repo: String,
        version: String,
        nearest: String,
    },
    #[error("{repo} has no published (non-draft, non-prerelease) release\nhint: pin OPENCODE_VERSION to an existing tag")]
    NoStableRelease { repo: String },
    #[error("GitHub API request {url} failed with HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("unexpected answer from the GitHub API at {url}: {reason}")]
    BadResponse { url: String, reason: String },
}

impl GithubError {
    /// SPEC §9: the network or GitHub failing is 4; a bad setting or a
    /// release that does not exist is a configuration error (3).
    pub fn exit_code(&self) -> i32 {
        match self {
            GithubError::Unreachable { .. }
            | GithubError::Certificate { .. }
            | GithubError::RateLimited { .. }
            | GithubError::Status { .. }
            | GithubError::BadResponse { .. } => 4,
            _ => 3,
        }
    }
}

/// When a rate limit resets, rendered as "; resets at 14:05:00 (in 12 minutes)".
#[derive(Debug, Clone)]
pub struct ResetTime(pub Option<i64>);

impl fmt::Display for ResetTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(at) = self.0 else { return Ok(()) };
        let Some(utc) = chrono::DateTime::from_timestamp(at, 0) else {
            return Ok(());
        };
        let local = utc.with_timezone(&chrono::Local);
        let minutes = ((at - chrono::Utc::now().timestamp()).max(0) + 59) / 60;
        write!(
            f,
            "; it resets at {} local time (in {minutes} minutes)",
            local.format("%H:%M:%S")
        )
    }
}

/// A GitHub API client.
pub struct GitHub {
    client: Octocrab,
    api_url: String,
    reporter: Reporter,
}

/// Rate-limited API answers whose reset is near are retried this many times.
const RATE_LIMIT_RETRIES: u32 = 4;

impl GitHub {
    /// `api_url` is the API root (`https://api.github.com`, or a loopback host
    /// in tests). Requests go through `client` — the downloader's, so the API
    /// honours the same proxies, CA bundle and timeouts as every download.
    pub fn new(
        api_url: &str,
        token: Option<String>,
        client: reqwest::Client,
    ) -> Result<GitHub, GithubError> {
        let api_url = api_url.trim_end_matches('/').to_string();
        let bad = |reason: String| GithubError::BadApiUrl {
            url: api_url.clone(),
            reason,
        };
        let mut builder = Octocrab::builder()
            .base_uri(api_url.as_str())
            .map_err(|e| bad(error_chain(&e)))?
            .add_header(http::header::USER_AGENT, crate::user_agent());
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            builder = builder.personal_token(token);
        }
        let client = builder
            .build_with_reqwest(client)
            .map_err(|e| bad(error_chain(&e)))?;
        Ok(GitHub {
            client,
            api_url,
            reporter: crate::supply::events::silent(),
        })
    }

    /// Says so through `reporter` when it waits out a rate limit.
    pub fn with_reporter(mut self, reporter: Reporter) -> GitHub {
        self.reporter = reporter;
        self
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The release `request` names; an exact version is looked up by the tag
    /// `tag_pattern` gives (`v{version}`), then `v<version>` and `<version>`.
    /// Latest never returns a draft or prerelease.
    pub async fn resolve(
        &self,
        repo: &Repo,
        request: &VersionRequest,
        tag_pattern: &str,
    ) -> Result<Release, GithubError> {
        match request {
            VersionRequest::Latest => self.latest_release(repo).await,
            VersionRequest::Exact(v) => self.release_for_version(repo, v, tag_pattern).await,
        }
    }

    /// `GET /repos/{repo}/releases/latest`; when that is missing (or answers a
    /// prerelease), the highest non-prerelease semver among all releases.
    pub async fn latest_release(&self, repo: &Repo) -> Result<Release, GithubError> {
        let path = format!("/repos/{repo}/releases/latest");
        match self.get_json::<Release>(&path).await? {
            Some(r) if !r.draft && !r.prerelease => return Ok(r),
            _ => {}
        }
        let releases = self.list_releases(repo).await?;
        releases
            .into_iter()
            .filter(|r| !r.draft && !r.prerelease)
            .filter_map(|r| Some((r.version()?, r)))
            .filter(|(v, _)| v.pre.is_empty())
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, r)| r)
            .ok_or_else(|| GithubError::NoStableRelease {
                repo: repo.to_string(),
            })
    }

    /// `GET /repos/{repo}/releases/tags/{tag}`, `None` when there is no such tag.
    pub async fn release_by_tag(
        &self,
        repo: &Repo,
        tag: &str,
    ) -> Result<Option<Release>, GithubError> {
        self.get_json(&format!("/repos/{repo}/releases/tags/{tag}"))
            .await
    }

    async fn release_for_version(
        &self,
        repo: &Repo,
        version: &semver::Version,
        tag_pattern: &str,
    ) -> Result<Release, GithubError> {
        let mut tags = vec![tag_pattern.replace("{version}", &version.to_string())];
        for tag in [format!("v{version}"), version.to_string()] {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        for tag in tags {
            if let Some(r) = self.release_by_tag(repo, &tag).await? {
                return Ok(r);
            }
        }
        let releases = self.list_releases(repo).await?;
        Err(GithubError::NoSuchRelease {
            repo: repo.to_string(),
            version: version.to_string(),
            nearest: nearest_tags(&releases, version),
        })
    }

    /// Every release (up to 1000), newest first as GitHub lists them.
    pub async fn list_releases(&self, repo: &Repo) -> Result<Vec<Release>, GithubError> {
        let mut all = Vec::new();
        for page in 1..=10 {
            let path = format!("/repos/{repo}/releases?per_page=100&page={page}");
            let Some(batch) = self.get_json::<Vec<Release>>(&path).await? else {
                return Err(GithubError::RepoNotFound {
                    repo: repo.to_string(),
                    url: format!("{}{path}", self.api_url),
                });
            };
            let done = batch.len() < 100;
            all.extend(batch);
            if done {
                break;
            }
        }
        Ok(all)
    }

    /// GET and decode; `Ok(None)` on 404. A rate limit that resets within a
    /// minute is waited out (saying so); a later one is an error naming the reset.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, GithubError> {
        let mut tries = 0;
        loop {
            match self.get_json_once(path).await {
                Err(GithubError::RateLimited {
                    url,
                    reset: ResetTime(reset),
                    ..
                }) if tries < RATE_LIMIT_RETRIES
                    && ratelimit::short_wait(reset, ratelimit::now()).is_some() =>
                {
                    tries += 1;
                    let wait = ratelimit::short_wait(reset, ratelimit::now()).unwrap_or_default();
                    (self.reporter)(Event::Notice(Notice::RateLimitWait {
                        url,
                        secs: wait.as_secs(),
                    }));
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn get_json_once<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, GithubError> {
        let url = format!("{}{path}", self.api_url);
        let unreachable = |e: &dyn std::error::Error| {
            let cause = error_chain(e);
            if crate::supply::download::is_certificate_problem(&cause) {
                GithubError::Certificate {
                    url: url.clone(),
                    cause,
                }
            } else {
                GithubError::Unreachable {
                    url: url.clone(),
                    cause,
                }
            }
        };
        let response = self
            .client
            ._get(url.as_str())
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = self
            .client
            .body_to_string(response)
            .await
            .map_err(|e| unreachable(&e))?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if ratelimit::is_rate_limited(status, &headers) {
            return Err(GithubError::RateLimited {
                url,
                status: status.as_u16(),
                reset: ResetTime(ratelimit::reset_at(&headers, ratelimit::now())),
            });
        }
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_string))
                .unwrap_or_else(|| body.chars().take(200).collect());
            return Err(GithubError::Status {
                url,
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| GithubError::BadResponse {
                url,
                reason: e.to_string(),
            })
    }
}

/// `GITHUB_TOKEN`, else `GH_TOKEN`.
pub fn token_from_env() -> Option<String> {
    ["GITHUB_TOKEN", "GH_TOKEN"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.is_empty())
}

/// Up to three existing tags on each side of `wanted`.
fn nearest_tags(releases: &[Release], wanted: &semver::Version) -> String {
    let mut versions: Vec<(semver::Version, &str)> = releases
        .iter()
        .filter(|r| !r.draft)
        .filter_map(|r| Some((r.version()?, r.tag_name.as_str())))
        .collect();
    if versions.is_empty() {
        return "(the repository has no releases)".to_string();
    }
    versions.sort();
    let at = versions.partition_point(|(v, _)| v < wanted);
    let lo = at.saturating_sub(3);
    let hi = (at + 3).min(versions.len());
    versions[lo..hi]
        .iter()
        .map(|(_, t)| *t)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_requests() {
        assert_eq!(
            "latest".parse::<VersionRequest>().unwrap(),
            VersionRequest::Latest
        );
        assert_eq!(
            "".parse::<VersionRequest>().unwrap(),
            VersionRequest::Latest
        );
        let v: VersionRequest = "v1.18.34".parse().unwrap();
        assert_eq!(v, "1.18.34".parse().unwrap());
        let e = "1.18".parse::<VersionRequest>().unwrap_err().to_string();
        assert!(
            e.contains("`1.18`") && e.contains("v1.2.3") && e.contains("latest"),
            "{e}"
        );
    }

    #[test]
    fn repos() {
        let r: Repo = "anomalyco/opencode".parse().unwrap();
        assert_eq!(r.to_string(), "anomalyco/opencode");
        assert!("nope".parse::<Repo>().is_err());
        assert!("a/b/c".parse::<Repo>().is_err());
    }

    #[test]
    fn digests_and_nearest() {
        let asset = |digest: Option<&str>| Asset {
            name: "a".into(),
            size: 1,
            browser_download_url: "u".into(),
            digest: digest.map(str::to_string),
        };
        let hex = "ab".repeat(32);
        assert_eq!(asset(Some(&format!("sha256:{hex}"))).sha256(), Some(hex));
        assert_eq!(asset(Some("sha1:abc")).sha256(), None);
        assert_eq!(asset(None).sha256(), None);

        let rel = |t: &str| Release {
            tag_name: t.into(),
            draft: false,
            prerelease: false,
            assets: vec![],
        };
        let rs: Vec<Release> = [
            "v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0", "v1.4.0", "v2.0.0", "v3.0.0", "v4.0.0",
        ]
        .map(rel)
        .into();
        let near = nearest_tags(&rs, &"1.3.5".parse().unwrap());
        assert_eq!(near, "v1.1.0, v1.2.0, v1.3.0, v1.4.0, v2.0.0, v3.0.0");
    }
}
