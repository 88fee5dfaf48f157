//! How openwrk starts `opencode serve`, for a run and for the router daemon
//! alike (SPEC §5.1, §4): the command line and the settings that travel in
//! its environment (log level, hot reload).

/// What openwrk hands OpenCode besides host, port and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCodeSettings {
    /// `opencode serve --log-level`: DEBUG, INFO, WARN or ERROR.
    pub log_level: String,
    /// `OPENCODE_HOT_RELOAD=1|0`.
    pub hot_reload: bool,
    /// `OPENCODE_HOT_RELOAD_DEBOUNCE_MS`.
    pub hot_reload_debounce_ms: u64,
    /// `OPENCODE_HOT_RELOAD_COOLDOWN_MS`.
    pub hot_reload_cooldown_ms: u64,
}

impl Default for OpenCodeSettings {
    fn default() -> Self {
        OpenCodeSettings {
            log_level: "INFO".into(),
            hot_reload: true,
            hot_reload_debounce_ms: 700,
            hot_reload_cooldown_ms: 1500,
        }
    }
}

impl OpenCodeSettings {
    /// `serve --hostname H --port P --print-logs --log-level L`.
    pub fn serve_args(&self, host: &str, port: u16) -> Vec<String> {
        vec![
            "serve".into(),
            "--hostname".into(),
            host.into(),
            "--port".into(),
            port.to_string(),
            // Without it OpenCode logs only to a file.
            "--print-logs".into(),
            "--log-level".into(),
            self.log_level.clone(),
        ]
    }

    /// The hot-reload variables of OpenCode's environment.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "OPENCODE_HOT_RELOAD".into(),
                if self.hot_reload { "1" } else { "0" }.into(),
            ),
            (
                "OPENCODE_HOT_RELOAD_DEBOUNCE_MS".into(),
                self.hot_reload_debounce_ms.to_string(),
            ),
            (
                "OPENCODE_HOT_RELOAD_COOLDOWN_MS".into(),
                self.hot_reload_cooldown_ms.to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_and_environment() {
        let s = OpenCodeSettings {
            log_level: "WARN".into(),
            hot_reload: false,
            ..Default::default()
        };
        assert_eq!(
            s.serve_args("127.0.0.1", 4096).join(" "),
            "serve --hostname 127.0.0.1 --port 4096 --print-logs --log-level WARN"
        );
        assert_eq!(
            s.env(),
            vec![
                ("OPENCODE_HOT_RELOAD".to_string(), "0".to_string()),
                ("OPENCODE_HOT_RELOAD_DEBOUNCE_MS".into(), "700".into()),
                ("OPENCODE_HOT_RELOAD_COOLDOWN_MS".into(), "1500".into()),
            ]
        );
    }
}
