//! Text comparison without allocating: Sigma's case-insensitive equality,
//! prefix, suffix, substring and `*`/`?` wildcards.
//!
//! Rule values are folded (lowercased) once at load. Record text is folded
//! one character at a time while comparing. A character folds to its
//! lowercase form only when that is a single character and is ASCII exactly
//! when the original is, so an ASCII pattern can be compared byte by byte
//! with `eq_ignore_ascii_case` and no multi-byte character ever matches an
//! ASCII one.

use std::fmt;

/// The case-insensitive form of one character.
pub(crate) fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) if !l.is_ascii() => l,
        _ => c,
    }
}

pub(crate) fn fold_str(s: &str) -> String {
    s.chars().map(fold).collect()
}

/// One piece of a wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Char(char),
    /// `?`: any one character.
    One,
    /// `*`: any run of characters, the empty one included.
    Many,
}

/// Splits a Sigma value into literal characters and wildcards: `*` and `?`
/// are wildcards, `\*`, `\?` and `\\` stand for the character itself, and
/// any other backslash is literal.
pub(crate) fn tokens(value: &str) -> Vec<Tok> {
    let mut out = Vec::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(Tok::Many),
            '?' => out.push(Tok::One),
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push(Tok::Char(next));
                }
                _ => out.push(Tok::Char('\\')),
            },
            other => out.push(Tok::Char(other)),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Glob(Vec<Tok>),
}

/// A compiled text test: the shape of the pattern, its folded text, and
/// whether it compares case-sensitively.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TextPattern {
    shape: Shape,
    cased: bool,
    /// Every literal character is ASCII: compare bytes.
    ascii: bool,
}

impl fmt::Debug for TextPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}{}", self.shape, if self.cased { " (cased)" } else { "" })
    }
}

impl TextPattern {
    /// A pattern from a rule value's tokens (with `*` already added for
    /// `contains`, `startswith` and `endswith`).
    pub fn new(tokens: &[Tok], cased: bool) -> TextPattern {
        let fold_char = |c: char| if cased { c } else { fold(c) };
        let literal = |toks: &[Tok]| -> Option<String> {
            toks.iter()
                .map(|t| match t {
                    Tok::Char(c) => Some(fold_char(*c)),
                    _ => None,
                })
                .collect()
        };
        let n = tokens.len();
        let leading = tokens.first() == Some(&Tok::Many);
        let trailing = n > 1 && tokens.last() == Some(&Tok::Many);
        let inner = &tokens[usize::from(leading)..n - usize::from(trailing)];
        let shape = match (literal(inner), leading, trailing) {
            (Some(text), false, false) => Shape::Exact(text),
            (Some(text), false, true) => Shape::Prefix(text),
            (Some(text), true, false) => Shape::Suffix(text),
            (Some(text), true, true) => Shape::Contains(text),
            (None, ..) => Shape::Glob(
                tokens
                    .iter()
                    .map(|t| match t {
                        Tok::Char(c) => Tok::Char(fold_char(*c)),
                        other => *other,
                    })
                    .collect(),
            ),
        };
        let ascii = match &shape {
            Shape::Exact(t) | Shape::Prefix(t) | Shape::Suffix(t) | Shape::Contains(t) => t.is_ascii(),
            Shape::Glob(_) => false,
        };
        TextPattern { shape, cased, ascii }
    }

    /// The exact text this pattern requires, when it has no wildcard.
    pub fn exact(&self) -> Option<&str> {
        match &self.shape {
            Shape::Exact(t) => Some(t),
            _ => None,
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        match &self.shape {
            Shape::Exact(p) => equals(text, p, self.cased, self.ascii),
            Shape::Prefix(p) => starts_with(text, p, self.cased, self.ascii),
            Shape::Suffix(p) => ends_with(text, p, self.cased, self.ascii),
            Shape::Contains(p) => contains(text, p, self.cased, self.ascii),
            Shape::Glob(toks) => glob(text, toks, self.cased),
        }
    }
}

/// How `fieldref` compares two values of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relation {
    Equals,
    StartsWith,
    EndsWith,
    Contains,
}

/// Compares two texts of the record, folding both unless `cased`.
pub(crate) fn relate(text: &str, other: &str, relation: Relation, cased: bool) -> bool {
    if cased || other.is_ascii() {
        // `eq_ignore_ascii_case` folds both sides; cased compares as is.
        return match relation {
            Relation::Equals => equals(text, other, cased, true),
            Relation::StartsWith => starts_with(text, other, cased, true),
            Relation::EndsWith => ends_with(text, other, cased, true),
            Relation::Contains => contains(text, other, cased, true),
        };
    }
    match relation {
        Relation::Equals => text.chars().map(fold).eq(other.chars().map(fold)),
        Relation::StartsWith => starts_folded(text, other),
        Relation::EndsWith => ends_folded(text, other),
        Relation::Contains => text.char_indices().any(|(i, _)| starts_folded(&text[i..], other)),
    }
}

fn starts_folded(text: &str, other: &str) -> bool {
    let mut t = text.chars().map(fold);
    other.chars().map(fold).all(|p| t.next() == Some(p))
}

fn ends_folded(text: &str, other: &str) -> bool {
    let mut t = text.chars().rev().map(fold);
    other.chars().rev().map(fold).all(|p| t.next() == Some(p))
}

/// `pattern` is folded unless `cased`; `ascii` says it is all ASCII.
fn equals(text: &str, pattern: &str, cased: bool, ascii: bool) -> bool {
    if cased {
        text == pattern
    } else if ascii {
        text.len() == pattern.len() && text.eq_ignore_ascii_case(pattern)
    } else {
        text.chars().map(fold).eq(pattern.chars())
    }
}

fn starts_with(text: &str, pattern: &str, cased: bool, ascii: bool) -> bool {
    if cased {
        text.starts_with(pattern)
    } else if ascii {
        text.len() >= pattern.len() && text.as_bytes()[..pattern.len()].eq_ignore_ascii_case(pattern.as_bytes())
    } else {
        let mut t = text.chars().map(fold);
        pattern.chars().all(|p| t.next() == Some(p))
    }
}

fn ends_with(text: &str, pattern: &str, cased: bool, ascii: bool) -> bool {
    if cased {
        text.ends_with(pattern)
    } else if ascii {
        text.len() >= pattern.len() && text.as_bytes()[text.len() - pattern.len()..].eq_ignore_ascii_case(pattern.as_bytes())
    } else {
        let mut t = text.chars().rev().map(fold);
        pattern.chars().rev().all(|p| t.next() == Some(p))
    }
}

fn contains(text: &str, pattern: &str, cased: bool, ascii: bool) -> bool {
    if cased {
        return text.contains(pattern);
    }
    if ascii {
        let (t, p) = (text.as_bytes(), pattern.as_bytes());
        let Some(&first) = p.first() else { return true };
        if t.len() < p.len() {
            return false;
        }
        let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
        let last_start = t.len() - p.len();
        let mut from = 0;
        while from <= last_start {
            let Some(i) = memchr::memchr2(lower, upper, &t[from..=last_start]) else { return false };
            let at = from + i;
            if t[at..at + p.len()].eq_ignore_ascii_case(p) {
                return true;
            }
            from = at + 1;
        }
        return false;
    }
    text.char_indices().any(|(i, _)| {
        let mut t = text[i..].chars().map(fold);
        pattern.chars().all(|p| t.next() == Some(p))
    })
}

/// Wildcard match over characters (backtracking to the last `*`).
fn glob(text: &str, toks: &[Tok], cased: bool) -> bool {
    let f = |c: char| if cased { c } else { fold(c) };
    let (mut ti, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < toks.len() {
            let next = text[ti..].chars().next();
            match (toks[pi], next) {
                (Tok::Many, _) => {
                    pi += 1;
                    star = Some((pi, ti));
                    continue;
                }
                (Tok::One, Some(c)) => {
                    ti += c.len_utf8();
                    pi += 1;
                    continue;
                }
                (Tok::Char(p), Some(c)) if f(c) == p => {
                    ti += c.len_utf8();
                    pi += 1;
                    continue;
                }
                _ => {}
            }
        } else if ti == text.len() {
            return true;
        }
        let Some((resume, from)) = star else { return false };
        let Some(c) = text[from..].chars().next() else { return false };
        star = Some((resume, from + c.len_utf8()));
        pi = resume;
        ti = from + c.len_utf8();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(value: &str) -> TextPattern {
        TextPattern::new(&tokens(value), false)
    }

    #[test]
    fn shapes_follow_the_wildcards() {
        assert_eq!(pat("ConsoleLogin").exact(), Some("consolelogin"));
        assert_eq!(pat("Get*").shape, Shape::Prefix("get".into()));
        assert_eq!(pat("*Bucket").shape, Shape::Suffix("bucket".into()));
        assert_eq!(pat("*s3*").shape, Shape::Contains("s3".into()));
        assert!(matches!(pat("a*b").shape, Shape::Glob(_)));
        assert!(matches!(pat("a?").shape, Shape::Glob(_)));
        assert_eq!(pat(r"a\*").exact(), Some("a*"));
        assert_eq!(pat(r"c:\windows").exact(), Some(r"c:\windows"));
        assert_eq!(pat(r"a\\*").shape, Shape::Prefix(r"a\".into()));
    }

    #[test]
    fn case_insensitive_unless_cased() {
        assert!(pat("consolelogin").matches("ConsoleLogin"));
        assert!(!TextPattern::new(&tokens("consolelogin"), true).matches("ConsoleLogin"));
        assert!(pat("*LOGIN").matches("ConsoleLogin"));
        assert!(pat("CONSOLE*").matches("ConsoleLogin"));
        assert!(pat("*SOLEL*").matches("ConsoleLogin"));
        assert!(!pat("*SOLEX*").matches("ConsoleLogin"));
        assert!(pat("ÉTÉ").matches("été") && pat("*été*").matches("L'ÉTÉ!"));
        assert!(!pat("k").matches("\u{212a}"), "the Kelvin sign is not an ASCII k");
        assert!(pat("").matches("") && !pat("").matches("x"));
    }

    #[test]
    fn globs_backtrack() {
        assert!(pat("arn:aws:iam::*:role/*admin*").matches("arn:aws:iam::111:role/OrgAdminRole"));
        assert!(!pat("arn:aws:iam::*:user/*").matches("arn:aws:iam::111:role/x"));
        assert!(pat("a?c").matches("abc") && !pat("a?c").matches("ac") && pat("a?c").matches("aéc"));
        assert!(pat("*a*a*a").matches("banana a") && !pat("*a*a*a*b").matches("aaaa"));
        assert!(pat("*").matches("") && pat("**").matches("x"));
        assert!(pat(r"what\?*").matches("what? no") && !pat(r"what\?*").matches("whatx"));
    }

    #[test]
    fn relations_fold_both_sides() {
        assert!(relate("Alice", "ALICE", Relation::Equals, false));
        assert!(!relate("Alice", "ALICE", Relation::Equals, true));
        assert!(relate("arn:aws:iam::1:user/Alice", "alice", Relation::EndsWith, false));
        assert!(relate("Été-x", "ÉTÉ", Relation::StartsWith, false));
        assert!(relate("xxÉTÉyy", "été", Relation::Contains, false));
        assert!(!relate("abc", "abcd", Relation::StartsWith, false));
    }
}
