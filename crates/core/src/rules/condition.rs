//! Sigma conditions: `and`, `or`, `not`, parentheses, selection names,
//! `1 of sel_*`, `all of sel_*`, `1 of them`, `all of them`, and the old
//! aggregation `| count() [by field] > N` (read as a threshold).
//!
//! Precedence, loosest first: `or`, `and`, `not`.

use std::collections::BTreeSet;

/// A parsed condition over selections, by their index in the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cond {
    Sel(usize),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

/// `| count() [by field] > N`: the rule fires above N matches in its timeframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Aggregation {
    pub by: Option<String>,
    pub above: u64,
}

/// A condition error: the character offset in the condition text, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CondError {
    pub offset: usize,
    pub message: String,
}

impl Cond {
    /// Evaluates the condition; `sel` tells whether a selection matches.
    pub fn eval(&self, sel: &mut dyn FnMut(usize) -> bool) -> bool {
        match self {
            Cond::Sel(i) => sel(*i),
            Cond::Not(c) => !c.eval(sel),
            Cond::And(cs) => cs.iter().all(|c| c.eval(sel)),
            Cond::Or(cs) => cs.iter().any(|c| c.eval(sel)),
        }
    }

    /// Calls `f` with every selection the condition names.
    pub fn selections(&self, f: &mut dyn FnMut(usize)) {
        match self {
            Cond::Sel(i) => f(*i),
            Cond::Not(c) => c.selections(f),
            Cond::And(cs) | Cond::Or(cs) => cs.iter().for_each(|c| c.selections(f)),
        }
    }

    /// The values a field must take whenever the condition holds, given
    /// what each selection requires of it; None when it is unconstrained.
    pub fn required(&self, sel: &dyn Fn(usize) -> Option<BTreeSet<String>>) -> Option<BTreeSet<String>> {
        match self {
            Cond::Sel(i) => sel(*i),
            Cond::Not(_) => None,
            Cond::And(cs) => cs.iter().filter_map(|c| c.required(sel)).reduce(|a, b| a.intersection(&b).cloned().collect()),
            Cond::Or(cs) => cs.iter().map(|c| c.required(sel)).try_fold(BTreeSet::new(), |mut acc, s| {
                acc.extend(s?);
                Some(acc)
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    Pipe,
    Word(String),
}

fn lex(text: &str) -> Vec<(usize, Tok)> {
    let mut out = Vec::new();
    let mut word: Option<(usize, String)> = None;
    for (i, c) in text.chars().enumerate() {
        let single = match c {
            '(' => Some(Tok::Open),
            ')' => Some(Tok::Close),
            '|' => Some(Tok::Pipe),
            _ => None,
        };
        if c.is_whitespace() || single.is_some() {
            if let Some((at, w)) = word.take() {
                out.push((at, Tok::Word(w)));
            }
            if let Some(t) = single {
                out.push((i, t));
            }
        } else {
            word.get_or_insert_with(|| (i, String::new())).1.push(c);
        }
    }
    if let Some((at, w)) = word {
        out.push((at, Tok::Word(w)));
    }
    out
}

struct P<'a> {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
    names: &'a [&'a str],
}

fn is_kw(w: &str, kw: &str) -> bool {
    w.eq_ignore_ascii_case(kw)
}

impl P<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |(o, _)| *o)
    }

    fn err<T>(&self, message: String) -> Result<T, CondError> {
        Err(CondError { offset: self.offset(), message })
    }

    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if is_kw(w, kw))
    }

    fn or(&mut self) -> Result<Cond, CondError> {
        let mut items = vec![self.and()?];
        while self.peek_kw("or") {
            self.at += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Cond::Or(items) })
    }

    fn and(&mut self) -> Result<Cond, CondError> {
        let mut items = vec![self.not()?];
        while self.peek_kw("and") {
            self.at += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Cond::And(items) })
    }

    fn not(&mut self) -> Result<Cond, CondError> {
        if self.peek_kw("not") {
            self.at += 1;
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond, CondError> {
        let Some(tok) = self.peek().cloned() else { return self.err("the condition ends where a selection name is expected".into()) };
        match tok {
            Tok::Open => {
                self.at += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Tok::Close) {
                    return self.err("a closing parenthesis is missing".into());
                }
                self.at += 1;
                Ok(inner)
            }
            Tok::Close => self.err("unexpected \")\"".into()),
            Tok::Pipe => self.err("unexpected \"|\"".into()),
            Tok::Word(w) if ["and", "or", "of"].iter().any(|k| is_kw(&w, k)) => self.err(format!("unexpected {w:?} where a selection name is expected")),
            Tok::Word(w) if matches!(self.toks.get(self.at + 1), Some((_, Tok::Word(next))) if is_kw(next, "of")) => self.quantified(&w),
            Tok::Word(w) => {
                if w.contains('*') {
                    return self.err(format!("a wildcard ({w}) needs \"1 of\" or \"all of\" before it"));
                }
                match self.names.iter().position(|n| *n == w) {
                    Some(i) => {
                        self.at += 1;
                        Ok(Cond::Sel(i))
                    }
                    None => self.err(format!("the condition names selection {w:?}, which the detection does not define")),
                }
            }
        }
    }

    fn quantified(&mut self, quantifier: &str) -> Result<Cond, CondError> {
        let all = match quantifier {
            "1" => false,
            q if is_kw(q, "any") => false,
            q if is_kw(q, "all") => true,
            q => return self.err(format!("\"{q} of\" is not supported: write \"1 of\" or \"all of\"")),
        };
        self.at += 2;
        let Some(Tok::Word(target)) = self.peek().cloned() else {
            return self.err("\"of\" needs a selection pattern (sel_*) or \"them\"".into());
        };
        let picked: Vec<usize> = if is_kw(&target, "them") {
            self.names.iter().enumerate().filter(|(_, n)| !n.starts_with('_')).map(|(i, _)| i).collect()
        } else {
            let toks = super::text::tokens(&target);
            let pattern = super::text::TextPattern::new(&toks, true);
            self.names.iter().enumerate().filter(|(_, n)| pattern.matches(n)).map(|(i, _)| i).collect()
        };
        if picked.is_empty() {
            return self.err(format!("no selection matches {target:?}"));
        }
        self.at += 1;
        let items: Vec<Cond> = picked.into_iter().map(Cond::Sel).collect();
        Ok(if items.len() == 1 {
            items.into_iter().next().unwrap_or(Cond::Or(Vec::new()))
        } else if all {
            Cond::And(items)
        } else {
            Cond::Or(items)
        })
    }

    /// `count() [by field] > N` after the pipe.
    fn aggregation(&mut self) -> Result<Aggregation, CondError> {
        let words: Vec<(usize, String)> = self.toks[self.at..]
            .iter()
            .map(|(o, t)| {
                (
                    *o,
                    match t {
                        Tok::Open => "(".to_owned(),
                        Tok::Close => ")".to_owned(),
                        Tok::Pipe => "|".to_owned(),
                        Tok::Word(w) => w.clone(),
                    },
                )
            })
            .collect();
        let text: Vec<&str> = words.iter().map(|(_, w)| w.as_str()).collect();
        let fail = |i: usize, message: String| Err(CondError { offset: words.get(i).map_or(self.end, |w| w.0), message });
        match text.as_slice() {
            [f, ..] if !is_kw(f, "count") || text.get(1) != Some(&"(") => {
                fail(0, format!("aggregation {f:?} is not supported: only \"count() > N\" (or a threshold: section) is"))
            }
            [_, "(", ")", rest @ ..] => {
                let (by, rest, at) = match rest {
                    [by, field, rest @ ..] if is_kw(by, "by") => (Some((*field).to_owned()), rest, 5),
                    rest => (None, rest, 3),
                };
                let glued: Vec<&str>;
                let rest = match rest {
                    [w] if w.len() > 1 && w.starts_with('>') => {
                        let split = if w.starts_with(">=") { 2 } else { 1 };
                        glued = vec![&w[..split], &w[split..]];
                        glued.as_slice()
                    }
                    rest => rest,
                };
                match rest {
                    [op @ (">" | ">="), n] => match n.parse::<u64>() {
                        Ok(n) => Ok(Aggregation { by, above: if *op == ">" { n } else { n.saturating_sub(1) } }),
                        Err(_) => fail(at + 1, format!("a whole number is expected after {op}, not {n:?}")),
                    },
                    [op, ..] => fail(at, format!("\"count() {op} …\" is not supported: only > and >= are")),
                    [] => fail(at, "\"count()\" needs \"> N\"".into()),
                }
            }
            [_, "(", field, ..] => fail(2, format!("count({field}) (distinct values) is not supported: use count() with a threshold")),
            _ => fail(0, "\"|\" must be followed by an aggregation such as \"count() > 5\"".into()),
        }
    }
}

/// Parses a condition over the selections `names` (in their order).
pub(crate) fn parse(text: &str, names: &[&str]) -> Result<(Cond, Option<Aggregation>), CondError> {
    let toks = lex(text);
    if toks.is_empty() {
        return Err(CondError { offset: 0, message: "the condition is empty".into() });
    }
    let mut p = P { toks, at: 0, end: text.chars().count(), names };
    let cond = p.or()?;
    match p.peek() {
        None => Ok((cond, None)),
        Some(Tok::Pipe) => {
            p.at += 1;
            let agg = p.aggregation()?;
            Ok((cond, Some(agg)))
        }
        Some(Tok::Close) => p.err("unbalanced \")\"".into()),
        Some(Tok::Word(w)) => p.err(format!("unexpected {w:?}: \"and\" or \"or\" is missing")),
        Some(Tok::Open) => p.err("unexpected \"(\": \"and\" or \"or\" is missing".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["selection", "filter", "sel_a", "sel_b", "_helper"];

    fn cond(text: &str) -> Cond {
        parse(text, NAMES).unwrap().0
    }

    fn err(text: &str) -> CondError {
        parse(text, NAMES).unwrap_err()
    }

    fn truth(text: &str, on: &[usize]) -> bool {
        cond(text).eval(&mut |i| on.contains(&i))
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        assert_eq!(cond("selection or filter and sel_a"), Cond::Or(vec![Cond::Sel(0), Cond::And(vec![Cond::Sel(1), Cond::Sel(2)])]));
        assert_eq!(cond("not selection and filter"), Cond::And(vec![Cond::Not(Box::new(Cond::Sel(0))), Cond::Sel(1)]));
        assert!(truth("selection or filter and sel_a", &[0]));
        assert!(!truth("(selection or filter) and sel_a", &[0]));
        assert!(truth("not not selection", &[0]));
        assert!(truth("selection and not (filter or sel_a)", &[0, 3]));
        assert!(!truth("selection and not (filter or sel_a)", &[0, 2]));
    }

    #[test]
    fn quantifiers_pick_selections() {
        assert_eq!(cond("1 of sel_*"), Cond::Or(vec![Cond::Sel(2), Cond::Sel(3)]));
        assert_eq!(cond("all of sel_*"), Cond::And(vec![Cond::Sel(2), Cond::Sel(3)]));
        assert_eq!(cond("1 of them"), Cond::Or(vec![Cond::Sel(0), Cond::Sel(1), Cond::Sel(2), Cond::Sel(3)]));
        assert_eq!(cond("all of filter*"), Cond::Sel(1));
        assert!(truth("selection and not 1 of sel_*", &[0]) && !truth("selection and not 1 of sel_*", &[0, 3]));
        assert_eq!(cond("any of sel_*"), cond("1 of sel_*"));
    }

    #[test]
    fn errors_point_at_the_offending_word() {
        let e = err("selection and not filtr");
        assert_eq!((e.offset, e.message.as_str()), (18, "the condition names selection \"filtr\", which the detection does not define"));
        assert_eq!(err("1 of nothing_*").message, "no selection matches \"nothing_*\"");
        assert_eq!(err("(selection").message, "a closing parenthesis is missing");
        assert_eq!(err("selection)").offset, 9);
        assert_eq!(err("selection filter").message, "unexpected \"filter\": \"and\" or \"or\" is missing");
        assert_eq!(err("selection and").message, "the condition ends where a selection name is expected");
        assert!(err("2 of sel_*").message.contains("not supported"));
        assert!(err("sel_*").message.contains("needs \"1 of\""));
        assert_eq!(err("").message, "the condition is empty");
    }

    #[test]
    fn count_aggregations_become_thresholds() {
        assert_eq!(parse("selection | count() > 50", NAMES).unwrap().1, Some(Aggregation { by: None, above: 50 }));
        assert_eq!(
            parse("selection | count() by userIdentity.arn >= 5", NAMES).unwrap().1,
            Some(Aggregation { by: Some("userIdentity.arn".into()), above: 4 })
        );
        assert!(parse("selection | count(eventName) > 5", NAMES).unwrap_err().message.contains("distinct"));
        assert!(parse("selection | near filter", NAMES).unwrap_err().message.contains("not supported"));
        assert_eq!(parse("selection | count() >3", NAMES).unwrap().1, Some(Aggregation { by: None, above: 3 }));
        assert!(parse("selection | count() < 5", NAMES).unwrap_err().message.contains("only > and >="));
    }

    #[test]
    fn required_values_follow_the_logic() {
        let req = |i: usize| match i {
            0 => Some(BTreeSet::from(["a".to_owned(), "b".to_owned()])),
            2 => Some(BTreeSet::from(["b".to_owned()])),
            3 => Some(BTreeSet::from(["c".to_owned()])),
            _ => None,
        };
        assert_eq!(cond("selection and not filter").required(&req), req(0));
        assert_eq!(cond("selection and sel_a").required(&req), req(2));
        assert_eq!(cond("sel_a or sel_b").required(&req), Some(BTreeSet::from(["b".to_owned(), "c".to_owned()])));
        assert_eq!(cond("sel_a or filter").required(&req), None);
        assert_eq!(cond("not selection").required(&req), None);
        assert_eq!(cond("sel_a and sel_b").required(&req), Some(BTreeSet::new()));
    }
}
