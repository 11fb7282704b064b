//! The crate's layering, checked from its sources: the top folder of a file is its layer, imports
//! only point down (or sideways within a layer), modules never import each other in a circle,
//! and no handler names another handler. See lib.rs and docs/architecture.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: a file may use modules of its own layer or a lower one.
const LAYERS: &[(&str, u8)] = &[("domain", 0), ("io", 1), ("services", 2), ("handlers", 3)];

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

/// `src/io/store/log.rs` → `io::store`; `src/handlers/api.rs` → `handlers::api`;
/// `src/services/mod.rs` → `services`; `src/lib.rs` → `lib`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<&str> = rel
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .map(|c| c.trim_end_matches(".rs"))
        .take(2)
        .filter(|c| *c != "mod")
        .collect();
    (!parts.is_empty()).then(|| parts.join("::"))
}

/// The code of a file outside its `#[cfg(test)]` tail: tests may reach anywhere.
fn code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or_default()
}

/// Every module a file names as `crate::layer::module`, as `layer::module` (a bare
/// `crate::layer::{…}` comes out as `layer::`, which the check refuses: one path per module keeps
/// every use visible).
fn crate_uses(text: &str) -> BTreeSet<String> {
    let code = code(text);
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    code.match_indices("crate::")
        .filter_map(|(i, _)| {
            let rest = &code[i + 7..];
            let layer = ident(rest);
            if !layer.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                return None;
            }
            let module = rest[layer.len()..].strip_prefix("::").map(ident).unwrap_or_default();
            Some(format!("{layer}::{module}"))
        })
        .collect()
}

fn layer_of(module: &str) -> Option<u8> {
    let top = module.split("::").next()?;
    LAYERS.iter().find(|(name, _)| *name == top).map(|&(_, rank)| rank)
}

/// Problems with handler `own`'s file `rel` (relative to `handlers/`): it names another handler
/// through `crate::handlers::x` or through `super::` out of its own folder.
fn handler_problems(rel: &Path, own: &str, uses: &BTreeSet<String>, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for used in uses.iter().filter(|u| u.starts_with("handlers::") && u.as_str() != own) {
        problems.push(format!("{} names another handler, {used}", rel.display()));
    }
    // A file right under handlers/ is a whole handler, so its `super` is the table of all of them;
    // a file of a handler's folder may use its own `mod.rs`, not what lies beyond.
    let escape = if rel.components().count() == 1 {
        "super::"
    } else {
        "super::super::"
    };
    for line in code(text).lines().filter(|l| l.contains(escape)) {
        problems.push(format!("{}: `{}` names another handler", rel.display(), line.trim()));
    }
    problems
}

#[test]
fn imports_point_down_without_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        if matches!(module.as_str(), "lib" | "layering_tests") {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            problems.push(format!("{} is in no layer folder ({:?})", file.display(), LAYERS));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let uses = crate_uses(&text);
        for used in &uses {
            if used == &module {
                continue;
            }
            match layer_of(used) {
                _ if used.ends_with("::") => {
                    problems.push(format!("{} names `crate::{used}{{…}}`: write one path per module", file.display()))
                }
                Some(l) if l > own => problems.push(format!("{} uses {used}, a higher layer", file.display())),
                Some(_) => {
                    graph.entry(module.clone()).or_default().insert(used.clone());
                }
                None => problems.push(format!("{} uses {used}, in no layer", file.display())),
            }
        }
        if module.starts_with("handlers::") {
            let rel = file.strip_prefix(src.join("handlers")).unwrap_or(file);
            problems.extend(handler_problems(rel, &module, &uses, &text));
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
    assert!(graph.len() > 20, "the sources were not found under {}", src.display());
}

#[test]
fn the_checker_sees_uses() {
    let uses = crate_uses(
        "use crate::io::store::{Store};\nuse crate::domain::{cursor, groups};\nfn f() { crate::io::queue::redeliver(x) }\n\
         type E = crate::BoxError;\n#[cfg(test)]\nuse crate::handlers::api;",
    );
    assert_eq!(uses.into_iter().collect::<Vec<_>>(), vec!["domain::", "io::queue", "io::store"]);
    let src = Path::new("/s");
    assert_eq!(module_of(src, Path::new("/s/io/store/log.rs")).as_deref(), Some("io::store"));
    assert_eq!(
        module_of(src, Path::new("/s/handlers/api/push.rs")).as_deref(),
        Some("handlers::api")
    );
    assert_eq!(module_of(src, Path::new("/s/services/mod.rs")).as_deref(), Some("services"));
    assert_eq!(layer_of("services::replay"), Some(2));
    let named = crate_uses("use crate::handlers::retry::Retry;");
    assert_eq!(
        handler_problems(Path::new("dispatch.rs"), "handlers::dispatch", &named, "").len(),
        1
    );
    assert_eq!(
        handler_problems(Path::new("api.rs"), "handlers::api", &BTreeSet::new(), "use super::retry;").len(),
        1
    );
    let own = "use super::Api;";
    assert!(handler_problems(Path::new("api/push.rs"), "handlers::api", &BTreeSet::new(), own).is_empty());
    let beyond = "use super::super::retry;";
    assert_eq!(
        handler_problems(Path::new("api/push.rs"), "handlers::api", &BTreeSet::new(), beyond).len(),
        1
    );
}
