//! From a rule file's YAML to a compiled [`Rule`], reporting every problem
//! with its position.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::alerts::Severity;

use super::condition::{self, Aggregation};
use super::detection::{compile_selection, Selection};
use super::field::FieldPath;
use super::template::Template;
use super::testing::parse_tests;
use super::yaml::{self, Node, Pos};
use super::{Compiled, Dedup, Diag, Files, Rule, RuleIndex, RuleSource, Threshold};

/// Sigma's keys: accepted, kept where useful.
const SIGMA_KEYS: &[&str] = &[
    "title",
    "id",
    "name",
    "status",
    "description",
    "references",
    "author",
    "date",
    "modified",
    "tags",
    "falsepositives",
    "fields",
    "related",
    "license",
    "level",
    "logsource",
    "detection",
    "scope",
    "taxonomy",
];

/// trailwatch's extensions.
const EXTENSIONS: &[&str] = &["summary", "dedup", "resolve_after", "threshold", "tests"];

const STATUSES: &[&str] = &["stable", "test", "experimental", "deprecated", "unsupported"];

pub(crate) const DEFAULT_DEDUP_BY: &str = "recipientAccountId";
const HOUR_MS: i64 = 3_600_000;

fn text(node: &Node, what: &str, diag: &mut Diag<'_>) -> Option<String> {
    match node {
        Node::Scalar { text, .. } if !node.is_null() => Some(text.clone()),
        other => {
            diag.at(other.pos(), format!("{what} must be text, not {}", other.kind()));
            None
        }
    }
}

fn text_list(node: &Node, what: &str, diag: &mut Diag<'_>) -> Vec<String> {
    match node {
        _ if node.is_null() => Vec::new(),
        Node::Scalar { text, .. } => vec![text.clone()],
        Node::Seq { items, .. } => items.iter().filter_map(|i| text(i, &format!("each item of {what}"), diag)).collect(),
        Node::Map { .. } => {
            diag.at(node.pos(), format!("{what} must be a list, not a map"));
            Vec::new()
        }
    }
}

/// `30s`, `5m`, `1h`, `7d` (or `0`) in milliseconds.
pub(crate) fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let unit = match s.chars().last()? {
        's' => 1_000,
        'm' => 60_000,
        'h' => HOUR_MS,
        'd' => 24 * HOUR_MS,
        _ => return None,
    };
    let n: i64 = s[..s.len() - 1].parse().ok().filter(|n| *n >= 0)?;
    n.checked_mul(unit)
}

/// A duration, or None for `never` when `never` is allowed.
fn duration(node: &Node, what: &str, never: bool, diag: &mut Diag<'_>) -> Option<Option<i64>> {
    let t = text(node, what, diag)?;
    if never && t.trim() == "never" {
        return Some(None);
    }
    match parse_duration(&t) {
        Some(ms) => Some(Some(ms)),
        None => {
            let also = if never { " or never" } else { "" };
            diag.at(node.pos(), format!("{what}: {t:?} is not a duration (30s, 5m, 1h, 7d{also})"));
            None
        }
    }
}

fn field_list(node: &Node, what: &str, diag: &mut Diag<'_>) -> Option<(Vec<String>, Vec<FieldPath>)> {
    let names = text_list(node, what, diag);
    let mut paths = Vec::with_capacity(names.len());
    for name in &names {
        match FieldPath::parse(name) {
            Ok(p) => paths.push(p),
            Err(e) => diag.at(node.pos(), format!("{what}: {e}")),
        }
    }
    (paths.len() == names.len()).then_some((names, paths))
}

pub(crate) fn map_entries<'n>(node: &'n Node, what: &str, allowed: &[&str], diag: &mut Diag<'_>) -> Option<Vec<(&'n str, &'n Node)>> {
    let Node::Map { entries, .. } = node else {
        diag.at(node.pos(), format!("{what} must be a map ({}), not {}", allowed.join(", "), node.kind()));
        return None;
    };
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match k.as_str() {
            Some(name) if allowed.contains(&name) => out.push((name, v)),
            Some(name) => diag.at(k.pos(), format!("unknown key {name:?} in {what} (expected {})", allowed.join(", "))),
            None => diag.at(k.pos(), format!("{what}: keys must be text")),
        }
    }
    Some(out)
}

/// Edit distance, to suggest a key for a misspelt one.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn check_keys(entries: &[(Node, Node)], diag: &mut Diag<'_>) {
    for (k, _) in entries {
        let Some(name) = k.as_str() else {
            diag.at(k.pos(), "rule keys must be text");
            continue;
        };
        if SIGMA_KEYS.contains(&name) || EXTENSIONS.contains(&name) {
            continue;
        }
        if name == "correlation" || name == "action" {
            diag.at(k.pos(), format!("Sigma {name} documents are not supported (use threshold: for counting)"));
            continue;
        }
        let near = SIGMA_KEYS.iter().chain(EXTENSIONS).find(|known| name.len() >= 4 && distance(name, known) <= 2);
        if let Some(known) = near {
            diag.at(k.pos(), format!("unknown key {name:?} (did you mean {known:?}?)"));
        }
    }
}

fn check_logsource(node: Option<&Node>, root: Pos, diag: &mut Diag<'_>) {
    let Some(node) = node else {
        diag.at(root, "missing logsource (product: aws, service: cloudtrail)");
        return;
    };
    let Node::Map { entries, .. } = node else {
        diag.at(node.pos(), format!("logsource must be a map (product: aws, service: cloudtrail), not {}", node.kind()));
        return;
    };
    let mut named = false;
    for (k, v) in entries {
        let value = v.as_str().unwrap_or_default();
        let wanted = match k.as_str() {
            Some("product") => "aws",
            Some("service") => "cloudtrail",
            Some("category") => {
                diag.at(v.pos(), format!("logsource category {value:?} is not CloudTrail: trailwatch loads only product aws, service cloudtrail"));
                continue;
            }
            _ => continue,
        };
        named = true;
        if !value.eq_ignore_ascii_case(wanted) {
            diag.at(
                v.pos(),
                format!("logsource {} {value:?} is not CloudTrail: trailwatch loads only product aws, service cloudtrail", k.as_str().unwrap_or_default()),
            );
        }
    }
    if !named {
        diag.at(node.pos(), "logsource names neither product nor service (product: aws, service: cloudtrail)");
    }
}

/// The condition(s) and the position of the text, for error columns.
struct Detection {
    selections: Vec<Selection>,
    condition: condition::Cond,
    condition_text: String,
    aggregation: Option<(Aggregation, Pos)>,
    timeframe: Option<i64>,
}

fn parse_detection(node: &Node, diag: &mut Diag<'_>) -> Option<Detection> {
    let Node::Map { entries, pos } = node else {
        diag.at(node.pos(), format!("detection must be a map of selections and a condition, not {}", node.kind()));
        return None;
    };
    let mut compiled = Vec::new();
    let mut names = Vec::new();
    let mut condition = None;
    let mut timeframe = None;
    for (k, v) in entries {
        match k.as_str() {
            Some("condition") => condition = Some(v),
            Some("timeframe") => timeframe = duration(v, "timeframe", false, diag).flatten(),
            Some(name) => {
                names.push(name.to_owned());
                compiled.push(compile_selection(name, v, diag));
            }
            None => diag.at(k.pos(), "selection names must be text"),
        }
    }
    let Some(cond_node) = condition else {
        diag.at(*pos, "missing condition in detection");
        return None;
    };
    if names.is_empty() {
        diag.at(*pos, "detection defines no selection");
        return None;
    }
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let texts: Vec<&Node> = match cond_node {
        Node::Scalar { .. } if !cond_node.is_null() => vec![cond_node],
        Node::Seq { items, .. } if !items.is_empty() && items.iter().all(|i| matches!(i, Node::Scalar { .. })) => items.iter().collect(),
        other => {
            diag.at(other.pos(), format!("condition must be text (or a list of conditions), not {}", other.kind()));
            return None;
        }
    };
    let mut conds = Vec::new();
    let mut aggregation = None;
    for t in &texts {
        let Node::Scalar { text, quoted, pos } = t else { continue };
        let base = pos.plus(usize::from(*quoted));
        match condition::parse(text, &name_refs) {
            Ok((c, agg)) => {
                if let Some(a) = agg {
                    if texts.len() > 1 {
                        diag.at(*pos, "an aggregation (| count()) cannot be used in a list of conditions");
                    }
                    aggregation = Some((a, *pos));
                }
                conds.push(c);
            }
            Err(e) => diag.at(base.plus(e.offset), e.message),
        }
    }
    let selections: Option<Vec<Selection>> = compiled.into_iter().collect();
    if conds.len() != texts.len() {
        return None;
    }
    let condition = if conds.len() == 1 { conds.remove(0) } else { condition::Cond::Or(conds) };
    let condition_text = texts.iter().filter_map(|t| t.as_str()).collect::<Vec<_>>().join(" or ");
    Some(Detection { selections: selections?, condition, condition_text, aggregation, timeframe })
}

fn derive_index(d: &Detection, pos: Pos, diag: &mut Diag<'_>) -> RuleIndex {
    for (field, make) in [("eventName", RuleIndex::EventName as fn(Vec<String>) -> RuleIndex), ("eventSource", RuleIndex::EventSource)] {
        let required = d.condition.required(&|i| d.selections[i].required(field));
        match required {
            Some(set) if set.is_empty() => {
                diag.at(pos, format!("the condition can never match: it requires {field} to take different values at once"));
                return RuleIndex::Every;
            }
            Some(set) => return make(set.into_iter().collect::<BTreeSet<_>>().into_iter().collect()),
            None => {}
        }
    }
    RuleIndex::Every
}

/// Parses and compiles one rule file; None when it has errors (in `diag`).
pub(crate) fn parse_rule(source: &RuleSource, files: &Files<'_>, diag: &mut Diag<'_>) -> Option<Rule> {
    let docs = match yaml::parse(&source.text) {
        Ok(docs) => docs,
        Err(e) => {
            diag.at(e.pos, e.message);
            return None;
        }
    };
    let root = match docs.as_slice() {
        [] => {
            diag.at(Pos { line: 1, column: 1 }, "the file holds no rule");
            return None;
        }
        [one] => one,
        [_, second, ..] => {
            diag.at(second.pos(), "one rule per file: a second YAML document starts here");
            return None;
        }
    };
    let Node::Map { entries, pos: root_pos } = root else {
        diag.at(root.pos(), format!("a rule is a map (title, id, detection, …), not {}", root.kind()));
        return None;
    };
    let root_pos = *root_pos;
    let errors_before = diag.errors.len();
    check_keys(entries, diag);
    let get = |name: &str| entries.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v);
    let opt_text = |name: &str, diag: &mut Diag<'_>| get(name).filter(|n| !n.is_null()).and_then(|n| text(n, name, diag));
    let list = |name: &str, diag: &mut Diag<'_>| get(name).map(|n| text_list(n, name, diag)).unwrap_or_default();

    let id_node = get("id");
    let id = match id_node {
        None => {
            diag.at(root_pos, "missing id");
            None
        }
        Some(n) => text(n, "id", diag).filter(|id| {
            let ok = !id.is_empty() && !id.contains(|c: char| c.is_whitespace() || c == '|');
            if !ok {
                diag.at(n.pos(), format!("id {id:?} must be non-empty, without spaces or \"|\""));
            }
            ok
        }),
    };
    let title = match get("title") {
        None => {
            diag.at(root_pos, "missing title");
            None
        }
        Some(n) => text(n, "title", diag),
    };
    let level = match get("level").filter(|n| !n.is_null()) {
        None => Some(Severity::Medium),
        Some(n) => text(n, "level", diag).and_then(|l| {
            let parsed = Severity::parse(&l);
            if parsed.is_none() {
                diag.at(n.pos(), format!("unknown level {l:?} (informational, low, medium, high or critical)"));
            }
            parsed
        }),
    };
    let status = opt_text("status", diag);
    if let (Some(s), Some(n)) = (&status, get("status")) {
        if !STATUSES.contains(&s.as_str()) {
            diag.at(n.pos(), format!("unknown status {s:?} ({})", STATUSES.join(", ")));
        }
    }
    check_logsource(get("logsource"), root_pos, diag);
    let detection = match get("detection") {
        None => {
            diag.at(root_pos, "missing detection");
            None
        }
        Some(n) => parse_detection(n, diag).map(|d| (d, n.pos())),
    };
    let index = detection.as_ref().map(|(d, pos)| derive_index(d, *pos, diag));

    let summary = match get("summary").filter(|n| !n.is_null()) {
        None => title.as_deref().map(Template::default_for),
        Some(n) => text(n, "summary", diag).and_then(|t| match Template::parse(&t) {
            Ok(t) => Some(t),
            Err(e) => {
                let quoted = matches!(n, Node::Scalar { quoted: true, .. });
                diag.at(n.pos().plus(e.offset + usize::from(quoted)), e.message);
                None
            }
        }),
    };

    let mut threshold = None;
    if let Some(n) = get("threshold") {
        threshold = parse_threshold(n, diag);
    }
    if let Some((d, _)) = &detection {
        if let Some((agg, pos)) = &d.aggregation {
            if get("threshold").is_some() {
                diag.at(*pos, "the condition aggregates (| count()) and the rule has a threshold: keep one");
            } else {
                match d.timeframe {
                    Some(window_ms) if window_ms > 0 => {
                        let by: Vec<String> = agg.by.iter().cloned().collect();
                        match by.iter().map(|f| FieldPath::parse(f)).collect::<Result<Vec<_>, _>>() {
                            Ok(paths) => threshold = Some((Threshold { above: agg.above, window_ms, by }, paths)),
                            Err(e) => diag.at(*pos, e),
                        }
                    }
                    _ => diag.at(*pos, "an aggregation (| count()) needs a timeframe in detection (e.g. timeframe: 5m)"),
                }
            }
        }
    }

    let mut dedup = Dedup { by: vec![DEFAULT_DEDUP_BY.to_owned()], window_ms: HOUR_MS };
    let mut dedup_paths = vec![FieldPath::Record(vec![Box::from(DEFAULT_DEDUP_BY)])];
    if let Some((t, paths)) = &threshold {
        if !t.by.is_empty() {
            dedup.by.clone_from(&t.by);
            dedup_paths.clone_from(paths);
        }
    }
    if let Some(n) = get("dedup") {
        for (key, v) in map_entries(n, "dedup", &["by", "window"], diag).unwrap_or_default() {
            match key {
                "by" => {
                    if let Some((names, paths)) = field_list(v, "dedup.by", diag) {
                        (dedup.by, dedup_paths) = (names, paths);
                    }
                }
                _ => {
                    if let Some(Some(ms)) = duration(v, "dedup.window", false, diag) {
                        dedup.window_ms = ms;
                    }
                }
            }
        }
    }
    let resolve_after_ms = match get("resolve_after") {
        None => Some(24 * HOUR_MS),
        Some(n) => duration(n, "resolve_after", true, diag).unwrap_or(Some(24 * HOUR_MS)),
    };

    let cases = get("tests").map(|n| parse_tests(n, &source.path, files, diag)).unwrap_or_default();
    let description = opt_text("description", diag);
    let author = opt_text("author", diag);
    let date = opt_text("date", diag);
    let modified = opt_text("modified", diag);
    let references = list("references", diag);
    let tags = list("tags", diag);
    let falsepositives = list("falsepositives", diag);

    if diag.errors.len() > errors_before {
        return None;
    }
    let (id, title, level, summary, (detection, _), index) = (id?, title?, level?, summary?, detection?, index?);
    let (threshold, threshold_by) = match threshold {
        Some((t, paths)) => (Some(t), paths),
        None => (None, Vec::new()),
    };
    let cases_len = cases.len();
    let uses_origin = super::condition_uses_origin(&detection.condition, &detection.selections);
    Some(Rule {
        compiled: Compiled {
            id: Arc::from(id.as_str()),
            id_pos: id_node.map_or(root_pos, Node::pos),
            title: Arc::from(title.as_str()),
            selections: detection.selections,
            condition: detection.condition,
            condition_text: detection.condition_text,
            summary,
            dedup_by: dedup_paths,
            threshold_by,
            cases,
        },
        tests: cases_len,
        id,
        title,
        level,
        status,
        description,
        author,
        date,
        modified,
        references,
        tags,
        falsepositives,
        path: source.path.clone(),
        line: root_pos.line,
        dedup,
        resolve_after_ms,
        threshold,
        indexed: !matches!(index, RuleIndex::Every),
        index,
        uses_origin,
    })
}

fn parse_threshold(node: &Node, diag: &mut Diag<'_>) -> Option<(Threshold, Vec<FieldPath>)> {
    let entries = map_entries(node, "threshold", &["above", "window", "by"], diag)?;
    let (mut above, mut window, mut by) = (None, None, Some((Vec::new(), Vec::new())));
    for (key, v) in entries {
        match key {
            "above" => match v.as_str().map(str::trim).and_then(|t| t.parse::<u64>().ok()) {
                Some(n) => above = Some(n),
                None => diag.at(v.pos(), "threshold.above must be a whole number (0 or more)"),
            },
            "window" => match duration(v, "threshold.window", false, diag) {
                Some(Some(ms)) if ms > 0 => window = Some(ms),
                Some(_) => diag.at(v.pos(), "threshold.window must be longer than 0"),
                None => {}
            },
            _ => by = field_list(v, "threshold.by", diag),
        }
    }
    if above.is_none() && !entries_have(node, "above") {
        diag.at(node.pos(), "threshold needs above (a number of matches)");
    }
    if window.is_none() && !entries_have(node, "window") {
        diag.at(node.pos(), "threshold needs window (e.g. 5m)");
    }
    let (names, paths) = by?;
    Some((Threshold { above: above?, window_ms: window?, by: names }, paths))
}

fn entries_have(node: &Node, key: &str) -> bool {
    matches!(node, Node::Map { entries, .. } if entries.iter().any(|(k, _)| k.as_str() == Some(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30_000));
        assert_eq!(parse_duration("5m"), Some(300_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        assert_eq!(parse_duration("7d"), Some(604_800_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("-5m"), None);
        assert_eq!(parse_duration("5 min"), None);
    }

    #[test]
    fn typos_are_close() {
        assert_eq!(distance("summry", "summary"), 1);
        assert_eq!(distance("threshhold", "threshold"), 1);
        assert!(distance("custom_field", "summary") > 2);
    }
}
