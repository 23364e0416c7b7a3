//! Unit test of the docs: docs/architecture.md's module map names every file under
//! `src/`, by its path under `src/` or by its bare name in a paragraph that names its
//! directory (`format/` … `json.rs`), and every path it names exists.
use std::{collections::BTreeSet, fs, path::Path};

/// Every file under `dir`, as paths relative to `root`.
fn files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(root, &path, out);
        } else {
            let relative = path.strip_prefix(root).expect("under src/");
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The file paths the map's paragraphs name, and those it writes out with their
/// directory.
fn named(map: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut named, mut written) = (BTreeSet::new(), BTreeSet::new());
    for paragraph in map.split("\n\n") {
        let quoted: Vec<&str> = paragraph.split('`').skip(1).step_by(2).collect();
        let dirs: BTreeSet<&str> = (quoted.iter())
            .filter_map(|q| q.rsplit_once('/').map(|(dir, _)| dir))
            .collect();
        for q in quoted.iter().filter(|q| q.contains('.')) {
            named.insert(q.to_string());
            if q.contains('/') {
                written.insert(q.to_string());
            } else {
                named.extend(dirs.iter().map(|dir| format!("{dir}/{q}")));
            }
        }
    }
    (named, written)
}

#[test]
fn the_module_map_names_every_file_under_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/architecture.md")).expect("the architecture doc");
    let map = doc
        .split("## Module map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Module map section");
    let (named, written) = named(map);
    let mut all = Vec::new();
    files(&root.join("src"), &root.join("src"), &mut all);
    let missing: Vec<&String> = all.iter().filter(|f| !named.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md's module map does not name {missing:?}"
    );
    let stale: Vec<&String> = (written.iter())
        .filter(|f| f.ends_with(".rs") && !all.contains(f))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/architecture.md's module map names files that do not exist: {stale:?}"
    );
}
