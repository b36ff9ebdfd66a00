//! Known security incidents, to test detection end to end.
//!
//! Each incident is a short story of whole records (and the sessions behind
//! them) placed at a fixed fraction of the time span, in accounts the seed
//! chooses, with the alerts the built-in rule pack must raise for it. Benign
//! traffic raises no alert of the pack, so these are all the alerts the pack
//! must raise over a generated trail, and exactly these.
//!
//! Incident sessions are planned like any other (they are in the answer
//! key's `sessions`), but they are `scripted`: only their incident's records
//! use them, never the random traffic.

use std::ops::Range;

use trailwatch_core::time::EpochMillis;

use super::chains::{Builder, Spec};
use super::{Actor, IssueKind, Issuer, Session, MINUTE};
use crate::catalog::{self, incident as api, Api};
use crate::org::{AccountKind, Org, PermissionSet, RoleKind, UserJob, MANAGEMENT};
use crate::prng::{Rng, STREAM_INCIDENTS};

/// The attacker's browser in the brute-force incident.
const ATTACKER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0";

/// Who an incident's records trace back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    /// An IAM user (by its long-term credentials or a console sign-in).
    User(usize),
    /// An IAM user as a failed console sign-in names it: by user name, the
    /// record having no ARN.
    UserName(usize),
    /// The root user of an account.
    Root(usize),
    /// Whoever is behind a planned session.
    Session(u32),
}

#[derive(Debug, Clone)]
pub enum ActKind {
    /// A console sign-in of an IAM user, or of the root user when `user` is `None`.
    SignIn { user: Option<usize>, success: bool, mfa: bool },
    /// A call by the root user, from the console session its sign-in at `since` opened (key `key`).
    RootCall { api: &'static Api, key: String, since: EpochMillis },
    /// A call with a planned session's credentials.
    SessionCall { api: &'static Api, session: u32 },
}

/// One record of an incident.
#[derive(Debug, Clone)]
pub struct Act {
    pub time: EpochMillis,
    /// The account that logs it.
    pub account: usize,
    pub region: &'static str,
    pub event_id: String,
    pub ip: String,
    pub ua: String,
    pub what: ActKind,
}

/// An alert the pack must raise.
#[derive(Debug, Clone)]
pub struct Alert {
    pub rule: &'static str,
    pub account: usize,
    pub culprit: Culprit,
    /// The rule's dedup group: field → value.
    pub group: Vec<(&'static str, String)>,
    /// The record that opens the alert: the group's first match (for a
    /// threshold rule, the first match of its burst).
    pub first_event: String,
    /// Matches that raise or update the alert (for a threshold rule, those
    /// of its bursts).
    pub count: u32,
}

#[derive(Debug, Clone)]
pub struct Incident {
    pub name: &'static str,
    pub account: usize,
    pub start: EpochMillis,
    /// Its records, in `Plan::acts`, in time order.
    pub acts: Range<usize>,
    /// Its sessions, first hop first.
    pub sessions: Vec<u32>,
    pub alerts: Vec<Alert>,
}

/// The benign sessions with the incidents' added, and the incidents.
pub(super) struct Planned {
    pub(super) sessions: Vec<Session>,
    pub(super) acts: Vec<Act>,
    pub(super) incidents: Vec<Incident>,
}

/// Plans the incidents after the benign sessions: adds their sessions to
/// `sessions` (marked `scripted`) and returns their records and stories.
pub(super) fn plan(org: &Org, seed: u64, start: EpochMillis, end: EpochMillis, sessions: Vec<Session>) -> Result<Planned, String> {
    let benign = sessions.len();
    let b = Builder::new(org, Rng::new(seed, STREAM_INCIDENTS), start, end, sessions, u64::MAX);
    let mut p = Planner { b, start, end, acts: Vec::new(), incidents: Vec::new() };
    p.brute_force().ok_or("the brute-force incident needs a local IAM user in a workload account")?;
    p.root_usage().ok_or("the root-usage incident needs a member account")?;
    p.trail_stopped().ok_or("the trail incident needs the management account's AdministratorAccess permission set")?;
    p.security_group_opened().ok_or("the security-group incident needs a human IAM user and a workload account")?;
    p.spot_instances().ok_or("the spot incident needs a GitHub repository")?;
    p.ci_into_production().ok_or("the CI incident needs a production account and a GitHub repository in another account")?;
    let Planner { b, acts, incidents, .. } = p;
    let mut sessions = b.sessions;
    for s in &mut sessions[benign..] {
        s.scripted = true;
    }
    Ok(Planned { sessions, acts, incidents })
}

struct Planner<'a> {
    b: Builder<'a>,
    start: EpochMillis,
    end: EpochMillis,
    acts: Vec<Act>,
    incidents: Vec<Incident>,
}

/// A call of a planned session: the session, what, when, where.
struct SessionCall {
    session: u32,
    api: &'static Api,
    time: EpochMillis,
    region: &'static str,
}

impl Planner<'_> {
    /// `percent` of the way through the time span, in whole seconds.
    fn at(&self, percent: i64) -> EpochMillis {
        (self.start + (self.end - self.start) * percent / 100) / 1000 * 1000
    }

    fn seconds(&mut self, lo: i64, hi: i64) -> i64 {
        self.b.rng.between(lo, hi) * 1000
    }

    fn act(&mut self, time: EpochMillis, account: usize, region: &'static str, ip: &str, ua: &str, what: ActKind) -> String {
        let event_id = self.b.rng.uuid();
        self.acts.push(Act { time, account, region, event_id: event_id.clone(), ip: ip.to_owned(), ua: ua.to_owned(), what });
        event_id
    }

    fn call(&mut self, c: SessionCall) -> String {
        let s = &self.b.sessions[c.session as usize];
        let (account, ip, ua) = (s.account, s.ip.clone(), s.ua.clone());
        let region = if c.api.global { "us-east-1" } else { c.region };
        self.act(c.time, account, region, &ip, &ua, ActKind::SessionCall { api: c.api, session: c.session })
    }

    fn finish(&mut self, name: &'static str, account: usize, start: EpochMillis, from: usize, sessions: Vec<u32>, alerts: Vec<Alert>) {
        let acts = from..self.acts.len();
        self.incidents.push(Incident { name, account, start, acts, sessions, alerts });
    }

    /// An outsider guesses a forgotten local user's console password: eight
    /// failures from one IP within three minutes, then a sign-in without MFA.
    fn brute_force(&mut self) -> Option<()> {
        let org = self.b.org;
        let victim = org.users.iter().position(|u| u.job == UserJob::Local)?;
        let user = &org.users[victim];
        let account = user.account;
        let from = self.acts.len();
        let ip = format!("203.0.113.{}", self.b.rng.between(251, 254));
        let start = self.at(20);
        let mut t = start;
        let mut failures = Vec::new();
        for k in 0..8 {
            if k > 0 {
                t += self.seconds(15, 22);
            }
            failures.push(self.act(t, account, "us-east-1", &ip, ATTACKER_UA, ActKind::SignIn { user: Some(victim), success: false, mfa: false }));
        }
        t += self.seconds(40, 90);
        let success = self.act(t, account, "us-east-1", &ip, ATTACKER_UA, ActKind::SignIn { user: Some(victim), success: true, mfa: false });
        let account_id = org.accounts[account].id.clone();
        let (tried, culprit) = (Culprit::UserName(victim), Culprit::User(victim));
        let alerts = vec![
            Alert {
                rule: "console-authentication-failures",
                account,
                culprit: tried,
                group: vec![("recipientAccountId", account_id.clone())],
                first_event: failures[0].clone(),
                count: 8,
            },
            // More than 3 failures in 5 minutes: the 4th makes a burst, and the alert holds all 8.
            Alert {
                rule: "console-signin-brute-force",
                account,
                culprit: tried,
                group: vec![("recipientAccountId", account_id.clone()), ("userIdentity.userName", user.name.clone())],
                first_event: failures[0].clone(),
                count: 8,
            },
            Alert {
                rule: "console-signin-without-mfa",
                account,
                culprit,
                group: vec![("recipientAccountId", account_id), ("userIdentity.arn", user.arn.clone())],
                first_event: success,
                count: 1,
            },
        ];
        self.finish("console-brute-force", account, start, from, Vec::new(), alerts);
        Some(())
    }

    /// Someone signs in as the root user of a member account (with MFA) and looks around.
    fn root_usage(&mut self) -> Option<()> {
        let org = self.b.org;
        if org.accounts.len() < 2 {
            return None;
        }
        let account = 1 + self.b.rng.index(org.accounts.len() - 1);
        let person = &org.people[self.b.rng.index(org.people.len())];
        let (ip, ua) = (person.ip.clone(), person.browser_ua);
        let from = self.acts.len();
        let start = self.at(35);
        let login = self.act(start, account, "us-east-1", &ip, ua, ActKind::SignIn { user: None, success: true, mfa: true });
        let key = self.b.rng.key_id("ASIA", 16);
        let mut t = start;
        let region = org.accounts[account].regions[0];
        for (api, lo, hi) in [(&api::GET_ACCOUNT_SUMMARY, 30, 50), (&catalog::LIST_USERS, 20, 40), (&catalog::DESCRIBE_INSTANCES, 30, 60)] {
            t += self.seconds(lo, hi);
            let region = if api.global { "us-east-1" } else { region };
            self.act(t, account, region, &ip, ua, ActKind::RootCall { api, key: key.clone(), since: start });
        }
        let alert = Alert {
            rule: "root-account-usage",
            account,
            culprit: Culprit::Root(account),
            group: vec![("recipientAccountId", org.accounts[account].id.clone())],
            first_event: login,
            count: 4,
        };
        self.finish("root-usage", account, start, from, Vec::new(), vec![alert]);
        Some(())
    }

    /// An Identity Center user with AdministratorAccess in the management
    /// account stops the organization trail.
    fn trail_stopped(&mut self) -> Option<()> {
        let org = self.b.org;
        let role = org.role(MANAGEMENT, RoleKind::Sso(PermissionSet::Admin))?;
        let person = self.b.rng.index(org.people.len());
        let p = &org.people[person];
        let start = self.at(50);
        let spec = Spec {
            kind: IssueKind::AssumeRoleWithSaml,
            issuer: Issuer::Saml { person, okta: false },
            account: MANAGEMENT,
            role: Some(role),
            name: p.email.clone(),
            issued: start,
            lifetime_s: 3600,
            active: 10 * MINUTE,
            rate: 0.0,
            actor: Actor::Human { person },
            console: false,
            mfa: false,
            source_identity: None,
            sets_source_identity: false,
            use_region: None,
            ip: p.ip.clone(),
            ua: p.cli_ua.clone(),
            caller_account: MANAGEMENT,
        };
        let session = self.b.issue(spec)?;
        let from = self.acts.len();
        let t = start + self.seconds(60, 90);
        self.call(SessionCall { session, api: &api::DESCRIBE_TRAILS, time: t, region: "us-east-1" });
        let t = t + self.seconds(30, 60);
        let stop = self.call(SessionCall { session, api: &api::STOP_LOGGING, time: t, region: "us-east-1" });
        let alert = Alert {
            rule: "cloudtrail-configuration-changes",
            account: MANAGEMENT,
            culprit: Culprit::Session(session),
            group: vec![("recipientAccountId", org.accounts[MANAGEMENT].id.clone())],
            first_event: stop,
            count: 1,
        };
        self.finish("trail-stopped", MANAGEMENT, start, from, vec![session], vec![alert]);
        Some(())
    }

    /// An engineer's IAM user assumes Admin in a workload account and opens SSH to the world.
    fn security_group_opened(&mut self) -> Option<()> {
        let org = self.b.org;
        let humans: Vec<usize> = org.users.iter().enumerate().filter(|(_, u)| u.job == UserJob::Human && u.person.is_some()).map(|(i, _)| i).collect();
        let u = *humans.get(self.b.rng.index(humans.len().max(1)))?;
        let user = &org.users[u];
        let person = user.person?;
        let targets: Vec<usize> = (0..org.accounts.len()).filter(|&a| a != user.account && org.accounts[a].kind.is_workload()).collect();
        let account = *targets.get(self.b.rng.index(targets.len().max(1)))?;
        let role = org.role(account, RoleKind::Admin)?;
        let start = self.at(62);
        let spec = Spec {
            kind: IssueKind::AssumeRole,
            issuer: Issuer::User(u),
            account,
            role: Some(role),
            name: org.people[person].handle.clone(),
            issued: start,
            lifetime_s: 3600,
            active: 10 * MINUTE,
            rate: 0.0,
            actor: Actor::Human { person },
            console: false,
            mfa: user.mfa,
            source_identity: None,
            sets_source_identity: false,
            use_region: None,
            ip: user.ip.clone(),
            ua: user.ua.clone(),
            caller_account: user.account,
        };
        let session = self.b.issue(spec)?;
        let region = self.b.region_of(account);
        let from = self.acts.len();
        let t = start + self.seconds(40, 70);
        self.call(SessionCall { session, api: &catalog::DESCRIBE_SECURITY_GROUPS, time: t, region });
        let t = t + self.seconds(30, 60);
        let open = self.call(SessionCall { session, api: &api::AUTHORIZE_INGRESS, time: t, region });
        let alert = Alert {
            rule: "security-group-changes",
            account,
            culprit: Culprit::Session(session),
            group: vec![("recipientAccountId", org.accounts[account].id.clone())],
            first_event: open,
            count: 1,
        };
        self.finish("security-group-opened", account, start, from, vec![session], vec![alert]);
        Some(())
    }

    /// A GitHub Actions workflow's session (AssumeRoleWithWebIdentity).
    fn github_session(&mut self, repo: usize, start: EpochMillis) -> Option<u32> {
        let org = self.b.org;
        let r = &org.repos[repo];
        let ip = format!("20.{}.{}.{}", self.b.rng.between(1, 250), self.b.rng.between(0, 255), self.b.rng.between(1, 254));
        let ua = format!("aws-cli/2.15.{} Python/3.11.6 Linux/6.5.0-1016-azure exe/x86_64.ubuntu.22 prompt/off", self.b.rng.between(10, 40));
        let spec = Spec {
            kind: IssueKind::AssumeRoleWithWebIdentity,
            issuer: Issuer::Web { repo },
            account: r.account,
            role: Some(r.role),
            name: "GitHubActions".to_owned(),
            issued: start,
            lifetime_s: 3600,
            active: 10 * MINUTE,
            rate: 0.0,
            actor: Actor::Ci,
            console: false,
            mfa: false,
            source_identity: None,
            sets_source_identity: false,
            use_region: None,
            ip,
            ua,
            caller_account: r.account,
        };
        self.b.issue(spec)
    }

    /// A CI workflow requests spot capacity (large GPU instances) in its account.
    fn spot_instances(&mut self) -> Option<()> {
        let org = self.b.org;
        if org.repos.is_empty() {
            return None;
        }
        let repo = self.b.rng.index(org.repos.len());
        let account = org.repos[repo].account;
        let start = self.at(75);
        let session = self.github_session(repo, start)?;
        let region = self.b.region_of(account);
        let from = self.acts.len();
        let t = start + self.seconds(30, 50);
        let request = self.call(SessionCall { session, api: &api::REQUEST_SPOT_INSTANCES, time: t, region });
        let t = t + self.seconds(15, 40);
        self.call(SessionCall { session, api: &api::RUN_SPOT_INSTANCES, time: t, region });
        let alert = Alert {
            rule: "spot-capacity-changes",
            account,
            culprit: Culprit::Session(session),
            group: vec![("recipientAccountId", org.accounts[account].id.clone())],
            first_event: request,
            count: 2,
        };
        self.finish("spot-instances", account, start, from, vec![session], vec![alert]);
        Some(())
    }

    /// A workflow of a repository elsewhere assumes a production account's
    /// Deployer role from its web-identity session and grants itself everything.
    fn ci_into_production(&mut self) -> Option<()> {
        let org = self.b.org;
        let prods: Vec<usize> =
            (0..org.accounts.len()).filter(|&a| org.accounts[a].kind == AccountKind::Prod && org.role(a, RoleKind::Deploy).is_some()).collect();
        let account = *prods.get(self.b.rng.index(prods.len().max(1)))?;
        let repos: Vec<usize> = (0..org.repos.len()).filter(|&r| org.repos[r].account != account).collect();
        let repo = *repos.get(self.b.rng.index(repos.len().max(1)))?;
        let role = org.role(account, RoleKind::Deploy)?;
        let start = self.at(88);
        let web = self.github_session(repo, start)?;
        let issued = start + self.seconds(20, 40);
        let ws = &self.b.sessions[web as usize];
        let name = format!("deploy-{}", issued / 1000);
        let spec = Spec {
            kind: IssueKind::AssumeRole,
            issuer: Issuer::Session(web),
            account,
            role: Some(role),
            name: name.clone(),
            issued,
            lifetime_s: 3600,
            active: 10 * MINUTE,
            rate: 0.0,
            actor: Actor::Ci,
            console: false,
            mfa: false,
            source_identity: None,
            sets_source_identity: false,
            use_region: None,
            ip: ws.ip.clone(),
            ua: ws.ua.clone(),
            caller_account: ws.account,
        };
        let deploy = self.b.issue(spec)?;
        self.b.sessions[deploy as usize].parent = Some(web);
        let from = self.acts.len();
        let t = issued + self.seconds(25, 45);
        let put = self.call(SessionCall { session: deploy, api: &api::PUT_ROLE_POLICY, time: t, region: "us-east-1" });
        let t = t + self.seconds(10, 25);
        self.call(SessionCall { session: deploy, api: &api::ATTACH_ROLE_POLICY, time: t, region: "us-east-1" });
        let account_id = org.accounts[account].id.clone();
        let arn = org.roles[role].assumed_arn(&account_id, &name);
        let alert = Alert {
            rule: "iam-policy-changes",
            account,
            culprit: Culprit::Session(deploy),
            group: vec![("recipientAccountId", account_id), ("userIdentity.arn", arn)],
            first_event: put,
            count: 2,
        };
        self.finish("ci-into-production", account, start, from, vec![web, deploy], vec![alert]);
        Some(())
    }
}

/// Renumbers the sessions an incident refers to (after the plan sorted them).
pub(super) fn renumber(acts: &mut [Act], incidents: &mut [Incident], new_index: &[u32]) {
    for act in acts {
        if let ActKind::SessionCall { session, .. } = &mut act.what {
            *session = new_index[*session as usize];
        }
    }
    for incident in incidents {
        for s in &mut incident.sessions {
            *s = new_index[*s as usize];
        }
        for alert in &mut incident.alerts {
            if let Culprit::Session(s) = &mut alert.culprit {
                *s = new_index[*s as usize];
            }
        }
    }
}
