//! The query root.

use std::collections::BTreeMap;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, InputObject, Object, SimpleObject};
use trailwatch_core::accounts::Account;
use trailwatch_core::alerts::{AlertCursor, AlertQuery};
use trailwatch_core::identity::{Actor, Caller, Resolution};
use trailwatch_core::ports::{account_activity, AccountActivity, EventFilter, HistoryCursor, MAX_SEARCH_RANGE_MS};

use super::support::{bad_input, decode_cursor, encode_cursor, page_size, port_error, DateTime};
use super::types::{deps, AlertObj, EventObj, GqlAlertStatus, GqlOriginKind, GqlSeverity, OriginObj, RuleObj};
use crate::auth::{Role, RoleGuard};

pub struct QueryRoot;

#[derive(InputObject, Default)]
pub struct AlertFilter {
    /// Any of these statuses (default: all).
    pub status: Option<Vec<GqlAlertStatus>>,
    pub severity_at_least: Option<GqlSeverity>,
    /// A rule id.
    pub rule: Option<String>,
    /// An account id.
    pub account: Option<String>,
    pub origin_principal: Option<String>,
    /// Alerts last seen at or after this trail time.
    pub since: Option<DateTime>,
    /// Alerts first seen before this trail time.
    pub until: Option<DateTime>,
}

/// Which events: a time range `[since, until)` of at most 31 days is
/// required; every other field that is set must match exactly.
#[derive(InputObject)]
pub struct EventSearch {
    pub since: DateTime,
    pub until: DateTime,
    pub account: Option<String>,
    pub region: Option<String>,
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    /// `userIdentity.arn` as the record gives it.
    pub actor_arn: Option<String>,
    /// The resolved origin's principal.
    pub origin_principal: Option<String>,
    pub origin_kind: Option<GqlOriginKind>,
    pub source_ip: Option<String>,
    pub error_code: Option<String>,
    pub read_only: Option<bool>,
}

#[derive(InputObject, Default)]
pub struct AccountFilter {
    /// `ACTIVE`, `SUSPENDED`, … as Organizations says.
    pub status: Option<String>,
}

/// Who is behind an access key at a time.
#[derive(SimpleObject)]
pub struct IdentityResult {
    pub access_key_id: String,
    pub at: DateTime,
    pub origin: OriginObj,
    /// What is still missing when the chain could not be walked to its end.
    pub missing: Option<String>,
}

/// One account's ingest in one region.
#[derive(SimpleObject)]
pub struct RegionHealth {
    pub region: String,
    pub last_event_time: Option<DateTime>,
    /// The newest log file's time.
    pub last_file_time: Option<DateTime>,
    /// Seconds from the newest file's time to now; null without a file.
    pub lag_seconds: Option<i64>,
    pub files: u64,
    pub failed_files: u64,
}

/// An account of the organization, or one seen in the trail.
/// A tag on an account.
#[derive(async_graphql::SimpleObject)]
#[graphql(name = "AccountTag")]
pub struct AccountTagObj {
    pub key: String,
    pub value: String,
}

pub struct AccountObj {
    pub id: String,
    pub account: Option<Account>,
    pub alias: Option<String>,
    pub activity: Option<AccountActivity>,
}

#[Object(name = "Account")]
impl AccountObj {
    async fn id(&self) -> &str {
        &self.id
    }
    /// The Organizations name.
    async fn name(&self) -> Option<&str> {
        self.account.as_ref().and_then(|a| a.name.as_deref())
    }
    /// The override set with `setAccountAlias`, else the name.
    async fn alias(&self) -> Option<&str> {
        self.alias.as_deref()
    }
    async fn email(&self) -> Option<&str> {
        self.account.as_ref().and_then(|a| a.email.as_deref())
    }
    async fn status(&self) -> Option<&str> {
        self.account.as_ref().and_then(|a| a.status.as_deref())
    }
    /// The organizational units above it, from the root (`Root/Workloads/Prod`), when the accounts file says.
    async fn ou_path(&self) -> Option<&str> {
        self.account.as_ref().and_then(|a| a.ou_path.as_deref())
    }
    /// Its tags, when the accounts file lists them.
    async fn tags(&self) -> Vec<AccountTagObj> {
        self.account.as_ref().map(|a| a.tags.iter().map(|t| AccountTagObj { key: t.key.clone(), value: t.value.clone() }).collect()).unwrap_or_default()
    }
    /// Whether the accounts file lists it (else it is only seen in the trail).
    async fn in_organization(&self) -> bool {
        self.account.is_some()
    }
    /// The newest event stored, any region.
    async fn last_event_time(&self) -> Option<DateTime> {
        self.activity.as_ref().and_then(|a| a.last_event_time).map(DateTime)
    }
    /// Ingest per region.
    async fn regions(&self) -> Vec<RegionHealth> {
        let now = crate::now_ms();
        let Some(activity) = &self.activity else { return Vec::new() };
        activity
            .regions
            .iter()
            .map(|r| RegionHealth {
                region: r.region.clone(),
                last_event_time: r.last_event_time.map(DateTime),
                last_file_time: r.files.as_ref().map(|f| DateTime(f.last_file_time)),
                lag_seconds: r.files.as_ref().map(|f| (now - f.last_file_time).max(0) / 1000),
                files: r.files.as_ref().map_or(0, |f| f.files),
                failed_files: r.files.as_ref().map_or(0, |f| f.failed),
            })
            .collect()
    }
}

#[derive(SimpleObject)]
pub struct StatusCount {
    pub status: String,
    pub count: u64,
}

#[derive(SimpleObject)]
pub struct SinkCount {
    pub sink: String,
    pub count: u64,
}

/// How ingest, identity resolution and alert delivery stand.
#[derive(SimpleObject)]
pub struct Health {
    /// Ledger entries by status (`done`, `partial`, `empty`, `failed`, `digest`).
    pub files: Vec<StatusCount>,
    /// Events recorded by the ledger.
    pub events: u64,
    pub rejected_records: u64,
    /// Events waiting for their session to arrive.
    pub pending_resolutions: u64,
    /// Alert transitions not yet delivered, per sink.
    pub deliveries_outstanding: Vec<SinkCount>,
    /// Accounts (of the accounts file, or seen) with no event in the last `quietHours`.
    pub quiet_accounts: Vec<String>,
    pub quiet_hours: i32,
    /// Completeness and integrity of the trail per account and region, from
    /// its digest files (empty where digests are not checked).
    pub completeness: Vec<TrailCompleteness>,
}

/// What the digest files of one account and region say about its trail.
#[derive(SimpleObject)]
pub struct TrailCompleteness {
    pub account_id: String,
    pub region: String,
    /// Digest files checked.
    pub digests: u64,
    /// Log files the digests list.
    pub files_listed: u64,
    /// Of those, the ones the ledger has recorded.
    pub files_seen: u64,
    /// Listed files whose SHA-256 matched the digest's.
    pub files_verified: u64,
    /// Listed files not in the bucket.
    pub files_missing: u64,
    /// Listed files whose content differs from what the digest hashed.
    pub files_mismatched: u64,
    /// The newest digest whose signature verified (or was not checked) and
    /// whose link to the previous digest held: `s3://bucket/key`.
    pub last_verified_digest: Option<String>,
    /// The end of that digest's hour.
    pub last_verified_time: Option<DateTime>,
    /// No broken link between digests and no hour without a digest.
    pub chain_ok: bool,
    /// Findings not cleared yet (each raised a `trail-integrity` alert).
    pub open_findings: u64,
}

/// A session an origin started (the last hop of its events' chains) and where it acted.
#[derive(SimpleObject)]
pub struct SessionObj {
    pub access_key_id: String,
    pub account_id: String,
    pub role_arn: Option<String>,
    pub session_name: Option<String>,
    pub issued_at: DateTime,
    /// Hops from the origin to this session.
    pub depth: i32,
    /// Events seen with it in the range.
    pub events: u64,
    pub first_event: DateTime,
    pub last_event: DateTime,
}

/// Every session of one origin in a time range, and the accounts and roles it reached.
#[derive(SimpleObject)]
pub struct SessionsResult {
    pub origin_principal: String,
    pub sessions: Vec<SessionObj>,
    pub accounts: Vec<String>,
    pub roles: Vec<String>,
    /// Events of the origin examined.
    pub events_examined: u64,
    /// True when the scan stopped at its cap before the end of the range.
    pub truncated: bool,
}

/// Most events `sessions` reads before it reports a truncated result.
pub const SESSIONS_SCAN_CAP: u64 = 20_000;

fn connection_complexity(first: Option<i32>, child: usize) -> usize {
    (first.unwrap_or(super::support::DEFAULT_PAGE as i32).clamp(0, super::support::MAX_PAGE as i32) as usize).saturating_mul(child).saturating_add(1)
}

#[Object]
impl QueryRoot {
    /// Alerts, most recently changed first.
    #[graphql(guard = "RoleGuard(Role::Viewer)", complexity = "connection_complexity(first, child_complexity)")]
    async fn alerts(
        &self,
        ctx: &Context<'_>,
        filter: Option<AlertFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, AlertObj>> {
        let limit = page_size(first)?;
        let f = filter.unwrap_or_default();
        let query = AlertQuery {
            status: f.status.map(|s| s.into_iter().map(Into::into).collect()),
            severity_at_least: f.severity_at_least.map(Into::into),
            rule_id: f.rule,
            account_id: f.account,
            origin_principal: f.origin_principal,
            since: f.since.map(|t| t.0),
            until: f.until.map(|t| t.0),
            after: after.as_deref().map(decode_cursor::<AlertCursor>).transpose()?,
            limit: limit + 1,
        };
        let mut page = deps(ctx).alerts.list(&query).await.map_err(|e| port_error("listing alerts", &e))?;
        let more = page.alerts.len() > limit;
        page.alerts.truncate(limit);
        let mut connection = Connection::new(query.after.is_some(), more);
        connection
            .edges
            .extend(page.alerts.into_iter().map(|a| Edge::new(encode_cursor(&AlertCursor { updated_at: a.updated_at, id: a.id.clone() }), AlertObj(a))));
        Ok(connection)
    }

    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn alert(&self, ctx: &Context<'_>, id: String) -> async_graphql::Result<Option<AlertObj>> {
        Ok(deps(ctx).alerts.get(&id).await.map_err(|e| port_error("reading an alert", &e))?.map(AlertObj))
    }

    /// Every loaded rule.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn rules(&self, ctx: &Context<'_>) -> Vec<RuleObj> {
        deps(ctx).rules.rules().iter().map(RuleObj::from).collect()
    }

    /// Who is behind a temporary access key when it was used (AWS reuses key
    /// ids: `at` picks the session). `at` defaults to the newest trail time
    /// seen and may not be later than it.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn identity(&self, ctx: &Context<'_>, access_key_id: String, at: Option<DateTime>) -> async_graphql::Result<IdentityResult> {
        let key = access_key_id.trim();
        if key.len() < 16 || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad_input(format!("{key:?} is not an AWS access key id")));
        }
        let resolver = deps(ctx).identity.resolver();
        let newest = resolver.watermark();
        let at = match (at, newest) {
            (Some(at), Some(newest)) if at.0 > newest => {
                // Resolving advances trail time; a time past it would move retention for ingest too.
                return Err(bad_input(format!("at is after the newest event seen ({})", super::support::format_time(newest))));
            }
            (Some(at), _) => at.0,
            (None, Some(newest)) => newest,
            (None, None) => crate::now_ms(),
        };
        let caller = Caller { identity_type: "AssumedRole".into(), access_key_id: Some(key.to_owned()), ..Default::default() };
        let resolution = resolver.resolve(Actor::new(&caller, at)).await.map_err(|e| port_error("resolving an access key", &e))?;
        let (origin, missing) = match resolution {
            Resolution::Resolved(origin) => (origin, None),
            Resolution::Waiting { origin, missing, fallback } => (fallback.unwrap_or(origin), Some(missing.describe())),
        };
        Ok(IdentityResult { access_key_id: key.to_owned(), at: DateTime(at), origin: OriginObj(origin), missing })
    }

    /// Accounts of the accounts file and those seen in the trail, by id.
    #[graphql(guard = "RoleGuard(Role::Viewer)", complexity = "connection_complexity(first, child_complexity)")]
    async fn accounts(
        &self,
        ctx: &Context<'_>,
        filter: Option<AccountFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, AccountObj>> {
        let limit = page_size(first)?;
        let after = after.as_deref().map(decode_cursor::<String>).transpose()?;
        let d = deps(ctx);
        let activity = account_activity(d.checkpoints.as_ref(), d.history.as_ref()).await.map_err(|e| port_error("reading account activity", &e))?;
        let mut all: BTreeMap<String, AccountObj> = BTreeMap::new();
        for a in activity {
            all.insert(a.account_id.clone(), AccountObj { id: a.account_id.clone(), account: None, alias: None, activity: Some(a) });
        }
        for (account, alias) in d.accounts.snapshot() {
            let entry = all.entry(account.id.clone()).or_insert_with(|| AccountObj { id: account.id.clone(), account: None, alias: None, activity: None });
            entry.alias = alias;
            entry.account = Some(account);
        }
        for (id, obj) in all.iter_mut() {
            if obj.alias.is_none() {
                obj.alias = d.accounts.alias(id);
            }
        }
        let status = filter.and_then(|f| f.status);
        let mut matching = all
            .into_values()
            .filter(|a| after.as_ref().is_none_or(|after| a.id > *after))
            .filter(|a| status.as_ref().is_none_or(|s| a.account.as_ref().and_then(|acc| acc.status.as_ref()) == Some(s)));
        let page: Vec<AccountObj> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        let mut connection = Connection::new(after.is_some(), more);
        connection.edges.extend(page.into_iter().map(|a| Edge::new(encode_cursor(&a.id), a)));
        Ok(connection)
    }

    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn account(&self, ctx: &Context<'_>, id: String) -> async_graphql::Result<Option<AccountObj>> {
        let d = deps(ctx);
        let activity = account_activity(d.checkpoints.as_ref(), d.history.as_ref()).await.map_err(|e| port_error("reading account activity", &e))?;
        let activity = activity.into_iter().find(|a| a.account_id == id);
        let account = d.accounts.get(&id);
        if activity.is_none() && account.is_none() {
            return Ok(None);
        }
        Ok(Some(AccountObj { alias: d.accounts.alias(&id), id, account, activity }))
    }

    /// Ingest, identity and delivery health.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn health(&self, ctx: &Context<'_>, #[graphql(default = 24)] quiet_hours: i32) -> async_graphql::Result<Health> {
        if !(1..=24 * 90).contains(&quiet_hours) {
            return Err(bad_input("quietHours must be between 1 and 2160"));
        }
        let d = deps(ctx);
        let summary = d.checkpoints.summary().await.map_err(|e| port_error("reading the ledger", &e))?;
        let pending = d.identity.count().await.map_err(|e| port_error("counting pending resolutions", &e))?;
        let outstanding = d.alerts.outstanding().await.map_err(|e| port_error("counting alert deliveries", &e))?;
        let activity = account_activity(d.checkpoints.as_ref(), d.history.as_ref()).await.map_err(|e| port_error("reading account activity", &e))?;
        let mut files: Vec<StatusCount> = summary.by_status.iter().map(|(s, n)| StatusCount { status: s.as_str().to_owned(), count: *n }).collect();
        files.sort_by(|a, b| a.status.cmp(&b.status));
        let mut deliveries: Vec<SinkCount> = outstanding.into_iter().map(|(sink, count)| SinkCount { sink, count }).collect();
        deliveries.sort_by(|a, b| a.sink.cmp(&b.sink));
        let cutoff = crate::now_ms() - i64::from(quiet_hours) * 3_600_000;
        let mut last: BTreeMap<String, Option<i64>> = d.accounts.snapshot().into_iter().map(|(a, _)| (a.id, None)).collect();
        for a in activity {
            last.insert(a.account_id, a.last_event_time);
        }
        let quiet_accounts = last.into_iter().filter(|(_, t)| t.is_none_or(|t| t < cutoff)).map(|(id, _)| id).collect();
        let completeness = d
            .checkpoints
            .completeness()
            .await
            .map_err(|e| port_error("reading trail completeness", &e))?
            .into_iter()
            .map(|c| TrailCompleteness {
                account_id: c.account_id,
                region: c.region,
                digests: c.digests,
                files_listed: c.files_listed,
                files_seen: c.files_seen,
                files_verified: c.files_verified,
                files_missing: c.files_missing,
                files_mismatched: c.files_mismatched,
                last_verified_digest: c.last_verified_digest,
                last_verified_time: c.last_verified_end.map(DateTime),
                chain_ok: c.chain_ok,
                open_findings: c.open_findings,
            })
            .collect();
        Ok(Health {
            files,
            events: summary.events,
            rejected_records: summary.rejected_records,
            pending_resolutions: pending,
            deliveries_outstanding: deliveries,
            quiet_accounts,
            quiet_hours,
            completeness,
        })
    }

    /// Which accounts of the organization deliver CloudTrail logs: every
    /// account of the account list, and every account seen in the trail,
    /// against its newest log file (or event) per region. `window` is how
    /// recent a delivery must be (`90m`, `24h`, `7d`); `regions`, when given,
    /// must each deliver for every active account (default: each account's own).
    #[graphql(guard = "RoleGuard(Role::Viewer)", complexity = 50)]
    async fn onboarding(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = "24h")] window: String,
        regions: Option<Vec<String>>,
    ) -> async_graphql::Result<super::onboarding::OnboardingObj> {
        super::onboarding::onboarding(deps(ctx), window, regions).await
    }

    /// Stored events matching a search, in event-time order.
    #[graphql(guard = "RoleGuard(Role::Viewer)", complexity = "connection_complexity(first, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: EventSearch,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, EventObj>> {
        let limit = page_size(first)?;
        if filter.until.0 < filter.since.0 {
            return Err(bad_input("until is before since"));
        }
        if filter.until.0 - filter.since.0 > MAX_SEARCH_RANGE_MS {
            return Err(bad_input(format!("the time range may cover at most {} days", MAX_SEARCH_RANGE_MS / 86_400_000)));
        }
        let after = after.as_deref().map(decode_cursor::<(i64, i64)>).transpose()?.map(|(event_time, seq)| HistoryCursor { event_time, seq });
        let mut connection = Connection::new(after.is_some(), false);
        if limit == 0 {
            return Ok(connection);
        }
        let (events, more) = super::events::search_page(deps(ctx).history.as_ref(), search_of(&filter), after, limit).await?;
        connection.has_next_page = more;
        connection
            .edges
            .extend(events.into_iter().map(|(event, position)| Edge::new(encode_cursor(&(position.event_time, position.seq)), EventObj::new(event))));
        Ok(connection)
    }

    /// One stored event.
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn event(&self, ctx: &Context<'_>, account_id: String, event_id: String) -> async_graphql::Result<Option<EventObj>> {
        Ok(deps(ctx).history.get(&account_id, &event_id).await.map_err(|e| port_error("reading an event", &e))?.map(EventObj::new))
    }

    /// Every session an origin's events used in `[since, until)` (at most 31
    /// days), and the accounts and roles they reached: the blast radius of a
    /// person or a pipeline. Derived from the origin's stored events.
    #[graphql(guard = "RoleGuard(Role::Viewer)", complexity = 50)]
    async fn sessions(&self, ctx: &Context<'_>, origin_principal: String, since: DateTime, until: DateTime) -> async_graphql::Result<SessionsResult> {
        super::sessions::sessions(deps(ctx), origin_principal, since, until).await
    }
}

fn search_of(f: &EventSearch) -> EventFilter {
    let mut s = EventFilter::new(f.since.0, f.until.0, 1);
    s.account = f.account.clone();
    s.region = f.region.clone();
    s.event_source = f.event_source.clone();
    s.event_name = f.event_name.clone();
    s.actor_arn = f.actor_arn.clone();
    s.origin_principal = f.origin_principal.clone();
    s.origin_kind = f.origin_kind.map(Into::into);
    s.source_ip = f.source_ip.clone();
    s.error_code = f.error_code.clone();
    s.read_only = f.read_only;
    s
}
