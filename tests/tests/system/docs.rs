//! The repository stands alone for its users: every link in its Markdown documents points to
//! a file inside it (no web addresses, no paths outside the checkout), and the contract it
//! implements is one of those files.

use std::path::{Path, PathBuf};

/// The repository's root (this crate is `tests/` inside it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            markdown_files(&path, found);
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// The targets of `[text](target)` links in `text`.
fn links(text: &str) -> Vec<&str> {
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            rest.find(')').map(|end| &rest[..end])
        })
        .collect()
}

#[test]
fn every_link_in_the_docs_resolves_inside_the_repository() {
    let root = root().canonicalize().unwrap();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(files.len() >= 5, "found the docs: {files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in links(&text) {
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() {
                continue; // a link within the page
            }
            let resolved = file.parent().unwrap().join(path).canonicalize();
            let inside = resolved.as_ref().is_ok_and(|p| p.starts_with(&root));
            if target.contains("://") || !inside {
                broken.push(format!(
                    "{}: {target}",
                    file.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that leave the repository or lead nowhere: {broken:#?}"
    );
}

#[test]
fn the_contract_is_in_the_repository() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("](docs/API.md)"),
        "the README points to the contract"
    );
    let contract = std::fs::read_to_string(root().join("docs/API.md")).unwrap();
    for section in [
        "## 2. `POST /api/v1/customers`",
        "## 3. NATS interface",
        "## 4. Reads",
        "## 5. Idempotency",
        "## 6. Storage",
        "## 7. Who may call",
        "## 8. Events",
        "## 9. Replicated mode",
    ] {
        assert!(contract.contains(section), "docs/API.md has {section}");
    }
}
