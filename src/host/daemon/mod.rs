//! The router daemon (SPEC §6): one OpenCode for many workspaces.

mod api;

pub use api::*;
