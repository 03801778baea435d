//! A test of the layering rule: no import cycle between modules in `src/`.
//!
//! Each `crate::a::b` or `super::x` path in a file's non-test code is an
//! edge from that file's module to the deepest module the path names.
//! Between a module and its own ancestors edges are how Rust works (a
//! parent declares its children, a child uses its parent's types); every
//! other edge is lifted to the two siblings under the closest common
//! ancestor (`node::driver::client -> node::calls` is `driver -> calls`
//! under `node`), and no set of siblings may import each other round in a
//! circle. Unit tests (`mod tests`, `tests.rs`) are left out: they may use
//! the simulation, which uses the cores.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src/ is readable").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src`: `node/driver/mod.rs` ->
/// `[node, driver]`; `lib.rs` and `main.rs` are the root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file's code without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths starting at `crate::` or `super::` in `code`, resolved
/// against module `me`.
fn paths(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for head in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(head).map(|i| i + from) {
            from = i + head.len();
            let boundary =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if !boundary || (i >= 2 && &bytes[i - 2..i] == b"::") {
                continue;
            }
            let rest: String = code[from..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut path: Vec<String> = if head == "crate::" {
                Vec::new()
            } else {
                me[..me.len().saturating_sub(1)].to_vec()
            };
            for seg in rest.split("::").filter(|s| !s.is_empty()) {
                if seg == "super" {
                    path.pop();
                } else {
                    path.push(seg.to_owned());
                }
            }
            out.push(path);
        }
    }
    out
}

/// The strongly connected components with more than one member.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Reachability is enough at this size: a and b are in one cycle when
    // each reaches the other.
    let reach = |a: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![a.clone()];
        while let Some(x) = todo.pop() {
            for y in g.get(&x).into_iter().flatten() {
                if seen.insert(y.clone()) {
                    todo.push(y.clone());
                }
            }
        }
        seen
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    for a in g.keys() {
        let ra = reach(a);
        if !ra.contains(a) || out.iter().any(|c| c.contains(a)) {
            continue;
        }
        let comp: Vec<String> = ra
            .iter()
            .filter(|b| reach(b).contains(a))
            .cloned()
            .collect();
        out.push(comp);
    }
    out
}

#[test]
fn no_import_cycle_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: BTreeSet<Vec<String>> = all.iter().map(|f| module_of(&src, f)).collect();
    assert!(modules.contains(&vec!["node".to_owned(), "driver".to_owned()]));
    // parent -> sibling -> siblings it imports
    let mut graph: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut edges = 0;
    for f in &all {
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let me = module_of(&src, f);
        let text = std::fs::read_to_string(f).expect("readable");
        for p in paths(&code(&text), &me) {
            // The deepest module the path names.
            let Some(to) = (0..=p.len())
                .rev()
                .map(|k| p[..k].to_vec())
                .find(|m| modules.contains(m))
            else {
                continue;
            };
            let common = me.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == me.len() || common == to.len() {
                continue;
            }
            edges += 1;
            graph
                .entry(me[..common].to_vec())
                .or_default()
                .entry(me[common].clone())
                .or_default()
                .insert(to[common].clone());
        }
    }
    assert!(edges > 100, "the parser found only {edges} edges");
    let found: Vec<String> = graph
        .iter()
        .flat_map(|(parent, g)| {
            cycles(g)
                .into_iter()
                .map(move |c| format!("under `{}`: {}", parent.join("::"), c.join(" <-> ")))
        })
        .collect();
    assert!(found.is_empty(), "import cycles: {found:#?}");
}

#[test]
fn the_parser_sees_a_cycle() {
    let me = vec!["node".to_owned(), "calls".to_owned()];
    let p = paths(
        "use super::driver::{Command};\nlet x = crate::node::calls::X;",
        &me,
    );
    assert!(p.contains(&vec!["node".to_owned(), "driver".to_owned()]));
    assert!(p.contains(&vec!["node".to_owned(), "calls".to_owned(), "X".to_owned()]));
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    g.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycles(&g), vec![vec!["a".to_owned(), "b".to_owned()]]);
}
