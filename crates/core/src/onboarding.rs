//! Onboarding: which accounts of the organization deliver CloudTrail logs.
//!
//! [`assess`] compares the organization's account list with the newest log
//! delivery per account and region (from the trail bucket's listing or from
//! what the store ingested) and gives each account one status:
//!
//! | status            | meaning                                                                 |
//! |-------------------|-------------------------------------------------------------------------|
//! | `ONBOARDED`       | a log file within the window from every region expected of it           |
//! | `SILENT`          | delivered before, but nothing within the window from some or all regions |
//! | `NEVER_DELIVERED` | in the organization, active, and no log file from any region            |
//! | `SUSPENDED`       | Organizations says suspended, closing, closed or not yet active: not expected to deliver |
//! | `UNKNOWN_ACCOUNT` | delivers logs but is not in the organization's account list             |
//!
//! Which regions are expected: with an explicit list, each of those regions
//! of every active account; without one, every region the account has
//! delivered from before (a region it never used is not held against it).
//! A delivery at exactly `now - window` is within the window.
//!
//! The member-account checks ([`MemberCheck`]) are facts the AWS adapters
//! gather through the member-account read role; they only add to the reason.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Serialize, Serializer};

use crate::accounts::{Account, AccountDirectory};
use crate::ports::AccountActivity;
use crate::time::{format_utc, parse_utc, EpochMillis};

const MINUTE_MS: EpochMillis = 60_000;
const HOUR_MS: EpochMillis = 3_600_000;
const DAY_MS: EpochMillis = 86_400_000;

/// The window when none is given.
pub const DEFAULT_WINDOW_MS: EpochMillis = DAY_MS;
/// The longest window accepted.
pub const MAX_WINDOW_MS: EpochMillis = 400 * DAY_MS;

/// Parses a window: a whole number and a unit, `90m`, `24h`, `7d` (or `s`),
/// from one minute to [`MAX_WINDOW_MS`].
pub fn parse_window(text: &str) -> Result<EpochMillis, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a window like 90m, 24h or 7d");
    let unit_at = t.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = t.split_at(unit_at);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "s" => 1000,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if !(MINUTE_MS..=MAX_WINDOW_MS).contains(&ms) {
        return Err(format!("the window {text:?} must be between 1m and {}d", MAX_WINDOW_MS / DAY_MS));
    }
    Ok(ms)
}

/// A span as people read it: `45s`, `12m`, `5h 20m`, `3d 4h`.
pub fn format_span(ms: EpochMillis) -> String {
    let ms = ms.max(0);
    if ms < MINUTE_MS {
        format!("{}s", ms / 1000)
    } else if ms < HOUR_MS {
        format!("{}m", ms / MINUTE_MS)
    } else if ms < DAY_MS {
        match ms % HOUR_MS / MINUTE_MS {
            0 => format!("{}h", ms / HOUR_MS),
            m => format!("{}h {m}m", ms / HOUR_MS),
        }
    } else {
        match ms % DAY_MS / HOUR_MS {
            0 => format!("{}d", ms / DAY_MS),
            h => format!("{}d {h}h", ms / DAY_MS),
        }
    }
}

/// A window as it would be typed: `90m`, `24h`, `36h`, `7d`.
pub fn format_window(ms: EpochMillis) -> String {
    if ms >= 3 * DAY_MS && ms % DAY_MS == 0 {
        format!("{}d", ms / DAY_MS)
    } else if ms % HOUR_MS == 0 && ms > 0 {
        format!("{}h", ms / HOUR_MS)
    } else if ms % MINUTE_MS == 0 && ms > 0 {
        format!("{}m", ms / MINUTE_MS)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// The newest log file of one account in one region: its time (CloudTrail
/// names a file by the end of the interval it covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub account_id: String,
    pub region: String,
    pub last: EpochMillis,
}

impl Delivery {
    /// The newest delivery per account and region the store knows of: its
    /// newest file, or its newest event where the ledger has no file time.
    pub fn from_activity(activity: &[AccountActivity]) -> Vec<Delivery> {
        activity
            .iter()
            .flat_map(|a| {
                a.regions.iter().filter_map(|r| {
                    let last = r.files.as_ref().map(|f| f.last_file_time).max(r.last_event_time)?;
                    Some(Delivery { account_id: a.account_id.clone(), region: r.region.clone(), last })
                })
            })
            .collect()
    }
}

/// What to assess against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub now: EpochMillis,
    /// A delivery at or after `now - window_ms` counts.
    pub window_ms: EpochMillis,
    /// Regions every active account must deliver from; None: each account's own.
    pub regions: Option<Vec<String>>,
}

/// An account's onboarding status; the order is how much attention it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OnboardingStatus {
    NeverDelivered,
    Silent,
    UnknownAccount,
    Suspended,
    Onboarded,
}

impl OnboardingStatus {
    pub const ALL: [OnboardingStatus; 5] = [
        OnboardingStatus::NeverDelivered,
        OnboardingStatus::Silent,
        OnboardingStatus::UnknownAccount,
        OnboardingStatus::Suspended,
        OnboardingStatus::Onboarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OnboardingStatus::NeverDelivered => "NEVER_DELIVERED",
            OnboardingStatus::Silent => "SILENT",
            OnboardingStatus::UnknownAccount => "UNKNOWN_ACCOUNT",
            OnboardingStatus::Suspended => "SUSPENDED",
            OnboardingStatus::Onboarded => "ONBOARDED",
        }
    }

    /// Whether the account fails the check (an active account of the
    /// organization without a delivery within the window).
    pub fn needs_attention(self) -> bool {
        matches!(self, OnboardingStatus::NeverDelivered | OnboardingStatus::Silent)
    }
}

/// How one region of an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RegionState {
    /// A log file within the window.
    Delivering,
    /// Log files before, none within the window.
    Silent,
    /// Expected, and never a log file.
    Missing,
    /// Delivers (or did) but is outside the regions asked for.
    NotExpected,
}

/// One region of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionDelivery {
    pub region: String,
    #[serde(serialize_with = "opt_time")]
    pub last_delivery: Option<EpochMillis>,
    pub state: RegionState,
}

/// One account's onboarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountOnboarding {
    pub account_id: String,
    /// The alias set for it, else its Organizations name.
    pub name: Option<String>,
    pub ou_path: Option<String>,
    /// As Organizations says (`ACTIVE`, `SUSPENDED`, …); None when unknown.
    pub organization_status: Option<String>,
    #[serde(serialize_with = "opt_time")]
    pub joined_at: Option<EpochMillis>,
    pub status: OnboardingStatus,
    /// The newest delivery from any region.
    #[serde(serialize_with = "opt_time")]
    pub last_delivery: Option<EpochMillis>,
    /// Expected regions without a delivery within the window.
    pub silent_regions: Vec<String>,
    /// Why it has its status, in words (empty when onboarded).
    pub reason: String,
    /// Every region it delivered from or is expected in, by name.
    pub regions: Vec<RegionDelivery>,
    /// What the member-account role showed, when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberCheck>,
}

impl AccountOnboarding {
    /// The reason with the member-account findings after it.
    pub fn full_reason(&self) -> String {
        match (&self.member, self.reason.is_empty()) {
            (None, _) => self.reason.clone(),
            (Some(m), true) => m.summary(),
            (Some(m), false) => format!("{}; {}", self.reason, m.summary()),
        }
    }
}

/// Accounts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub accounts: u64,
    pub onboarded: u64,
    pub silent: u64,
    pub never_delivered: u64,
    pub suspended: u64,
    pub unknown_accounts: u64,
}

impl Counts {
    pub fn of(&self, status: OnboardingStatus) -> u64 {
        match status {
            OnboardingStatus::Onboarded => self.onboarded,
            OnboardingStatus::Silent => self.silent,
            OnboardingStatus::NeverDelivered => self.never_delivered,
            OnboardingStatus::Suspended => self.suspended,
            OnboardingStatus::UnknownAccount => self.unknown_accounts,
        }
    }

    fn add(&mut self, status: OnboardingStatus) {
        self.accounts += 1;
        match status {
            OnboardingStatus::Onboarded => self.onboarded += 1,
            OnboardingStatus::Silent => self.silent += 1,
            OnboardingStatus::NeverDelivered => self.never_delivered += 1,
            OnboardingStatus::Suspended => self.suspended += 1,
            OnboardingStatus::UnknownAccount => self.unknown_accounts += 1,
        }
    }
}

/// The whole report: accounts needing attention first, then by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnboardingReport {
    #[serde(serialize_with = "time")]
    pub generated_at: EpochMillis,
    pub window_seconds: i64,
    /// The window's start: deliveries at or after it count.
    #[serde(serialize_with = "time")]
    pub since: EpochMillis,
    /// The regions asked for, or every region any account delivered from.
    pub regions: Vec<String>,
    /// Whether `regions` was given (every active account must deliver from each).
    pub regions_given: bool,
    pub counts: Counts,
    /// Whether every active account of the organization delivered within the window.
    pub all_delivering: bool,
    pub accounts: Vec<AccountOnboarding>,
}

impl OnboardingReport {
    /// The accounts that fail the check: silent or never delivered.
    pub fn needing_attention(&self) -> impl Iterator<Item = &AccountOnboarding> {
        self.accounts.iter().filter(|a| a.status.needs_attention())
    }

    /// The member-account findings of one account.
    pub fn attach_member(&mut self, account_id: &str, check: MemberCheck) {
        if let Some(account) = self.accounts.iter_mut().find(|a| a.account_id == account_id) {
            account.member = Some(check);
        }
    }
}

/// Whether Organizations expects the account to work (and so to deliver):
/// `ACTIVE`, or no status known.
pub fn is_active(status: Option<&str>) -> bool {
    status.is_none_or(|s| s.trim().is_empty() || s.eq_ignore_ascii_case("ACTIVE"))
}

/// Assesses every account of `directory` and every account that delivered.
pub fn assess(directory: &AccountDirectory, deliveries: &[Delivery], options: &Options) -> OnboardingReport {
    let since = options.now.saturating_sub(options.window_ms);
    let mut by_account: BTreeMap<&str, BTreeMap<&str, EpochMillis>> = BTreeMap::new();
    for d in deliveries {
        let last = by_account.entry(d.account_id.as_str()).or_default().entry(d.region.as_str()).or_insert(d.last);
        *last = (*last).max(d.last);
    }
    let mut ids: BTreeSet<&str> = directory.accounts().map(|a| a.id.as_str()).collect();
    ids.extend(by_account.keys().copied());
    let expected: Option<BTreeSet<&str>> = options.regions.as_ref().map(|r| r.iter().map(String::as_str).filter(|r| !r.is_empty()).collect());
    let empty = BTreeMap::new();
    let mut accounts: Vec<AccountOnboarding> = ids
        .into_iter()
        .map(|id| {
            let facts = Facts { id, account: directory.get(id), alias: directory.alias(id), regions: by_account.get(id).unwrap_or(&empty) };
            assess_one(&facts, expected.as_ref(), since, options.now, options.window_ms)
        })
        .collect();
    accounts.sort_by(|a, b| (a.status, &a.account_id).cmp(&(b.status, &b.account_id)));
    let mut counts = Counts::default();
    for a in &accounts {
        counts.add(a.status);
    }
    let regions = match &options.regions {
        Some(_) => expected.iter().flatten().map(|r| (*r).to_owned()).collect(),
        None => by_account.values().flat_map(|r| r.keys()).map(|r| (*r).to_owned()).collect::<BTreeSet<_>>().into_iter().collect(),
    };
    OnboardingReport {
        generated_at: options.now,
        window_seconds: options.window_ms / 1000,
        since,
        regions,
        regions_given: options.regions.is_some(),
        all_delivering: counts.silent == 0 && counts.never_delivered == 0,
        counts,
        accounts,
    }
}

/// What is known of one account.
struct Facts<'a> {
    id: &'a str,
    account: Option<&'a Account>,
    alias: Option<&'a str>,
    /// Newest delivery by region.
    regions: &'a BTreeMap<&'a str, EpochMillis>,
}

fn assess_one(f: &Facts<'_>, expected: Option<&BTreeSet<&str>>, since: EpochMillis, now: EpochMillis, window_ms: EpochMillis) -> AccountOnboarding {
    let fresh = |t: EpochMillis| t >= since;
    let mut regions: Vec<RegionDelivery> = Vec::new();
    let names: BTreeSet<&str> = f.regions.keys().copied().chain(expected.into_iter().flatten().copied()).collect();
    for region in names {
        let last = f.regions.get(region).copied();
        let state = match (expected.is_none_or(|e| e.contains(region)), last) {
            (false, _) => RegionState::NotExpected,
            (true, Some(t)) if fresh(t) => RegionState::Delivering,
            (true, Some(_)) => RegionState::Silent,
            (true, None) => RegionState::Missing,
        };
        regions.push(RegionDelivery { region: region.to_owned(), last_delivery: last, state });
    }
    let last_delivery = f.regions.values().copied().max();
    let silent_regions: Vec<String> =
        regions.iter().filter(|r| matches!(r.state, RegionState::Silent | RegionState::Missing)).map(|r| r.region.clone()).collect();
    let organization_status = f.account.and_then(|a| a.status.clone());
    let joined_at = f.account.and_then(|a| a.joined_timestamp.as_deref()).and_then(|t| parse_utc(t).ok());
    let ago = |t: EpochMillis| if t > now { "in the future".to_owned() } else { format!("{} ago", format_span(now - t)) };
    let newest =
        || f.regions.iter().max_by_key(|(_, t)| **t).map(|(region, t)| format!("last {} ({}) in {region}", format_utc(*t), ago(*t))).unwrap_or_default();
    let (status, reason) = if f.account.is_none() {
        (OnboardingStatus::UnknownAccount, format!("delivers logs but is not in the organization's account list; {}", newest()))
    } else if !is_active(organization_status.as_deref()) {
        let status = organization_status.as_deref().unwrap_or_default();
        let mut reason = format!("Organizations status {status}: not expected to deliver");
        if last_delivery.is_some_and(fresh) {
            reason.push_str(&format!("; still delivered: {}", newest()));
        }
        (OnboardingStatus::Suspended, reason)
    } else if f.regions.is_empty() {
        let mut reason = "no log file from any region".to_owned();
        if let Some(joined) = joined_at {
            reason.push_str(&format!("; joined the organization {} ({})", format_utc(joined), ago(joined)));
        }
        (OnboardingStatus::NeverDelivered, reason)
    } else if silent_regions.is_empty() {
        (OnboardingStatus::Onboarded, String::new())
    } else {
        let window = format_window(window_ms);
        let delivering = regions.iter().filter(|r| r.state == RegionState::Delivering).count();
        let parts: Vec<String> = regions
            .iter()
            .filter(|r| matches!(r.state, RegionState::Silent | RegionState::Missing))
            .map(|r| match r.last_delivery {
                Some(t) => format!("{} (last {}, {})", r.region, format_utc(t), ago(t)),
                None => format!("{} (never)", r.region),
            })
            .collect();
        let reason = if delivering == 0 {
            format!("no log file within {window} from any expected region: {}", parts.join(", "))
        } else {
            format!("no log file within {window} from {}", parts.join(", "))
        };
        (OnboardingStatus::Silent, reason)
    };
    AccountOnboarding {
        account_id: f.id.to_owned(),
        name: f.alias.map(str::to_owned),
        ou_path: f.account.and_then(|a| a.ou_path.clone()),
        organization_status,
        joined_at,
        status,
        last_delivery,
        silent_regions,
        reason,
        regions,
        member: None,
    }
}

/// What the member-account read role showed of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberCheck {
    pub role_arn: String,
    pub role: RoleAccess,
    /// The account's IAM alias (ListAccountAliases).
    pub alias: Option<String>,
    /// The trails that cover the account, organization trails included.
    pub trails: Vec<TrailState>,
    /// Reads that failed after the role was assumed, each naming the call.
    pub errors: Vec<String>,
}

/// Whether the member-account role could be assumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RoleAccess {
    Assumed,
    /// STS refused (the role is missing, or its trust policy or external id
    /// does not let trailwatch in): the account is not onboarded.
    Refused {
        error: String,
    },
    /// STS could not be asked (throttled, unreachable): nothing is known.
    Unchecked {
        error: String,
    },
}

/// One trail as the member account sees it (DescribeTrails, GetTrailStatus).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrailState {
    pub name: String,
    pub arn: Option<String>,
    pub home_region: Option<String>,
    pub organization_trail: bool,
    pub multi_region: bool,
    pub bucket: Option<String>,
    /// GetTrailStatus's IsLogging; None when the status could not be read.
    pub logging: Option<bool>,
    pub latest_delivery_error: Option<String>,
    #[serde(serialize_with = "opt_time")]
    pub latest_delivery: Option<EpochMillis>,
    /// Why GetTrailStatus failed, if it did.
    pub status_error: Option<String>,
}

impl MemberCheck {
    /// The findings in one line.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        match &self.role {
            RoleAccess::Refused { error } => {
                return format!("member role {} could not be assumed ({error}): not onboarded, the StackSet instance is missing", self.role_arn);
            }
            RoleAccess::Unchecked { error } => return format!("could not check the member role {} ({error})", self.role_arn),
            RoleAccess::Assumed => parts.push("member role assumed".to_owned()),
        }
        parts.push(match &self.alias {
            Some(alias) => format!("IAM alias {alias}"),
            None => "no IAM alias".to_owned(),
        });
        if self.trails.is_empty() {
            parts.push("no trail covers the account".to_owned());
        }
        for t in &self.trails {
            let mut kind: Vec<&str> = Vec::new();
            if t.organization_trail {
                kind.push("organization");
            }
            if t.multi_region {
                kind.push("multi-region");
            }
            let kind = if kind.is_empty() { String::new() } else { format!(" ({})", kind.join(", ")) };
            let state = match (t.logging, &t.status_error) {
                (Some(true), _) => "logging".to_owned(),
                (Some(false), _) => "NOT logging".to_owned(),
                (None, Some(e)) => format!("status unknown: {e}"),
                (None, None) => "status unknown".to_owned(),
            };
            let mut line = format!("trail {}{kind} {state}", t.name);
            if let Some(e) = t.latest_delivery_error.as_deref().filter(|e| !e.is_empty()) {
                line.push_str(&format!(", latest delivery error {e}"));
            }
            parts.push(line);
        }
        parts.extend(self.errors.iter().cloned());
        parts.join("; ")
    }
}

fn time<S: Serializer>(ms: &EpochMillis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_utc(*ms))
}

fn opt_time<S: Serializer>(ms: &Option<EpochMillis>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&format_utc(*ms)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: EpochMillis = 1_776_000_000_000;
    const ACTIVE: &str = "111111111111";
    const QUIET: &str = "222222222222";
    const NEVER: &str = "333333333333";
    const CLOSED: &str = "444444444444";
    const STRANGER: &str = "555555555555";
    const HALF: &str = "666666666666";

    fn directory() -> AccountDirectory {
        AccountDirectory::from_list_accounts(
            r#"{"Accounts":[
                {"Id":"111111111111","Name":"Prod","Status":"ACTIVE","OuPath":"Root/Prod"},
                {"Id":"222222222222","Name":"Quiet","Status":"ACTIVE"},
                {"Id":"333333333333","Name":"New","Status":"ACTIVE","JoinedTimestamp":"2026-04-12T13:20:00.123000+00:00"},
                {"Id":"444444444444","Name":"Closed","Status":"SUSPENDED"},
                {"Id":"666666666666","Name":"Half"}
            ]}"#,
            "accounts.json",
        )
        .unwrap()
    }

    fn d(account: &str, region: &str, ago_ms: EpochMillis) -> Delivery {
        Delivery { account_id: account.into(), region: region.into(), last: NOW - ago_ms }
    }

    fn options(regions: Option<&[&str]>) -> Options {
        Options { now: NOW, window_ms: DEFAULT_WINDOW_MS, regions: regions.map(|r| r.iter().map(|s| (*s).to_owned()).collect()) }
    }

    fn find<'a>(report: &'a OnboardingReport, id: &str) -> &'a AccountOnboarding {
        report.accounts.iter().find(|a| a.account_id == id).unwrap()
    }

    fn deliveries() -> Vec<Delivery> {
        vec![
            d(ACTIVE, "us-east-1", 10 * MINUTE_MS),
            d(ACTIVE, "eu-west-1", 3 * HOUR_MS),
            d(QUIET, "us-east-1", 3 * DAY_MS + 4 * HOUR_MS),
            d(CLOSED, "us-east-1", 40 * DAY_MS),
            d(STRANGER, "us-east-1", HOUR_MS),
            d(HALF, "us-east-1", HOUR_MS),
            d(HALF, "eu-west-1", 2 * DAY_MS),
        ]
    }

    #[test]
    fn every_status_is_given_with_its_reason() {
        let report = assess(&directory(), &deliveries(), &options(None));
        let prod = find(&report, ACTIVE);
        assert_eq!(prod.status, OnboardingStatus::Onboarded);
        assert_eq!((prod.name.as_deref(), prod.ou_path.as_deref()), (Some("Prod"), Some("Root/Prod")));
        assert!(prod.silent_regions.is_empty() && prod.reason.is_empty());
        assert_eq!(prod.last_delivery, Some(NOW - 10 * MINUTE_MS));

        let quiet = find(&report, QUIET);
        assert_eq!(quiet.status, OnboardingStatus::Silent);
        assert_eq!(quiet.silent_regions, vec!["us-east-1"]);
        assert!(quiet.reason.contains("no log file within 24h from any expected region") && quiet.reason.contains("3d 4h ago"), "{}", quiet.reason);

        let half = find(&report, HALF);
        assert_eq!(half.status, OnboardingStatus::Silent, "silent in one of its regions");
        assert_eq!(half.silent_regions, vec!["eu-west-1"]);
        assert!(half.reason.starts_with("no log file within 24h from eu-west-1 (last "), "{}", half.reason);

        let never = find(&report, NEVER);
        assert_eq!(never.status, OnboardingStatus::NeverDelivered);
        assert_eq!(never.joined_at, Some(parse_utc("2026-04-12T13:20:00.123Z").unwrap()));
        assert!(never.reason.starts_with("no log file from any region; joined the organization 2026-04-12T13:20:00Z"), "{}", never.reason);
        assert!(never.regions.is_empty(), "no region is held against it without --regions");

        let closed = find(&report, CLOSED);
        assert_eq!(closed.status, OnboardingStatus::Suspended);
        assert_eq!(closed.reason, "Organizations status SUSPENDED: not expected to deliver");

        let stranger = find(&report, STRANGER);
        assert_eq!(stranger.status, OnboardingStatus::UnknownAccount);
        assert_eq!(stranger.name, None);
        assert!(stranger.reason.starts_with("delivers logs but is not in the organization's account list; last "), "{}", stranger.reason);

        assert_eq!(report.counts, Counts { accounts: 6, onboarded: 1, silent: 2, never_delivered: 1, suspended: 1, unknown_accounts: 1 });
        assert!(!report.all_delivering);
        let order: Vec<OnboardingStatus> = report.accounts.iter().map(|a| a.status).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "needing attention first: {order:?}");
        assert_eq!(report.regions, vec!["eu-west-1", "us-east-1"], "every region any account delivered from");
        assert_eq!(report.needing_attention().count(), 3);
    }

    #[test]
    fn the_window_edge_counts_as_within() {
        let at_edge = [d(ACTIVE, "us-east-1", DEFAULT_WINDOW_MS)];
        let just_before = [d(ACTIVE, "us-east-1", DEFAULT_WINDOW_MS + 1)];
        let dir = AccountDirectory::from_list_accounts(r#"[{"Id":"111111111111","Status":"ACTIVE"}]"#, "a").unwrap();
        let report = assess(&dir, &at_edge, &options(None));
        assert_eq!(report.accounts[0].status, OnboardingStatus::Onboarded);
        assert!(report.all_delivering);
        let report = assess(&dir, &just_before, &options(None));
        assert_eq!(report.accounts[0].status, OnboardingStatus::Silent);
        assert_eq!(report.accounts[0].regions[0].state, RegionState::Silent);
        assert!(!report.all_delivering);
        assert_eq!(report.since, NOW - DEFAULT_WINDOW_MS);
    }

    #[test]
    fn suspended_accounts_never_fail_the_check() {
        let dir = AccountDirectory::from_list_accounts(
            r#"[{"Id":"111111111111","Status":"ACTIVE"},{"Id":"444444444444","Status":"SUSPENDED"},{"Id":"777777777777","Status":"PENDING_CLOSURE"}]"#,
            "a",
        )
        .unwrap();
        let report = assess(&dir, &[d(ACTIVE, "us-east-1", MINUTE_MS), d(CLOSED, "us-east-1", MINUTE_MS)], &options(None));
        assert!(report.all_delivering, "{report:?}");
        assert_eq!(report.counts.suspended, 2);
        let closed = find(&report, CLOSED);
        assert!(closed.reason.ends_with("in us-east-1") && closed.reason.contains("still delivered"), "{}", closed.reason);
        assert!(find(&report, "777777777777").reason.starts_with("Organizations status PENDING_CLOSURE"));
    }

    #[test]
    fn unknown_accounts_are_shown_but_do_not_fail_the_check() {
        let dir = AccountDirectory::from_list_accounts(r#"[{"Id":"111111111111"}]"#, "a").unwrap();
        let report = assess(&dir, &[d(ACTIVE, "us-east-1", MINUTE_MS), d(STRANGER, "eu-west-1", 5 * DAY_MS)], &options(None));
        assert!(report.all_delivering);
        let stranger = find(&report, STRANGER);
        assert_eq!(stranger.status, OnboardingStatus::UnknownAccount);
        assert_eq!(stranger.last_delivery, Some(NOW - 5 * DAY_MS));
        assert_eq!(report.counts.unknown_accounts, 1);
    }

    #[test]
    fn given_regions_are_expected_of_every_active_account() {
        let report = assess(&directory(), &deliveries(), &options(Some(&["us-east-1", "ap-south-1"])));
        assert_eq!(report.regions, vec!["ap-south-1", "us-east-1"]);
        assert!(report.regions_given);
        let prod = find(&report, ACTIVE);
        assert_eq!(prod.status, OnboardingStatus::Silent, "never delivered from ap-south-1");
        assert_eq!(prod.silent_regions, vec!["ap-south-1"]);
        assert!(prod.reason.contains("ap-south-1 (never)"), "{}", prod.reason);
        let states: Vec<(&str, RegionState)> = prod.regions.iter().map(|r| (r.region.as_str(), r.state)).collect();
        assert_eq!(states, vec![("ap-south-1", RegionState::Missing), ("eu-west-1", RegionState::NotExpected), ("us-east-1", RegionState::Delivering)]);
        let half = find(&report, HALF);
        assert_eq!(half.silent_regions, vec!["ap-south-1"], "eu-west-1 is not asked for");
        let never = find(&report, NEVER);
        assert_eq!(never.status, OnboardingStatus::NeverDelivered);
        assert_eq!(never.silent_regions, vec!["ap-south-1", "us-east-1"]);
    }

    #[test]
    fn windows_parse_and_spans_read_well() {
        assert_eq!(parse_window("24h"), Ok(DAY_MS));
        assert_eq!(parse_window(" 90m "), Ok(90 * MINUTE_MS));
        assert_eq!(parse_window("7d"), Ok(7 * DAY_MS));
        for bad in ["", "h", "24", "-1h", "0m", "30s", "401d", "1w", "99999999999999999d"] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            (format_window(DAY_MS), format_window(36 * HOUR_MS), format_window(7 * DAY_MS), format_window(90 * MINUTE_MS)),
            ("24h".into(), "36h".into(), "7d".into(), "90m".into())
        );
        assert_eq!(format_span(45_000), "45s");
        assert_eq!(format_span(2 * HOUR_MS), "2h");
        assert_eq!(format_span(5 * HOUR_MS + 20 * MINUTE_MS), "5h 20m");
        assert_eq!(format_span(3 * DAY_MS + 4 * HOUR_MS + 59 * MINUTE_MS), "3d 4h");
    }

    #[test]
    fn member_findings_explain_the_silence() {
        let mut report = assess(&directory(), &deliveries(), &options(None));
        let refused = MemberCheck {
            role_arn: format!("arn:aws:iam::{NEVER}:role/trailwatch-member-read"),
            role: RoleAccess::Refused { error: "AccessDenied".into() },
            alias: None,
            trails: Vec::new(),
            errors: Vec::new(),
        };
        report.attach_member(NEVER, refused);
        let never = find(&report, NEVER);
        assert!(
            never.full_reason().ends_with("could not be assumed (AccessDenied): not onboarded, the StackSet instance is missing"),
            "{}",
            never.full_reason()
        );
        let stopped = MemberCheck {
            role_arn: format!("arn:aws:iam::{QUIET}:role/trailwatch-member-read"),
            role: RoleAccess::Assumed,
            alias: Some("acme-quiet".into()),
            trails: vec![TrailState {
                name: "org-trail".into(),
                organization_trail: true,
                multi_region: true,
                logging: Some(false),
                latest_delivery_error: Some("AccessDenied".into()),
                ..TrailState::default()
            }],
            errors: vec!["iam:ListAccountAliases: throttled".into()],
        };
        report.attach_member(QUIET, stopped);
        let quiet = find(&report, QUIET);
        let reason = quiet.full_reason();
        assert!(
            reason.contains("; member role assumed; IAM alias acme-quiet; trail org-trail (organization, multi-region) NOT logging, latest delivery error AccessDenied; iam:ListAccountAliases: throttled"),
            "{reason}"
        );
        let json = serde_json::to_value(quiet).unwrap();
        assert_eq!(json["status"], "SILENT");
        assert_eq!(json["member"]["role"]["outcome"], "assumed");
        assert_eq!(json["regions"][0]["state"], "SILENT");
        assert!(json["last_delivery"].as_str().unwrap().ends_with('Z'));
    }
}
