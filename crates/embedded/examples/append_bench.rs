//! How fast `SqliteStore` appends history, pages it back, and finds single
//! events and issuing events in it.
//!
//! ```text
//! cargo run --release -p trailwatch-embedded --example append_bench -- [events] [batch] [db path]
//! ```
//!
//! Defaults: 1,000,000 events in batches of 500, into a fresh database in a
//! temporary directory. Events are realistic records of about 1 KB (assumed
//! roles, several accounts and regions, random UUID event ids, times spread
//! over a day and slightly out of order, as log files deliver them), 3 in 100
//! of them credential-issuing `AssumeRole` calls. Two in three are made by
//! 300 people through hour-long Identity Center sessions, the rest by an IAM
//! user per account; nearly all carry the origin the enricher would write
//! (the person one or two hops away, or the IAM user), shared by the events
//! of a session as in a trail. Only the store calls are timed; building the
//! events is not.

use std::time::{Duration, Instant};

use trailwatch_core::event::Event;
use trailwatch_core::identity::{Confidence, Hop, IssueKind, Origin, OriginKind, SessionArchive};
use trailwatch_core::ports::{HistoryQuery, HistoryStore};
use trailwatch_core::time::format_utc;
use trailwatch_embedded::SqliteStore;

const ACCOUNTS: u64 = 40;
const PEOPLE: u64 = 300;
const REGIONS: [&str; 4] = ["us-east-1", "eu-west-1", "eu-central-1", "ap-southeast-2"];
const CALLS: [(&str, &str, bool); 6] = [
    ("ec2.amazonaws.com", "DescribeInstances", true),
    ("s3.amazonaws.com", "GetBucketPolicy", true),
    ("iam.amazonaws.com", "ListRoles", true),
    ("logs.amazonaws.com", "PutRetentionPolicy", false),
    ("kms.amazonaws.com", "Decrypt", true),
    ("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", false),
];
const SSO_ROLE: &str = "AWSReservedSSO_AdministratorAccess_0123456789abcdef";
const IDENTITY_STORE: &str = "arn:aws:identitystore::111122220000:identitystore/d-9067642ac7";

/// xorshift64*: varied ids and times without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xfff, b >> 52, b & 0xffff_ffff_ffff)
    }

    fn key(&mut self, prefix: &str) -> String {
        format!("{prefix}{:016X}", self.next())
    }
}

/// A person's current Identity Center session: its key, account and origin.
struct SsoSession {
    key: String,
    account: String,
    origin: Option<Origin>,
    until: i64,
}

/// What the generator keeps between events: each person's session, renewed
/// every hour, so that the events of a session share its actor and origin
/// as they do in a trail.
struct Generator {
    rng: Rng,
    sessions: Vec<Option<SsoSession>>,
    /// (access key, time) of the issuing events generated.
    issued: Vec<(String, i64)>,
}

/// The origin the enricher would have written for a session: an Identity
/// Center user one hop (the sign-in) or two (then a role) away, or, one
/// session in ten, none yet.
fn sso_origin(rng: &mut Rng, person: u64, account: &str, time: i64) -> Option<Origin> {
    if rng.below(10) == 0 {
        return None;
    }
    let hop = |rng: &mut Rng, role: &str, kind: IssueKind, back: i64| Hop {
        event_id: rng.uuid(),
        account_id: account.to_owned(),
        role_arn: Some(format!("arn:aws:iam::{account}:role/{role}")),
        session_name: Some(format!("person{person}@example.com")),
        access_key_id: rng.key("ASIA"),
        kind,
        time: time - back,
    };
    let mut chain = vec![hop(rng, SSO_ROLE, IssueKind::IdentityCenter, 60_000)];
    if rng.below(4) == 0 {
        chain.push(hop(rng, "Deployer", IssueKind::AssumeRole, 30_000));
    }
    Some(Origin {
        kind: OriginKind::IdentityCenterUser,
        principal: Some(format!("906712345f-{person:08x}-4c1d-8e2f-3a4b5c6d7e8f")),
        account_id: Some("111122220000".into()),
        provider: Some(IDENTITY_STORE.into()),
        source_identity: None,
        chain,
        confidence: Confidence::Exact,
        reason: None,
    })
}

fn iam_origin(account: &str) -> Origin {
    Origin {
        kind: OriginKind::IamUser,
        principal: Some(format!("arn:aws:iam::{account}:user/deploy-bot")),
        account_id: Some(account.to_owned()),
        provider: None,
        source_identity: None,
        chain: Vec::new(),
        confidence: Confidence::Exact,
        reason: None,
    }
}

impl Generator {
    fn new() -> Self {
        Generator { rng: Rng(0x9e37_79b9_7f4a_7c15), sessions: (0..PEOPLE).map(|_| None).collect(), issued: Vec::new() }
    }

    /// Event number `i`.
    fn event(&mut self, i: u64) -> Event {
        let rng = &mut self.rng;
        let region = REGIONS[rng.below(REGIONS.len() as u64) as usize];
        // One event every ~86 ms over a day, delivered up to 5 minutes out of order.
        let time = 1_705_276_800_000 + (i as i64) * 86 - rng.below(300_000) as i64;
        let id = rng.uuid();
        let request_id = rng.uuid();
        let person = rng.below(PEOPLE);
        // Two callers in three are people through Identity Center; the rest are IAM users.
        let (account, identity, origin) = if rng.below(3) < 2 {
            let slot = &mut self.sessions[person as usize];
            if slot.as_ref().is_none_or(|s| s.until < time) {
                let account = format!("{:012}", 111_122_220_000 + rng.below(ACCOUNTS));
                let origin = sso_origin(rng, person, &account, time);
                *slot = Some(SsoSession { key: rng.key("ASIA"), account, origin, until: time + 3_600_000 });
            }
            let Some(session) = slot.as_ref() else { unreachable!("just set") };
            let account = &session.account;
            let identity = format!(
                r#"{{"type":"AssumedRole","principalId":"AROAEXAMPLEROLEID:person{person}@example.com","arn":"arn:aws:sts::{account}:assumed-role/{SSO_ROLE}/person{person}@example.com","accountId":"{account}","accessKeyId":"{key}","sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"AROAEXAMPLEROLEID","arn":"arn:aws:iam::{account}:role/aws-reserved/sso.amazonaws.com/eu-west-1/{SSO_ROLE}","accountId":"{account}","userName":"{SSO_ROLE}"}},"attributes":{{"creationDate":"{created}","mfaAuthenticated":"false"}}}}}}"#,
                key = session.key,
                created = format_utc(session.until - 3_600_000),
            );
            (account.clone(), identity, session.origin.clone())
        } else {
            let account = format!("{:012}", 111_122_220_000 + rng.below(ACCOUNTS));
            let identity = format!(
                r#"{{"type":"IAMUser","principalId":"AIDAEXAMPLEUSERID","arn":"arn:aws:iam::{account}:user/deploy-bot","accountId":"{account}","accessKeyId":"AKIA{account}DPLY","userName":"deploy-bot"}}"#
            );
            let origin = iam_origin(&account);
            (account, identity, Some(origin))
        };
        let (source, name, read_only, request, response) = if rng.below(100) < 3 {
            let key = rng.key("ASIA");
            self.issued.push((key.clone(), time));
            let request = format!(r#"{{"roleArn":"arn:aws:iam::{account}:role/Deployer","roleSessionName":"person{person}"}}"#);
            let response = format!(
                r#"{{"credentials":{{"accessKeyId":"{key}","sessionToken":"IQoJb3JpZ2luX2VjEXAMPLETOKEN","expiration":"{}"}},"assumedRoleUser":{{"assumedRoleId":"AROADEPLOYERID:person{person}","arn":"arn:aws:sts::{account}:assumed-role/Deployer/person{person}"}}}}"#,
                format_utc(time + 3_600_000)
            );
            ("sts.amazonaws.com", "AssumeRole", true, request, response)
        } else {
            let (source, name, read_only) = CALLS[rng.below(CALLS.len() as u64) as usize];
            (source, name, read_only, r#"{"maxResults":1000}"#.to_owned(), "null".to_owned())
        };
        let raw = format!(
            r#"{{"eventVersion":"1.09","userIdentity":{identity},"eventTime":"{time}","eventSource":"{source}","eventName":"{name}","awsRegion":"{region}","sourceIPAddress":"198.51.100.{ip}","userAgent":"aws-cli/2.15.10 Python/3.11.6 Darwin/23.2.0 exe/x86_64","requestParameters":{request},"responseElements":{response},"requestID":"{request_id}","eventID":"{id}","readOnly":{read_only},"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"{account}","eventCategory":"Management"}}"#,
            time = format_utc(time),
            ip = rng.below(250),
        );
        let mut event = Event::from_record(0, raw.as_bytes(), &account).expect("generated records are valid");
        event.origin = origin;
        event
    }
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let batch: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500).max(1);
    let temp = tempfile::tempdir().expect("temporary directory");
    let path = args.next().map_or_else(|| temp.path().join("trailwatch.db"), Into::into);
    let store = SqliteStore::open(&path).expect("open the database");
    println!("appending {total} events in batches of {batch} to {}", path.display());

    let mut generator = Generator::new();
    let (mut appending, mut inserted, mut raw_bytes, mut i) = (Duration::ZERO, 0, 0u64, 0);
    let mut sample = Vec::new();
    let mut next_report = total / 10;
    while i < total {
        let n = batch.min(total - i);
        let events: Vec<Event> = (i..i + n).map(|j| generator.event(j)).collect();
        if let Some(e) = events.first() {
            sample.push((e.account_id.clone(), e.event_id.clone()));
        }
        raw_bytes += events.iter().map(|e| e.raw.len() as u64).sum::<u64>();
        let started = Instant::now();
        inserted += store.append(events.into()).await.expect("append").inserted;
        appending += started.elapsed();
        i += n;
        if i >= next_report {
            println!("  {i:>9} events: {:>9.0} events/s so far", rate(inserted, appending));
            next_report += total / 10;
        }
    }
    let stats = store.stats().expect("stats");
    println!(
        "appended {inserted} events ({:.0} B average) in {:.2} s: {:.0} events/s, {:.1} MB/s of records; database {:.0} MB",
        raw_bytes as f64 / total.max(1) as f64,
        appending.as_secs_f64(),
        rate(inserted, appending),
        raw_bytes as f64 / 1e6 / appending.as_secs_f64().max(1e-9),
        stats.file_bytes as f64 / 1e6,
    );

    let started = Instant::now();
    let (mut query, mut read) = (HistoryQuery { limit: 1000, ..Default::default() }, 0u64);
    loop {
        let page = store.page(&query).await.expect("page");
        read += page.events.len() as u64;
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let elapsed = started.elapsed();
    println!("paged back {read} events (pages of 1000) in {:.2} s: {:.0} events/s", elapsed.as_secs_f64(), rate(read, elapsed));

    let started = Instant::now();
    for (account, id) in &sample {
        assert!(store.get(account, id).await.expect("get").is_some(), "a stored event is found");
    }
    let elapsed = started.elapsed();
    println!("got {} events by id (one per batch, oldest first) in {:.2} s: {:.0} µs each", sample.len(), elapsed.as_secs_f64(), micros(elapsed, sample.len()));

    let started = Instant::now();
    let step = (generator.issued.len() / 1000).max(1);
    let mut found = 0;
    for (key, time) in generator.issued.iter().step_by(step) {
        found += usize::from(store.find(key, time + 600_000).await.expect("find").is_some());
    }
    let elapsed = started.elapsed();
    println!("found {found} issuing events by key in {:.2} s: {:.0} µs each", elapsed.as_secs_f64(), micros(elapsed, found));
}

fn micros(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / n.max(1) as f64
}
