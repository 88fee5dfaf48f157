//! Commands whose arguments clap builds only when that command is the one
//! being parsed (`Command::defer`). Building every command's arguments up
//! front (a few hundred `Arg`s, with the global options copied into each)
//! cost a quick command such as `--help`, `--version` or `sidecars list`
//! most of its start-up (SPEC §10: `--help` ≤ 3× `/bin/true`).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{ArgMatches, Args, Command, Error, FromArgMatches, Subcommand};

static EAGER: AtomicBool = AtomicBool::new(false);

/// Build every command in full from now on: shell completions walk the whole
/// tree, and clap's `help` subcommand copies each command's subcommands
/// when it is built, before a deferred builder would have run.
pub fn build_eagerly() {
    EAGER.store(true, Ordering::Relaxed);
}

/// `augment` now, or when clap builds the command (see `as_if_eager`).
fn defer(cmd: Command, augment: fn(Command) -> Command, later: fn(Command) -> Command) -> Command {
    if EAGER.load(Ordering::Relaxed) {
        augment(cmd)
    } else {
        cmd.defer(later)
    }
}

/// The arguments or subcommands of `T`, added to their command on first use.
#[derive(Debug, Clone)]
pub struct Lazy<T>(pub T);

impl<T> Lazy<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Lazy<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: FromArgMatches> FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, Error> {
        T::from_arg_matches(matches).map(Lazy)
    }
    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, Error> {
        T::from_arg_matches_mut(matches).map(Lazy)
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), Error> {
        self.0.update_from_arg_matches(matches)
    }
    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), Error> {
        self.0.update_from_arg_matches_mut(matches)
    }
}

// A command holds one deferred builder: `Lazy` must be the only part of its
// command that defers (each use below wraps a command's whole contents).
impl<T: Args> Args for Lazy<T> {
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
    fn augment_args(cmd: Command) -> Command {
        defer(cmd, T::augment_args, |cmd| {
            as_if_eager(cmd, T::augment_args)
        })
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        defer(cmd, T::augment_args_for_update, |cmd| {
            as_if_eager(cmd, T::augment_args_for_update)
        })
    }
}

impl<T: Subcommand> Subcommand for Lazy<T> {
    fn augment_subcommands(cmd: Command) -> Command {
        defer(cmd, T::augment_subcommands, |cmd| {
            as_if_eager(cmd, T::augment_subcommands)
        })
    }
    fn augment_subcommands_for_update(cmd: Command) -> Command {
        defer(cmd, T::augment_subcommands_for_update, |cmd| {
            as_if_eager(cmd, T::augment_subcommands_for_update)
        })
    }
    fn has_subcommand(name: &str) -> bool {
        T::has_subcommand(name)
    }
}

/// Runs a deferred builder so the command reads as if it had run first:
/// the variant's description wins over the one of a flattened struct, and
/// the command's own options come before the global ones that its parent
/// copied in meanwhile (help lists headings in order of first appearance).
fn as_if_eager(cmd: Command, augment: fn(Command) -> Command) -> Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let cmd = augment(cmd);
    let cmd = match about {
        Some(about) => cmd.about(about),
        None => cmd.about(None::<&'static str>),
    };
    let cmd = match long_about {
        Some(long) => cmd.long_about(long),
        None => cmd.long_about(None::<&'static str>),
    };
    let mut ordered: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
    ordered.sort_by_key(|arg| arg.is_global_set());
    let mut ordered = ordered.into_iter();
    cmd.mut_args(|arg| ordered.next().unwrap_or(arg))
}
