//! Run-time sidecar resolution (SPEC §3): find the manifest, then each
//! sidecar bundled, cached, downloaded or external, verified before use.
//!
//! The modules form a chain without cycles: `settings`, `error` and
//! `location` depend on nothing here; `resolved` on `error`; `context` holds
//! the [`Resolver`]'s state; `manifest_source`, `github` and `resolver` each
//! add the methods of one concern to it.

mod context;
mod error;
mod github;
mod location;
mod manifest_source;
mod resolved;
mod resolver;
mod settings;

pub use context::Resolver;
pub use error::{Mismatch, ResolveError};
pub use github::{asset_candidates, LATEST_TTL};
pub use location::{LoadedManifest, Location};
pub use resolved::{Origin, Recheck, Resolved};
pub use resolver::find_on_path;
pub use settings::{default_manifest_url, GithubSettings, Settings, SourceMode, RELEASE_REPO};
