//! Summary templates: `{field}` inserts a field's value (dotted paths and
//! enriched fields too), `{account}` the account as `"Alias" (id)` or the id,
//! `{origin}` the origin's principal and kind; `{{` and `}}` are braces. A
//! missing field renders as `-`.

use super::field::{render, Ctx, FieldPath};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(FieldPath),
    Account,
    Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

/// A template error at a character offset of the template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub offset: usize,
    pub message: String,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError { offset: i, message: "unmatched \"}\" in summary (write \"}}\" for a brace)".into() }),
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(TemplateError { offset: i, message: "unclosed \"{\" in summary (write \"{{\" for a brace)".into() });
                    }
                    let name = name.trim();
                    let part = match name {
                        "account" => Part::Account,
                        "origin" => Part::Origin,
                        _ => Part::Field(FieldPath::parse(name).map_err(|e| TemplateError { offset: i + 1, message: format!("summary: {e}") })?),
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The default summary: the rule's title and the account.
    pub fn default_for(title: &str) -> Template {
        Template { parts: vec![Part::Text(format!("{title} in ")), Part::Account] }
    }

    pub fn render(&self, ctx: &Ctx<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(path) => match render(ctx, path) {
                    Some(v) => out.push_str(&v),
                    None => out.push('-'),
                },
                Part::Account => out.push_str(&account_text(ctx.event.account_id.as_str(), ctx.alias)),
                Part::Origin => match &ctx.event.origin {
                    Some(o) => match &o.principal {
                        Some(p) => out.push_str(&format!("{p} ({})", o.kind.as_str())),
                        None => out.push_str(o.kind.as_str()),
                    },
                    None => out.push('-'),
                },
            }
        }
        out
    }
}

/// `"Alias" (111111111111)`, or the id alone.
pub(crate) fn account_text(id: &str, alias: Option<&str>) -> String {
    match alias {
        Some(a) if !a.is_empty() => format!("\"{a}\" ({id})"),
        _ => id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::identity::{Confidence, Origin, OriginKind};

    #[test]
    fn renders_fields_account_and_origin() {
        let raw = br#"{"eventID":"e1","eventTime":"2024-01-15T12:00:00Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","recipientAccountId":"111111111111","sourceIPAddress":"203.0.113.5","userIdentity":{"type":"IAMUser","userName":"alice"}}"#;
        let mut event = Event::from_record(0, raw, "000000000000").unwrap();
        let raw = event.raw.clone();
        let record = crate::rules::json::Json::parse(&raw).unwrap();
        let t = Template::parse("{userIdentity.userName} signed in to {account} from {sourceIPAddress} {{ok}} by {origin}; mfa {additionalEventData.MFAUsed}")
            .unwrap();
        let ctx = Ctx { record: &record, event: &event, alias: Some("Payments") };
        assert_eq!(t.render(&ctx), "alice signed in to \"Payments\" (111111111111) from 203.0.113.5 {ok} by -; mfa -");
        event.origin = Some(Origin {
            kind: OriginKind::IamUser,
            principal: Some("arn:aws:iam::111111111111:user/alice".into()),
            account_id: None,
            provider: None,
            source_identity: None,
            chain: Vec::new(),
            confidence: Confidence::Exact,
            reason: None,
        });
        let ctx = Ctx { record: &record, event: &event, alias: None };
        assert_eq!(Template::parse("{origin} in {account}").unwrap().render(&ctx), "arn:aws:iam::111111111111:user/alice (iam_user) in 111111111111");
        assert_eq!(Template::default_for("Root used").render(&ctx), "Root used in 111111111111");
    }

    #[test]
    fn bad_templates_say_where() {
        assert_eq!(Template::parse("abc {user").unwrap_err().offset, 4);
        assert_eq!(Template::parse("a } b").unwrap_err().offset, 2);
        assert!(Template::parse("{origin.kindx}").unwrap_err().message.contains("unknown enriched field"));
    }
}
