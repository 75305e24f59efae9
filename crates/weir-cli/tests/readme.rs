//! The README's configuration examples stay true: every `yaml` block in it passes
//! `weir config check`, with each `${VAR}` it names set to a dummy value. Other tools' YAML (a
//! Prometheus scrape config) is fenced `yml` instead, so it is not taken for weir's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::weir;

/// Each fenced `yaml` block (also inside list items), without its indentation, with the line
/// it starts on.
fn yaml_blocks(readme: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim_start() == "```yaml" {
            let indent = line.len() - line.trim_start().len();
            let mut body = String::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                body.push_str(lines[i].get(indent..).unwrap_or(""));
                body.push('\n');
                i += 1;
            }
            blocks.push((i, body));
        }
        i += 1;
    }
    blocks
}

/// The names in `${NAME}` and `${NAME:-default}`.
fn env_names(text: &str) -> Vec<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

#[test]
fn every_configuration_block_in_the_readme_passes_the_checker() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let blocks = yaml_blocks(&readme);
    assert!(blocks.len() >= 2, "the README's yaml blocks were not found");
    let dir = std::env::temp_dir().join(format!("weir-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (line, body) in blocks {
        let file = dir.join(format!("readme-line-{line}.yaml"));
        std::fs::write(&file, &body).unwrap();
        let mut cmd = weir();
        cmd.args(["config", "check", file.to_str().unwrap()]);
        for name in env_names(&body) {
            cmd.env(name, "dummy-value");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "README.md's yaml block ending at line {line} fails the checker:\n{}\n{body}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
