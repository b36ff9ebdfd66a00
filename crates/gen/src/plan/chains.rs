//! Session chains: the templates that plan who gets credentials from whom.
//!
//! Each template starts at an origin (an IAM user, an Identity Center or
//! Okta user, a GitHub workflow, an EC2 instance, AWS Config, the
//! federation broker) and may chain on with AssumeRole into other accounts.

use trailwatch_core::time::EpochMillis;

use super::{human_rhythm, Actor, Copy, IssueKind, Issuer, Session, HOUR, MINUTE};
use crate::delivery::delay;
use crate::org::{Org, PermissionSet, RoleKind, UserJob, MANAGEMENT};
use crate::prng::Rng;

/// Plans the sessions: whole chains, from templates drawn at random, until
/// their planned usage covers most of `events` or their issuing copies
/// reach 6% of it. Sessions come out in creation order, parents first.
pub(super) fn plan(org: &Org, rng: &mut Rng, events: u64, start: EpochMillis, end: EpochMillis) -> Vec<Session> {
    let mut b = Builder::new(org, rng.clone(), start, end, Vec::new(), events * 6 / 100);
    let target = events as f64 * 0.6;
    // AWS Config records every account all the time: about a tenth of the
    // traffic, in sessions active ~15 minutes an hour.
    let per_day = events as f64 / ((end - start) as f64 / 86_400_000.0).max(1.0);
    let config_rate = (0.1 * per_day / org.accounts.len() as f64 / (24.0 * 15.0)).clamp(0.05, 10.0);
    for account in 0..org.accounts.len() {
        b.service_run(false, Some((account, config_rate)));
    }
    // How often each kind of chain starts, relatively.
    let templates: [(f64, Template); 9] = [
        (20.0, |b| b.iam_user_chain()),
        (30.0, |b| b.identity_center(false)),
        (4.0, |b| b.identity_center(true)),
        (14.0, |b| b.github()),
        (6.0, |b| b.terraform()),
        (4.0, |b| b.service_run(true, None)),
        (3.0, |b| b.service_run(false, None)),
        (3.0, |b| b.session_token_chain()),
        (3.0, |b| b.federation()),
    ];
    let weights: Vec<f64> = templates.iter().map(|t| t.0).collect();
    let mut misses = 0;
    // Every chain made adds issuing copies, so the cap ends the loop.
    while b.demand < target && !b.full(1) && misses < 200 {
        let template = templates[b.rng.weighted(&weights)].1;
        misses = if template(&mut b).is_some() { 0 } else { misses + 1 };
    }
    *rng = b.rng;
    b.sessions
}

/// Starts one chain; `None` when it could not (no such principal, no time left, the cap reached).
type Template = fn(&mut Builder<'_>) -> Option<()>;

pub(super) struct Builder<'a> {
    pub(super) org: &'a Org,
    pub(super) rng: Rng,
    start: EpochMillis,
    end: EpochMillis,
    pub(super) sessions: Vec<Session>,
    demand: f64,
    copies: u64,
    max_copies: u64,
}

/// What a template asks [`Builder::issue`] for.
pub(super) struct Spec {
    pub(super) kind: IssueKind,
    pub(super) issuer: Issuer,
    pub(super) account: usize,
    pub(super) role: Option<usize>,
    pub(super) name: String,
    pub(super) issued: EpochMillis,
    pub(super) lifetime_s: i64,
    pub(super) active: i64,
    pub(super) rate: f64,
    pub(super) actor: Actor,
    pub(super) console: bool,
    pub(super) mfa: bool,
    pub(super) source_identity: Option<String>,
    pub(super) sets_source_identity: bool,
    pub(super) use_region: Option<&'static str>,
    pub(super) ip: String,
    pub(super) ua: String,
    pub(super) caller_account: usize,
}

impl<'a> Builder<'a> {
    /// A builder adding to `sessions`, refusing to issue more than `max_copies` issuing copies in all.
    pub(super) fn new(org: &'a Org, rng: Rng, start: EpochMillis, end: EpochMillis, sessions: Vec<Session>, max_copies: u64) -> Self {
        Builder { org, rng, start, end, sessions, demand: 0.0, copies: 0, max_copies }
    }

    fn full(&self, copies: u64) -> bool {
        self.copies + copies > self.max_copies
    }

    /// A time people would work at, in whole seconds, leaving `margin` before the end.
    fn human_time(&mut self, margin: i64) -> Option<EpochMillis> {
        let hi = self.end - margin;
        if hi <= self.start {
            return None;
        }
        for _ in 0..64 {
            let t = self.rng.between(self.start / 1000, hi / 1000) * 1000;
            if self.rng.unit() < human_rhythm(t) {
                return Some(t);
            }
        }
        Some(self.rng.between(self.start / 1000, hi / 1000) * 1000)
    }

    fn account_weighted(&mut self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let weights: Vec<f64> = self.org.accounts.iter().enumerate().map(|(i, a)| if ok(i) { a.weight } else { 0.0 }).collect();
        if weights.iter().all(|w| *w <= 0.0) {
            return None;
        }
        Some(self.rng.weighted(&weights))
    }

    pub(super) fn region_of(&mut self, account: usize) -> &'static str {
        let a = &self.org.accounts[account];
        a.regions[self.rng.weighted(&a.region_weights)]
    }

    pub(super) fn issue(&mut self, spec: Spec) -> Option<u32> {
        let cross = spec.kind == IssueKind::AssumeRole && spec.caller_account != spec.account;
        let n = if cross { 2 } else { 1 };
        if self.full(n) || spec.issued >= self.end - MINUTE {
            return None;
        }
        let rng = &mut self.rng;
        let late = rng.chance(0.08);
        let mut accounts = vec![spec.account];
        if cross {
            accounts.insert(0, spec.caller_account);
        }
        let copies = accounts.into_iter().map(|account| Copy { account, event_id: rng.uuid(), delay: delay(rng, late) }).collect();
        let shared_event_id = (cross || matches!(spec.issuer, Issuer::Service { .. })).then(|| rng.uuid());
        // STS is called on its global endpoint (logged in us-east-1) for
        // cross-account and federated calls, sometimes on a regional one otherwise.
        let (region, global_endpoint) = match spec.kind {
            IssueKind::AssumeRole if matches!(spec.issuer, Issuer::Service { .. }) => (spec.use_region.unwrap_or("us-east-1"), false),
            IssueKind::AssumeRole if !cross && rng.chance(0.4) => {
                let a = &self.org.accounts[spec.account];
                (a.regions[rng.weighted(&a.region_weights)], false)
            }
            _ => ("us-east-1", rng.chance(0.6)),
        };
        let expires = spec.issued + spec.lifetime_s * 1000;
        let active_until = (spec.issued + spec.active).min(expires).min(self.end);
        let request_id = rng.uuid();
        let token = format!("IQoJb3JpZ2luX2VjE{}", rng.base64(84));
        self.demand += spec.rate * ((active_until - spec.issued) as f64 / MINUTE as f64);
        self.copies += n;
        self.sessions.push(Session {
            kind: spec.kind,
            issuer: spec.issuer,
            account: spec.account,
            role: spec.role,
            name: spec.name,
            key: String::new(),
            token,
            issued: spec.issued,
            expires,
            active_until,
            rate: spec.rate,
            actor: spec.actor,
            console: spec.console,
            mfa: spec.mfa,
            source_identity: spec.source_identity,
            sets_source_identity: spec.sets_source_identity,
            region,
            global_endpoint,
            use_region: spec.use_region,
            ip: spec.ip,
            ua: spec.ua,
            arn: String::new(),
            principal_id: String::new(),
            copies,
            shared_event_id,
            request_id,
            parent: None,
            scripted: false,
        });
        Some((self.sessions.len() - 1) as u32)
    }

    /// Role chaining: from session `parent`, AssumeRole into a role of
    /// another account (with probability `p`), and maybe on again.
    fn chain_on(&mut self, parent: u32, hops_left: u32, p: f64, kinds: &[RoleKind]) {
        if hops_left == 0 || !self.rng.chance(p) {
            return;
        }
        let ps = &self.sessions[parent as usize];
        let (from, lo, hi) = (ps.account, ps.issued + 15_000, ps.active_until.min(ps.issued + 40 * MINUTE) - 5_000);
        if hi <= lo {
            return;
        }
        let org = self.org;
        let Some(to) = self.account_weighted(|a| a != from && kinds.iter().any(|k| org.role(a, *k).is_some())) else { return };
        let options: Vec<usize> = kinds.iter().filter_map(|k| org.role(to, *k)).collect();
        let role = *self.rng.pick(&options);
        let t = self.rng.between(lo / 1000, hi / 1000) * 1000;
        let ps = &self.sessions[parent as usize];
        let name = match ps.actor {
            Actor::Human { person } if self.rng.chance(0.5) => org.people[person].handle.clone(),
            Actor::Human { person } => format!("{}-{}", org.people[person].handle, org.roles[role].name.to_ascii_lowercase()),
            Actor::Ci => format!("deploy-{}", t / 1000),
            Actor::Scanner | Actor::Instance => format!("{}-cross", ps.name),
            _ => format!("chained-{}", t / 1000),
        };
        let (active, rate) = match ps.actor {
            Actor::Ci => (self.rng.between(2, 10) * MINUTE, self.rng.uniform(4.0, 12.0)),
            _ => (self.rng.between(3, 40) * MINUTE, self.rng.uniform(0.5, 4.0)),
        };
        let spec = Spec {
            kind: IssueKind::AssumeRole,
            issuer: Issuer::Session(parent),
            account: to,
            role: Some(role),
            name,
            issued: t,
            lifetime_s: 3600,
            active,
            rate,
            actor: ps.actor,
            console: ps.console,
            mfa: false,
            source_identity: ps.source_identity.clone(),
            sets_source_identity: false,
            use_region: None,
            ip: ps.ip.clone(),
            ua: ps.ua.clone(),
            caller_account: from,
        };
        if let Some(child) = self.issue(spec) {
            self.sessions[child as usize].parent = Some(parent);
            self.chain_on(child, hops_left - 1, 0.3, &[RoleKind::Deploy, RoleKind::ReadOnly, RoleKind::Admin]);
        }
    }

    fn human_users(&self, mfa_only: bool) -> Vec<usize> {
        self.org.users.iter().enumerate().filter(|(_, u)| u.job == UserJob::Human && (u.mfa || !mfa_only)).map(|(i, _)| i).collect()
    }

    /// An IAM user of the identity account assumes a role elsewhere, then maybe hops on.
    fn iam_user_chain(&mut self) -> Option<()> {
        let users = self.human_users(false);
        if users.is_empty() {
            return None;
        }
        let u = *self.rng.pick(&users);
        let org = self.org;
        let user = &org.users[u];
        let person = user.person?;
        let t = self.human_time(10 * MINUTE)?;
        let to = self
            .account_weighted(|a| a != user.account && (org.role(a, RoleKind::Admin).is_some() || org.role(a, RoleKind::ReadOnly).is_some()))
            .unwrap_or(user.account);
        let kind = if self.rng.chance(0.55) { RoleKind::Admin } else { RoleKind::ReadOnly };
        let role = org.role(to, kind).or_else(|| org.role(to, RoleKind::Admin))?;
        let console = self.rng.chance(0.2);
        let handle = &org.people[person].handle;
        let name = if console {
            handle.clone()
        } else {
            match self.rng.below(3) {
                0 => handle.clone(),
                1 => format!("{handle}-cli"),
                _ => format!("botocore-session-{}", t / 1000),
            }
        };
        let source_identity = self.rng.chance(0.35).then(|| handle.clone());
        let spec = Spec {
            kind: IssueKind::AssumeRole,
            issuer: Issuer::User(u),
            account: to,
            role: Some(role),
            name,
            issued: t,
            lifetime_s: 3600,
            active: self.rng.between(5, 55) * MINUTE,
            rate: self.rng.uniform(0.5, 4.0),
            actor: Actor::Human { person },
            console,
            mfa: user.mfa,
            sets_source_identity: source_identity.is_some(),
            source_identity,
            use_region: None,
            ip: user.ip.clone(),
            ua: if console { org.people[person].browser_ua.to_owned() } else { user.ua.clone() },
            caller_account: user.account,
        };
        let s = self.issue(spec)?;
        self.chain_on(s, 2, 0.3, &[RoleKind::Deploy, RoleKind::ReadOnly, RoleKind::Admin]);
        Some(())
    }

    /// An Identity Center user signs in to a permission set (AssumeRoleWithSAML).
    fn identity_center(&mut self, okta: bool) -> Option<()> {
        let org = self.org;
        let person = self.rng.index(org.people.len());
        let account = if okta { self.account_weighted(|a| org.accounts[a].okta.is_some())? } else { self.account_weighted(|_| true)? };
        let role = if okta {
            org.role(account, RoleKind::Okta)?
        } else {
            let sets = [(PermissionSet::Admin, 0.3), (PermissionSet::ReadOnly, 0.45), (PermissionSet::PowerUser, 0.25), (PermissionSet::Billing, 0.1)];
            let options: Vec<(usize, f64)> = sets.iter().filter_map(|(ps, w)| org.role(account, RoleKind::Sso(*ps)).map(|r| (r, *w))).collect();
            let weights: Vec<f64> = options.iter().map(|o| o.1).collect();
            options.get(self.rng.weighted(&weights))?.0
        };
        let t = self.human_time(10 * MINUTE)?;
        let lifetime_s = *self.rng.pick(&[3600, 14_400, 28_800, 43_200]);
        let console = self.rng.chance(0.55);
        let p = &org.people[person];
        let spec = Spec {
            kind: IssueKind::AssumeRoleWithSaml,
            issuer: Issuer::Saml { person, okta },
            account,
            role: Some(role),
            name: p.email.clone(),
            issued: t,
            lifetime_s,
            active: self.rng.between(10, 120) * MINUTE,
            rate: self.rng.uniform(0.5, 3.0),
            actor: Actor::Human { person },
            console,
            mfa: false,
            source_identity: None,
            sets_source_identity: false,
            use_region: None,
            ip: p.ip.clone(),
            ua: if console { p.browser_ua.to_owned() } else { p.cli_ua.clone() },
            caller_account: account,
        };
        let s = self.issue(spec)?;
        if account == MANAGEMENT {
            self.chain_on(s, 2, 0.45, &[RoleKind::OrgAccess]);
        } else {
            self.chain_on(s, 2, 0.12, &[RoleKind::Admin, RoleKind::ReadOnly, RoleKind::Deploy]);
        }
        Some(())
    }

    /// A GitHub Actions workflow deploys with OIDC, sometimes hopping to a deploy role elsewhere.
    fn github(&mut self) -> Option<()> {
        let org = self.org;
        if org.repos.is_empty() {
            return None;
        }
        let repo = self.rng.index(org.repos.len());
        let r = &org.repos[repo];
        let t = self.human_time(10 * MINUTE)?;
        let name = if self.rng.chance(0.6) { "GitHubActions".to_owned() } else { format!("gha-{}", self.rng.between(7_000_000_000, 9_999_999_999)) };
        let ip = format!("20.{}.{}.{}", self.rng.between(1, 250), self.rng.between(0, 255), self.rng.between(1, 254));
        let ua = format!("aws-cli/2.15.{} Python/3.11.6 Linux/6.5.0-1016-azure exe/x86_64.ubuntu.22 prompt/off", self.rng.between(10, 40));
        let spec = Spec {
            kind: IssueKind::AssumeRoleWithWebIdentity,
            issuer: Issuer::Web { repo },
            account: r.account,
            role: Some(r.role),
            name,
            issued: t,
            lifetime_s: 3600,
            active: self.rng.between(2, 12) * MINUTE,
            rate: self.rng.uniform(4.0, 15.0),
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
        let s = self.issue(spec)?;
        self.chain_on(s, 1, 0.3, &[RoleKind::Deploy]);
        Some(())
    }

    /// The terraform-ci IAM user applies infrastructure through a deploy role.
    fn terraform(&mut self) -> Option<()> {
        let org = self.org;
        let u = org.users.iter().position(|u| u.job == UserJob::Terraform)?;
        let user = &org.users[u];
        let to = self.account_weighted(|a| org.role(a, RoleKind::Deploy).is_some())?;
        let t = self.human_time(10 * MINUTE)?;
        let spec = Spec {
            kind: IssueKind::AssumeRole,
            issuer: Issuer::User(u),
            account: to,
            role: org.role(to, RoleKind::Deploy),
            name: format!("terraform-{}", t / 1000),
            issued: t,
            lifetime_s: 3600,
            active: self.rng.between(3, 20) * MINUTE,
            rate: self.rng.uniform(5.0, 20.0),
            actor: Actor::Terraform,
            console: false,
            mfa: false,
            source_identity: None,
            sets_source_identity: false,
            use_region: None,
            ip: user.ip.clone(),
            ua: user.ua.clone(),
            caller_account: user.account,
        };
        self.issue(spec).map(|_| ())
    }

    /// A run of hourly sessions issued by an AWS service: an EC2 instance's
    /// profile credentials (session name = instance id), or AWS Config's role.
    /// `baseline`: AWS Config recording in this account for the whole period
    /// (every account has it, so none is silent).
    fn service_run(&mut self, ec2: bool, baseline: Option<(usize, f64)>) -> Option<()> {
        let org = self.org;
        let (account, role, region, name, ip, ua, actor, service, scanner) = if ec2 {
            let weights: Vec<f64> = org.apps.iter().map(|a| org.accounts[a.account].weight).collect();
            if weights.is_empty() {
                return None;
            }
            let app = &org.apps[self.rng.weighted(&weights)];
            let ip = format!("10.{}.{}.{}", app.subnet.0, app.subnet.1, self.rng.between(4, 250));
            (app.account, app.role, app.region, format!("i-0{}", self.rng.hex(16)), ip, app.ua.clone(), Actor::Instance, "ec2.amazonaws.com", app.scanner)
        } else {
            let account = match baseline {
                Some((a, _)) => a,
                None => self.account_weighted(|_| true)?,
            };
            let region = if baseline.is_some() { org.accounts[account].regions[0] } else { self.region_of(account) };
            let role = org.role(account, RoleKind::Config)?;
            let svc = "config.amazonaws.com";
            (account, role, region, "AWSConfig-Describe".to_owned(), svc.to_owned(), svc.to_owned(), Actor::Config, svc, false)
        };
        let span = self.end - self.start;
        let (from, to) = if baseline.is_some() || self.rng.chance(0.4) || span <= 2 * HOUR {
            (self.start, self.end)
        } else {
            let len = self.rng.between(2 * HOUR, (36 * HOUR).min(span));
            let from = self.rng.between(self.start, self.end - len);
            (from, from + len)
        };
        let rate = match baseline {
            Some((_, rate)) => rate * self.rng.uniform(0.7, 1.3),
            None if ec2 => self.rng.uniform(0.1, 1.2),
            None => self.rng.uniform(0.5, 4.0),
        };
        let mut t = (from + self.rng.between(0, 10 * MINUTE)) / 1000 * 1000;
        while t < to.min(self.end - 2 * MINUTE) {
            let next = t + self.rng.between(55 * MINUTE, 65 * MINUTE) / 1000 * 1000;
            let (lifetime_s, active) = if ec2 { (21_600 + self.rng.between(-300, 300), next - t) } else { (3600, self.rng.between(5, 25) * MINUTE) };
            let spec = Spec {
                kind: IssueKind::AssumeRole,
                issuer: Issuer::Service { service },
                account,
                role: Some(role),
                name: name.clone(),
                issued: t,
                lifetime_s,
                active,
                rate,
                actor,
                console: false,
                mfa: false,
                source_identity: None,
                sets_source_identity: false,
                use_region: Some(region),
                ip: ip.clone(),
                ua: ua.clone(),
                caller_account: account,
            };
            let s = self.issue(spec)?;
            if scanner {
                // The scanner's session assumes SecurityAudit in another account.
                let before = self.sessions.len();
                self.chain_on(s, 1, 0.6, &[RoleKind::SecurityAudit]);
                for child in &mut self.sessions[before..] {
                    child.actor = Actor::Scanner;
                    child.rate = child.rate * 2.0 + 2.0;
                }
            } else if ec2 {
                self.chain_on(s, 1, 0.04, &[RoleKind::ReadOnly]);
            }
            t = next;
        }
        Some(())
    }

    /// GetSessionToken with MFA, then role hops from that session.
    fn session_token_chain(&mut self) -> Option<()> {
        let users = self.human_users(true);
        if users.is_empty() {
            return None;
        }
        let u = *self.rng.pick(&users);
        let org = self.org;
        let user = &org.users[u];
        let person = user.person?;
        let t = self.human_time(30 * MINUTE)?;
        let spec = Spec {
            kind: IssueKind::GetSessionToken,
            issuer: Issuer::User(u),
            account: user.account,
            role: None,
            name: String::new(),
            issued: t,
            lifetime_s: 43_200,
            active: self.rng.between(30, 240) * MINUTE,
            rate: self.rng.uniform(0.1, 0.6),
            actor: Actor::Human { person },
            console: false,
            mfa: true,
            source_identity: None,
            sets_source_identity: false,
            use_region: None,
            ip: user.ip.clone(),
            ua: user.ua.clone(),
            caller_account: user.account,
        };
        let s = self.issue(spec)?;
        for _ in 0..self.rng.between(1, 3) {
            self.chain_on(s, 2, 1.0, &[RoleKind::Admin, RoleKind::ReadOnly]);
        }
        Some(())
    }

    /// The federation broker gets a federated-user session for a person.
    fn federation(&mut self) -> Option<()> {
        let org = self.org;
        let u = org.users.iter().position(|u| u.job == UserJob::Broker)?;
        let user = &org.users[u];
        let person = self.rng.index(org.people.len());
        let t = self.human_time(10 * MINUTE)?;
        let spec = Spec {
            kind: IssueKind::GetFederationToken,
            issuer: Issuer::User(u),
            account: user.account,
            role: None,
            name: org.people[person].handle.clone(),
            issued: t,
            lifetime_s: *self.rng.pick(&[3600, 43_200]),
            active: self.rng.between(10, 60) * MINUTE,
            rate: self.rng.uniform(0.5, 2.0),
            actor: Actor::Human { person },
            console: false,
            mfa: false,
            source_identity: None,
            sets_source_identity: false,
            use_region: None,
            ip: user.ip.clone(),
            ua: user.ua.clone(),
            caller_account: user.account,
        };
        self.issue(spec).map(|_| ())
    }
}
