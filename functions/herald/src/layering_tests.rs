//! The crate's layering, checked from its sources: imports only point down (or sideways within
//! a layer, without circles), and no handler names another handler. See docs/architecture.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer; a module may use modules of its own layer or below.
const LAYERS: &[(&str, u8)] = &[
    ("auth", 0),
    ("budget", 0),
    ("config", 0),
    ("cursor", 0),
    ("frames", 0),
    ("groups", 0),
    ("horizon", 0),
    ("metrics", 0),
    ("notification", 0),
    ("policy", 0),
    ("tls", 0),
    ("sdk_http", 1),
    ("delivery", 1),
    ("push", 1),
    ("queue", 1),
    ("store", 1),
    ("broadcast", 2),
    ("escalation", 2),
    ("gateway", 2),
    ("limiter", 2),
    ("membership", 2),
    ("offline", 2),
    ("presence", 2),
    ("publish", 2),
    ("replay", 2),
    ("runtime", 2),
    ("schedule", 2),
    ("handlers", 3),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/store/log.rs` → `store`; `src/handlers/api.rs` → `handlers`.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Every `crate::x` a file names, outside its `#[cfg(test)]` tail.
fn crate_uses(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.match_indices("crate::")
        .map(|(i, _)| {
            code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty() && m.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .collect()
}

#[test]
fn imports_point_down_without_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let Some(module) = top_module(&src, file) else { continue };
        if matches!(module.as_str(), "lib" | "layering_tests") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let Some(&own) = layer.get(module.as_str()) else {
            problems.push(format!("{module} has no layer in LAYERS"));
            continue;
        };
        for used in crate_uses(&text) {
            if used == module || used == "BoxError" {
                continue;
            }
            match layer.get(used.as_str()) {
                Some(&l) if l > own => problems.push(format!("{} uses {used}, a higher layer", file.display())),
                Some(_) => {
                    graph.entry(module.clone()).or_default().insert(used);
                }
                None => problems.push(format!("{} uses unknown module {used}", file.display())),
            }
        }
        // Handlers share nothing among themselves: what two need lives below them.
        if module == "handlers" && file.parent().is_some_and(|p| p.ends_with("handlers")) {
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for line in code.lines().filter(|l| l.trim_start().starts_with("use super::")) {
                problems.push(format!("{}: `{}` names another handler", file.display(), line.trim()));
            }
        }
    }
    // Depth-first search for a circle among modules.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            return Some(path[i..].to_vec());
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(circle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            problems.push(format!("import circle: {}", circle.join(" -> ")));
        }
    }
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
    assert!(graph.len() > 10, "the sources were not found under {}", src.display());
}

#[test]
fn the_checker_sees_uses() {
    let uses = crate_uses("use crate::store::{Store};\nfn f() { crate::queue::redeliver(x) }\n#[cfg(test)]\nuse crate::handlers::api;");
    assert_eq!(uses.into_iter().collect::<Vec<_>>(), vec!["queue", "store"]);
}
