//! The Grafana dashboard as data: its panels (rows' nested ones included), its queries
//! with Grafana's template variables substituted, and the grid and reference walks that
//! the structural checks use.

use std::collections::BTreeSet;

use serde_json::Value;

/// Grafana's grid is 24 columns wide.
pub const GRID_WIDTH: i64 = 24;

/// Defaults for Grafana's interval variables when the caller gives none; a caller whose
/// scrape interval is not 15 s passes its own (`("__rate_interval", "4s")`).
const BUILTIN_DEFAULTS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "5m"),
    ("__range_s", "300"),
    ("__range_ms", "300000"),
];

/// Grafana's global variables: always defined, whatever the dashboard declares.
pub const GRAFANA_BUILTINS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
    "__org",
    "__user",
    "__all",
    "timeFilter",
    "__timeFilter",
];

/// One query of one dashboard panel, variables substituted.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelQuery {
    pub panel_id: i64,
    pub title: String,
    /// The target's refId (`A`, `B`, ...).
    pub ref_id: String,
    pub expr: String,
    /// Grafana runs it as an instant query (tables, stats) rather than a range query.
    pub instant: bool,
}

/// The shipped Grafana dashboard, grafana/dashboards/pingscope.json.
pub fn shipped_dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/grafana/dashboards/pingscope.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// [`dashboard_queries`] of the shipped dashboard; fails when it has 20 or fewer (the panels
/// were not found).
pub fn shipped_queries(vars: &[(&str, &str)]) -> Vec<PanelQuery> {
    let queries = dashboard_queries(&shipped_dashboard(), vars);
    assert!(queries.len() > 20, "{} queries", queries.len());
    queries
}

/// Every panel query of a dashboard, rows' nested panels included, with `$var`, `${var}`,
/// `${var:format}` and `[[var]]` replaced from `vars`, then from the defaults for
/// `$__rate_interval` (1m), `$__interval` (15s) and `$__range` (5m). Hidden targets and
/// targets without `expr` are skipped. Unknown variables stay as they are.
pub fn dashboard_queries(dashboard_json: &Value, vars: &[(&str, &str)]) -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard_json) {
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        for target in targets {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            if target["hide"].as_bool() == Some(true) {
                continue;
            }
            out.push(PanelQuery {
                panel_id: panel["id"].as_i64().unwrap_or(-1),
                title: panel["title"].as_str().unwrap_or_default().to_string(),
                ref_id: target["refId"].as_str().unwrap_or_default().to_string(),
                expr: substitute(expr, vars),
                instant: target["instant"].as_bool() == Some(true)
                    && target["range"].as_bool() != Some(true),
            });
        }
    }
    out
}

/// Every panel of a dashboard in document order: top-level ones, and those nested in
/// (collapsed) rows right after their row.
pub fn all_panels(dashboard_json: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    if let Some(panels) = dashboard_json["panels"].as_array() {
        for panel in panels {
            out.push(panel);
            if let Some(nested) = panel["panels"].as_array() {
                out.extend(nested.iter());
            }
        }
    }
    out
}

/// Replace Grafana template variables in `text`; see [`dashboard_queries`].
/// `${var:regex}` escapes the value for a regular expression; other formats use it raw.
pub fn substitute(text: &str, vars: &[(&str, &str)]) -> String {
    let lookup = |name: &str| -> Option<&str> {
        vars.iter()
            .chain(BUILTIN_DEFAULTS.iter())
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(reference) = next_reference(rest) {
        out.push_str(&rest[..reference.start]);
        let original = &rest[reference.start..reference.end];
        match lookup(reference.name) {
            Some(value) if reference.format == Some("regex") => out.push_str(&regex_escape(value)),
            Some(value) => out.push_str(value),
            None => out.push_str(original),
        }
        rest = &rest[reference.end..];
    }
    out.push_str(rest);
    out
}

/// The names of every template variable `text` refers to.
pub fn variable_refs(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(reference) = next_reference(rest) {
        names.insert(reference.name.to_string());
        rest = &rest[reference.end..];
    }
    names
}

struct Reference<'a> {
    start: usize,
    end: usize,
    name: &'a str,
    format: Option<&'a str>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first `$name`, `${name[:format]}` or `[[name]]` in `s`, if any.
fn next_reference(s: &str) -> Option<Reference<'_>> {
    let mut search_from = 0;
    while search_from < s.len() {
        let dollar = s[search_from..].find('$').map(|i| i + search_from);
        let brackets = s[search_from..].find("[[").map(|i| i + search_from);
        let start = match (dollar, brackets) {
            (Some(d), Some(b)) => d.min(b),
            (Some(d), None) => d,
            (None, Some(b)) => b,
            (None, None) => return None,
        };
        let after = &s[start..];
        if let Some(inner) = after.strip_prefix("${") {
            if let Some(close) = inner.find('}') {
                let body = &inner[..close];
                let (name, format) = match body.split_once(':') {
                    Some((n, f)) => (n, Some(f)),
                    None => (body, None),
                };
                if !name.is_empty() && name.chars().all(is_name_char) {
                    return Some(Reference {
                        start,
                        end: start + 2 + close + 1,
                        name,
                        format,
                    });
                }
            }
        } else if let Some(inner) = after.strip_prefix("[[") {
            if let Some(close) = inner.find("]]") {
                let name = &inner[..close];
                if !name.is_empty() && name.chars().all(is_name_char) {
                    return Some(Reference {
                        start,
                        end: start + 2 + close + 2,
                        name,
                        format: None,
                    });
                }
            }
        } else if let Some(inner) = after.strip_prefix('$') {
            let len = inner
                .find(|c: char| !is_name_char(c))
                .unwrap_or(inner.len());
            if len > 0 {
                return Some(Reference {
                    start,
                    end: start + 1 + len,
                    name: &inner[..len],
                    format: None,
                });
            }
        }
        search_from = start + 1;
    }
    None
}

/// Escape the characters that are special in a (RE2) regular expression.
pub fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A panel's `gridPos`.
#[derive(Debug, Clone, Copy)]
pub struct Rect {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
}

impl Rect {
    pub fn of(panel: &Value) -> Rect {
        let g = &panel["gridPos"];
        let get = |k: &str| g[k].as_i64().unwrap_or(-1);
        Rect {
            x: get("x"),
            y: get("y"),
            w: get("w"),
            h: get("h"),
        }
    }

    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

/// Panic unless every panel lies inside the grid and no two of them overlap.
pub fn assert_no_overlap(section: &str, panels: &[&Value]) {
    let rects: Vec<(String, Rect)> = panels
        .iter()
        .map(|p| (p["title"].as_str().unwrap_or("?").to_string(), Rect::of(p)))
        .collect();
    for (title, r) in &rects {
        assert!(
            r.x >= 0 && r.y >= 0 && r.w > 0 && r.h > 0 && r.x + r.w <= GRID_WIDTH,
            "{section}: panel {title:?} has a bad gridPos {r:?}"
        );
    }
    for (i, (a, ra)) in rects.iter().enumerate() {
        for (b, rb) in &rects[i + 1..] {
            assert!(
                !ra.overlaps(rb),
                "{section}: {a:?} {ra:?} overlaps {b:?} {rb:?}"
            );
        }
    }
}

/// Every `datasource` value anywhere in the JSON, with where it was found.
pub fn datasource_refs<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "datasource" {
                    out.push((at.clone(), child));
                } else {
                    datasource_refs(child, format!("{at}.{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                datasource_refs(child, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Every string anywhere in the JSON.
pub fn all_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Object(map) => map.values().for_each(|c| all_strings(c, out)),
        Value::Array(items) => items.iter().for_each(|c| all_strings(c, out)),
        _ => {}
    }
}
