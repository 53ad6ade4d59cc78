//! The examples of docs/operations.md are tested: every `promql` block evaluates in a real
//! Prometheus, and every `yaml` block that is a Prometheus configuration (it starts with
//! `global:` or `scrape_configs:`) passes `promtool check config`.

use std::path::PathBuf;

use super::prom::Prometheus;
use super::{prometheus_available, read, repo, run_ok, tool};

/// The fenced code blocks of a Markdown text as `(language, body)`.
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => current = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.extend(current.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

fn operations_doc() -> Vec<(String, String)> {
    code_blocks(&read(&repo().join("docs/operations.md")))
}

#[test]
fn code_blocks_are_found() {
    let blocks = code_blocks("a\n```promql\nup\n```\n```yaml\nx: 1\ny: 2\n```\n");
    assert_eq!(
        blocks,
        vec![
            ("promql".to_string(), "up\n".to_string()),
            ("yaml".to_string(), "x: 1\ny: 2\n".to_string())
        ]
    );
}

#[test]
fn promql_examples_evaluate() {
    if !prometheus_available() {
        return;
    }
    let queries: Vec<String> = operations_doc()
        .into_iter()
        .filter(|(lang, _)| lang == "promql")
        .map(|(_, body)| body)
        .collect();
    assert!(queries.len() >= 8, "{} promql examples", queries.len());
    let prom = Prometheus::start("global:\n  scrape_interval: 15s\n", &[]);
    let failures: Vec<String> = queries
        .iter()
        .filter_map(|q| prom.try_query(q).err().map(|e| format!("{q}\n  {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn prometheus_config_examples_pass_promtool() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let configs: Vec<String> = operations_doc()
        .into_iter()
        .filter(|(lang, body)| {
            lang == "yaml" && (body.starts_with("global:") || body.starts_with("scrape_configs:"))
        })
        .map(|(_, body)| body)
        .collect();
    assert!(configs.len() >= 3, "{} config examples", configs.len());
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temporary dir: {e}"),
    };
    for (i, config) in configs.iter().enumerate() {
        let path: PathBuf = dir.path().join(format!("example-{i}.yml"));
        if let Err(e) = std::fs::write(&path, config) {
            panic!("write {}: {e}", path.display());
        }
        run_ok(&promtool, &["check", "config", &path.display().to_string()]);
    }
}
