//! The layering rule of `capspy/src`: its top-level modules are the stages of the data's path,
//! and a module may use only its own stage and the ones before it. Run by `cargo xtask test`
//! before the build, so a wrong import fails in a second.
//!
//! Within a stage, modules may use each other, but not in a cycle: the check also follows
//! `super::`/`crate::` paths between the files of one folder.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The stages in data-path order (README "Layout").
pub const STAGES: &[&str] = &[
    "model",
    "kernel",
    "trace",
    "attribute",
    "store",
    "profile",
    "report",
    "watch",
    "recorder",
    "commands",
];

pub fn check(root: &Path) -> Result<()> {
    let src = root.join("capspy/src");
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src)? {
        let rel = file.strip_prefix(&src).unwrap_or(&file);
        let Some(module) = module_path(rel) else {
            continue;
        };
        let Some(stage) = stage_of(&module) else {
            problems.push(format!(
                "{}: top-level module {:?} is not a stage (xtask/src/layers.rs STAGES)",
                rel.display(),
                module[0]
            ));
            continue;
        };
        let text = fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
        for used in used_modules(&module, &text) {
            match stage_of(&used) {
                Some(s) if s > stage => problems.push(format!(
                    "{}: uses crate::{}, a later stage ({} comes after {})",
                    rel.display(),
                    used.join("::"),
                    STAGES[s],
                    STAGES[stage]
                )),
                Some(s)
                    if s == stage
                        && used.len() > 1
                        && used[..2] != module[..2.min(module.len())] =>
                {
                    edges
                        .entry(module[..2.min(module.len())].join("::"))
                        .or_default()
                        .insert(used[..2].join("::"));
                }
                _ => {}
            }
        }
    }
    problems.extend(cycles(&edges));
    if problems.is_empty() {
        eprintln!("layers: capspy/src follows {}", STAGES.join(" -> "));
        return Ok(());
    }
    for p in &problems {
        eprintln!("layers: {p}");
    }
    bail!("{} layering problem(s) in capspy/src", problems.len())
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// `profile/rules.rs` -> `["profile", "rules"]`; `recorder.rs` -> `["recorder"]`; the crate
/// roots (`lib.rs`, `main.rs`) have none.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.is_empty() && matches!(stem, "lib" | "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

fn stage_of(module: &[String]) -> Option<usize> {
    STAGES
        .iter()
        .position(|s| module.first().is_some_and(|m| m == s))
}

/// The modules a file names through `crate::...` (in `use` lists too) and `super::...`, as
/// absolute paths. Comments are skipped: a doc link is not a dependency.
fn used_modules(module: &[String], text: &str) -> BTreeSet<Vec<String>> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            out.extend(paths_at(&base, rest));
        }
    }
    out
}

fn parent(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

/// Module paths at the start of `rest` (after `crate::`): `a::b::C` gives `a::b`; `{a, b::c}`
/// and `a::{b, c}` give each. Only lowercase segments are modules.
fn paths_at(base: &[String], rest: &str) -> Vec<Vec<String>> {
    if let Some(group) = rest.strip_prefix('{') {
        return group_items(group)
            .into_iter()
            .flat_map(|item| paths_at(base, item.trim()))
            .collect();
    }
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) || name == "self" {
        return if base.is_empty() {
            Vec::new()
        } else {
            vec![base.to_vec()]
        };
    }
    let mut path = base.to_vec();
    path.push(name.clone());
    match rest[name.len()..].strip_prefix("::") {
        Some(more) => paths_at(&path, more),
        None => vec![path],
    }
}

/// The items of a `{...}` group (without its opening brace), split at top-level commas.
fn group_items(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0usize, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// Cycles between the modules of one stage.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (from, tos) in edges {
        for to in tos {
            if from < to && edges.get(to).is_some_and(|back| back.contains(from)) {
                found.push(format!("{from} and {to} use each other"));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str) -> Vec<String> {
        p.split("::").map(String::from).collect()
    }

    #[test]
    fn use_lists_paths_and_super_are_read() {
        let text = "use crate::model::{caps::Capability, check};\n\
                    use crate::{\n    kernel::btf,\n    store::Store,\n};\n\
                    use super::rules;\n\
                    // crate::commands::run in a comment\n\
                    let x = crate::trace::hook::RUNTIME;\n\
                    let y = notcrate::watch::x;";
        let used = used_modules(&m("profile::row"), text);
        assert_eq!(
            used,
            BTreeSet::from([
                m("kernel::btf"),
                m("model::caps"),
                m("model::check"),
                m("profile::rules"),
                m("store"),
                m("trace::hook"),
            ])
        );
    }

    #[test]
    fn the_tree_of_this_repository_follows_the_stages() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        check(&root).unwrap();
    }

    #[test]
    fn a_later_stage_and_a_cycle_are_problems() {
        let dir = std::env::temp_dir().join(format!("capspy-layers-{}", std::process::id()));
        let src = dir.join("capspy/src");
        fs::create_dir_all(src.join("model")).unwrap();
        fs::create_dir_all(src.join("watch")).unwrap();
        fs::write(src.join("model/mod.rs"), "use crate::watch::drift;\n").unwrap();
        fs::write(src.join("watch/drift.rs"), "use super::metrics::M;\n").unwrap();
        fs::write(
            src.join("watch/metrics.rs"),
            "use crate::watch::drift::A;\n",
        )
        .unwrap();
        let err = check(&dir).unwrap_err().to_string();
        let _ = fs::remove_dir_all(&dir);
        assert!(err.contains("2 layering problem(s)"), "{err}");
    }
}
