//! The crate's module graph: which top-level module names which (`crate::x`
//! in its non-test code, comments aside, including names the crate root re-exports), with
//! two checks. Engines import nothing from `http` (the shell depends on
//! them, never the reverse), and no import circle exists among the
//! top-level modules. Run alone: `cargo test -p tokenusage-api --lib module_graph`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The source of a file without its tests: everything from the first
/// `#[cfg(test)]` on (test modules come last, by this crate's habit).
fn without_tests(src: &str) -> &str {
    src.find("#[cfg(test)]").map_or(src, |i| &src[..i])
}

/// The top-level modules `src` names: `crate::x`, `crate::{x, y::z}`, and
/// root re-exports (`crate::ApiError` is `http`'s).
fn named(src: &str, reexports: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |name: &str| {
        let name = name.trim();
        if let Some(module) = reexports.get(name) {
            out.insert(module.clone());
        } else if !name.is_empty() {
            out.insert(name.to_owned());
        }
    };
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group, up to its own closing brace:
            // split on commas outside nested braces.
            let (mut depth, mut start) = (0, 0);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        add(group[start..j].split("::").next().unwrap_or_default());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        add(group[start..j].split("::").next().unwrap_or_default());
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            add(&rest[..end]);
        }
    }
    out
}

/// Names the crate root re-exports, and the module each comes from.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.trim().strip_prefix("pub use ")) {
        let line = line.trim_end_matches(';');
        let Some((module, items)) = line.split_once("::") else { continue };
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.rsplit("::").next().unwrap_or_default().trim();
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    map
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let reexports = reexports(&lib);
    let mut graph = Graph::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let is_test =
                rel.file_name().is_some_and(|n| n == "tests.rs") || rel.components().any(|c| c.as_os_str() == "tests");
            if path.extension().is_none_or(|e| e != "rs") || rel == Path::new("lib.rs") || is_test {
                continue;
            }
            let first = rel.components().next().expect("a path").as_os_str().to_string_lossy();
            let module = first.trim_end_matches(".rs").to_owned();
            if module == "module_graph" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            // Comments may name any module; only code imports.
            let code: String = without_tests(&text)
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(|l| format!("{l}\n"))
                .collect();
            let names = named(&code, &reexports);
            graph.entry(module.clone()).or_default().extend(names.into_iter().filter(|n| *n != module));
        }
    }
    graph
}

/// A circle through `start`, if there is one (depth-first).
fn circle(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(graph: &Graph, at: &str, start: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn engines_import_nothing_from_http_and_no_module_circle_remains() {
    let graph = graph();
    assert!(graph.len() > 10, "the scan found the modules: {graph:?}");
    assert!(graph["http"].contains("history"), "the scan sees imports: {:?}", graph["http"]);
    let into_http: Vec<&String> =
        graph.iter().filter(|(m, to)| *m != "http" && to.contains("http")).map(|(m, _)| m).collect();
    assert!(into_http.is_empty(), "engines that import from http: {into_http:?}");
    let circles: Vec<Vec<String>> = graph.keys().filter_map(|m| circle(&graph, m)).collect();
    assert!(circles.is_empty(), "import circles among api's modules: {circles:?}");
    // Inside the shell, what requests share is built before any route.
    let state =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/state.rs")).expect("state");
    let code: Vec<&str> = state.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
    let routes: Vec<&&str> = code.iter().filter(|l| l.contains("routes") || l.contains("router::")).collect();
    assert!(routes.is_empty(), "http/state.rs names a route: {routes:?}");
}

#[test]
fn the_scan_reads_groups_and_reexports() {
    let reexports = reexports("pub use http::{AppState, Application};\npub use config::ApiArgs;");
    let src = "use crate::{audit::{A, B}, teams};\nfn f(_: crate::AppState) { crate::history::x(); }";
    let names = named(src, &reexports);
    assert_eq!(names, ["audit", "teams", "http", "history"].into_iter().map(String::from).collect());
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("a".into());
    assert_eq!(circle(&g, "a"), Some(vec!["a".to_owned(), "b".to_owned()]));
    g.get_mut("b").unwrap().clear();
    assert_eq!(circle(&g, "a"), None);
}
