//! `onboarding(window, regions)`: which accounts of the organization deliver
//! CloudTrail logs, from the same facts as `accounts` (the account list, and
//! per account and region the newest log file the ledger recorded or the
//! newest event stored), assessed by `trailwatch_core::onboarding`.

use std::sync::Arc;

use async_graphql::{Enum, Object, SimpleObject};
use trailwatch_core::onboarding::{assess, parse_window, AccountOnboarding, Delivery, OnboardingReport, Options, RegionDelivery};
use trailwatch_core::ports::account_activity;

use super::support::{bad_input, port_error, DateTime};
use crate::ApiDeps;

/// The most regions `regions` may list.
const MAX_REGIONS: usize = 64;

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "OnboardingStatus", remote = "trailwatch_core::onboarding::OnboardingStatus")]
pub enum GqlOnboardingStatus {
    /// Active, in the organization, and no log file from any region.
    NeverDelivered,
    /// Delivered before, but no log file within the window from some or all expected regions.
    Silent,
    /// Delivers logs but is not in the organization's account list.
    UnknownAccount,
    /// Suspended, closing, closed or not yet active: not expected to deliver.
    Suspended,
    /// A log file within the window from every expected region.
    Onboarded,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "OnboardingRegionState", remote = "trailwatch_core::onboarding::RegionState")]
pub enum GqlRegionState {
    /// A log file within the window.
    Delivering,
    /// Log files before, none within the window.
    Silent,
    /// Expected, and never a log file.
    Missing,
    /// Delivers (or did) but is outside the regions asked for.
    NotExpected,
}

/// Accounts by onboarding status.
#[derive(SimpleObject)]
#[graphql(name = "OnboardingCounts")]
pub struct CountsObj {
    pub accounts: u64,
    pub onboarded: u64,
    pub silent: u64,
    pub never_delivered: u64,
    pub suspended: u64,
    pub unknown_accounts: u64,
}

/// One region of an account.
#[derive(SimpleObject)]
#[graphql(name = "OnboardingRegion")]
pub struct RegionObj {
    pub region: String,
    /// The newest log file's time (or newest event's, when no file is recorded).
    pub last_delivery: Option<DateTime>,
    pub state: GqlRegionState,
}

impl From<&RegionDelivery> for RegionObj {
    fn from(r: &RegionDelivery) -> Self {
        RegionObj { region: r.region.clone(), last_delivery: r.last_delivery.map(DateTime), state: r.state.into() }
    }
}

pub struct AccountObj(AccountOnboarding);

/// One account's onboarding.
#[Object(name = "OnboardingAccount")]
impl AccountObj {
    async fn id(&self) -> &str {
        &self.0.account_id
    }
    /// The alias set for it, else its Organizations name.
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    async fn ou_path(&self) -> Option<&str> {
        self.0.ou_path.as_deref()
    }
    /// As Organizations says: `ACTIVE`, `SUSPENDED`, …
    async fn organization_status(&self) -> Option<&str> {
        self.0.organization_status.as_deref()
    }
    /// When it joined the organization, when known.
    async fn joined_at(&self) -> Option<DateTime> {
        self.0.joined_at.map(DateTime)
    }
    async fn status(&self) -> GqlOnboardingStatus {
        self.0.status.into()
    }
    /// The newest delivery from any region.
    async fn last_delivery(&self) -> Option<DateTime> {
        self.0.last_delivery.map(DateTime)
    }
    /// Expected regions without a log file within the window.
    async fn silent_regions(&self) -> &[String] {
        &self.0.silent_regions
    }
    /// Why it has its status, in words (empty when onboarded).
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// Every region it delivered from or is expected in.
    async fn regions(&self) -> Vec<RegionObj> {
        self.0.regions.iter().map(RegionObj::from).collect()
    }
}

pub struct OnboardingObj(OnboardingReport);

/// Which accounts of the organization deliver CloudTrail logs.
#[Object(name = "Onboarding")]
impl OnboardingObj {
    async fn generated_at(&self) -> DateTime {
        DateTime(self.0.generated_at)
    }
    async fn window_seconds(&self) -> i64 {
        self.0.window_seconds
    }
    /// The window's start: deliveries at or after it count.
    async fn since(&self) -> DateTime {
        DateTime(self.0.since)
    }
    /// The regions asked for, or every region any account delivered from.
    async fn regions(&self) -> &[String] {
        &self.0.regions
    }
    /// Whether `regions` was given (every active account must deliver from each).
    async fn regions_given(&self) -> bool {
        self.0.regions_given
    }
    /// True when every active account of the organization delivered within the window.
    async fn all_delivering(&self) -> bool {
        self.0.all_delivering
    }
    async fn counts(&self) -> CountsObj {
        let c = self.0.counts;
        CountsObj {
            accounts: c.accounts,
            onboarded: c.onboarded,
            silent: c.silent,
            never_delivered: c.never_delivered,
            suspended: c.suspended,
            unknown_accounts: c.unknown_accounts,
        }
    }
    /// The accounts, those needing attention first (never delivered, silent,
    /// unknown, suspended, onboarded), then by id; `status` keeps only those.
    async fn accounts(&self, status: Option<Vec<GqlOnboardingStatus>>) -> Vec<AccountObj> {
        self.0
            .accounts
            .iter()
            .filter(|a| status.as_ref().is_none_or(|s| s.iter().any(|s| trailwatch_core::onboarding::OnboardingStatus::from(*s) == a.status)))
            .cloned()
            .map(AccountObj)
            .collect()
    }
}

/// The report over the deps' account list and activity, now.
pub async fn onboarding(deps: &Arc<ApiDeps>, window: String, regions: Option<Vec<String>>) -> async_graphql::Result<OnboardingObj> {
    let window_ms = parse_window(&window).map_err(bad_input)?;
    if let Some(regions) = &regions {
        if regions.len() > MAX_REGIONS {
            return Err(bad_input(format!("regions may list at most {MAX_REGIONS} regions")));
        }
        if let Some(bad) = regions.iter().find(|r| !valid_region(r)) {
            return Err(bad_input(format!("{bad:?} is not a region name like us-east-1")));
        }
    }
    let activity = account_activity(deps.checkpoints.as_ref(), deps.history.as_ref()).await.map_err(|e| port_error("reading account activity", &e))?;
    let deliveries = Delivery::from_activity(&activity);
    let directory = deps.accounts.directory();
    let options = Options { now: crate::now_ms(), window_ms, regions };
    Ok(OnboardingObj(assess(&directory, &deliveries, &options)))
}

fn valid_region(r: &str) -> bool {
    (1..=32).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
