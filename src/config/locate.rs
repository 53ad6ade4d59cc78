//! Turns a YAML parse or type error into a config issue that names the key.
//!
//! serde-saphyr reports where an error is (line and column) but not under which key. To name the key,
//! the document is read a second time into a bare tree of located nodes, and the error takes the
//! path of the last key or value that starts at or before its position.

use super::error::Issues;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Error as YamlError, Spanned};
use std::fmt;

/// Records a serde-saphyr error under the key path at its location.
pub(crate) fn push_yaml_error(issues: &mut Issues, src: &str, err: &YamlError) {
    let err = err.without_snippet();
    let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
    // A missing key or a container of the wrong kind belongs to the node that starts at the error,
    // not to the first key inside it.
    let container = matches!(
        err,
        YamlError::SerdeMissingField { .. } | YamlError::Unexpected { .. }
    );
    let path = key_path_at(src, line, column, container)
        .or_else(|| key_on_line(src, line))
        .filter(|p| !p.is_empty());
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
    issues.push(line, key, message);
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

/// For a document that does not parse at all: the key written on the error's line, if any.
fn key_on_line(src: &str, line: u64) -> Option<String> {
    let text = src
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let text = text.trim_start().trim_start_matches("- ").trim_start();
    let (key, _) = text.split_once(':')?;
    let key = key.trim().trim_matches(['"', '\'']);
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    plain.then(|| key.to_owned())
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        return key.to_owned();
    }
    format!("{path}.{key}")
}

/// The path of the node at (line, column). With `container`, the outermost node that starts there
/// (a mapping starts where its first key does, and a missing key belongs to the mapping); otherwise
/// the innermost. `None` when the document does not even parse as plain YAML.
fn key_path_at(src: &str, line: u64, column: u64, container: bool) -> Option<String> {
    // A duplicate key is one of the errors to locate, so this pass must tolerate it; the skipped
    // duplicate then takes the path of the entry before it, which has the same key.
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::FirstWins,
    };
    let root: Node = serde_saphyr::from_str_with_options(src, options).ok()?;
    let mut marks = Vec::new();
    walk(&root, String::new(), &mut marks);
    let target = (line, column);
    let best = marks
        .iter()
        .filter(|m| m.pos <= target)
        .map(|m| m.pos)
        .max()?;
    let mut at = marks.iter().filter(|m| m.pos == best);
    let mark = if container { at.next() } else { at.next_back() }?;
    Some(mark.path.clone())
}

struct Mark {
    pos: (u64, u64),
    path: String,
}

/// Pushes marks in document order: a mapping, then each key before its value.
fn walk(node: &Node, path: String, marks: &mut Vec<Mark>) {
    let loc = &node.0.referenced;
    marks.push(Mark {
        pos: (loc.line(), loc.column()),
        path: path.clone(),
    });
    match &node.0.value {
        Kind::Map(entries) => {
            for (key, value) in entries {
                let child = join_key(&path, &key.value.0);
                marks.push(Mark {
                    pos: (key.referenced.line(), key.referenced.column()),
                    path: child.clone(),
                });
                walk(value, child, marks);
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{path}[{i}]"), marks);
            }
        }
        Kind::Scalar => {}
    }
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
