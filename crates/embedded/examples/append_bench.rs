//! How fast `SqliteStore` appends history, and how fast it pages it back.
//!
//! ```text
//! cargo run --release -p trailwatch-embedded --example append_bench -- [events] [batch] [db path]
//! ```
//!
//! Defaults: 1,000,000 events in batches of 500, into a fresh database in a
//! temporary directory. Events are realistic records of about 1 KB (assumed
//! roles, several accounts and regions, random UUID event ids, times spread
//! over a day and slightly out of order, as log files deliver them). Only the
//! `append` calls are timed; building the events is not.

use std::time::{Duration, Instant};

use trailwatch_core::event::Event;
use trailwatch_core::ports::{HistoryQuery, HistoryStore};
use trailwatch_core::time::format_utc;
use trailwatch_embedded::SqliteStore;

const ACCOUNTS: usize = 40;
const REGIONS: [&str; 4] = ["us-east-1", "eu-west-1", "eu-central-1", "ap-southeast-2"];
const CALLS: [(&str, &str, bool); 6] = [
    ("ec2.amazonaws.com", "DescribeInstances", true),
    ("s3.amazonaws.com", "GetBucketPolicy", true),
    ("iam.amazonaws.com", "ListRoles", true),
    ("sts.amazonaws.com", "AssumeRole", false),
    ("kms.amazonaws.com", "Decrypt", true),
    ("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", false),
];

/// xorshift64*: varied ids and times without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xfff, b >> 52, b & 0xffff_ffff_ffff)
    }
}

fn event(rng: &mut Rng, i: u64) -> Event {
    let account = format!("{:012}", 111_122_220_000 + (rng.next() % ACCOUNTS as u64));
    let region = REGIONS[(rng.next() % REGIONS.len() as u64) as usize];
    let (source, name, read_only) = CALLS[(rng.next() % CALLS.len() as u64) as usize];
    // One event every ~86 ms over a day, delivered up to 5 minutes out of order.
    let time = 1_705_276_800_000 + (i as i64) * 86 - (rng.next() % 300_000) as i64;
    let id = rng.uuid();
    let request_id = rng.uuid();
    // Two callers in three are people through Identity Center; the rest are IAM users.
    let identity = if rng.next() % 3 < 2 {
        let key = format!("ASIA{:016X}", rng.next());
        format!(
            r#"{{"type":"AssumedRole","principalId":"AROAEXAMPLEROLEID:alice@example.com","arn":"arn:aws:sts::{account}:assumed-role/AWSReservedSSO_AdministratorAccess_0123456789abcdef/alice@example.com","accountId":"{account}","accessKeyId":"{key}","sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"AROAEXAMPLEROLEID","arn":"arn:aws:iam::{account}:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_AdministratorAccess_0123456789abcdef","accountId":"{account}","userName":"AWSReservedSSO_AdministratorAccess_0123456789abcdef"}},"attributes":{{"creationDate":"{created}","mfaAuthenticated":"false"}}}}}}"#,
            created = format_utc(time - 3_600_000),
        )
    } else {
        format!(
            r#"{{"type":"IAMUser","principalId":"AIDAEXAMPLEUSERID","arn":"arn:aws:iam::{account}:user/deploy-bot","accountId":"{account}","accessKeyId":"AKIA{:016X}","userName":"deploy-bot"}}"#,
            rng.next()
        )
    };
    let raw = format!(
        r#"{{"eventVersion":"1.09","userIdentity":{identity},"eventTime":"{time}","eventSource":"{source}","eventName":"{name}","awsRegion":"{region}","sourceIPAddress":"198.51.100.{ip}","userAgent":"aws-cli/2.15.10 Python/3.11.6 Darwin/23.2.0 exe/x86_64","requestParameters":{{"maxResults":1000}},"responseElements":null,"requestID":"{request_id}","eventID":"{id}","readOnly":{read_only},"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"{account}","eventCategory":"Management"}}"#,
        time = format_utc(time),
        ip = rng.next() % 250,
    );
    Event::from_record(0, raw.as_bytes(), &account).expect("generated records are valid")
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

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut appending, mut inserted, mut raw_bytes, mut i) = (Duration::ZERO, 0, 0u64, 0);
    let mut next_report = total / 10;
    while i < total {
        let n = batch.min(total - i);
        let events: Vec<Event> = (i..i + n).map(|j| event(&mut rng, j)).collect();
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
}
