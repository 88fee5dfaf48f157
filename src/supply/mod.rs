//! The supply half: everything that decides *which bytes* a sidecar is and
//! proves them — targets, the manifest and its signature, GitHub releases,
//! the one downloader, archives, the verified cache, and resolution
//! (bundled, cached, downloaded or external). Used by `cargo xtask bundle` at
//! build time and by the `openwrk` binary at run time; it never reaches up
//! into the host half or the command line.

pub mod archive;
pub mod cache;
pub mod digest;
pub mod download;
pub mod events;
pub mod github;
pub mod manifest;
pub mod platform;
pub mod ratelimit;
pub mod resolve;
pub mod rollback;
pub mod signature;
