//! The plan: every session of the organization, decided before any record
//! is written.
//!
//! A session is one credential-issuing event (AssumeRole,
//! AssumeRoleWithSAML, AssumeRoleWithWebIdentity, GetSessionToken,
//! GetFederationToken) and the temporary key it hands out. Sessions are the
//! only thing that crosses accounts: a session issued in one account is
//! used from another, and a cross-account AssumeRole is written once in each
//! account. Planning them all up front, from one random stream, lets every
//! account's traffic then be written independently (in any thread order)
//! while the answer key stays exactly true of the records.
//!
//! The plan also fixes how many records each account gets: its issuing
//! copies and incident records plus a share of the rest, so the total is
//! exactly what was asked.

use std::collections::HashMap;

use trailwatch_core::time::EpochMillis;

mod chains;
pub mod incidents;

pub use incidents::{Act, ActKind, Culprit, Incident};

use crate::org::{AccountKind, Org, UserJob};
use crate::prng::{Rng, STREAM_PLAN};
use crate::records::ServiceEvent;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// How long a temporary key id stays retired before AWS may hand it out again here.
const REUSE_GAP: i64 = 2 * HOUR;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    AssumeRole,
    AssumeRoleWithSaml,
    AssumeRoleWithWebIdentity,
    GetSessionToken,
    GetFederationToken,
}

impl IssueKind {
    pub fn event_name(self) -> &'static str {
        match self {
            IssueKind::AssumeRole => "AssumeRole",
            IssueKind::AssumeRoleWithSaml => "AssumeRoleWithSAML",
            IssueKind::AssumeRoleWithWebIdentity => "AssumeRoleWithWebIdentity",
            IssueKind::GetSessionToken => "GetSessionToken",
            IssueKind::GetFederationToken => "GetFederationToken",
        }
    }
}

/// Who called the issuing API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// An IAM user with its long-term key.
    User(usize),
    /// Another session (role chaining, or a GetSessionToken session).
    Session(u32),
    /// A SAML assertion: Identity Center, or Okta when `okta`.
    Saml { person: usize, okta: bool },
    /// A GitHub Actions OIDC token.
    Web { repo: usize },
    /// An AWS service principal (`ec2.amazonaws.com` for instance profiles).
    Service { service: &'static str },
}

/// What the session is used for, which decides the API calls it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Human { person: usize },
    Terraform,
    Ci,
    Instance,
    Scanner,
    Config,
}

/// One copy of the issuing event: one per account that logs it.
#[derive(Debug, Clone)]
pub struct Copy {
    pub account: usize,
    pub event_id: String,
    /// Delivery delay of this copy, in milliseconds.
    pub delay: i64,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub kind: IssueKind,
    pub issuer: Issuer,
    /// The account the credentials belong to (the role's, or the user's).
    pub account: usize,
    pub role: Option<usize>,
    /// Role session name or federated user name; empty for GetSessionToken.
    pub name: String,
    pub key: String,
    pub token: String,
    pub issued: EpochMillis,
    pub expires: EpochMillis,
    /// Usage happens in `(issued, active_until]`.
    pub active_until: EpochMillis,
    /// Usage events per minute while active.
    pub rate: f64,
    pub actor: Actor,
    pub console: bool,
    pub mfa: bool,
    pub source_identity: Option<String>,
    /// Whether this hop's request set the source identity (later hops inherit it).
    pub sets_source_identity: bool,
    /// Region the issuing event is logged in.
    pub region: &'static str,
    pub global_endpoint: bool,
    /// Region all usage happens in (instances, AWS Config), if fixed.
    pub use_region: Option<&'static str>,
    pub ip: String,
    pub ua: String,
    /// `userIdentity.arn` and `principalId` of records made with this session.
    pub arn: String,
    pub principal_id: String,
    /// The caller-side copy first.
    pub copies: Vec<Copy>,
    pub shared_event_id: Option<String>,
    pub request_id: String,
    pub parent: Option<u32>,
    /// Used only by an incident's records, never by random traffic.
    pub scripted: bool,
}

/// A copy of an issuing event to write in an account, at `time`.
#[derive(Debug, Clone, Copy)]
pub struct CopyRef {
    pub time: EpochMillis,
    pub session: u32,
    pub copy: u8,
}

/// Activity that needs no session: IAM users' long-term keys, console
/// sign-ins, and AWS's own events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    UserCall(usize),
    Login(usize),
    Service(ServiceEvent),
}

#[derive(Debug, Clone, Copy)]
pub struct BackgroundSource {
    pub what: Background,
    /// Records per minute (at the peak of working hours when `human`).
    pub rate: f64,
    /// Follows [`human_rhythm`].
    pub human: bool,
}

/// An account's background sources; `scale` grows the busy ones with the
/// size of the generated trail.
fn background(org: &Org, account: usize, scale: f64) -> Vec<BackgroundSource> {
    let mut out = Vec::new();
    let mut add = |what, rate, human| out.push(BackgroundSource { what, rate, human });
    for (u, user) in org.users.iter().enumerate().filter(|(_, u)| u.account == account) {
        match user.job {
            UserJob::Human => {
                add(Background::UserCall(u), 0.25 * scale, true);
                // Console passwords only for users with an MFA device: a sign-in without MFA is an alert.
                if user.mfa {
                    add(Background::Login(u), 0.01 * scale, true);
                }
            }
            UserJob::Local => {}
            _ => add(Background::UserCall(u), 0.4 * scale, false),
        }
    }
    let kind = org.accounts[account].kind;
    if kind == AccountKind::LogArchive {
        add(Background::Service(ServiceEvent::BucketAclCheck), 1.0 * scale, false);
    }
    if matches!(kind, AccountKind::Prod | AccountKind::Shared) {
        add(Background::Service(ServiceEvent::BackupJob), 1.0 / 60.0, false);
    }
    if kind.is_workload() {
        add(Background::Service(ServiceEvent::EcrLifecycle), 1.0 / 720.0, false);
    }
    add(Background::Service(ServiceEvent::KeyRotation), 1.0 / 1440.0, false);
    out
}

#[derive(Debug, Clone, Default)]
pub struct AccountPlan {
    /// Issuing copies logged in this account, by time.
    pub copies: Vec<CopyRef>,
    /// Sessions whose credentials belong to this account, by issue time
    /// (not the incidents' scripted ones).
    pub sessions: Vec<u32>,
    /// Records other than issuing copies and incident records.
    pub share: u64,
    /// Planned usage (rate × active minutes) of this account's sessions.
    pub demand: f64,
    /// Incident records logged here (indices into `Plan::acts`), by time.
    pub acts: Vec<u32>,
    /// What the account does without sessions.
    pub background: Vec<BackgroundSource>,
    /// Expected background records over the whole period at the sources' rates.
    pub background_events: f64,
}

impl AccountPlan {
    /// Every record the account gets.
    pub fn total(&self) -> u64 {
        self.share + self.copies.len() as u64 + self.acts.len() as u64
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub start: EpochMillis,
    pub end: EpochMillis,
    pub sessions: Vec<Session>,
    pub accounts: Vec<AccountPlan>,
    /// Incident records, incident by incident.
    pub acts: Vec<Act>,
    pub incidents: Vec<Incident>,
}

const HOURLY: [f64; 24] = [0.15, 0.1, 0.08, 0.08, 0.08, 0.1, 0.2, 0.4, 0.7, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.95, 0.8, 0.6, 0.45, 0.35, 0.25, 0.2];

/// How busy people are at `t` (UTC), from 0 to 1: working hours of an
/// organization spread over America and Europe, quieter weekends.
pub fn human_rhythm(t: EpochMillis) -> f64 {
    let day = t.div_euclid(86_400_000);
    let weekend = (day + 3).rem_euclid(7) >= 5;
    let hour = (t.rem_euclid(86_400_000) / HOUR) as usize;
    HOURLY[hour] * if weekend { 0.3 } else { 1.0 }
}

/// Splits `total` in proportion to `weights`, exactly (cumulative rounding).
pub fn apportion(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 || weights.is_empty() {
        let mut out = vec![0; weights.len()];
        if let Some(first) = out.first_mut() {
            *first = total;
        }
        return out;
    }
    let mut out = Vec::with_capacity(weights.len());
    let (mut cum, mut given) = (0.0, 0u64);
    for w in weights {
        cum += w;
        let upto = ((cum / sum) * total as f64).round() as u64;
        let upto = upto.min(total).max(given);
        out.push(upto - given);
        given = upto;
    }
    if let Some(last) = out.last_mut() {
        *last += total - given;
    }
    out
}

impl Plan {
    /// Plans the sessions, the incidents when asked for, and each account's
    /// number of records. Fails when the organization or the number of
    /// events is too small for the incidents.
    pub fn build(org: &Org, seed: u64, events: u64, start: EpochMillis, end: EpochMillis, with_incidents: bool) -> Result<Plan, String> {
        let mut rng = Rng::new(seed, STREAM_PLAN);
        let planned = chains::plan(org, &mut rng, events, start, end);
        let incidents::Planned { sessions: planned, mut acts, mut incidents } = if with_incidents {
            incidents::plan(org, seed, start, end, planned)?
        } else {
            incidents::Planned { sessions: planned, acts: Vec::new(), incidents: Vec::new() }
        };

        // Order by issue time; remap parent links.
        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| (planned[i].issued, i));
        let mut new_index = vec![0u32; planned.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new as u32;
        }
        let mut slots: Vec<Option<Session>> = planned.into_iter().map(Some).collect();
        let mut sessions: Vec<Session> = order.iter().filter_map(|&old| slots[old].take()).collect();
        for s in &mut sessions {
            s.parent = s.parent.map(|p| new_index[p as usize]);
            if let Issuer::Session(p) = s.issuer {
                s.issuer = Issuer::Session(new_index[p as usize]);
            }
        }
        incidents::renumber(&mut acts, &mut incidents, &new_index);

        assign_keys(&mut rng, &mut sessions);
        for s in &mut sessions {
            let account = &org.accounts[s.account].id;
            (s.arn, s.principal_id) = match (s.kind, s.issuer) {
                (IssueKind::GetSessionToken, Issuer::User(u)) => (org.users[u].arn.clone(), org.users[u].principal_id.clone()),
                (IssueKind::GetFederationToken, _) => (format!("arn:aws:sts::{account}:federated-user/{}", s.name), format!("{account}:{}", s.name)),
                _ => {
                    let role = &org.roles[s.role.unwrap_or_default()];
                    (role.assumed_arn(account, &s.name), format!("{}:{}", role.principal_id, s.name))
                }
            };
        }

        let mut accounts = vec![AccountPlan::default(); org.accounts.len()];
        for (i, s) in sessions.iter().enumerate() {
            for (c, copy) in s.copies.iter().enumerate() {
                accounts[copy.account].copies.push(CopyRef { time: s.issued, session: i as u32, copy: c as u8 });
            }
            if !s.scripted {
                let plan = &mut accounts[s.account];
                plan.sessions.push(i as u32);
                plan.demand += s.rate * ((s.active_until - s.issued) as f64 / MINUTE as f64);
            }
        }
        let mut by_time: Vec<usize> = (0..acts.len()).collect();
        by_time.sort_by_key(|&i| (acts[i].time, i));
        for i in by_time {
            accounts[acts[i].account].acts.push(i as u32);
        }
        let fixed: u64 = accounts.iter().map(|a| a.copies.len() as u64 + a.acts.len() as u64).sum();
        if fixed > events {
            return Err(format!("{events} events are too few for the incidents: at least {fixed} are needed"));
        }
        let days = ((end - start) / 86_400_000).max(1);
        let scale = (events as f64 / days as f64 / 100_000.0).clamp(0.2, 20.0);
        let minutes = (end - start) as f64 / MINUTE as f64;
        let human_minutes: f64 = (0..(end - start) / HOUR).map(|h| human_rhythm(start + h * HOUR + HOUR / 2) * 60.0).sum();
        for (a, plan) in accounts.iter_mut().enumerate() {
            plan.background = background(org, a, scale);
            plan.background_events = plan.background.iter().map(|b| b.rate * if b.human { human_minutes } else { minutes }).sum();
        }
        // A floor, so that no account is silent however few sessions it got.
        let floor = accounts.iter().map(|p| p.demand + p.background_events).sum::<f64>() / accounts.len() as f64 * 0.03;
        let weights: Vec<f64> = accounts.iter().map(|p| p.demand + p.background_events + floor).collect();
        let weights = if weights.iter().sum::<f64>() > 0.0 { weights } else { org.accounts.iter().map(|a| a.weight).collect() };
        for (plan, share) in accounts.iter_mut().zip(apportion(events - fixed, &weights)) {
            plan.share = share;
        }
        Ok(Plan { start, end, sessions, accounts, acts, incidents })
    }

    /// The hops from the origin to session `i`, first hop first.
    pub fn chain(&self, i: u32) -> Vec<u32> {
        let mut hops = vec![i];
        let mut at = i;
        while let Some(p) = self.sessions[at as usize].parent {
            hops.push(p);
            at = p;
        }
        hops.reverse();
        hops
    }
}

/// Gives every session its temporary key id. Now and then a key id that was
/// handed out hours earlier (and has expired since) is handed out again, as
/// AWS does: at least once whenever two sessions are far enough apart.
fn assign_keys(rng: &mut Rng, sessions: &mut [Session]) {
    let mut last_expiry: HashMap<String, EpochMillis> = HashMap::new();
    let mut reused = false;
    for i in 0..sessions.len() {
        let mut key = None;
        if i > 0 && rng.chance(0.003) {
            for _ in 0..4 {
                let j = rng.index(i);
                let candidate = &sessions[j].key;
                if last_expiry.get(candidate).is_some_and(|&e| e + REUSE_GAP <= sessions[i].issued) {
                    key = Some(candidate.clone());
                    break;
                }
            }
        }
        reused |= key.is_some();
        let key = key.unwrap_or_else(|| rng.key_id("ASIA", 16));
        last_expiry.insert(key.clone(), sessions[i].expires);
        sessions[i].key = key;
    }
    if reused || sessions.len() < 2 {
        return;
    }
    // Force one reuse: an early session's key goes to one issued long after it expired.
    let n = sessions.len();
    for j in 0..n.min(64) {
        for i in (n.saturating_sub(64)..n).rev() {
            if i > j && sessions[j].expires + REUSE_GAP <= sessions[i].issued && last_expiry.get(&sessions[j].key) == Some(&sessions[j].expires) {
                let reused = sessions[j].key.clone();
                let old = std::mem::replace(&mut sessions[i].key, reused);
                last_expiry.remove(&old);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(events: u64) -> (Org, Plan) {
        let end = 1_793_491_200_000;
        let org = Org::build(4, 12, end);
        let plan = Plan::build(&org, 4, events, end - 86_400_000, end, false).unwrap();
        (org, plan)
    }

    #[test]
    fn apportions_exactly() {
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0]).iter().sum::<u64>(), 10);
        assert_eq!(apportion(0, &[1.0, 2.0]), vec![0, 0]);
        assert_eq!(apportion(7, &[0.0, 0.0]), vec![7, 0]);
        let parts = apportion(1_000_003, &[0.1, 5.0, 0.0, 2.5]);
        assert_eq!(parts.iter().sum::<u64>(), 1_000_003);
        assert_eq!(parts[2], 0);
    }

    #[test]
    fn account_totals_add_up_to_the_requested_events() {
        for events in [0, 10, 1_000, 60_000] {
            let (_, plan) = plan(events);
            assert_eq!(plan.accounts.iter().map(AccountPlan::total).sum::<u64>(), events, "{events} events");
        }
    }

    #[test]
    fn incidents_keep_the_totals_exact_and_their_sessions_out_of_random_traffic() {
        let end = 1_793_491_200_000;
        let org = Org::build(4, 12, end);
        let plan = Plan::build(&org, 4, 20_000, end - 86_400_000, end, true).unwrap();
        assert_eq!(plan.accounts.iter().map(AccountPlan::total).sum::<u64>(), 20_000);
        assert_eq!(plan.incidents.len(), 6);
        assert!(plan.accounts.iter().flat_map(|a| &a.sessions).all(|&s| !plan.sessions[s as usize].scripted));
        let mut used = 0;
        for act in &plan.acts {
            assert!(plan.start < act.time && act.time < plan.end);
            if let ActKind::SessionCall { session, .. } = act.what {
                let s = &plan.sessions[session as usize];
                assert!(s.scripted && s.account == act.account && s.issued < act.time && act.time <= s.expires);
                used += 1;
            }
        }
        assert_eq!(used, (plan.sessions.iter().filter(|s| s.scripted).count() - 1) * 2, "two calls per session, none by the CI chain's first hop");
        assert!(Plan::build(&org, 4, 20, end - 86_400_000, end, true).is_err(), "too few events for the incidents");
    }

    #[test]
    fn sessions_are_ordered_and_chains_lead_back_to_an_origin() {
        let (_, plan) = plan(60_000);
        assert!(plan.sessions.len() > 100);
        assert!(plan.sessions.windows(2).all(|w| w[0].issued <= w[1].issued));
        for (i, s) in plan.sessions.iter().enumerate() {
            assert!(s.issued >= plan.start && s.issued < plan.end && s.active_until <= s.expires);
            if let Some(p) = s.parent {
                let parent = &plan.sessions[p as usize];
                assert!(parent.issued < s.issued && s.issued <= parent.active_until, "session {i} within its parent's use");
                assert_eq!(s.issuer, Issuer::Session(p));
            }
            assert!(plan.chain(i as u32).len() <= 4);
        }
    }

    #[test]
    fn a_key_id_is_reused_but_never_while_valid() {
        let (_, plan) = plan(60_000);
        let mut by_key: HashMap<&str, Vec<&Session>> = HashMap::new();
        for s in &plan.sessions {
            by_key.entry(&s.key).or_default().push(s);
        }
        let reused: Vec<_> = by_key.values().filter(|v| v.len() > 1).collect();
        assert!(!reused.is_empty());
        for holders in reused {
            for pair in holders.windows(2) {
                assert!(pair[0].expires + REUSE_GAP <= pair[1].issued);
            }
        }
    }
}
