//! `openwrk workspace add|list|path|switch|remove` (SPEC §6). They edit
//! `<data dir>/workspaces.json` directly (under its lock), so they work with
//! or without a running daemon; a running daemon notices the change itself.

use super::Failure;
use crate::cli::{Global, WorkspaceCommand};
use crate::host::workspaces::{Store, WorkspaceError};

impl From<WorkspaceError> for Failure {
    fn from(e: WorkspaceError) -> Failure {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

pub async fn run(global: &Global, command: WorkspaceCommand) -> Result<i32, Failure> {
    let store = Store::new(&super::data_dir(global)?);
    match command {
        WorkspaceCommand::Add { path, name } => {
            let (w, new) = store.add_named(&path, name.as_deref())?;
            if global.json {
                // The workspace itself, plus whether this call added it.
                let mut doc = serde_json::to_value(&w).expect("serializes");
                doc["created"] = new.into();
                println!("{doc}");
            } else {
                // The id alone on stdout, so `ID=$(openwrk workspace add .)` works.
                println!("{}", w.id);
                let how = if new { "added" } else { "already added:" };
                eprintln!("{how} {} as {}", w.path.display(), w.id);
            }
        }
        WorkspaceCommand::List => {
            let list = store.load_list()?;
            let active = list.active_id.as_deref();
            if global.json {
                // `activeId` only when one is set, as in workspaces.json.
                println!("{}", serde_json::to_string(&list).expect("serializes"));
            } else if list.workspaces.is_empty() {
                eprintln!("no workspaces yet; add one with `openwrk workspace add PATH`");
            } else {
                let rows: Vec<[String; 5]> = list
                    .workspaces
                    .iter()
                    .map(|w| {
                        let mark = if Some(w.id.as_str()) == active {
                            "*"
                        } else {
                            ""
                        };
                        [
                            w.id.clone(),
                            w.name.clone(),
                            w.path.display().to_string(),
                            w.added_at.clone(),
                            mark.to_string(),
                        ]
                    })
                    .collect();
                let header = ["ID", "NAME", "PATH", "ADDED", "ACTIVE"];
                print!("{}", table(&header, &rows));
            }
        }
        WorkspaceCommand::Path { id } => {
            let w = store.get(&id)?;
            if global.json {
                println!("{}", serde_json::to_string(&w).expect("serializes"));
            } else {
                println!("{}", w.path.display());
            }
        }
        WorkspaceCommand::Switch { id } => {
            let w = store.switch(&id)?;
            if global.json {
                println!(
                    "{}",
                    serde_json::json!({ "activeId": w.id, "workspace": w })
                );
            } else {
                println!(
                    "{} ({}) is now the active workspace: requests that name none go to it",
                    w.id,
                    w.path.display()
                );
            }
        }
        WorkspaceCommand::Remove { id } => {
            let w = store.remove(&id)?;
            if global.json {
                println!("{}", serde_json::json!({ "removed": w }));
            } else {
                println!("removed {} ({})", w.id, w.path.display());
            }
        }
    }
    Ok(0)
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub(crate) fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_string);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let t = super::table(
            &["ID", "PATH"],
            &[
                ["ws_1".to_string(), "/a".to_string()],
                ["ws_long".to_string(), "/b".to_string()],
            ],
        );
        assert_eq!(t, "ID       PATH\nws_1     /a\nws_long  /b\n");
    }
}
