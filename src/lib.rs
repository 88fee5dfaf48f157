//! openwrk's shared core: used by the `openwrk` binary (run time) and by
//! `cargo xtask bundle` (build time). One module per concept.

pub mod cli;
pub mod commands;
pub mod credentials;
pub mod daemon;
pub mod dashboard;
pub mod fsutil;
#[cfg(unix)]
pub mod guardian;
pub mod health;
pub mod log;
pub mod process;
pub mod sandbox;
pub mod sanitize;
pub mod supervise;
pub mod supply;
pub mod workspaces;

/// openwrk's own version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `openwrk/<version>`, sent on every HTTP request.
pub fn user_agent() -> String {
    format!("openwrk/{VERSION}")
}

/// Installs ring as the process-wide rustls provider (reqwest and octocrab share it).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An error and its causes, joined with ": ", so a failure never hides why.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
