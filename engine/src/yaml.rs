//! YAML into span-carrying documents.
//!
//! `serde-saphyr` parses every document of a file (with its budgets against alias bombs and deep
//! nesting) into a tree whose every node knows its line and column. The tree becomes a JSON
//! value plus a [`SpanIndex`] from JSON pointer to position, so that the schema check and the
//! compiler can report *every* problem at its exact place rather than stop at the first serde
//! error.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::{Location, Spanned};

use crate::diagnostic::Pos;

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// A YAML syntax (or budget) error, with where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub pos: Pos,
    /// What it said.
    pub message: String,
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// Its index in the file, from 0.
    pub index: usize,
    /// Its content as JSON.
    pub value: Value,
    /// Where each node of `value` was written.
    pub spans: SpanIndex,
}

/// Where each node of a document was written, by JSON pointer (`/spec/steps/0/risk`).
#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    nodes: HashMap<String, NodeSpan>,
}

#[derive(Debug, Clone, Copy)]
struct NodeSpan {
    key: Option<Pos>,
    value: Pos,
}

impl SpanIndex {
    /// Where the value at `pointer` was written, or its nearest written ancestor's position
    /// when it is absent (a missing field is reported at the object that lacks it).
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.lookup(pointer).map(|n| n.value).unwrap_or_default()
    }

    /// Where the key of the entry at `pointer` was written (its value's position for sequence
    /// items and the root), with the same ancestor fallback.
    pub fn key_pos(&self, pointer: &str) -> Pos {
        self.lookup(pointer)
            .map(|n| n.key.unwrap_or(n.value))
            .unwrap_or_default()
    }

    fn lookup(&self, pointer: &str) -> Option<NodeSpan> {
        let mut pointer = pointer;
        loop {
            if let Some(span) = self.nodes.get(pointer) {
                return Some(*span);
            }
            if pointer.is_empty() {
                return None;
            }
            pointer = pointer.rsplit_once('/').map_or("", |(parent, _)| parent);
        }
    }
}

/// Appends a segment to a JSON pointer, escaping it as RFC 6901 says.
pub fn push_pointer(pointer: &str, segment: &str) -> String {
    let escaped = segment.replace('~', "~0").replace('/', "~1");
    format!("{pointer}/{escaped}")
}

/// Parses every document of `text`. Empty documents (only comments, a trailing `---`) are
/// skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(SyntaxError {
            pos: Pos::new(1, 1),
            message: format!(
                "file is {} bytes, more than the {MAX_FILE_BYTES} bytes a playbook file may have",
                text.len()
            ),
        });
    }
    // YAML 1.2 booleans only: `n`, `no`, `on`, `off` stay strings (a node called `n` or a
    // namespace called `no` must not turn into `false`, as YAML 1.1 would have it). Numbers
    // with leading zeros stay strings too, so `0755` is not silently read as 755.
    let options = serde_saphyr::options! {
        with_snippet: false,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
    };
    let nodes: Vec<Node> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| SyntaxError {
            pos: e.location().map(pos_of).unwrap_or(Pos::new(1, 1)),
            message: plain_message(&e),
        })?;
    Ok(nodes
        .into_iter()
        .filter(|node| !matches!(node.value, NodeValue::Null))
        .enumerate()
        .map(|(index, node)| {
            let mut spans = SpanIndex::default();
            let value = node.into_json(String::new(), None, &mut spans);
            Document {
                index,
                value,
                spans,
            }
        })
        .collect())
}

fn plain_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    // The plain rendering ends with " at line L column C"; the position is reported apart.
    let text = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut text = text.trim().to_string();
    if let Some(first) = text.get(..1) {
        let lower = first.to_lowercase();
        text.replace_range(..1, &lower);
    }
    text
}

fn pos_of(location: Location) -> Pos {
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX).max(1);
    Pos::new(clamp(location.line()), clamp(location.column()))
}

/// A YAML node with its position.
#[derive(Debug)]
struct Node {
    value: NodeValue,
    pos: Pos,
}

#[derive(Debug)]
enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn into_json(self, pointer: String, key: Option<Pos>, spans: &mut SpanIndex) -> Value {
        let value = match self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(b),
            NodeValue::Int(i) => Value::Number(i.into()),
            NodeValue::Uint(u) => Value::Number(u.into()),
            NodeValue::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            NodeValue::Str(s) => Value::String(s),
            NodeValue::Seq(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| item.into_json(format!("{pointer}/{i}"), None, spans))
                    .collect(),
            ),
            NodeValue::Map(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    let name = k.value.key_string();
                    let child = push_pointer(&pointer, &name);
                    let value = v.into_json(child, Some(k.pos), spans);
                    map.insert(name, value);
                }
                Value::Object(map)
            }
        };
        spans.nodes.insert(
            pointer,
            NodeSpan {
                key,
                value: self.pos,
            },
        );
        value
    }
}

impl NodeValue {
    fn key_string(&self) -> String {
        match self {
            NodeValue::Null => "null".into(),
            NodeValue::Bool(b) => b.to_string(),
            NodeValue::Int(i) => i.to_string(),
            NodeValue::Uint(u) => u.to_string(),
            NodeValue::Float(f) => f.to_string(),
            NodeValue::Str(s) => s.clone(),
            NodeValue::Seq(_) => "[sequence]".into(),
            NodeValue::Map(_) => "{mapping}".into(),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<NodeValue>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            pos: pos_of(spanned.referenced),
        })
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        NodeValue::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeValue, E> {
        Ok(NodeValue::Uint(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v.to_string()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeValue, E> {
        Ok(NodeValue::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(NodeValue::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(NodeValue::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_knows_where_it_was_written() {
        let text = "a: 1\nb:\n  - x\n  - {c: true}\n";
        let docs = parse_documents(text).expect("parses");
        assert_eq!(docs.len(), 1);
        let spans = &docs[0].spans;
        assert_eq!(spans.key_pos("/a"), Pos::new(1, 1));
        assert_eq!(spans.value_pos("/a"), Pos::new(1, 4));
        assert_eq!(spans.value_pos("/b/1/c"), Pos::new(4, 9));
        assert_eq!(spans.key_pos("/b/1/c"), Pos::new(4, 6));
        // An absent field falls back to its nearest written ancestor.
        assert_eq!(spans.value_pos("/b/1/missing"), spans.value_pos("/b/1"));
    }

    #[test]
    fn multiple_documents_are_kept_apart_and_empty_ones_skipped() {
        let text = "---\nkind: A\n---\n# nothing\n---\nkind: B\n";
        let docs = parse_documents(text).expect("parses");
        let kinds: Vec<_> = docs.iter().map(|d| d.value["kind"].clone()).collect();
        assert_eq!(kinds, vec!["A", "B"]);
        assert_eq!(docs[1].spans.value_pos("/kind"), Pos::new(6, 7));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").expect_err("unclosed flow sequence");
        assert!(err.pos.line >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn only_yaml_1_2_booleans_are_booleans() {
        let docs = parse_documents("a: n\nb: no\nc: on\nd: true\ne: 0755\n").expect("parses");
        let v = &docs[0].value;
        assert_eq!(v["a"], "n");
        assert_eq!(v["b"], "no");
        assert_eq!(v["c"], "on");
        assert_eq!(v["d"], true);
        assert_eq!(v["e"], "0755");
    }

    #[test]
    fn duplicate_keys_are_an_error() {
        let err = parse_documents("a: 1\na: 2\n").expect_err("duplicate key");
        assert_eq!(err.pos.line, 2, "{err:?}");
    }

    #[test]
    fn alias_bombs_are_refused_by_the_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        assert!(parse_documents(&text).is_err());
    }

    #[test]
    fn pointers_escape_slashes_and_tildes() {
        assert_eq!(push_pointer("/a", "x/y~z"), "/a/x~1y~0z");
    }
}
