//! The resolver's state: settings, the downloader, the cache and where
//! events go. Its methods live in the modules of each concern
//! (`resolver`, `manifest_source`, `github`).

use std::path::PathBuf;

use super::settings::{Settings, SourceMode};
use crate::supply::cache::Cache;
use crate::supply::download::Downloader;
use crate::supply::events::{Event, Notice, Reporter};
use crate::supply::manifest::OPENCODE;

pub struct Resolver {
    pub settings: Settings,
    pub downloader: Downloader,
    pub cache: Cache,
    /// Where notices and transfer progress go (the downloader's reporter).
    reporter: Reporter,
}

impl Resolver {
    /// A resolver reporting to the downloader's reporter.
    pub fn new(settings: Settings, downloader: Downloader) -> Resolver {
        Resolver {
            cache: Cache::new(&settings.sidecar_dir),
            reporter: downloader.reporter().clone(),
            settings,
            downloader,
        }
    }

    pub(crate) fn mode(&self, name: &str) -> SourceMode {
        if name == OPENCODE {
            if self.settings.opencode_bin.is_some() {
                return SourceMode::External;
            }
            self.settings.opencode_source
        } else {
            if self.external_flag_value(name).is_some() {
                return SourceMode::External;
            }
            self.settings.sidecar_source
        }
    }

    pub(crate) fn external_flag_value(&self, name: &str) -> Option<&PathBuf> {
        match name {
            OPENCODE => self.settings.opencode_bin.as_ref(),
            crate::supply::manifest::OPENWORK_SERVER => self.settings.openwork_server_bin.as_ref(),
            _ => self.settings.owpenbot_bin.as_ref(),
        }
    }

    pub(crate) fn flag_stem(name: &str) -> &'static str {
        if name == OPENCODE {
            "opencode"
        } else {
            "sidecar"
        }
    }

    /// Whether resolving `name` needs the manifest at all.
    pub fn needs_manifest(&self, name: &str) -> bool {
        self.mode(name) != SourceMode::External
    }

    /// Reports a notice.
    pub(crate) fn notice(&self, notice: Notice) {
        (self.reporter)(Event::Notice(notice));
    }
}
