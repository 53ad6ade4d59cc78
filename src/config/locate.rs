//! Turns a YAML parse or type error into a config issue that names the key, and lets the parse go
//! on past it.
//!
//! serde-saphyr reports where an error is (line and column) but not under which key. To name the key,
//! the document is read a second time into a bare [`Tree`] of located nodes, and the error takes the
//! path of the last key or value that starts at or before its position.
//!
//! serde stops at the first error. To report the others too, [`parse_recovering`] blanks the
//! mapping entry at fault (spaces in place of its text, so every line and column stays where it
//! was) and parses again, a bounded number of times. A syntax error ends it: the tree cannot be
//! read, so there is nothing safe to blank.

use super::error::Issues;
use super::yaml_limits::{budget_words, options};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Error as YamlError, Spanned};
use std::fmt;
use std::ops::Range;

/// How many YAML errors one file may report before the parse gives up.
const MAX_RECOVERIES: usize = 50;

/// A successful lenient parse.
pub(crate) struct Recovered<T> {
    pub value: T,
    pub skipped: Skipped,
}

/// Key paths whose entries were blanked: later rules must not report on them, since what they
/// would see there is the blank, not the user's text.
#[derive(Debug, Default)]
pub(crate) struct Skipped(Vec<String>);

impl Skipped {
    /// Is `key` at or under a blanked path?
    pub(crate) fn covers(&self, key: &str) -> bool {
        self.0.iter().any(|p| {
            key == p
                || key
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }
}

/// Deserializes `src`, recording every YAML error it can find. `None` when the text could not be
/// read into `T` at all; the issues say why.
pub(crate) fn parse_recovering<T: DeserializeOwned>(
    issues: &mut Issues,
    src: &str,
) -> Option<Recovered<T>> {
    let mut text = src.to_owned();
    let mut skipped = Skipped::default();
    // The tree of `text` when the previous round already built it.
    let mut known_tree = None;
    for _ in 0..MAX_RECOVERIES {
        let err = match serde_saphyr::from_str_with_options::<T>(&text, options(false)) {
            Ok(value) => return Some(Recovered { value, skipped }),
            Err(err) => err,
        };
        let tree = match known_tree.take().map_or_else(|| Tree::parse(&text), Ok) {
            Ok(tree) => tree,
            Err(syntax) => {
                // The text is not YAML at all. serde may have met an error of its own before
                // reaching the broken spot: report both, in order, then stop.
                let first = locate(&text, None, &err);
                let broken = locate(&text, None, &syntax);
                if (first.line, &first.message) != (broken.line, &broken.message) {
                    issues.push(first.line, first.key, first.message);
                }
                issues.push(broken.line, broken.key, broken.message);
                return None;
            }
        };
        let located = locate(&text, Some(&tree), &err);
        issues.push(located.line, located.key, located.message);
        let entry = located.path.as_deref().and_then(|p| tree.entry_for(p))?;
        let range = entry.range.clone();
        // A blanked value inside a list item (a target, a file_sd group) may leave a hole the rules
        // would report (a missing host, a name now taken from the host): skip the whole item. An
        // unknown key leaves no hole, and elsewhere a blank only means the default: skip the entry.
        let skip = if !located.unknown_key && entry.parent.ends_with(']') {
            entry.parent.clone()
        } else {
            entry.path.clone()
        };
        // Offsets come from the parser; should one ever miss a character boundary, stop rather
        // than cut a character in two.
        let original = text.get(range.clone())?;
        let mut blanked: String = original
            .chars()
            .map(|c| if c == '\n' || c == '\r' { c } else { ' ' })
            .collect();
        if entry.only_in_item && blanked.len() >= 2 {
            // `- key: value` blanked would leave a null item where a mapping belongs.
            blanked.replace_range(..2, "{}");
        }
        if blanked == original {
            return None;
        }
        let mut next = text.clone();
        next.replace_range(range, &blanked);
        // Blanking must leave valid YAML, or the next round would report an error of its own making.
        known_tree = Some(Tree::parse(&next).ok()?);
        text = next;
        skipped.0.push(skip);
    }
    None
}

struct Located {
    line: u64,
    key: String,
    message: String,
    /// The node's path, when the tree could be read.
    path: Option<String>,
    unknown_key: bool,
}

fn locate(src: &str, tree: Option<&Tree>, err: &YamlError) -> Located {
    let err = err.without_snippet();
    let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
    // A missing key or a container of the wrong kind belongs to the node that starts at the error,
    // not to the first key inside it.
    let container = matches!(
        err,
        YamlError::SerdeMissingField { .. } | YamlError::Unexpected { .. }
    );
    let tree_path = tree.and_then(|t| t.path_at(line, column, container));
    let path = tree_path
        .clone()
        .or_else(|| key_on_line(src, line))
        .filter(|p| !p.is_empty());
    let unknown_key = matches!(err, YamlError::SerdeUnknownField { .. });
    let (key, message) = match err {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => (
            path.unwrap_or_else(|| field.clone()),
            format!("unknown key (known keys here: {})", expected.join(", ")),
        ),
        YamlError::SerdeMissingField { field, .. } => (
            join_key(path.as_deref().unwrap_or(""), field),
            "required key is missing".to_owned(),
        ),
        other => (
            path.unwrap_or_else(|| "(document)".to_owned()),
            describe(other),
        ),
    };
    Located {
        line,
        key,
        message,
        path: tree_path,
        unknown_key,
    }
}

/// A short message for a parse or type error, without the location the library appends.
fn describe(err: &YamlError) -> String {
    match err {
        YamlError::InvalidScalar { ty, .. } => format!("expected {}", friendly_type(ty)),
        YamlError::Unexpected { expected, .. } => format!("expected {}", friendly_type(expected)),
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => format!("wrong type: expected {expected}, found {unexpected}"),
        YamlError::DuplicateMappingKey { .. } => "duplicate key".to_owned(),
        YamlError::NullIntoString { .. } => "expected a string, found null".to_owned(),
        YamlError::Budget { breach, .. } => budget_words(breach),
        other => {
            let text = other.to_string();
            // The plain rendering ends with " at line L, column C"; the issue already says where.
            match text.rfind(" at line ") {
                Some(cut) => text[..cut].to_owned(),
                None => text,
            }
        }
    }
}

fn friendly_type(ty: &str) -> String {
    match ty {
        "i64" | "i32" | "u64" | "u32" | "u16" | "u8" => "an integer".to_owned(),
        "f64" | "f32" | "floating point" => "a number".to_owned(),
        "bool" => "true or false".to_owned(),
        "string scalar" | "string" => "a string".to_owned(),
        "sequence start" => "a list".to_owned(),
        "mapping start" => "a mapping (key: value)".to_owned(),
        other => other.to_owned(),
    }
}

/// For a document that does not parse at all: the path of the key written on the error's line,
/// read from the indentation of the block-style lines above it. `None` when that line has no key.
fn key_on_line(src: &str, line: u64) -> Option<String> {
    /// What the next line up must be: the parent of a mapping at this indent, or of a sequence
    /// whose dashes are at this column.
    enum Need {
        MapParent(usize),
        SeqParent(usize),
    }
    let lines: Vec<&str> = src.lines().collect();
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    let here = BlockLine::read(lines.get(at)?)?;
    let mut segments = vec![here.key.clone()?];
    let item = |segments: &mut Vec<String>, row: usize, dash: usize| {
        segments.push(format!("[{}]", item_index(&lines, row, dash)));
        Need::SeqParent(dash)
    };
    let mut need = match here.dash {
        Some(dash) => item(&mut segments, at, dash),
        None => Need::MapParent(here.key_indent),
    };
    let mut row = at;
    // Each round moves at least one line up, so this ends.
    while row > 0 {
        let above = |keep: &dyn Fn(&BlockLine) -> bool| {
            (0..row).rev().find_map(|r| {
                BlockLine::read(lines[r])
                    .filter(|l| keep(l))
                    .map(|l| (r, l))
            })
        };
        let found = match need {
            Need::MapParent(0) => break,
            Need::MapParent(indent) => {
                above(&|l| l.key_indent < indent || l.dash.is_some_and(|d| d < indent))
            }
            Need::SeqParent(dash) => above(&|l| l.dash != Some(dash) && l.key_indent <= dash),
        };
        let Some((r, parent)) = found else { break };
        row = r;
        let inside_item = matches!(need, Need::MapParent(i) if parent.key_indent >= i);
        if !inside_item {
            segments.push(parent.key.clone()?);
        }
        need = match parent.dash {
            Some(dash) => item(&mut segments, r, dash),
            None => Need::MapParent(parent.key_indent),
        };
    }
    segments.reverse();
    let mut path = String::new();
    for segment in segments {
        if !path.is_empty() && !segment.starts_with('[') {
            path.push('.');
        }
        path.push_str(&segment);
    }
    Some(path)
}

/// How many items of the block sequence at `dash` come before the one starting on `row`.
fn item_index(lines: &[&str], row: usize, dash: usize) -> usize {
    let mut index = 0;
    for r in (0..row).rev() {
        let Some(l) = BlockLine::read(lines[r]) else {
            continue;
        };
        match l.dash {
            Some(d) if d == dash => index += 1,
            Some(d) if d > dash => {}
            _ if l.key_indent <= dash => break,
            _ => {}
        }
    }
    index
}

/// One line of block YAML: `[indent][- ]key: ...`.
struct BlockLine {
    /// Column of the `-` when the line starts a sequence item.
    dash: Option<usize>,
    key_indent: usize,
    key: Option<String>,
}

impl BlockLine {
    /// `None` for blank and comment lines.
    fn read(text: &str) -> Option<BlockLine> {
        let rest = text.trim_start_matches(' ');
        let mut indent = text.len() - rest.len();
        if rest.is_empty() || rest.starts_with('#') {
            return None;
        }
        let mut dash = None;
        let mut rest = rest;
        if rest == "-" || rest.starts_with("- ") {
            dash = Some(indent);
            let after = rest[1..].trim_start_matches(' ');
            indent += rest.len() - after.len();
            rest = after;
        }
        let key = rest.split_once(':').and_then(|(k, _)| {
            let k = k.trim().trim_matches(['"', '\'']);
            let plain = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            plain.then(|| k.to_owned())
        });
        Some(BlockLine {
            dash,
            key_indent: indent,
            key,
        })
    }
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        return key.to_owned();
    }
    format!("{path}.{key}")
}

/// The located nodes of a document, in document order.
pub(crate) struct Tree {
    marks: Vec<Mark>,
    entries: Vec<Entry>,
}

struct Mark {
    pos: (u64, u64),
    path: String,
}

/// One `key: value` of a mapping, with the bytes it spans.
struct Entry {
    path: String,
    parent: String,
    range: Range<usize>,
    /// The only entry of a block mapping that is a list item.
    only_in_item: bool,
}

impl Tree {
    /// Fails when the text is not even plain YAML.
    pub(crate) fn parse(src: &str) -> Result<Tree, YamlError> {
        // A duplicate key is one of the errors to locate, so this pass must tolerate it; the
        // skipped duplicate then takes the path of the entry before it, which has the same key.
        let root: Node = serde_saphyr::from_str_with_options(src, options(true))?;
        let mut tree = Tree {
            marks: Vec::new(),
            entries: Vec::new(),
        };
        tree.walk(src, &root, String::new());
        Ok(tree)
    }

    /// The path of the node at (line, column). With `container`, the outermost node that starts
    /// there (a mapping starts where its first key does); otherwise the innermost.
    fn path_at(&self, line: u64, column: u64, container: bool) -> Option<String> {
        let target = (line, column);
        let best = self
            .marks
            .iter()
            .filter(|m| m.pos <= target)
            .map(|m| m.pos)
            .max()?;
        let mut at = self.marks.iter().filter(|m| m.pos == best);
        let mark = if container { at.next() } else { at.next_back() }?;
        Some(mark.path.clone())
    }

    /// The innermost mapping entry at or above `path`.
    fn entry_for(&self, path: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| {
                path == e.path
                    || path
                        .strip_prefix(e.path.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
            .max_by_key(|e| e.path.len())
    }

    /// Records marks in document order (a mapping, then each key before its value) and returns
    /// the byte just past the node.
    fn walk(&mut self, src: &str, node: &Node, path: String) -> usize {
        let loc = &node.0.referenced;
        let start = byte_offset(loc);
        self.marks.push(Mark {
            pos: (loc.line(), loc.column()),
            path: path.clone(),
        });
        let mut end = start + loc.span().byte_len().map_or(0, |l| l as usize);
        match &node.0.value {
            Kind::Map(entries) => {
                let only_in_item = entries.len() == 1
                    && path.ends_with(']')
                    && src.as_bytes().get(start) != Some(&b'{');
                for (key, value) in entries {
                    let child = join_key(&path, &key.value.0);
                    self.marks.push(Mark {
                        pos: (key.referenced.line(), key.referenced.column()),
                        path: child.clone(),
                    });
                    let key_start = byte_offset(&key.referenced);
                    let value_end = self.walk(src, value, child.clone());
                    self.entries.push(Entry {
                        path: child,
                        parent: path.clone(),
                        range: key_start..value_end,
                        only_in_item,
                    });
                    end = end.max(value_end);
                }
            }
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    end = end.max(self.walk(src, item, format!("{path}[{i}]")));
                }
            }
            Kind::Scalar => {}
        }
        // A flow collection ends at its closing bracket, past its last child.
        if matches!(src.as_bytes().get(start), Some(b'{' | b'[')) {
            end = end.max(closing_bracket(src, start));
        }
        end.min(src.len())
    }
}

fn byte_offset(loc: &serde_saphyr::Location) -> usize {
    loc.span()
        .byte_offset()
        .and_then(|o| usize::try_from(o).ok())
        .unwrap_or(0)
}

/// The byte after the bracket that closes the one at `open`, skipping quoted text.
fn closing_bracket(src: &str, open: usize) -> usize {
    let bytes = src.as_bytes();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = open;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(b'"') if b == b'\\' => i += 1,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    bytes.len()
}

#[derive(Deserialize)]
struct Node(Spanned<Kind>);

enum Kind {
    Map(Vec<(Spanned<Key>, Node)>),
    Seq(Vec<Node>),
    Scalar,
}

/// A mapping key as text, whatever its YAML type.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".to_owned()))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl<'de> Visitor<'de> for KindVisitor {
            type Value = Kind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Kind, E> {
                Ok(Kind::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Kind, E> {
                Ok(Kind::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Kind, E> {
                Ok(Kind::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kind, E> {
                Ok(Kind::Scalar)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Kind, E> {
                Ok(Kind::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
                Ok(Kind::Scalar)
            }
            fn visit_none<E: de::Error>(self) -> Result<Kind, E> {
                Ok(Kind::Scalar)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(Kind::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<Key>>()? {
                    let value = map.next_value::<Node>()?;
                    entries.push((key, value));
                }
                Ok(Kind::Map(entries))
            }
        }
        d.deserialize_any(KindVisitor)
    }
}
