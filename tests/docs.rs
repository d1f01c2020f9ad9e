//! The README says what the code is: its crate table names every crate of the workspace, by its
//! directory and its package name, and no crate that is not there.

use crate::util::root;

#[test]
fn the_readme_crate_table_matches_the_crates() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| crate | role |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    let mut dirs: Vec<String> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    for dir in &dirs {
        let manifest =
            std::fs::read_to_string(root().join("crates").join(dir).join("Cargo.toml")).unwrap();
        let name = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|n| n.strip_suffix('"'))
            .unwrap_or_else(|| panic!("crates/{dir}/Cargo.toml has a name"));
        let row = format!("| `crates/{dir}` (`{name}`) |");
        assert!(
            table.iter().any(|l| l.starts_with(&row)),
            "README's crate table lacks `{row}`"
        );
    }
    // The CLI is the root package's binary, in crates/cli without a manifest of its own.
    assert!(table
        .iter()
        .any(|l| l.starts_with("| `crates/cli` (binary `bluegreen`) |")));
    assert_eq!(
        table.len(),
        dirs.len() + 1,
        "one row per crate, no more: {table:#?}"
    );
}
