//! Where a manifest and its assets are: a URL or a local directory.

use std::path::PathBuf;

use super::error::ResolveError;
use crate::supply::manifest::Manifest;

/// A manifest and where its assets are.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub manifest: Manifest,
    /// URL or path it was read from.
    pub origin: String,
    /// Asset base: a URL (no trailing `/`) or a local directory.
    pub base: Location,
    /// Read from the data-dir copy, without a network request.
    pub from_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Url(String),
    Dir(PathBuf),
}

impl Location {
    /// A manifest or mirror location: `https://` anywhere, `http://` only on
    /// a loopback host (a plain-text fetch over a network is refused rather
    /// than trusted to the signature alone), `file://` or a path.
    pub fn parse(what: &'static str, s: &str) -> Result<Location, ResolveError> {
        if let Some(path) = s.strip_prefix("file://") {
            return Ok(Location::Dir(PathBuf::from(path)));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Location::Dir(PathBuf::from(s)));
        };
        let bad = || ResolveError::BadUrl {
            what,
            value: crate::sanitize::for_output(s),
            scheme: format!("{}://", crate::sanitize::escape_line(scheme)),
        };
        match scheme.to_ascii_lowercase().as_str() {
            "https" => {}
            "http" if is_loopback_authority(rest) => {}
            _ => return Err(bad()),
        }
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad());
        }
        Ok(Location::Url(s.trim_end_matches('/').to_string()))
    }

    pub fn join(&self, name: &str) -> String {
        match self {
            Location::Url(u) => format!("{u}/{name}"),
            Location::Dir(d) => d.join(name).display().to_string(),
        }
    }
}

/// Whether the host of `authority[/path]` is `localhost` or a loopback address.
fn is_loopback_authority(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
