//! The crate's layering, checked from its source: dependencies between modules point one
//! way. Within every folder of `src/` (the crate root, `cuda/`, `warm/`, …) the sibling
//! modules that use one another form no cycle, and the rules of the design hold: the
//! backend trait sits below the backends, no backend or the store knows the executor, and
//! the SIMD kernels use no other module.
//!
//! How: every `crate::…`, `super::…` and `self::…` path in `src/` (test code included,
//! comments and string literals left out, `use` groups expanded) is resolved to the module
//! it names. A reference from module `a::b` to `a::c::…` is an edge `b → c` in folder `a`;
//! a reference to an item of `a` itself (its `mod.rs`, the type and its design doc) is
//! no edge, unless `a` re-exports it from one of its children. The CLI (`src/bin`) is a
//! separate crate on the public API and is not part of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path below the crate root (`[]` is the root).
type ModPath = Vec<String>;

/// One source file, comments and literals blanked, split into the inline modules it holds.
struct Source {
    /// `(module path, code, only under cfg(test))` for the file's own module and each
    /// inline `mod x { … }`.
    parts: Vec<Part>,
    /// Child modules it declares (`mod x;` and inline `mod x { … }`).
    children: BTreeSet<String>,
    /// Those declared under `#[cfg(test)]`.
    test_children: BTreeSet<String>,
    /// Names it re-exports or imports from a child: name → child.
    from_child: BTreeMap<String, String>,
}

/// `code` with comments removed and the contents of string and char literals blanked, so
/// that neither braces nor paths inside them count.
fn strip(code: &str) -> String {
    let b = code.as_bytes();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) && {
            let mut j = i + 1;
            while b.get(j) == Some(&b'#') {
                j += 1;
            }
            b.get(j) == Some(&b'"') && (i == 0 || !(b[i - 1].is_ascii_alphanumeric()))
        } {
            let mut hashes = 0;
            i += 1;
            while b[i] == b'#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            loop {
                if b[i] == b'"' && b[i + 1..].iter().take(hashes).all(|&h| h == b'#') {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if c == b'"' {
            i += 1;
            while b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\''
            && (b.get(i + 1) == Some(&b'\\') || b.get(i + 2) == Some(&b'\''))
            && !(i > 0 && b[i - 1].is_ascii_alphanumeric())
        {
            // A char literal (a lifetime has no closing quote after one character).
            i += 1;
            while b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            // Multi-byte characters are copied whole.
            let len = std::str::from_utf8(&b[i..])
                .ok()
                .and_then(|s| s.chars().next())
                .map_or(1, char::len_utf8);
            out.push_str(&code[i..i + len]);
            i += len;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifier starting at `s`.
fn ident(s: &str) -> &str {
    &s[..s.find(|c: char| !is_ident(c)).unwrap_or(s.len())]
}

/// Code of one module: its path, its text, and whether it is compiled only for tests.
type Part = (ModPath, String, bool);

/// Splits stripped code into the file's own part and its inline modules (`mod x { … }`,
/// nested or not), each with its module path; and the file's child modules, all of them
/// and those under `#[cfg(test)]`.
fn split_inline(module: &ModPath, code: &str) -> (Vec<Part>, BTreeSet<String>, BTreeSet<String>) {
    let mut parts = vec![(module.clone(), String::new(), false)];
    let mut children = BTreeSet::new();
    let mut test_children = BTreeSet::new();
    // (module path, brace depth at which it closes, index into parts)
    let mut stack: Vec<(ModPath, usize, usize)> = vec![(module.clone(), 0, 0)];
    let mut depth = 0usize;
    let mut rest = code;
    while let Some(ch) = rest.chars().next() {
        let at_word = !parts[stack.last().unwrap().2].1.ends_with(is_ident);
        if at_word && rest.starts_with("mod ") {
            let name = ident(rest[4..].trim_start());
            let after = rest[4..].trim_start()[name.len()..].trim_start();
            let text = &parts[stack.last().unwrap().2].1;
            let before = text.trim_end();
            let before = before.strip_suffix("pub").unwrap_or(before).trim_end();
            let before = before
                .strip_suffix("pub(crate)")
                .unwrap_or(before)
                .trim_end();
            let test = before.ends_with("#[cfg(test)]") || parts[stack.last().unwrap().2].2;
            if stack.len() == 1 {
                children.insert(name.to_string());
                if test {
                    test_children.insert(name.to_string());
                }
            }
            if let Some(body) = after.strip_prefix('{') {
                depth += 1;
                let mut path = stack.last().unwrap().0.clone();
                path.push(name.to_string());
                parts.push((path.clone(), String::new(), test));
                stack.push((path, depth, parts.len() - 1));
                rest = body;
                continue;
            }
        }
        let current = stack.last().unwrap().2;
        match ch {
            '{' => depth += 1,
            '}' => {
                if stack.len() > 1 && stack.last().unwrap().1 == depth {
                    stack.pop();
                    depth -= 1;
                    rest = &rest[1..];
                    continue;
                }
                depth -= 1;
            }
            _ => {}
        }
        parts[current].1.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    (parts, children, test_children)
}

/// Every path a piece of code names from `crate`, `super` or `self`, resolved against
/// `module`, with `use` groups (`a::{b, c::d}`) expanded.
fn paths(module: &ModPath, code: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("::") {
        // The path's first segment is the identifier right before this `::`, when that is
        // where the path starts.
        let head_start = code[..at]
            .rfind(|c: char| !is_ident(c))
            .map_or(0, |i| i + 1);
        let head = &code[head_start..at];
        let before = code[..head_start].trim_end();
        if before.ends_with("::") {
            continue; // not the path's start
        }
        let mut base: ModPath = match head {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            _ => continue,
        };
        let mut rest = &code[at + 2..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        expand(&base, rest, &mut out);
    }
    out
}

/// Appends the paths `base::rest…` names (`rest` starts a path, or a `{…}` group).
fn expand(base: &ModPath, rest: &str, out: &mut Vec<ModPath>) {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        let bytes: Vec<char> = group.chars().collect();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    let item: String = bytes[start..i].iter().collect();
                    expand(base, &item, out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    let item: String = bytes[start..i].iter().collect();
                    expand(base, &item, out);
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        return;
    }
    let mut path = base.clone();
    let mut s = rest;
    loop {
        let name = ident(s);
        if name.is_empty() {
            break;
        }
        path.push(name.to_string());
        s = &s[name.len()..];
        match s.strip_prefix("::") {
            Some(r) if r.trim_start().starts_with('{') => return expand(&path, r, out),
            Some(r) => s = r,
            None => break,
        }
    }
    if path.len() > base.len() || rest.trim_start().starts_with("self") {
        out.push(path);
    }
}

/// The module path of a file under `src/`.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod") | Some("lib")) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().unwrap() != "bin" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Edges between the children of each folder (module path).
type Graph = BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>>;

/// The crate's module graph; with `tests`, test-only code counts too.
fn graph(tests: bool) -> Graph {
    // Where the build's tree is not on this machine (binaries carried elsewhere), the
    // copy of the tree the test runs in.
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let src = if built.is_dir() {
        built
    } else {
        PathBuf::from("src")
    };
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut sources: BTreeMap<ModPath, Source> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let code = strip(&std::fs::read_to_string(file).unwrap());
        let (parts, children, test_children) = split_inline(&module, &code);
        let mut from_child = BTreeMap::new();
        for (m, code, _) in &parts {
            if m != &module {
                continue;
            }
            // `use child::…` and `pub use child::…` at the top of a folder's own file.
            for line in code.lines() {
                let line = line.trim();
                let Some(u) = line
                    .strip_prefix("pub use ")
                    .or_else(|| line.strip_prefix("pub(crate) use "))
                    .or_else(|| line.strip_prefix("use "))
                else {
                    continue;
                };
                let child = ident(u);
                if children.contains(child) {
                    let mut names = Vec::new();
                    expand(&Vec::new(), u, &mut names);
                    for n in names {
                        let last = n.last().unwrap();
                        let last = last.as_str();
                        let name = match u.split(" as ").nth(1) {
                            Some(alias) if !u.contains('{') => ident(alias.trim()),
                            _ => last,
                        };
                        from_child.insert(name.to_string(), child.to_string());
                    }
                }
            }
        }
        sources.insert(
            module,
            Source {
                parts,
                children,
                test_children,
                from_child,
            },
        );
    }
    // A module is test-only when it, or a module it is inside, is declared under
    // `#[cfg(test)]`.
    let test_only = |module: &ModPath| {
        (1..=module.len()).any(|i| {
            sources
                .get(&module[..i - 1])
                .is_some_and(|parent| parent.test_children.contains(&module[i - 1]))
        })
    };
    let mut graph = Graph::new();
    for source in sources.values() {
        for (module, code, inline_test) in &source.parts {
            if !tests && (*inline_test || test_only(module)) {
                continue;
            }
            for target in paths(module, code) {
                // The folder both sit in: their longest common prefix.
                let common = module
                    .iter()
                    .zip(&target)
                    .take_while(|(a, b)| a == b)
                    .count();
                if common == module.len() {
                    continue; // the module itself, or one of its own children
                }
                let folder: ModPath = module[..common].to_vec();
                let from = module[common].clone();
                let Some(owner) = sources.get(&folder) else {
                    continue; // an inline module's folder: part of one file
                };
                let Some(name) = target.get(common) else {
                    continue; // the folder itself (`super::*` and the like)
                };
                let to = if owner.children.contains(name) {
                    name.clone()
                } else if let Some(child) = owner.from_child.get(name) {
                    child.clone()
                } else {
                    continue; // an item of the folder's own file
                };
                if from != to {
                    graph
                        .entry(folder)
                        .or_default()
                        .entry(from)
                        .or_default()
                        .insert(to);
                }
            }
        }
    }
    graph
}

/// A cycle among `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn show(folder: &ModPath) -> String {
    if folder.is_empty() {
        "the crate root".into()
    } else {
        folder.join("::")
    }
}

#[test]
fn no_folder_has_a_module_cycle() {
    // Test code included: a test that reaches back up would still make a cycle.
    let graph = graph(true);
    for (folder, edges) in &graph {
        println!("{}:", show(folder));
        for (from, to) in edges {
            println!(
                "  {from} → {}",
                to.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        if let Some(cycle) = find_cycle(edges) {
            panic!("a module cycle in {}: {}", show(folder), cycle.join(" → "));
        }
    }
}

#[test]
fn the_backends_and_the_store_never_use_the_executor() {
    // The library as built; tests may use the crate's random data where they like.
    let graph = graph(false);
    let root = &graph[&Vec::new()];
    let uses = |m: &str| root.get(m).cloned().unwrap_or_default();
    for m in ["backend", "cpu", "cuda", "warm", "matrix", "simd"] {
        assert!(!uses(m).contains("executor"), "{m} uses the executor");
    }
    // The trait lives below every backend: it names none of them.
    for m in ["cpu", "cuda", "warm", "executor"] {
        assert!(!uses("backend").contains(m), "backend uses {m}");
    }
    // The devices and the store know nothing of one another.
    for (a, b) in [("cpu", "cuda"), ("cpu", "warm"), ("cuda", "warm")] {
        assert!(!uses(a).contains(b) && !uses(b).contains(a), "{a} and {b}");
    }
    // The SIMD kernels are a leaf below the matrix types and the CPU backend.
    assert!(uses("simd").is_empty(), "simd uses {:?}", uses("simd"));
    assert!(uses("matrix").contains("simd") && uses("cpu").contains("backend"));
}

#[test]
fn the_checker_sees_paths_groups_and_inline_modules() {
    // The checker itself, on code shaped like ours: a checker that saw nothing would pass
    // every crate.
    let code = strip(
        "use super::{a::X, b}; // crate::c\n\
         fn f() { let s = \"crate::d {\"; crate::e::g(); let c = '{'; }\n\
         mod tests { use super::h; use crate::{i, j::{K, l::M}}; }\n",
    );
    let module = vec!["m".to_string(), "n".to_string()];
    let (parts, children, test_children) = split_inline(&module, &code);
    assert_eq!(children, BTreeSet::from(["tests".to_string()]));
    assert!(test_children.is_empty() && !parts[1].2);
    let named = |i: usize| -> Vec<String> {
        let mut p: Vec<String> = paths(&parts[i].0, &parts[i].1)
            .iter()
            .map(|p| p.join("::"))
            .collect();
        p.sort();
        p
    };
    assert_eq!(named(0), ["e::g", "m::a::X", "m::b"]);
    assert_eq!(named(1), ["i", "j::K", "j::l::M", "m::n::h"]);
    let mut cyclic = BTreeMap::new();
    cyclic.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    cyclic.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(find_cycle(&cyclic).is_some());
}
