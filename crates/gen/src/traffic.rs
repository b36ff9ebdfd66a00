//! One account's traffic, generated in event-time order from the account's
//! own random stream.
//!
//! The account's records other than issuing copies (its `share`) are spread
//! over five-minute slices following a daily rhythm, so the total is exact.
//! Each record slot goes, in this order, to the first use of a session just
//! issued, or to a draw between the active sessions (weighted by their
//! rates) and the account's background (IAM users' long-term keys, console
//! sign-ins, AWS service events). Issuing copies and incident records are
//! written at their planned times in between.
//!
//! Authorization failures are rationed per caller (`DeniedBudget`), so that
//! benign traffic never looks like the probing the detection pack reports.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use trailwatch_core::time::EpochMillis;

use crate::catalog::{self, Api, Mix};
use crate::delivery::{delay, Delivery};
use crate::identity;
use crate::org::{Org, PermissionSet, RoleKind, UserJob};
use crate::plan::{apportion, human_rhythm, AccountPlan, Actor, Background, Plan};
use crate::prng::{Rng, STREAM_ACCOUNT};
use crate::records::{self, Call, Failure, Login, ServiceEvent, SignIn};
use crate::{digest, GenError};

const SLICE: i64 = 5 * 60_000;

/// The most authorization failures one caller ARN gets in a five-minute
/// bucket of event time. A five-minute window of event time meets exactly
/// two buckets, so no window holds more than 10 failures of one caller in
/// an account: the detection pack's unauthorized-api-calls rule alerts
/// above 10 in 5 minutes.
const DENIED_PER_BUCKET: u8 = 5;

/// Authorization failures so far, per five-minute bucket and caller ARN.
#[derive(Debug, Default)]
struct DeniedBudget {
    buckets: BTreeMap<i64, HashMap<String, u8>>,
}

impl DeniedBudget {
    /// Whether `arn` may fail once more at `t`; counts the failure if so.
    fn take(&mut self, arn: &str, t: EpochMillis) -> bool {
        let bucket = self.buckets.entry(t.div_euclid(SLICE)).or_default();
        match bucket.get_mut(arn) {
            Some(n) if *n >= DENIED_PER_BUCKET => false,
            Some(n) => {
                *n += 1;
                true
            }
            None => {
                bucket.insert(arn.to_owned(), 1);
                true
            }
        }
    }

    /// Forgets the buckets that end at or before `t` (nothing earlier is generated any more).
    fn forget_before(&mut self, t: EpochMillis) {
        self.buckets = self.buckets.split_off(&t.div_euclid(SLICE));
    }
}

/// What one account's generation produced.
#[derive(Debug, Default)]
pub struct AccountOutput {
    pub records: u64,
    pub files: u64,
    pub digests: u64,
    pub bytes_raw: u64,
    pub bytes_gz: u64,
}

struct Traffic<'a> {
    org: &'a Org,
    plan: &'a Plan,
    account: usize,
    rng: Rng,
    delivery: Delivery<'a>,
    next_copy: usize,
    next_session: usize,
    next_act: usize,
    denied: DeniedBudget,
    active: Vec<u32>,
    first_use: VecDeque<u32>,
    /// The current slice, the share of its records that are session usage,
    /// and the sessions active at some point in it (with their planned use in it).
    slice: (EpochMillis, EpochMillis),
    session_share: f64,
    candidates: Vec<(u32, f64)>,
}

/// Generates account `account`'s log files and digests under `out`.
pub fn run(org: &Org, plan: &Plan, account: usize, seed: u64, out: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<AccountOutput, GenError> {
    let mut rng = Rng::new(seed, STREAM_ACCOUNT + account as u64);
    let a = &org.accounts[account];
    let delivery = Delivery::new(out, &org.id, &a.id, &a.regions, &mut rng, progress);
    let ap = &plan.accounts[account];
    let mut t = Traffic {
        org,
        plan,
        account,
        rng,
        delivery,
        next_copy: 0,
        next_session: 0,
        next_act: 0,
        denied: DeniedBudget::default(),
        active: Vec::new(),
        first_use: VecDeque::new(),
        slice: (0, 0),
        session_share: 0.0,
        candidates: Vec::new(),
    };
    t.generate()?;
    let Traffic { mut rng, delivery, .. } = t;
    let (mut writer, files, records, bytes_raw, bytes_gz) = delivery.into_parts();
    if records != ap.total() {
        return Err(GenError::Internal(format!("account {}: wrote {records} records, planned {}", a.id, ap.total())));
    }
    let digests = digest::write(&mut writer, &mut rng, org, account, &files, plan.start, plan.end)?;
    Ok(AccountOutput { records, files: files.len() as u64, digests, bytes_raw, bytes_gz })
}

/// Background records per minute at `t`.
fn background_rate(ap: &AccountPlan, t: EpochMillis) -> f64 {
    let rhythm = human_rhythm(t);
    ap.background.iter().map(|b| b.rate * if b.human { rhythm } else { 1.0 }).sum()
}

impl Traffic<'_> {
    fn generate(&mut self) -> Result<(), GenError> {
        let plan = self.plan;
        let (start, end) = (plan.start, plan.end);
        let (weights, shares) = self.slice_weights();
        let counts = apportion(plan.accounts[self.account].share, &weights);
        let mut times = Vec::new();
        for (k, count) in counts.into_iter().enumerate() {
            let from = start + k as i64 * SLICE;
            let to = (from + SLICE).min(end);
            self.active.retain(|&s| plan.sessions[s as usize].active_until >= from);
            self.denied.forget_before(from);
            self.start_slice(from, to, shares[k]);
            times.clear();
            times.extend((0..count).map(|_| self.rng.between(from / 1000, (to - 1) / 1000) * 1000));
            times.sort_unstable();
            for &t in &times {
                self.copies_until(t)?;
                self.acts_until(t)?;
                self.admit(t);
                self.slot(t)?;
            }
            self.copies_until(to - 1)?;
            self.acts_until(to - 1)?;
            self.delivery.close_until(&mut self.rng, to)?;
        }
        self.copies_until(EpochMillis::MAX)?;
        self.acts_until(EpochMillis::MAX)?;
        self.delivery.close_until(&mut self.rng, EpochMillis::MAX)
    }

    /// How many records each five-minute slice should get, relatively (the
    /// planned use of the sessions active in it plus the background, with
    /// some noise), and which share of them is session usage.
    fn slice_weights(&mut self) -> (Vec<f64>, Vec<f64>) {
        let plan = self.plan;
        let ap = &plan.accounts[self.account];
        let slices = ((plan.end - plan.start) / SLICE).max(1);
        let mut weights = vec![0.0; slices as usize];
        for &i in &ap.sessions {
            let s = &plan.sessions[i as usize];
            let (first, last) = ((s.issued - plan.start) / SLICE, ((s.active_until - plan.start) / SLICE).min(slices - 1));
            for k in first..=last {
                let from = plan.start + k * SLICE;
                let overlap = (s.active_until.min(from + SLICE) - s.issued.max(from)).max(0);
                weights[k as usize] += s.rate * overlap as f64 / 60_000.0;
            }
        }
        let mut shares = Vec::with_capacity(weights.len());
        for (k, w) in weights.iter_mut().enumerate() {
            let mid = plan.start + k as i64 * SLICE + SLICE / 2;
            let background = background_rate(ap, mid) * 5.0;
            shares.push(if *w > 0.0 { *w / (*w + background) } else { 0.0 });
            *w = (*w + background) * self.rng.uniform(0.85, 1.15);
        }
        (weights, shares)
    }

    fn start_slice(&mut self, from: EpochMillis, to: EpochMillis, share: f64) {
        let plan = self.plan;
        self.slice = (from, to);
        self.session_share = share;
        self.candidates.clear();
        let upcoming = plan.accounts[self.account].sessions[self.next_session..].iter().take_while(|&&s| plan.sessions[s as usize].issued < to);
        for &i in self.active.iter().chain(upcoming) {
            let s = &plan.sessions[i as usize];
            let overlap = s.active_until.min(to - 1000) - (s.issued + 1000).max(from);
            if overlap >= 0 {
                self.candidates.push((i, s.rate * (overlap + 1000) as f64));
            }
        }
    }

    /// Writes the issuing copies logged here up to `t`.
    fn copies_until(&mut self, t: EpochMillis) -> Result<(), GenError> {
        let copies = &self.plan.accounts[self.account].copies;
        while let Some(c) = copies.get(self.next_copy).filter(|c| c.time <= t) {
            let s = &self.plan.sessions[c.session as usize];
            let copy = usize::from(c.copy);
            let region = self.region_index(s.region);
            let buf = self.delivery.begin(&mut self.rng, region, s.issued, s.copies[copy].delay);
            records::issuing(buf, self.org, self.plan, s, copy);
            self.delivery.commit(&mut self.rng)?;
            self.next_copy += 1;
        }
        Ok(())
    }

    /// Writes the incident records logged here up to `t`.
    fn acts_until(&mut self, t: EpochMillis) -> Result<(), GenError> {
        let acts = &self.plan.accounts[self.account].acts;
        while let Some(&i) = acts.get(self.next_act).filter(|&&i| self.plan.acts[i as usize].time <= t) {
            let act = &self.plan.acts[i as usize];
            let d = delay(&mut self.rng, false);
            let region = self.region_index(act.region);
            let buf = self.delivery.begin(&mut self.rng, region, act.time, d);
            records::act(buf, &mut self.rng, self.org, self.plan, act);
            self.delivery.commit(&mut self.rng)?;
            self.next_act += 1;
        }
        Ok(())
    }

    /// Makes the sessions issued before `t` usable.
    fn admit(&mut self, t: EpochMillis) {
        let sessions = &self.plan.accounts[self.account].sessions;
        while let Some(&s) = sessions.get(self.next_session).filter(|&&s| self.plan.sessions[s as usize].issued < t) {
            self.active.push(s);
            self.first_use.push_back(s);
            self.next_session += 1;
        }
    }

    fn slot(&mut self, t: EpochMillis) -> Result<(), GenError> {
        while let Some(s) = self.first_use.pop_front() {
            if self.plan.sessions[s as usize].active_until >= t {
                // First uses come quickly: they often beat their issuing event to the bucket.
                let d = self.rng.between(60, 180) * 1000;
                return self.usage(s, t, d);
            }
        }
        if !self.rng.chance(self.session_share) {
            return self.background(t);
        }
        let sessions = &self.plan.sessions;
        let total: f64 = self.active.iter().map(|&s| &sessions[s as usize]).filter(|s| s.active_until >= t).map(|s| s.rate).sum();
        if total > 0.0 {
            let mut x = self.rng.unit() * total;
            let mut chosen = None;
            for &s in &self.active {
                let session = &sessions[s as usize];
                if session.active_until < t {
                    continue;
                }
                chosen = Some(s);
                if x < session.rate {
                    break;
                }
                x -= session.rate;
            }
            if let Some(s) = chosen {
                let d = delay(&mut self.rng, false);
                return self.usage(s, t, d);
            }
        }
        // No session is active at this instant but some are in this slice:
        // the record moves to a moment one of them is active.
        let weights: Vec<f64> = self.candidates.iter().map(|c| c.1).collect();
        if weights.iter().sum::<f64>() > 0.0 {
            let (i, _) = self.candidates[self.rng.weighted(&weights)];
            let s = &sessions[i as usize];
            let (from, to) = self.slice;
            let (lo, hi) = ((s.issued + 1000).max(from), s.active_until.min(to - 1000));
            if lo <= hi {
                let moved = self.rng.between(lo / 1000, hi / 1000) * 1000;
                let d = delay(&mut self.rng, false);
                return self.usage(i, moved, d);
            }
        }
        self.background(t)
    }

    fn region_index(&self, region: &str) -> usize {
        self.org.accounts[self.account].region_index(region).unwrap_or(0)
    }

    fn some_region(&mut self) -> &'static str {
        let a = &self.org.accounts[self.account];
        a.regions[self.rng.weighted(&a.region_weights)]
    }

    fn call_region(&mut self, api: &Api, fixed: Option<&'static str>) -> &'static str {
        if api.global {
            "us-east-1"
        } else {
            fixed.unwrap_or_else(|| self.some_region())
        }
    }

    fn usage(&mut self, i: u32, t: EpochMillis, d: i64) -> Result<(), GenError> {
        let (org, plan) = (self.org, self.plan);
        let s = &plan.sessions[i as usize];
        let rng = &mut self.rng;
        let (mix, denied, via): (Mix, f64, Option<&str>) = match s.actor {
            Actor::Human { .. } => (catalog::HUMAN, 0.03, None),
            Actor::Terraform => (catalog::TERRAFORM, 0.01, None),
            Actor::Ci if rng.chance(0.15) => (catalog::CLOUDFORMATION, 0.01, Some("cloudformation.amazonaws.com")),
            Actor::Ci => (catalog::CI, 0.01, None),
            Actor::Instance => (catalog::INSTANCE, 0.002, None),
            Actor::Scanner => (catalog::SCANNER, 0.02, None),
            Actor::Config => (catalog::CONFIG, 0.002, Some("config.amazonaws.com")),
        };
        let mut api = catalog::pick(rng, mix);
        let read_only_role = s.role.is_some_and(|r| {
            matches!(
                org.roles[r].kind,
                RoleKind::ReadOnly | RoleKind::SecurityAudit | RoleKind::Sso(PermissionSet::ReadOnly) | RoleKind::Sso(PermissionSet::Billing)
            )
        });
        let failure = if !api.read_only && read_only_role {
            Some(Failure::Denied)
        } else if api.name == "GetBucketPolicy" && rng.chance(0.25) {
            Some(Failure::NoSuchBucketPolicy)
        } else if rng.chance(denied) {
            Some(Failure::Denied)
        } else if api.read_only && rng.chance(0.006) {
            Some(Failure::Throttled)
        } else {
            None
        };
        let failure = if failure == Some(Failure::Denied) && !self.denied.take(&s.arn, t) {
            // This caller has failed enough for these five minutes: it reads instead.
            if !api.read_only {
                api = catalog::pick_read(rng, mix);
            }
            None
        } else {
            failure
        };
        let (ip, ua): (&str, &str) = match via {
            Some(service) => (service, service),
            None if s.console && rng.chance(0.35) => ("AWS Internal", "AWS Internal"),
            None => (&s.ip, &s.ua),
        };
        let region = self.call_region(api, s.use_region);
        let instance = (s.actor == Actor::Instance).then_some(s.name.as_str());
        let vpc_endpoint = (instance.is_some() && !api.global).then_some(org.accounts[self.account].vpc_endpoint.as_str());
        let call = Call {
            api,
            time: t,
            region,
            account: self.account,
            ip,
            ua,
            arn: &s.arn,
            via_service: via.is_some(),
            failure,
            console: s.console,
            vpc_endpoint,
            instance,
            event_id: None,
        };
        let r = self.region_index(region);
        let buf = self.delivery.begin(&mut self.rng, r, t, d);
        records::api_call(buf, &mut self.rng, org, &call, |out| identity::session(out, org, s, via));
        self.delivery.commit(&mut self.rng)
    }

    fn background(&mut self, t: EpochMillis) -> Result<(), GenError> {
        let org = self.org;
        let sources = &self.plan.accounts[self.account].background;
        let rhythm = human_rhythm(t);
        let weights: Vec<f64> = sources.iter().map(|b| b.rate * if b.human { rhythm } else { 1.0 }).collect();
        let pick = sources[self.rng.weighted(&weights)].what;
        let d = delay(&mut self.rng, false);
        match pick {
            Background::UserCall(u) => {
                let user = &org.users[u];
                let mix = if user.job == UserJob::Human { catalog::HUMAN } else { catalog::MACHINE };
                let api = catalog::pick(&mut self.rng, mix);
                let failure = (self.rng.chance(0.02) && self.denied.take(&user.arn, t)).then_some(Failure::Denied);
                let region = self.call_region(api, None);
                let call = Call {
                    api,
                    time: t,
                    region,
                    account: self.account,
                    ip: &user.ip,
                    ua: &user.ua,
                    arn: &user.arn,
                    via_service: false,
                    failure,
                    console: false,
                    vpc_endpoint: None,
                    instance: None,
                    event_id: None,
                };
                let r = self.region_index(region);
                let buf = self.delivery.begin(&mut self.rng, r, t, d);
                records::api_call(buf, &mut self.rng, org, &call, |out| identity::iam_user(out, org, user, &user.key));
            }
            Background::Login(u) => {
                // Only users with an MFA device sign in (see `plan::background`), always with it.
                let user = &org.users[u];
                let ua = user.person.map_or("Mozilla/5.0", |p| org.people[p].browser_ua);
                let login = Login { who: SignIn::User(user), time: t, success: true, mfa: user.mfa, ip: &user.ip, ua, event_id: None };
                let r = self.region_index("us-east-1");
                let buf = self.delivery.begin(&mut self.rng, r, t, d);
                records::console_login(buf, &mut self.rng, org, &login);
            }
            Background::Service(kind) => {
                let region = if kind == ServiceEvent::BucketAclCheck { "us-east-1" } else { self.some_region() };
                let r = self.region_index(region);
                let buf = self.delivery.begin(&mut self.rng, r, t, d);
                records::service_event(buf, &mut self.rng, org, self.account, region, t, kind);
            }
        }
        self.delivery.commit(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_caller_fails_more_than_ten_times_in_five_minutes() {
        let mut budget = DeniedBudget::default();
        let mut rng = Rng::new(5, 5);
        let t0 = 1_793_491_200_000;
        let mut granted: Vec<(i64, &str)> = Vec::new();
        // Out of order, bursty, two callers, over an hour.
        for _ in 0..5_000 {
            let t = t0 + rng.between(0, 3_600) * 1000;
            let arn = *rng.pick(&["arn:a", "arn:b"]);
            if budget.take(arn, t) {
                granted.push((t, arn));
            }
        }
        assert!(granted.len() > 100);
        for &(start, arn) in &granted {
            let within = granted.iter().filter(|(t, a)| *a == arn && (start..=start + SLICE).contains(t)).count();
            assert!(within <= 10, "{within} failures of {arn} within 5 minutes of {start}");
        }
        budget.forget_before(t0 + 3_600_000);
        assert!(budget.buckets.len() <= 1);
    }
}
