//! Detection rules: Sigma-format YAML (`rules/README.md` at the repository
//! root is the format's reference), loaded and compiled once, then checked
//! against every event.
//!
//! - [`RuleSet::load`] parses every file, reports every error of every file
//!   with its line and column, and compiles the rules: values folded for
//!   case-insensitive comparison, wildcards split, regular expressions
//!   compiled, CIDR blocks parsed, test events validated.
//! - The index: from each rule's condition the loader derives the
//!   `eventName` values (else the `eventSource` values) that the rule cannot
//!   match without, e.g. `selection and not filter` where `selection` names
//!   `eventName: ConsoleLogin`. [`Detector::check`] looks an event up by its
//!   name and source and evaluates only the rules found there plus the rules
//!   that could not be indexed; the record's JSON is parsed only when there
//!   is at least one such rule, so most events cost two hash lookups.
//! - Threshold rules count matches per group in a sliding window of trail
//!   time (event time), tolerating events that arrive minutes out of order,
//!   with memory bounded by expiry and a cap on groups (`threshold.rs`).
//! - [`run_tests`] runs the `tests:` every rule carries.
//!
//! `README.md` beside this file says how the pieces fit.

mod condition;
mod detection;
mod detector;
mod field;
mod json;
mod parse;
mod template;
mod testing;
mod text;
mod threshold;
mod yaml;

pub use detector::{Detector, DetectorConfig, DetectorStats};
pub use testing::{run_tests, TestOutcome};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::alerts::Severity;

use condition::Cond;
use detection::Selection;
use field::FieldPath;
use template::Template;
use testing::TestCase;
use yaml::Pos;

/// A rule file's path (as it should appear in messages) and text. Sources
/// whose path does not end in `.yml` or `.yaml` are not rules: they are the
/// files a rule's `event_file` tests may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    pub path: String,
    pub text: String,
}

impl RuleSource {
    /// Every `*.yml` and `*.yaml` file under `dir`, recursively, sorted by path.
    pub fn read_dir(dir: &Path) -> Result<Vec<RuleSource>, LoadError> {
        let mut files = Vec::new();
        collect(dir, &mut files)?;
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).map_err(|e| LoadError::file(&path, format!("cannot read the rule file: {e}")))?;
                Ok(RuleSource { path: path.display().to_string(), text })
            })
            .collect()
    }

    fn is_rule(&self) -> bool {
        is_rule_path(Path::new(&self.path))
    }
}

fn is_rule_path(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LoadError::file(dir, format!("cannot read the rules directory: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| LoadError::file(dir, format!("cannot read the rules directory: {e}")))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| LoadError::file(&path, e.to_string()))?;
        if kind.is_dir() {
            collect(&path, out)?;
        } else if is_rule_path(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Why a rule file was refused: `path:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl LoadError {
    fn file(path: &Path, message: String) -> LoadError {
        LoadError { path: path.display().to_string(), line: None, column: None, message }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.path, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.path, self.message),
            _ => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for LoadError {}

/// Collects the errors of one file.
pub(crate) struct Diag<'p> {
    path: &'p str,
    pub errors: Vec<LoadError>,
}

impl<'p> Diag<'p> {
    fn new(path: &'p str) -> Self {
        Diag { path, errors: Vec::new() }
    }

    pub fn at(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(LoadError { path: self.path.to_owned(), line: Some(pos.line), column: Some(pos.column), message: message.into() });
    }
}

/// One alert per group of these fields; updates at most once per window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    pub by: Vec<String>,
    pub window_ms: i64,
}

/// Fire above `above` matches within `window_ms` of trail time, per group of `by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    pub above: u64,
    pub window_ms: i64,
    /// Empty: one count for the whole rule.
    pub by: Vec<String>,
}

/// Which events a rule is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleIndex {
    /// Only events with one of these `eventName`s (lowercase).
    EventName(Vec<String>),
    /// Only events from one of these `eventSource`s (lowercase).
    EventSource(Vec<String>),
    /// Every event.
    Every,
}

/// A loaded rule. Metadata is public; the compiled detection is not.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub level: Severity,
    pub status: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub date: Option<String>,
    pub modified: Option<String>,
    pub references: Vec<String>,
    pub tags: Vec<String>,
    pub falsepositives: Vec<String>,
    /// The file it was loaded from, and the line of its first key.
    pub path: String,
    pub line: usize,
    pub dedup: Dedup,
    /// None: only a person resolves its alerts.
    pub resolve_after_ms: Option<i64>,
    pub threshold: Option<Threshold>,
    /// Whether it is checked only against the events its index names.
    pub indexed: bool,
    pub index: RuleIndex,
    /// Whether its condition tests an `origin.*` field, so whether it can
    /// match differently once an event's origin settles: such rules are
    /// checked again then ([`Detector::check_settled`]). Origin fields in
    /// the summary, `dedup.by` or `threshold.by` do not count: they do not
    /// decide whether the rule matches.
    pub uses_origin: bool,
    /// How many tests it carries.
    pub tests: usize,
    pub(crate) compiled: Compiled,
}

#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub id: Arc<str>,
    pub id_pos: Pos,
    pub title: Arc<str>,
    pub selections: Vec<Selection>,
    pub condition: Cond,
    pub condition_text: String,
    pub summary: Template,
    pub dedup_by: Vec<FieldPath>,
    pub threshold_by: Vec<FieldPath>,
    pub cases: Vec<TestCase>,
}

impl Rule {
    /// Whether the rule's detection matches (before any threshold).
    pub(crate) fn matches(&self, ctx: &field::Ctx<'_>) -> bool {
        let sels = &self.compiled.selections;
        self.compiled.condition.eval(&mut |i| sels[i].matches(ctx))
    }

    /// The condition as written.
    pub fn condition(&self) -> &str {
        &self.compiled.condition_text
    }
}

/// Whether a selection the condition names tests an `origin.*` field.
fn condition_uses_origin(condition: &Cond, selections: &[Selection]) -> bool {
    let mut uses = false;
    condition.selections(&mut |i| uses |= selections.get(i).is_some_and(Selection::uses_origin));
    uses
}

/// Rules by the event names and sources they need.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    by_name: HashMap<String, Vec<usize>>,
    by_source: HashMap<String, Vec<usize>>,
    every: Vec<usize>,
}

impl Index {
    fn build(rules: &[Rule]) -> Index {
        let mut index = Index::default();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.index {
                RuleIndex::EventName(names) => names.iter().for_each(|n| index.by_name.entry(n.clone()).or_default().push(i)),
                RuleIndex::EventSource(sources) => sources.iter().for_each(|s| index.by_source.entry(s.clone()).or_default().push(i)),
                RuleIndex::Every => index.every.push(i),
            }
        }
        index
    }

    /// Appends the rules to check for an event, in rule order.
    pub fn candidates(&self, event_name: &str, event_source: &str, out: &mut Vec<usize>) {
        out.clear();
        with_folded(event_name, |n| out.extend(self.by_name.get(n).into_iter().flatten()));
        with_folded(event_source, |s| out.extend(self.by_source.get(s).into_iter().flatten()));
        out.extend(&self.every);
        out.sort_unstable();
    }
}

/// Calls `f` with the folded form of `s`, on the stack when it is short ASCII.
fn with_folded<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 128];
    if s.len() <= buf.len() && s.is_ascii() {
        for (d, b) in buf.iter_mut().zip(s.bytes()) {
            *d = b.to_ascii_lowercase();
        }
        if let Ok(folded) = std::str::from_utf8(&buf[..s.len()]) {
            return f(folded);
        }
    }
    f(&text::fold_str(s))
}

/// The loaded rules and their index.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    index: Index,
    /// Whether any rule's condition tests an origin field.
    origin_rules: bool,
}

impl RuleSet {
    /// Loads one layer of rules; every error of every file is returned.
    pub fn load(sources: &[RuleSource]) -> Result<RuleSet, Vec<LoadError>> {
        let rules = load_layer(sources)?;
        Ok(RuleSet::from_rules(rules))
    }

    /// The built-in pack with the user's rules over it: a user rule with a
    /// built-in rule's id replaces it. Duplicate ids inside one layer are errors.
    pub fn load_layers(builtin: &[RuleSource], user: &[RuleSource]) -> Result<RuleSet, Vec<LoadError>> {
        let (base, over) = match (load_layer(builtin), load_layer(user)) {
            (Ok(b), Ok(u)) => (b, u),
            (b, u) => return Err(b.err().into_iter().chain(u.err()).flatten().collect()),
        };
        let mut over: BTreeMap<String, Rule> = over.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mut rules: Vec<Rule> = base.into_iter().map(|r| over.remove(&r.id).unwrap_or(r)).collect();
        let mut added: Vec<Rule> = over.into_values().collect();
        added.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        rules.extend(added);
        Ok(RuleSet::from_rules(rules))
    }

    fn from_rules(rules: Vec<Rule>) -> RuleSet {
        let index = Index::build(&rules);
        let origin_rules = rules.iter().any(|r| r.uses_origin);
        RuleSet { rules, index, origin_rules }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules whose condition tests an origin field: the ones
    /// [`Detector::check_settled`] evaluates.
    pub fn origin_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| r.uses_origin)
    }

    /// Whether there is any such rule: without one, a settled origin needs
    /// no second look at its event.
    pub fn has_origin_rules(&self) -> bool {
        self.origin_rules
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }
}

fn load_layer(sources: &[RuleSource]) -> Result<Vec<Rule>, Vec<LoadError>> {
    let files = Files::new(sources);
    let mut errors = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    for source in sources.iter().filter(|s| s.is_rule()) {
        let mut diag = Diag::new(&source.path);
        if let Some(rule) = parse::parse_rule(source, &files, &mut diag) {
            let pos = rule.compiled.id_pos;
            if let Some((path, line)) = seen.get(&rule.id) {
                diag.at(pos, format!("duplicate rule id {:?} (also in {path}:{line})", rule.id));
            } else {
                seen.insert(rule.id.clone(), (rule.path.clone(), pos.line));
                rules.push(rule);
            }
        }
        errors.extend(diag.errors);
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// The files `event_file` may name: the sources given, then the disk.
pub(crate) struct Files<'s> {
    given: HashMap<PathBuf, &'s str>,
}

impl<'s> Files<'s> {
    fn new(sources: &'s [RuleSource]) -> Self {
        Files { given: sources.iter().map(|s| (normalize(Path::new(&s.path)), s.text.as_str())).collect() }
    }

    /// The text of `name`, relative to the rule file at `rule_path`.
    pub fn read(&self, rule_path: &str, name: &str) -> Result<std::borrow::Cow<'s, str>, String> {
        let path = normalize(&Path::new(rule_path).parent().unwrap_or(Path::new("")).join(name));
        if let Some(text) = self.given.get(&path) {
            return Ok(std::borrow::Cow::Borrowed(text));
        }
        std::fs::read_to_string(&path).map(std::borrow::Cow::Owned).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }
}

/// `a/./b/../c` → `a/c`, without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
