//! The Athena queries of history and the rows they return. Every value is
//! an execution parameter; only table names (checked identifiers) and the
//! row limit (a number) are written into the text.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use trailwatch_core::event::Event;
use trailwatch_core::identity::Origin;
use trailwatch_core::ports::{EventFilter, HistoryCursor, PortError};
use trailwatch_core::time::EpochMillis;

use super::objects::parse_doc;
use super::region_partition;
use crate::athena::ddl;
use crate::error::AwsResult;

/// A statement and its execution parameters, in placeholder order.
#[derive(Debug, Default, Clone)]
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) params: Vec<String>,
}

impl Sql {
    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Appends `text`, which holds one `?`, and its value.
    fn bind(&mut self, text: &str, value: impl Into<String>) {
        self.text.push_str(text);
        self.params.push(value.into());
    }
}

/// What a read in (event time, seq) order asks: a search, or a page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Scan {
    /// Inclusive.
    pub(super) since: EpochMillis,
    /// Exclusive.
    pub(super) until: Option<EpochMillis>,
    pub(super) account: Option<String>,
    pub(super) region: Option<String>,
    pub(super) event_source: Option<String>,
    pub(super) event_name: Option<String>,
    pub(super) actor_arn: Option<String>,
    pub(super) origin_principal: Option<String>,
    pub(super) origin_kind: Option<&'static str>,
    pub(super) source_ip: Option<String>,
    pub(super) error_code: Option<String>,
    pub(super) read_only: Option<bool>,
}

impl Scan {
    pub(super) fn of_filter(f: &EventFilter) -> Scan {
        Scan {
            since: f.since,
            until: Some(f.until),
            account: f.account.clone(),
            region: f.region.clone(),
            event_source: f.event_source.clone(),
            event_name: f.event_name.clone(),
            actor_arn: f.actor_arn.clone(),
            origin_principal: f.origin_principal.clone(),
            origin_kind: f.origin_kind.map(|k| k.as_str()),
            source_ip: f.source_ip.clone(),
            error_code: f.error_code.clone(),
            read_only: f.read_only,
        }
    }

    pub(super) fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// The columns a query returns, from which [`event_of_row`] builds an event.
const RESULT_COLUMNS: &str = "account_id, event_id, event_time, aws_region, event_source, event_name, actor, shared_event_id, source_ip, error_code, \
                              read_only, raw, origin, seq";

/// The names of the events table and its origins table, quoted and qualified.
pub(super) struct Tables {
    pub(super) events: String,
    pub(super) origins: String,
}

/// Where the rows of one query come from: the date partitions (an inclusive
/// range of days, `None` for no end), and the conditions on the events table
/// and on the origins table beyond them.
struct Source<'a> {
    days: (String, Option<String>),
    events_where: &'a dyn Fn(&mut Sql),
    origins_where: &'a dyn Fn(&mut Sql),
}

fn bind_days(sql: &mut Sql, days: &(String, Option<String>)) {
    match &days.1 {
        Some(last) => {
            sql.bind("\"date\" BETWEEN ?", days.0.clone());
            sql.bind(" AND ?", last.clone());
        }
        None => sql.bind("\"date\" >= ?", days.0.clone()),
    }
}

/// `WITH stored …, updates …, found …`: each event once (its first copy),
/// with its newest origin (`origin`, `origin_kind`, `origin_principal`).
fn found_cte(tables: &Tables, source: &Source<'_>) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "WITH stored AS (\n  SELECT account_id, event_id, event_time, aws_region, event_source, event_name, actor, shared_event_id, source_ip, error_code, \
         read_only, raw, origin, origin_kind, origin_principal, seq,\n    row_number() OVER (PARTITION BY account_id, event_id ORDER BY seq) AS copy\n  FROM ",
    );
    sql.push(&tables.events);
    sql.push("\n  WHERE ");
    bind_days(&mut sql, &source.days);
    (source.events_where)(&mut sql);
    sql.push(
        "\n),\nupdates AS (\n  SELECT account_id, event_id, origin, origin_kind, origin_principal,\n    \
         row_number() OVER (PARTITION BY account_id, event_id ORDER BY written_at DESC) AS latest\n  FROM ",
    );
    sql.push(&tables.origins);
    sql.push("\n  WHERE ");
    bind_days(&mut sql, &source.days);
    (source.origins_where)(&mut sql);
    sql.push(
        "\n),\nfound AS (\n  SELECT s.account_id, s.event_id, s.event_time, s.aws_region, s.event_source, s.event_name, s.actor, s.shared_event_id, \
         s.source_ip, s.error_code, s.read_only, s.raw, s.seq,\n    \
         CASE WHEN u.origin IS NULL THEN s.origin ELSE u.origin END AS origin,\n    \
         CASE WHEN u.origin IS NULL THEN s.origin_kind ELSE u.origin_kind END AS origin_kind,\n    \
         CASE WHEN u.origin IS NULL THEN s.origin_principal ELSE u.origin_principal END AS origin_principal\n  \
         FROM stored s LEFT JOIN updates u ON u.account_id = s.account_id AND u.event_id = s.event_id AND u.latest = 1\n  \
         WHERE s.copy = 1\n)\n",
    );
    sql
}

/// A scan's query: rows after `after` (or from `since`), in (event time,
/// seq) order, at most `rows`. Filters on the record are applied before the
/// copies are told apart (copies agree on them); the cursor and the origin
/// filters after (they depend on which copy and which update wins).
pub(super) fn scan_sql(tables: &Tables, scan: &Scan, after: Option<HistoryCursor>, rows: usize) -> Sql {
    let start = after.map_or(scan.since, |a| a.event_time.max(scan.since));
    let days = (ddl::history_day(start), scan.until.map(|u| ddl::history_day(u - 1)));
    let events_where = |sql: &mut Sql| {
        time_range(sql, start, scan.until);
        let conditions: [(&str, &Option<String>); 8] = [
            ("\"account\"", &scan.account),
            ("\"region\"", &scan.region.as_deref().map(|r| region_partition(r).to_owned())),
            ("aws_region", &scan.region),
            ("event_source", &scan.event_source),
            ("event_name", &scan.event_name),
            ("actor_arn", &scan.actor_arn),
            ("source_ip", &scan.source_ip),
            ("error_code", &scan.error_code),
        ];
        for (column, value) in conditions {
            if let Some(value) = value {
                sql.bind(&format!(" AND {column} = ?"), value.clone());
            }
        }
        if let Some(read_only) = scan.read_only {
            sql.bind(" AND read_only = CAST(? AS boolean)", read_only.to_string());
        }
    };
    let origins_where = |sql: &mut Sql| {
        time_range(sql, start, scan.until);
        if let Some(account) = &scan.account {
            sql.bind(" AND \"account\" = ?", account.clone());
        }
    };
    let mut sql = found_cte(tables, &Source { days, events_where: &events_where, origins_where: &origins_where });
    sql.push("SELECT ");
    sql.push(RESULT_COLUMNS);
    sql.push("\nFROM found\nWHERE true");
    if let Some(after) = after {
        sql.bind(" AND (event_time > CAST(? AS bigint)", after.event_time.to_string());
        sql.bind(" OR (event_time = CAST(? AS bigint)", after.event_time.to_string());
        sql.bind(" AND seq > CAST(? AS bigint)))", after.seq.to_string());
    }
    if let Some(principal) = &scan.origin_principal {
        sql.bind(" AND origin_principal = ?", principal.clone());
    }
    if let Some(kind) = scan.origin_kind {
        sql.bind(" AND origin_kind = ?", kind);
    }
    sql.push(&format!("\nORDER BY event_time, seq\nLIMIT {rows}"));
    sql
}

fn time_range(sql: &mut Sql, start: EpochMillis, until: Option<EpochMillis>) {
    sql.bind(" AND event_time >= CAST(? AS bigint)", start.to_string());
    if let Some(until) = until {
        sql.bind(" AND event_time < CAST(? AS bigint)", until.to_string());
    }
}

/// A query for the events of some keys stored since `since` (a day): the
/// accounts and ids are lists (their cross product is read, the caller keeps
/// the keys it asked).
pub(super) fn keys_sql(tables: &Tables, since: EpochMillis, accounts: &[&str], ids: &[&str]) -> Sql {
    let list = |sql: &mut Sql, column: &str, values: &[&str]| {
        sql.push(&format!(" AND {column} IN ("));
        for (i, v) in values.iter().enumerate() {
            sql.bind(if i == 0 { "?" } else { ", ?" }, *v);
        }
        sql.push(")");
    };
    let keys = |sql: &mut Sql| {
        list(sql, "\"account\"", accounts);
        list(sql, "event_id", ids);
    };
    let mut sql = found_cte(tables, &Source { days: (ddl::history_day(since), None), events_where: &keys, origins_where: &keys });
    sql.push("SELECT ");
    sql.push(RESULT_COLUMNS);
    sql.push("\nFROM found");
    sql
}

/// How many distinct events are stored since `since` (a day).
pub(super) fn count_sql(tables: &Tables, since: EpochMillis) -> Sql {
    let mut sql = Sql::default();
    sql.push("SELECT count(*) AS events FROM (SELECT DISTINCT account_id, event_id FROM ");
    sql.push(&tables.events);
    sql.bind(" WHERE \"date\" >= ?)", ddl::history_day(since));
    sql
}

/// The positions of [`RESULT_COLUMNS`] in a result.
pub(super) struct ResultColumns(HashMap<String, usize>);

impl ResultColumns {
    /// The columns of a result; checked when it has rows (a result without
    /// rows may come without column metadata).
    pub(super) fn new(columns: &[String], rows: usize, query: &str) -> AwsResult<Self> {
        let map: HashMap<String, usize> = columns.iter().enumerate().map(|(i, c)| (c.clone(), i)).collect();
        if let Some(missing) = result_columns().find(|c| rows > 0 && !map.contains_key(*c)) {
            return Err(PortError::backend(format!("athena query {query}"), format!("the result has no column {missing} (columns: {columns:?})"), false));
        }
        Ok(ResultColumns(map))
    }

    fn get<'r>(&self, row: &'r [Option<String>], name: &str) -> Option<&'r str> {
        self.0.get(name).and_then(|&i| row.get(i)).and_then(|v| v.as_deref())
    }
}

pub(super) fn result_columns() -> impl Iterator<Item = &'static str> {
    RESULT_COLUMNS.split(',').map(str::trim)
}

/// An event and its position from a result row.
pub(super) fn event_of_row(columns: &ResultColumns, row: &[Option<String>], query: &str) -> AwsResult<(Event, i64)> {
    let text = |name: &str| columns.get(row, name);
    let name = || format!("athena query {query}, eventID {}", text("event_id").unwrap_or_default());
    let bad = |column: &str, message: String| PortError::backend(name(), format!("column {column}: {message}"), false);
    let required = |column: &str| text(column).ok_or_else(|| bad(column, "NULL".into()));
    let number = |column: &str| required(column)?.parse::<i64>().map_err(|e| bad(column, e.to_string()));
    let read_only = match text("read_only") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => return Err(bad("read_only", format!("not a boolean: {other:?}"))),
    };
    let event = Event {
        account_id: required("account_id")?.to_owned(),
        event_id: required("event_id")?.to_owned(),
        event_time: number("event_time")?,
        event_source: required("event_source")?.to_owned(),
        event_name: required("event_name")?.to_owned(),
        region: required("aws_region")?.to_owned(),
        actor: parse_doc(text("actor"), "actor", &name)?,
        shared_event_id: text("shared_event_id").map(str::to_owned),
        source_ip: text("source_ip").map(str::to_owned),
        error_code: text("error_code").map(str::to_owned),
        read_only,
        raw: required("raw")?.to_owned(),
        origin: parse_doc(text("origin"), "origin", &name)?,
    };
    Ok((event, number("seq")?))
}

/// The result columns of a history query, in order, named as a result names them.
pub fn result_column_names() -> Vec<String> {
    result_columns().map(str::to_owned).collect()
}

/// The result row Athena would return for `event` at position `seq`, its
/// origin the newest one (`origin`): what [`event_of_row`] reads back. Tests
/// can Athena's answers with it (the emulator runs no SQL).
pub fn result_row(event: &Event, origin: Option<&Origin>, seq: i64) -> Vec<Option<String>> {
    vec![
        Some(event.account_id.clone()),
        Some(event.event_id.clone()),
        Some(event.event_time.to_string()),
        Some(event.region.clone()),
        Some(event.event_source.clone()),
        Some(event.event_name.clone()),
        event.actor.as_ref().and_then(|a| serde_json::to_string(a).ok()),
        event.shared_event_id.clone(),
        event.source_ip.clone(),
        event.error_code.clone(),
        event.read_only.map(|r| r.to_string()),
        Some(event.raw.clone()),
        origin.and_then(|o| serde_json::to_string(o).ok()),
        Some(seq.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::athena::placeholders;
    use trailwatch_core::identity::OriginKind;

    const DAY_MS: EpochMillis = 86_400_000;

    /// A table's columns and partitions, from its DDL.
    fn columns_of(ddl: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let body = ddl.split_once("(\n").unwrap().1.split_once("\n)").unwrap().0;
        let columns = body.lines().filter_map(|l| l.split_whitespace().next()).map(|c| c.trim_matches('`').to_owned()).collect();
        let partitions = ddl.split_once("PARTITIONED BY (").unwrap().1.split_once(')').unwrap().0;
        let partitions = partitions.split(',').filter_map(|p| p.split_whitespace().next()).map(|p| p.trim_matches('`').to_owned()).collect();
        (columns, partitions)
    }

    /// The identifiers of some SQL, outside string literals: words, dotted
    /// names (`s.seq`) and quoted identifiers (without their quotes).
    fn identifiers(sql: &str) -> Vec<String> {
        let chars: Vec<char> = sql.chars().collect();
        let (mut found, mut i) = (Vec::new(), 0);
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' || c == '"' {
                let end = (i + 1..chars.len()).find(|&j| chars[j] == c).unwrap();
                if c == '"' {
                    found.push(chars[i + 1..end].iter().collect());
                }
                i = end + 1;
            } else if c.is_alphabetic() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                    i += 1;
                }
                found.push(chars[start..i].iter().collect());
            } else {
                i += 1;
            }
        }
        found
    }

    const KEYWORDS: &str = "select from where and or as with row_number over partition by order desc case when then else end is null \
                            left join on cast bigint boolean between in limit true count distinct";

    fn is_keyword(word: &str) -> bool {
        KEYWORDS.split_whitespace().any(|k| k.eq_ignore_ascii_case(word))
    }

    /// The names a SELECT list gives its rows: the last word of each item.
    fn select_list(section: &str) -> BTreeSet<String> {
        let list = section.split_once("SELECT ").unwrap().1;
        let list = list.split("\n  FROM").next().unwrap().split("\nFROM").next().unwrap();
        let mut names = BTreeSet::new();
        let mut depth = 0;
        let mut item = String::new();
        for c in list.chars().chain(std::iter::once(',')) {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    let word = identifiers(&item).pop().unwrap();
                    names.insert(word.rsplit('.').next().unwrap().to_owned());
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        names
    }

    fn section<'s>(sql: &'s str, from: &str, to: &str) -> &'s str {
        let rest = sql.split_once(from).unwrap_or_else(|| panic!("no {from:?} in {sql}")).1;
        rest.split_once(to).map_or(rest, |(s, _)| s)
    }

    /// Every name each part of a query uses exists where it reads from:
    /// `stored` reads the events table, `updates` the origins table, `found`
    /// those two, the final SELECT `found`.
    fn check(sql: &Sql, tables: &Tables, events: &(BTreeSet<String>, BTreeSet<String>), origins: &(BTreeSet<String>, BTreeSet<String>)) {
        assert_eq!(placeholders(&sql.text), sql.params.len(), "one parameter per placeholder: {}", sql.text);
        let text = sql.text.replace(&tables.events, "EVENTS_TABLE").replace(&tables.origins, "ORIGINS_TABLE");
        let allowed = |word: &str, table: &(BTreeSet<String>, BTreeSet<String>), own: &[&str]| {
            is_keyword(word) || table.0.contains(word) || table.1.contains(word) || own.contains(&word) || word.ends_with("_TABLE")
        };
        if text.starts_with("SELECT count") {
            for word in identifiers(&text) {
                assert!(allowed(&word, events, &["events"]), "{word} is not a column of the events table: {}", sql.text);
            }
            return;
        }
        let stored = section(&text, "WITH stored AS (", "\n),\nupdates AS (");
        let updates = section(&text, "\n),\nupdates AS (", "\n),\nfound AS (");
        let found = section(&text, "\n),\nfound AS (", "\n)\nSELECT");
        let last = format!("SELECT{}", section(&text, "\n)\nSELECT", "\u{0}"));
        for word in identifiers(stored) {
            assert!(allowed(&word, events, &["copy"]), "{word} is not a column of the events table: {}", sql.text);
        }
        for word in identifiers(updates) {
            assert!(allowed(&word, origins, &["latest"]), "{word} is not a column of the origins table: {}", sql.text);
        }
        let (from_stored, from_updates) = (select_list(stored), select_list(updates));
        assert!(from_stored.contains("copy") && from_updates.contains("latest"));
        let found_names = select_list(found);
        for word in identifiers(found) {
            let ok = match word.split_once('.') {
                Some(("s", column)) => from_stored.contains(column),
                Some(("u", column)) => from_updates.contains(column),
                Some(_) => false,
                None => is_keyword(&word) || ["stored", "updates", "s", "u"].contains(&word.as_str()) || found_names.contains(&word),
            };
            assert!(ok, "{word} is not a column of what `found` reads: {}", sql.text);
        }
        for word in identifiers(&last) {
            assert!(is_keyword(&word) || word == "found" || found_names.contains(&word), "{word} is not a column of `found`: {}", sql.text);
        }
        assert_eq!(select_list(&last), result_columns().map(str::to_owned).collect(), "the query returns what rows are read from");
    }

    fn tables() -> Tables {
        Tables { events: ddl::qualified("trailwatch", "events").unwrap(), origins: ddl::qualified("trailwatch", "events_origins").unwrap() }
    }

    fn every_filter() -> EventFilter {
        let text = |s: &str| Some(s.to_owned());
        EventFilter {
            account: text("111122223333"),
            region: text("eu-west-1"),
            event_source: text("ec2.amazonaws.com"),
            event_name: text("RunInstances"),
            actor_arn: text("arn:aws:iam::111122223333:user/alice"),
            origin_principal: text("d-9067642ac7/bob"),
            origin_kind: Some(OriginKind::IdentityCenterUser),
            source_ip: text("203.0.113.9"),
            error_code: text("AccessDenied"),
            read_only: Some(false),
            ..EventFilter::new(1_710_000_000_000, 1_710_000_000_000 + 3 * DAY_MS, 50)
        }
    }

    #[test]
    fn every_query_reads_only_columns_the_tables_declare() {
        let accounts = ["111122223333".to_owned()];
        let events = columns_of(&ddl::enriched_events_ddl("trailwatch", "events", "s3://history/events", &accounts, 0).unwrap());
        let origins = columns_of(&ddl::origin_updates_ddl("trailwatch", "events_origins", "s3://history/events", &accounts, 0).unwrap());
        assert!(events.0.contains("seq") && events.1.contains("region") && origins.0.contains("written_at"), "{events:?} {origins:?}");
        let tables = tables();
        let base = EventFilter::new(1_710_000_000_000, 1_710_000_000_000 + DAY_MS, 10);
        let after = Some(HistoryCursor { event_time: 1_710_000_050_000, seq: 1_710_000_000_123_000_007 });
        let scans = [
            scan_sql(&tables, &Scan::of_filter(&base), None, 100),
            scan_sql(&tables, &Scan::of_filter(&every_filter()), None, 500),
            scan_sql(&tables, &Scan::of_filter(&every_filter()), after, 500),
            scan_sql(&tables, &Scan { since: 0, ..Scan::default() }, after, 1000),
        ];
        for sql in &scans {
            check(sql, &tables, &events, &origins);
        }
        for (accounts, ids) in [(vec!["111122223333"], vec!["e-1"]), (vec!["111122223333", "444455556666"], vec!["e-1", "e-2", "e-3"])] {
            let sql = keys_sql(&tables, 0, &accounts, &ids);
            check(&sql, &tables, &events, &origins);
            assert_eq!(sql.params.len(), 2 * (1 + accounts.len() + ids.len()), "days, accounts and ids, for each table");
        }
        check(&count_sql(&tables, 0), &tables, &events, &origins);

        // The check can fail: a column the table lacks is caught.
        let wrong = Sql { text: scans[0].text.replace("actor, shared_event_id", "actor, shared_id"), params: scans[0].params.clone() };
        let caught = std::panic::catch_unwind(|| check(&wrong, &tables, &events, &origins));
        assert!(caught.is_err(), "a misspelt column must fail the check");
    }

    #[test]
    fn a_search_is_bounded_to_its_days_account_and_region() {
        let filter = every_filter();
        let sql = scan_sql(&tables(), &Scan::of_filter(&filter), None, 500);
        let stored = section(&sql.text, "WITH stored AS (", "\n),\nupdates");
        assert!(stored.contains("\"date\" BETWEEN ? AND ?") && stored.contains("\"account\" = ?") && stored.contains("\"region\" = ?"), "{stored}");
        let updates = section(&sql.text, "\n),\nupdates AS (", "\n),\nfound");
        assert!(updates.contains("\"date\" BETWEEN ? AND ?") && updates.contains("\"account\" = ?"), "{updates}");
        let days: Vec<&str> = sql.params.iter().map(String::as_str).filter(|p| p.len() == 10 && p.as_bytes()[4] == b'-').collect();
        assert_eq!(days, ["2024-03-09", "2024-03-12", "2024-03-09", "2024-03-12"], "from the day of `since` to the day before `until`");
        for value in ["111122223333", "eu-west-1", "RunInstances", "arn:aws:iam::111122223333:user/alice", "d-9067642ac7/bob", "identity_center_user"] {
            assert!(!sql.text.contains(value), "{value} is in the text");
            assert!(sql.params.iter().any(|p| p == value), "{value} is a parameter");
        }
        // A range that ends exactly at midnight does not read the next day.
        let midnight = EventFilter::new(1_709_942_400_000, 1_709_942_400_000 + DAY_MS, 10);
        let sql = scan_sql(&tables(), &Scan::of_filter(&midnight), None, 100);
        assert_eq!(&sql.params[..2], ["2024-03-09", "2024-03-09"]);
    }
}
