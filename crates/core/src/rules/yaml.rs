//! A rule file as a tree of YAML nodes that remember where they were
//! written, so every error the loader finds names its line and column.
//!
//! Built from the events of `saphyr-parser` rather than a generic YAML value:
//! the loader needs the position of keys as well as values, whether a scalar
//! was quoted (`null` is a null, `'null'` is text; `1.10` stays `1.10`), and
//! its own message for a key written twice.

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, SpannedEventReceiver, Tag};
use serde_json::{Map, Number, Value};

/// A position in a file, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos { line: span.start.line(), column: span.start.col() + 1 }
    }

    /// `offset` characters further on the same line.
    pub fn plus(self, offset: usize) -> Pos {
        Pos { line: self.line, column: self.column + offset }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Scalar { text: String, quoted: bool, pos: Pos },
    Seq { items: Vec<Node>, pos: Pos },
    Map { entries: Vec<(Node, Node)>, pos: Pos },
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. } | Node::Seq { pos, .. } | Node::Map { pos, .. } => *pos,
        }
    }

    /// The text of a scalar (quoted or not).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A plain `null`, `~` or nothing at all.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { text, quoted: false, .. } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A plain `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Scalar { text, quoted: false, .. } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// What kind of node it is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { .. } if self.is_null() => "null",
            Node::Scalar { .. } => "a value",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a map",
        }
    }

    /// The node as JSON, with YAML's core schema for plain scalars
    /// (null, booleans, integers, floats); quoted scalars stay text.
    pub fn to_json(&self) -> Value {
        match self {
            Node::Scalar { text, quoted: true, .. } => Value::String(text.clone()),
            Node::Scalar { text, quoted: false, .. } => plain_to_json(text),
            Node::Seq { items, .. } => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map { entries, .. } => {
                let mut map = Map::new();
                for (key, value) in entries {
                    let key = match key {
                        Node::Scalar { text, .. } => text.clone(),
                        other => other.to_json().to_string(),
                    };
                    map.insert(key, value.to_json());
                }
                Value::Object(map)
            }
        }
    }
}

fn plain_to_json(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Ok(u) = text.parse::<u64>() {
            return Value::Number(u.into());
        }
    }
    let looks_float = digits.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_float {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(text.to_owned())
}

/// A YAML error: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// The documents of a YAML text.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(scan_error(&e));
    }
    match builder.error {
        Some(e) => Err(e),
        None => Ok(builder.docs),
    }
}

fn scan_error(e: &ScanError) -> YamlError {
    let mark = e.marker();
    YamlError { pos: Pos { line: mark.line(), column: mark.col() + 1 }, message: format!("invalid YAML: {}", e.info()) }
}

enum Open {
    Seq { items: Vec<Node>, pos: Pos },
    Map { entries: Vec<(Node, Node)>, key: Option<Node>, pos: Pos },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    docs: Vec<Node>,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { pos, message });
        }
    }

    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let duplicate = match &k {
                        Node::Scalar { text, .. } => entries.iter().find(|(e, _)| e.as_str() == Some(text)).map(|(e, _)| (text.clone(), e.pos())),
                        _ => None,
                    };
                    if let Some((text, first)) = duplicate {
                        let pos = k.pos();
                        self.fail(pos, format!("duplicate key {text:?} (first at line {})", first.line));
                        return;
                    }
                    entries.push((k, node));
                }
            },
        }
    }

    /// Core schema tags (`!!str`, `!!int`, …) are understood; others are refused.
    fn tag_quotes(&mut self, tag: Option<&Tag>, pos: Pos) -> Option<bool> {
        let tag = tag?;
        if tag.is_yaml_core_schema() {
            return Some(tag.suffix == "str");
        }
        self.fail(pos, format!("YAML tag {}{} is not supported in rules", tag.handle, tag.suffix));
        None
    }
}

impl<'input> SpannedEventReceiver<'input> for Builder {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::of(&span);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd => {}
            Event::Alias(_) => self.fail(pos, "YAML aliases (*name) are not supported in rules".into()),
            Event::Scalar(text, style, _anchor, tag) => {
                let quoted = self.tag_quotes(tag.as_deref(), pos).unwrap_or(false) || !matches!(style, ScalarStyle::Plain);
                self.push(Node::Scalar { text: text.into_owned(), quoted, pos });
            }
            Event::SequenceStart(_, tag) => {
                self.tag_quotes(tag.as_deref(), pos);
                self.stack.push(Open::Seq { items: Vec::new(), pos });
            }
            Event::MappingStart(_, tag) => {
                self.tag_quotes(tag.as_deref(), pos);
                self.stack.push(Open::Map { entries: Vec::new(), key: None, pos });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Open::Seq { items, pos }) => self.push(Node::Seq { items, pos }),
                Some(Open::Map { entries, pos, .. }) => self.push(Node::Map { entries, pos }),
                None => self.fail(pos, "invalid YAML: unbalanced collection".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let mut docs = parse(text).unwrap();
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    #[test]
    fn keys_and_values_know_their_line_and_column() {
        let doc = one("title: x\ndetection:\n  selection:\n    eventName|contians: ConsoleLogin\n");
        let Node::Map { entries, .. } = &doc else { panic!("{doc:?}") };
        let Node::Map { entries, .. } = &entries[1].1 else { panic!() };
        let Node::Map { entries, .. } = &entries[0].1 else { panic!() };
        assert_eq!(entries[0].0.pos(), Pos { line: 4, column: 5 });
        assert_eq!(entries[0].1.pos(), Pos { line: 4, column: 25 });
    }

    #[test]
    fn quoting_decides_null_and_text() {
        let doc = one("a: null\nb: 'null'\nc:\nd: 1.10\ne: '0123'\nf: 0123\ng: true\n");
        let json = doc.to_json();
        assert_eq!(json["a"], Value::Null);
        assert_eq!(json["b"], "null");
        assert_eq!(json["c"], Value::Null);
        assert_eq!(json["d"], 1.1);
        assert_eq!(json["e"], "0123");
        assert_eq!(json["f"], 123);
        assert_eq!(json["g"], true);
        let Node::Map { entries, .. } = &doc else { panic!() };
        assert!(entries[0].1.is_null() && !entries[1].1.is_null() && entries[2].1.is_null());
        assert_eq!(entries[3].1.as_str(), Some("1.10"));
    }

    #[test]
    fn duplicate_keys_and_aliases_are_errors_with_positions() {
        let e = parse("a: 1\nb:\n  c: 1\n  c: 2\n").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column, e.message.as_str()), (4, 3, "duplicate key \"c\" (first at line 3)"));
        let e = parse("a: &x 1\nb: *x\n").unwrap_err();
        assert_eq!(e.pos.line, 2);
        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML"), "{e:?}");
    }
}
