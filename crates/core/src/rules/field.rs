//! Field names and what they reach in an event: dotted paths into the
//! record's JSON (arrays on the way match if any element does), and the
//! enriched fields trailwatch adds (`origin.*`, `account.*`), which come from
//! the [`Event`] and the account alias, never from the JSON.

use std::fmt::{self, Write as _};

use serde_json::Number;

use super::json::Json;

use crate::event::Event;

/// How deep a value is searched for text when a rule names an object.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginField {
    Kind,
    Principal,
    Account,
    Provider,
    Confidence,
    Hops,
}

/// A field a rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldPath {
    /// A dotted path into the record.
    Record(Vec<Box<str>>),
    Origin(OriginField),
    AccountAlias,
    AccountId,
}

const ENRICHED: &[(&str, FieldPath)] = &[
    ("origin.kind", FieldPath::Origin(OriginField::Kind)),
    ("origin.principal", FieldPath::Origin(OriginField::Principal)),
    ("origin.account", FieldPath::Origin(OriginField::Account)),
    ("origin.provider", FieldPath::Origin(OriginField::Provider)),
    ("origin.confidence", FieldPath::Origin(OriginField::Confidence)),
    ("origin.hops", FieldPath::Origin(OriginField::Hops)),
    ("account.alias", FieldPath::AccountAlias),
    ("account.id", FieldPath::AccountId),
];

impl FieldPath {
    pub fn parse(name: &str) -> Result<FieldPath, String> {
        if let Some((_, path)) = ENRICHED.iter().find(|(n, _)| *n == name) {
            return Ok(path.clone());
        }
        if name.starts_with("origin.") || name.starts_with("account.") {
            let known: Vec<&str> = ENRICHED.iter().map(|(n, _)| *n).collect();
            return Err(format!("unknown enriched field {name} (known: {})", known.join(", ")));
        }
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return Err(format!("invalid field name {name:?}"));
        }
        Ok(FieldPath::Record(name.split('.').map(Box::from).collect()))
    }

    /// The record's top-level field this path names exactly, if that is all it is.
    pub fn top_level(&self) -> Option<&str> {
        match self {
            FieldPath::Record(segments) if segments.len() == 1 => Some(&segments[0]),
            _ => None,
        }
    }
}

/// What a rule is evaluated against: the parsed record, the event (for
/// enriched fields) and the account's alias.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub record: &'a Json<'a>,
    pub event: &'a Event,
    pub alias: Option<&'a str>,
}

/// One value a field reached.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Leaf<'a> {
    Null,
    Bool(bool),
    Num(&'a Number),
    Int(i64),
    Str(&'a str),
}

/// Room to write a number as text without allocating.
pub(crate) struct NumBuf {
    bytes: [u8; 48],
    len: usize,
}

impl NumBuf {
    pub fn new() -> Self {
        NumBuf { bytes: [0; 48], len: 0 }
    }

    fn write_number(&mut self, n: &dyn fmt::Display) -> Option<&str> {
        self.len = 0;
        write!(self, "{n}").ok()?;
        std::str::from_utf8(&self.bytes[..self.len]).ok()
    }
}

impl fmt::Write for NumBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl<'a> Leaf<'a> {
    /// The value as text (numbers as JSON writes them, booleans as
    /// `true`/`false`); None for null.
    pub fn text<'s>(&self, buf: &'s mut NumBuf) -> Option<&'s str>
    where
        'a: 's,
    {
        match *self {
            Leaf::Null => None,
            Leaf::Bool(true) => Some("true"),
            Leaf::Bool(false) => Some("false"),
            Leaf::Str(s) => Some(s),
            Leaf::Num(n) => buf.write_number(n),
            Leaf::Int(i) => buf.write_number(&i),
        }
    }

    /// The value as a number: JSON numbers, and text that reads as one.
    pub fn number(&self) -> Option<f64> {
        match *self {
            Leaf::Num(n) => n.as_f64(),
            Leaf::Int(i) => Some(i as f64),
            Leaf::Str(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            Leaf::Null | Leaf::Bool(_) => None,
        }
    }
}

fn scalar<'a>(value: &'a Json<'a>) -> Leaf<'a> {
    match value {
        Json::Bool(b) => Leaf::Bool(*b),
        Json::Num(n) => Leaf::Num(n),
        Json::Str(s) => Leaf::Str(s),
        Json::Null | Json::Arr(_) | Json::Obj(_) => Leaf::Null,
    }
}

/// Every scalar inside `value` (itself, if it is one), until `f` says stop.
fn leaves<'a>(value: &'a Json<'a>, depth: usize, f: &mut dyn FnMut(Leaf<'a>) -> bool) -> bool {
    match value {
        Json::Arr(items) => depth < MAX_DEPTH && items.iter().any(|v| leaves(v, depth + 1, f)),
        Json::Obj(pairs) => depth < MAX_DEPTH && pairs.iter().any(|(_, v)| leaves(v, depth + 1, f)),
        other => f(scalar(other)),
    }
}

fn walk<'a>(value: &'a Json<'a>, segments: &[Box<str>], f: &mut dyn FnMut(Leaf<'a>) -> bool) -> bool {
    match (value, segments.split_first()) {
        (Json::Arr(items), _) => items.iter().any(|v| walk(v, segments, f)),
        (Json::Obj(_), Some((first, rest))) => value.get(first).is_some_and(|v| walk(v, rest, f)),
        (_, None) => leaves(value, 0, f),
        (_, Some(_)) => false,
    }
}

/// Calls `f` on every value `path` reaches (the elements of arrays on the
/// way, the scalars inside an object it ends on) until `f` returns true;
/// returns whether it did.
pub(crate) fn any_leaf<'a>(ctx: &Ctx<'a>, path: &FieldPath, f: &mut dyn FnMut(Leaf<'a>) -> bool) -> bool {
    let origin = ctx.event.origin.as_ref();
    let text = |s: Option<&'a str>, f: &mut dyn FnMut(Leaf<'a>) -> bool| s.is_some_and(|s| f(Leaf::Str(s)));
    match path {
        FieldPath::Record(segments) => walk(ctx.record, segments, f),
        FieldPath::AccountId => f(Leaf::Str(&ctx.event.account_id)),
        FieldPath::AccountAlias => text(ctx.alias, f),
        FieldPath::Origin(field) => {
            let Some(o) = origin else { return false };
            match field {
                OriginField::Kind => f(Leaf::Str(o.kind.as_str())),
                OriginField::Confidence => f(Leaf::Str(o.confidence.as_str())),
                OriginField::Principal => text(o.principal.as_deref(), f),
                OriginField::Account => text(o.account_id.as_deref(), f),
                OriginField::Provider => text(o.provider.as_deref(), f),
                OriginField::Hops => f(Leaf::Int(i64::try_from(o.chain.len()).unwrap_or(i64::MAX))),
            }
        }
    }
}

/// Whether the field is there with a value other than null.
pub(crate) fn present(ctx: &Ctx<'_>, path: &FieldPath) -> bool {
    fn walk_present(value: &Json<'_>, segments: &[Box<str>]) -> bool {
        match (value, segments.split_first()) {
            (Json::Null, _) => false,
            (Json::Arr(items), Some(_)) => items.iter().any(|v| walk_present(v, segments)),
            (Json::Obj(_), Some((first, rest))) => value.get(first).is_some_and(|v| walk_present(v, rest)),
            (_, None) => true,
            (_, Some(_)) => false,
        }
    }
    match path {
        FieldPath::Record(segments) => walk_present(ctx.record, segments),
        _ => any_leaf(ctx, path, &mut |leaf| !matches!(leaf, Leaf::Null)),
    }
}

/// The field's values as text for a person: list elements joined with
/// `", "`; None when the field is missing or null.
pub(crate) fn render(ctx: &Ctx<'_>, path: &FieldPath) -> Option<String> {
    let mut out = String::new();
    let mut buf = NumBuf::new();
    let mut count = 0usize;
    // Objects are shown as JSON rather than as their scattered values.
    if let FieldPath::Record(segments) = path {
        let mut objects = Vec::new();
        collect_values(ctx.record, segments, &mut objects);
        for value in objects {
            let piece = match value {
                Json::Obj(_) => serde_json::to_string(value).unwrap_or_default(),
                Json::Null => continue,
                other => match scalar(other).text(&mut buf) {
                    Some(t) => t.to_owned(),
                    None => continue,
                },
            };
            if count > 0 {
                out.push_str(", ");
            }
            out.push_str(&piece);
            count += 1;
        }
        return (count > 0).then_some(out);
    }
    any_leaf(ctx, path, &mut |leaf| {
        if let Some(t) = leaf.text(&mut buf) {
            out.push_str(t);
            count += 1;
        }
        true
    });
    (count > 0).then_some(out)
}

/// The values (scalars or objects) a record path reaches, arrays flattened.
fn collect_values<'a>(value: &'a Json<'a>, segments: &[Box<str>], out: &mut Vec<&'a Json<'a>>) {
    match (value, segments.split_first()) {
        (Json::Arr(items), _) => items.iter().for_each(|v| collect_values(v, segments, out)),
        (Json::Obj(_), Some((first, rest))) => {
            if let Some(v) = value.get(first) {
                collect_values(v, rest, out);
            }
        }
        (v, None) => out.push(v),
        (_, Some(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Confidence, Origin, OriginKind};

    fn event() -> Event {
        let raw = br#"{"eventID":"e1","eventTime":"2024-01-15T12:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","recipientAccountId":"111111111111",
            "resources":[{"ARN":"arn:aws:s3:::a","type":"AWS::S3::Bucket"},{"ARN":"arn:aws:s3:::a/k","type":"AWS::S3::Object"}],"n":42,"f":1.5,"b":false,"z":null,
            "requestParameters":{"bucketName":"a","policy":{"Effect":"Allow"}}}"#;
        Event::from_record(0, raw, "000000000000").unwrap()
    }

    fn texts(ctx: &Ctx<'_>, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = NumBuf::new();
        any_leaf(ctx, &FieldPath::parse(name).unwrap(), &mut |leaf| {
            out.push(leaf.text(&mut buf).unwrap_or("<null>").to_owned());
            false
        });
        out
    }

    #[test]
    fn paths_walk_objects_and_arrays() {
        let mut e = event();
        let record = Json::parse(&e.raw).unwrap();
        e.origin = Some(Origin {
            kind: OriginKind::IamUser,
            principal: Some("arn:aws:iam::1:user/a".into()),
            account_id: None,
            provider: None,
            source_identity: None,
            chain: Vec::new(),
            confidence: Confidence::Exact,
            reason: None,
        });
        let ctx = Ctx { record: &record, event: &e, alias: Some("prod") };
        assert_eq!(texts(&ctx, "resources.type"), ["AWS::S3::Bucket", "AWS::S3::Object"]);
        assert_eq!(texts(&ctx, "n"), ["42"]);
        assert_eq!(texts(&ctx, "f"), ["1.5"]);
        assert_eq!(texts(&ctx, "b"), ["false"]);
        assert_eq!(texts(&ctx, "z"), ["<null>"]);
        assert!(texts(&ctx, "missing.deeper").is_empty());
        assert_eq!(texts(&ctx, "requestParameters.policy"), ["Allow"]);
        assert_eq!(texts(&ctx, "origin.kind"), ["iam_user"]);
        assert_eq!(texts(&ctx, "origin.hops"), ["0"]);
        assert!(texts(&ctx, "origin.account").is_empty());
        assert_eq!(texts(&ctx, "account.alias"), ["prod"]);
        assert_eq!(texts(&ctx, "account.id"), ["111111111111"]);
        assert!(present(&ctx, &FieldPath::parse("requestParameters").unwrap()));
        assert!(!present(&ctx, &FieldPath::parse("z").unwrap()));
        assert_eq!(render(&ctx, &FieldPath::parse("resources.ARN").unwrap()).as_deref(), Some("arn:aws:s3:::a, arn:aws:s3:::a/k"));
        assert_eq!(render(&ctx, &FieldPath::parse("requestParameters.policy").unwrap()).as_deref(), Some(r#"{"Effect":"Allow"}"#));
        assert_eq!(render(&ctx, &FieldPath::parse("z").unwrap()), None);
    }

    #[test]
    fn enriched_names_are_checked() {
        assert!(FieldPath::parse("origin.kinds").unwrap_err().contains("unknown enriched field origin.kinds"));
        assert!(FieldPath::parse("a..b").is_err());
        assert_eq!(FieldPath::parse("eventName").unwrap().top_level(), Some("eventName"));
    }
}
