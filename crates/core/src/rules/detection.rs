//! Selections: a rule's named maps of field → value(s), compiled once
//! (values folded, wildcards split, regular expressions compiled, CIDR
//! blocks parsed) and evaluated against one event without allocating.

use std::collections::BTreeSet;
use std::net::IpAddr;

use regex::{Regex, RegexBuilder};

use super::field::{any_leaf, present, Ctx, FieldPath, Leaf, NumBuf};
use super::text::{fold_str, relate, tokens, Relation, TextPattern, Tok};
use super::yaml::{Node, Pos};
use super::Diag;

/// One value test of a field.
#[derive(Debug, Clone)]
pub(crate) enum ValueTest {
    /// Missing or null.
    Null,
    Text(TextPattern),
    Regex(Regex),
    Cidr(Cidr),
    Compare(Cmp, f64),
    FieldRef {
        other: FieldPath,
        relation: Relation,
        cased: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug, Clone)]
pub(crate) enum Check {
    Exists(bool),
    /// Any of the tests (every one with `all`).
    Values {
        tests: Vec<ValueTest>,
        all: bool,
    },
}

/// One `field|modifiers: values` line.
#[derive(Debug, Clone)]
pub(crate) struct FieldMatch {
    pub name: String,
    pub path: FieldPath,
    pub check: Check,
}

/// A named selection: a map of field matches (all must hold), or a list of
/// such maps (any may).
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    pub name: String,
    pub alternatives: Vec<Vec<FieldMatch>>,
}

impl Selection {
    /// Whether any of its field matches reads an `origin.*` field.
    pub fn uses_origin(&self) -> bool {
        self.alternatives.iter().flatten().any(FieldMatch::uses_origin)
    }
}

/// An IPv4 or IPv6 block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| format!("bad CIDR block {text:?}: {addr:?} is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("bad CIDR block {text:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn mask32(bits: u8) -> u32 {
            if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            }
        }
        fn mask128(bits: u8) -> u128 {
            if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            }
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => (u32::from(net) ^ u32::from(ip)) & mask32(self.prefix) == 0,
            (IpAddr::V6(net), IpAddr::V6(ip)) => (u128::from(net) ^ u128::from(ip)) & mask128(self.prefix) == 0,
            _ => false,
        }
    }
}

impl ValueTest {
    fn matches<'a>(&self, leaf: Leaf<'a>, ctx: &Ctx<'a>, buf: &mut NumBuf) -> bool {
        match self {
            ValueTest::Null => matches!(leaf, Leaf::Null),
            ValueTest::Text(p) => leaf.text(buf).is_some_and(|t| p.matches(t)),
            ValueTest::Regex(r) => leaf.text(buf).is_some_and(|t| r.is_match(t)),
            ValueTest::Cidr(c) => matches!(leaf, Leaf::Str(s) if s.parse::<IpAddr>().is_ok_and(|ip| c.contains(ip))),
            ValueTest::Compare(op, v) => leaf.number().is_some_and(|n| match op {
                Cmp::Lt => n < *v,
                Cmp::Lte => n <= *v,
                Cmp::Gt => n > *v,
                Cmp::Gte => n >= *v,
            }),
            ValueTest::FieldRef { other, relation, cased } => {
                let Some(mine) = leaf.text(buf) else { return false };
                let mut theirs = NumBuf::new();
                any_leaf(ctx, other, &mut |l| l.text(&mut theirs).is_some_and(|t| relate(mine, t, *relation, *cased)))
            }
        }
    }

    /// Whether any value the field reaches passes (a missing field passes `null`).
    fn holds(&self, ctx: &Ctx<'_>, path: &FieldPath) -> bool {
        any_of(std::slice::from_ref(self), ctx, path)
    }
}

fn any_of(tests: &[ValueTest], ctx: &Ctx<'_>, path: &FieldPath) -> bool {
    let mut found = false;
    let mut buf = NumBuf::new();
    let hit = any_leaf(ctx, path, &mut |leaf| {
        found = true;
        tests.iter().any(|t| t.matches(leaf, ctx, &mut buf))
    });
    hit || (!found && tests.iter().any(|t| matches!(t, ValueTest::Null)))
}

impl FieldMatch {
    /// Whether the match reads an `origin.*` field (as the field, or as the
    /// field a `fieldref` compares with).
    pub fn uses_origin(&self) -> bool {
        let origin = |p: &FieldPath| matches!(p, FieldPath::Origin(_));
        origin(&self.path)
            || matches!(&self.check, Check::Values { tests, .. } if tests.iter().any(|t| matches!(t, ValueTest::FieldRef { other, .. } if origin(other))))
    }

    pub fn matches(&self, ctx: &Ctx<'_>) -> bool {
        match &self.check {
            Check::Exists(want) => present(ctx, &self.path) == *want,
            Check::Values { tests, all: false } => any_of(tests, ctx, &self.path),
            Check::Values { tests, all: true } => tests.iter().all(|t| t.holds(ctx, &self.path)),
        }
    }

    /// The folded texts this line requires `field` (a top-level field) to
    /// equal, when it is an exact, wildcard-free test of that field.
    fn required(&self, field: &str) -> Option<BTreeSet<String>> {
        if self.path.top_level() != Some(field) {
            return None;
        }
        let Check::Values { tests, all } = &self.check else { return None };
        if *all && tests.len() > 1 {
            return None;
        }
        tests
            .iter()
            .map(|t| match t {
                ValueTest::Text(p) => p.exact().map(fold_str),
                _ => None,
            })
            .collect()
    }
}

impl Selection {
    pub fn matches(&self, ctx: &Ctx<'_>) -> bool {
        self.alternatives.iter().any(|fields| fields.iter().all(|f| f.matches(ctx)))
    }

    /// The values `field` must take for the selection to match: None when
    /// it may match whatever the field holds.
    pub fn required(&self, field: &str) -> Option<BTreeSet<String>> {
        let mut union = BTreeSet::new();
        for fields in &self.alternatives {
            let mut within: Option<BTreeSet<String>> = None;
            for set in fields.iter().filter_map(|f| f.required(field)) {
                within = Some(match within {
                    None => set,
                    Some(w) => w.intersection(&set).cloned().collect(),
                });
            }
            union.extend(within?);
        }
        Some(union)
    }

    /// The first line of the selection that fails on this event (for the
    /// first alternative), for explaining a test failure.
    pub fn first_failure(&self, ctx: &Ctx<'_>) -> Option<&str> {
        self.alternatives.first()?.iter().find(|f| !f.matches(ctx)).map(|f| f.name.as_str())
    }
}

// ------------------------------------------------------------------ compiling

const UNSUPPORTED: &[&str] =
    &["base64", "base64offset", "utf16", "utf16le", "utf16be", "wide", "windash", "expand", "minute", "hour", "day", "week", "month", "year"];

#[derive(Default)]
struct Mods {
    relation: Option<(Relation, &'static str)>,
    all: bool,
    cased: bool,
    re: bool,
    re_flags: (bool, bool, bool),
    cidr: bool,
    exists: bool,
    cmp: Option<(Cmp, &'static str)>,
    fieldref: bool,
    /// The modifier that decides how values are read (`re`, `cidr`, …).
    kind: Option<&'static str>,
}

impl Mods {
    fn kind(&self) -> Option<&'static str> {
        self.kind
    }
}

fn parse_mods(field: &str, names: &[&str], pos: Pos, diag: &mut Diag<'_>) -> Option<Mods> {
    let mut m = Mods::default();
    let mut errors = Vec::new();
    for (i, &name) in names.iter().enumerate() {
        if names[..i].contains(&name) {
            errors.push(format!("modifier {name:?} is given twice on field {field}"));
            continue;
        }
        let kind = |m: &mut Mods, k: &'static str, errors: &mut Vec<String>| match m.kind {
            Some(before) => errors.push(format!("modifiers {before:?} and {k:?} cannot be combined on field {field}")),
            None => m.kind = Some(k),
        };
        let relation = |m: &mut Mods, r: Relation, n: &'static str, errors: &mut Vec<String>| match m.relation {
            Some((_, before)) => errors.push(format!("modifiers {before:?} and {n:?} cannot be combined on field {field}")),
            None => m.relation = Some((r, n)),
        };
        match name {
            "contains" => relation(&mut m, Relation::Contains, "contains", &mut errors),
            "startswith" => relation(&mut m, Relation::StartsWith, "startswith", &mut errors),
            "endswith" => relation(&mut m, Relation::EndsWith, "endswith", &mut errors),
            "all" => m.all = true,
            "cased" => m.cased = true,
            "re" => {
                m.re = true;
                kind(&mut m, "re", &mut errors);
            }
            "i" | "m" | "s" if m.re => match name {
                "i" => m.re_flags.0 = true,
                "m" => m.re_flags.1 = true,
                _ => m.re_flags.2 = true,
            },
            "i" | "m" | "s" => errors.push(format!("modifier {name:?} on field {field} only follows \"re\"")),
            "cidr" => {
                m.cidr = true;
                kind(&mut m, "cidr", &mut errors);
            }
            "exists" => {
                m.exists = true;
                kind(&mut m, "exists", &mut errors);
            }
            "fieldref" => {
                m.fieldref = true;
                kind(&mut m, "fieldref", &mut errors);
            }
            "lt" | "lte" | "gt" | "gte" => {
                let (cmp, n) = match name {
                    "lt" => (Cmp::Lt, "lt"),
                    "lte" => (Cmp::Lte, "lte"),
                    "gt" => (Cmp::Gt, "gt"),
                    _ => (Cmp::Gte, "gte"),
                };
                m.cmp = Some((cmp, n));
                kind(&mut m, n, &mut errors);
            }
            other if UNSUPPORTED.contains(&other) => errors.push(format!("modifier {other:?} on field {field} is not supported by trailwatch")),
            other => errors.push(format!("unknown modifier {other:?} on field {field}")),
        }
    }
    match (m.kind, m.relation) {
        (Some(k), Some((_, r))) if k != "fieldref" => errors.push(format!("modifiers {k:?} and {r:?} cannot be combined on field {field}")),
        _ => {}
    }
    match m.kind {
        Some(k) if m.cased && k != "fieldref" => errors.push(format!("modifiers \"cased\" and {k:?} cannot be combined on field {field}")),
        Some("exists") if m.all => errors.push(format!("modifiers \"exists\" and \"all\" cannot be combined on field {field}")),
        _ => {}
    }
    let ok = errors.is_empty();
    for e in errors {
        diag.at(pos, e);
    }
    ok.then_some(m)
}

/// Compiles `key: value` of a selection map.
fn compile_field(key: &Node, value: &Node, diag: &mut Diag<'_>) -> Option<FieldMatch> {
    let Some(key_text) = key.as_str() else {
        diag.at(key.pos(), format!("a field name is expected, not {}", key.kind()));
        return None;
    };
    let mut parts = key_text.split('|');
    let field = parts.next().unwrap_or_default();
    let names: Vec<&str> = parts.collect();
    if field.is_empty() {
        diag.at(key.pos(), format!("{key_text:?} names no field (keyword searches are not supported: CloudTrail records are structured)"));
        return None;
    }
    let path = match FieldPath::parse(field) {
        Ok(p) => p,
        Err(e) => {
            diag.at(key.pos(), e);
            return None;
        }
    };
    let mods = parse_mods(field, &names, key.pos(), diag)?;
    let values: Vec<&Node> = match value {
        Node::Scalar { .. } => vec![value],
        Node::Seq { items, .. } if items.is_empty() => {
            diag.at(value.pos(), format!("field {field}: an empty list matches nothing"));
            return None;
        }
        Node::Seq { items, .. } => items.iter().collect(),
        Node::Map { .. } => {
            diag.at(
                value.pos(),
                format!(
                    "field {field}: a value or a list of values is expected, not a map (nested fields are written as dotted paths, e.g. userIdentity.type)"
                ),
            );
            return None;
        }
    };
    if let Some(bad) = values.iter().find(|v| !matches!(v, Node::Scalar { .. })) {
        diag.at(bad.pos(), format!("field {field}: each value of the list must be a single value, not {}", bad.kind()));
        return None;
    }
    let check = if mods.exists {
        match (values.as_slice(), value.as_bool()) {
            ([_], Some(b)) => Check::Exists(b),
            _ => {
                diag.at(value.pos(), format!("field {field}: \"exists\" takes true or false"));
                return None;
            }
        }
    } else {
        let mut tests = Vec::with_capacity(values.len());
        let errors_before = diag.errors.len();
        for v in values {
            if let Some(t) = compile_value(field, &mods, v, diag) {
                tests.push(t);
            }
        }
        if diag.errors.len() > errors_before {
            return None;
        }
        Check::Values { tests, all: mods.all }
    };
    Some(FieldMatch { name: field.to_owned(), path, check })
}

fn compile_value(field: &str, m: &Mods, v: &Node, diag: &mut Diag<'_>) -> Option<ValueTest> {
    let pos = v.pos();
    let text = v.as_str().unwrap_or_default();
    if v.is_null() {
        if let Some(kind) = m.kind().or(m.relation.map(|r| r.1)) {
            diag.at(pos, format!("field {field}: null cannot be used with modifier {kind:?}"));
            return None;
        }
        return Some(ValueTest::Null);
    }
    if m.re {
        let built =
            RegexBuilder::new(text).case_insensitive(m.re_flags.0).multi_line(m.re_flags.1).dot_matches_new_line(m.re_flags.2).size_limit(1 << 20).build();
        return match built {
            Ok(r) => Some(ValueTest::Regex(r)),
            Err(e) => {
                diag.at(pos, format!("field {field}: bad regular expression {text:?}: {}", regex_reason(&e)));
                None
            }
        };
    }
    if m.cidr {
        return match Cidr::parse(text) {
            Ok(c) => Some(ValueTest::Cidr(c)),
            Err(e) => {
                diag.at(pos, format!("field {field}: {e}"));
                None
            }
        };
    }
    if let Some((cmp, name)) = m.cmp {
        return match text.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Some(ValueTest::Compare(cmp, n)),
            _ => {
                diag.at(pos, format!("field {field}: {name:?} needs a number, not {text:?}"));
                None
            }
        };
    }
    if m.fieldref {
        return match FieldPath::parse(text) {
            Ok(other) => Some(ValueTest::FieldRef { other, relation: m.relation.map_or(Relation::Equals, |r| r.0), cased: m.cased }),
            Err(e) => {
                diag.at(pos, format!("field {field}: fieldref: {e}"));
                None
            }
        };
    }
    let mut toks = tokens(text);
    match m.relation.map(|r| r.0) {
        Some(Relation::Contains) => {
            toks.insert(0, Tok::Many);
            toks.push(Tok::Many);
        }
        Some(Relation::StartsWith) => toks.push(Tok::Many),
        Some(Relation::EndsWith) => toks.insert(0, Tok::Many),
        Some(Relation::Equals) | None => {}
    }
    Some(ValueTest::Text(TextPattern::new(&toks, m.cased)))
}

/// The one line of the regex crate's message that says what is wrong.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines().find_map(|l| l.strip_prefix("error: ")).map_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "), str::to_owned)
}

/// Compiles one named selection.
pub(crate) fn compile_selection(name: &str, node: &Node, diag: &mut Diag<'_>) -> Option<Selection> {
    let compile_map = |entries: &[(Node, Node)], diag: &mut Diag<'_>| -> Option<Vec<FieldMatch>> {
        let fields: Vec<Option<FieldMatch>> = entries.iter().map(|(k, v)| compile_field(k, v, diag)).collect();
        fields.into_iter().collect()
    };
    let alternatives = match node {
        Node::Map { entries, .. } if entries.is_empty() => {
            diag.at(node.pos(), format!("selection {name} is empty"));
            return None;
        }
        Node::Map { entries, .. } => vec![compile_map(entries, diag)?],
        Node::Seq { items, .. } if !items.is_empty() && items.iter().all(|i| matches!(i, Node::Map { .. })) => {
            let mut alternatives = Vec::with_capacity(items.len());
            let mut ok = true;
            for item in items {
                match item {
                    Node::Map { entries, .. } if entries.is_empty() => {
                        diag.at(item.pos(), format!("selection {name}: an empty map matches nothing"));
                        ok = false;
                    }
                    Node::Map { entries, .. } => match compile_map(entries, diag) {
                        Some(fields) => alternatives.push(fields),
                        None => ok = false,
                    },
                    _ => ok = false,
                }
            }
            if !ok {
                return None;
            }
            alternatives
        }
        Node::Seq { .. } | Node::Scalar { .. } => {
            diag.at(
                node.pos(),
                format!("selection {name}: keyword searches (a plain list of values) are not supported: CloudTrail records are structured, so name the field, e.g. eventName: [...]"),
            );
            return None;
        }
    };
    Some(Selection { name: name.to_owned(), alternatives })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_v4_v6_and_mapped() {
        let v4 = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(v4.contains("10.200.3.4".parse().unwrap()) && !v4.contains("11.0.0.1".parse().unwrap()));
        assert!(v4.contains("::ffff:10.1.2.3".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()) && !v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("203.0.113.9".parse().unwrap()));
        assert!(Cidr::parse("198.51.100.7").unwrap().contains("198.51.100.7".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("10.0.0/8").unwrap_err().contains("not an IP address"));
    }
}
