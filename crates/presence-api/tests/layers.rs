//! The HTTP crate's modules form layers: no module imports (by a `crate::` path) a module that imports it
//! back, directly or through others.

use std::collections::{BTreeMap, BTreeSet};

/// Each module of `src/` (but the crate root) with the modules it names by `crate::` paths, test code
/// excluded.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let (Some(stem), Some("rs")) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|e| e.to_str()))
        else {
            continue;
        };
        if stem != "lib" {
            let text = std::fs::read_to_string(&path).unwrap();
            modules.insert(stem.to_owned(), text.split("#[cfg(test)]").next().unwrap_or_default().to_owned());
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(name, text)| {
            let named = text
                .match_indices("crate::")
                .filter_map(|(at, _)| {
                    let rest = &text[at + "crate::".len()..];
                    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                    let module = &rest[..end];
                    (names.contains(module) && module != name).then(|| module.to_owned())
                })
                .collect();
            (name.clone(), named)
        })
        .collect()
}

/// A cycle through `start`, if any.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((module, path)) = stack.pop() {
        for next in &graph[&module] {
            if next == start {
                return Some([path.clone(), vec![next.clone()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let graph = imports();
    assert!(graph.len() > 10, "the modules were found: {graph:?}");
    assert!(graph["router"].contains("handlers"), "crate:: references are read");
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module) {
            panic!("an import cycle: {}", cycle.join(" -> "));
        }
    }
}
