//! `trailwatch onboarding --aws` against the moto emulator: an organization
//! with accounts in Organizations, log files in the trail bucket for some of
//! them, a closed account, an account that delivers but is not in the
//! organization, and a silent account whose member-account read role shows
//! a trail that is not logging. moto's STS lets any role be assumed (it does
//! not check that the role exists or trusts the caller), so the "role could
//! not be assumed" path is covered by unit tests, not here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output};

use serde_json::Value;

use trailwatch_aws::clients::Clients;
use trailwatch_aws::moto::{Moto, REGION};
use trailwatch_core::time::{civil_from_days, format_utc};

const BUCKET: &str = "org-trail-onboarding";
const STRANGER: &str = "987698769876";
const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn trailwatch(moto: &Moto) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trailwatch"));
    cmd.env("TRAILWATCH_LOG", "warn")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TRAILWATCH_AWS_ENDPOINT_URL", moto.endpoint())
        .env("TRAILWATCH_TRAIL_BUCKET", BUCKET)
        .env_remove("TRAILWATCH_DATA")
        .env_remove("TRAILWATCH_ACCOUNTS");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn report_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr)))
}

fn account<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["accounts"].as_array().unwrap().iter().find(|a| a["account_id"] == id).unwrap_or_else(|| panic!("{id} missing: {report:#}"))
}

/// A log file of `account` in `region`, named for `at`, with the organization-trail layout.
async fn deliver(clients: &Clients, org: &str, account: &str, region: &str, at: i64) -> i64 {
    let at = at - at % 60_000; // CloudTrail names files to the minute
    let (y, m, d) = civil_from_days(at.div_euclid(DAY_MS));
    let stamp: String = format_utc(at).chars().filter(|c| c.is_ascii_digit() || *c == 'T').take(13).collect();
    let key = format!("AWSLogs/{org}/{account}/CloudTrail/{region}/{y:04}/{m:02}/{d:02}/{account}_CloudTrail_{region}_{stamp}Z_Q1w2E3r4T5y6U7i8.json.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(br#"{"Records":[]}"#).unwrap();
    clients.s3.put_object().bucket(BUCKET).key(key).body(gz.finish().unwrap().into()).send().await.unwrap();
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_compares_organizations_with_the_trail_bucket() {
    let moto = Moto::start().unwrap();
    let clients = Clients::connect(&moto.settings()).await.unwrap();
    let now = now_ms();

    use aws_sdk_organizations::types::OrganizationFeatureSet;
    let org = clients.organizations.create_organization().feature_set(OrganizationFeatureSet::All).send().await.unwrap().organization.unwrap();
    let (org_id, management) = (org.id.unwrap(), org.master_account_id.unwrap());
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    for name in ["Acme Delivering", "Acme Quiet", "Acme Never", "Acme Closed"] {
        let created = clients
            .organizations
            .create_account()
            .account_name(name)
            .email(format!("{}@acme.example", name.to_lowercase().replace(' ', "-")))
            .send()
            .await
            .unwrap();
        ids.insert(name, created.create_account_status.unwrap().account_id.unwrap());
    }
    let (delivering, quiet, never, closed) = (&ids["Acme Delivering"], &ids["Acme Quiet"], &ids["Acme Never"], &ids["Acme Closed"]);
    clients.organizations.close_account().account_id(closed).send().await.unwrap();

    // The trail bucket: today's files for the management and delivering accounts (two regions),
    // five-day-old ones for the quiet account, old ones for the closed one, and a stranger's.
    clients.s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    deliver(&clients, &org_id, &management, "us-east-1", now - 20 * 60_000).await;
    deliver(&clients, &org_id, delivering, "us-east-1", now - 7 * 60_000).await;
    deliver(&clients, &org_id, delivering, "eu-west-1", now - 3 * 3_600_000).await;
    deliver(&clients, &org_id, quiet, "us-east-1", now - 6 * DAY_MS).await;
    let quiet_last = deliver(&clients, &org_id, quiet, "us-east-1", now - 5 * DAY_MS).await;
    deliver(&clients, &org_id, closed, "us-east-1", now - 40 * DAY_MS).await;
    deliver(&clients, &org_id, STRANGER, "us-east-1", now - 30 * 60_000).await;

    // The quiet account, as itself: an alias, and its trail, created but never started.
    let assumed = clients
        .sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{quiet}:role/setup"))
        .role_session_name("test-setup")
        .send()
        .await
        .unwrap()
        .credentials
        .unwrap();
    let creds = aws_sdk_cloudtrail::config::Credentials::new(assumed.access_key_id, assumed.secret_access_key, Some(assumed.session_token), None, "test");
    let iam = aws_sdk_iam::Client::from_conf(aws_sdk_iam::config::Builder::from(&clients.config).credentials_provider(creds.clone()).build());
    iam.create_account_alias().account_alias("acme-quiet").send().await.unwrap();
    let cloudtrail = aws_sdk_cloudtrail::Client::from_conf(aws_sdk_cloudtrail::config::Builder::from(&clients.config).credentials_provider(creds).build());
    cloudtrail.create_trail().name("acme-quiet-trail").s3_bucket_name(BUCKET).is_multi_region_trail(true).send().await.unwrap();

    let mut cmd = trailwatch(&moto);
    cmd.args(["onboarding", "--aws", "--json", "--member-role-name", "--member-external-id", "acme-external-id"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "silent accounts fail the check:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("AWS requests") && text(&out.stderr).contains("ListObjectsV2"), "{}", text(&out.stderr));
    let report = report_of(&out);
    let status = |id: &str| account(&report, id)["status"].as_str().unwrap().to_owned();
    assert_eq!(status(&management), "ONBOARDED");
    assert_eq!(status(delivering), "ONBOARDED");
    assert_eq!(status(quiet), "SILENT");
    assert_eq!(status(never), "NEVER_DELIVERED");
    assert_eq!(status(closed), "SUSPENDED");
    assert_eq!(status(STRANGER), "UNKNOWN_ACCOUNT");
    assert_eq!(report["counts"]["accounts"], 6);
    assert_eq!(report["regions"], serde_json::json!(["eu-west-1", "us-east-1"]));

    let d = account(&report, delivering);
    assert_eq!(d["name"], "Acme Delivering", "named as Organizations names it");
    assert_eq!(d["regions"].as_array().unwrap().len(), 2);
    assert!(d.get("member").is_none(), "only failing accounts are checked through the member role");

    // The quiet account: its newest file found below the window's days, and why it is silent.
    let q = account(&report, quiet);
    assert_eq!(q["last_delivery"], format_utc(quiet_last));
    assert_eq!(q["silent_regions"], serde_json::json!(["us-east-1"]));
    let member = &q["member"];
    assert_eq!(member["role_arn"], format!("arn:aws:iam::{quiet}:role/trailwatch-member-read"));
    assert_eq!(member["role"]["outcome"], "assumed");
    assert_eq!(member["alias"], "acme-quiet");
    assert_eq!(member["trails"][0]["name"], "acme-quiet-trail");
    assert_eq!(member["trails"][0]["logging"], false);
    assert_eq!(member["trails"][0]["multi_region"], true);

    let n = account(&report, never);
    assert_eq!(n["member"]["role"]["outcome"], "assumed");
    assert_eq!(n["member"]["trails"], serde_json::json!([]));
    assert!(n["reason"].as_str().unwrap().starts_with("no log file from any region; joined the organization"), "{n}");
    assert!(account(&report, closed)["reason"].as_str().unwrap().starts_with("Organizations status SUSPENDED"));

    // The table says why in words.
    let mut cmd = trailwatch(&moto);
    cmd.args(["onboarding", "--aws", "--member-role-name", "trailwatch-member-read", "--member-external-id", "acme-external-id"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let table = text(&out.stdout);
    let quiet_line = table.lines().find(|l| l.starts_with(quiet.as_str())).unwrap_or_else(|| panic!("{table}"));
    assert!(quiet_line.contains("Acme Quiet") && quiet_line.contains("SILENT"), "{quiet_line}");
    assert!(quiet_line.contains("IAM alias acme-quiet") && quiet_line.contains("trail acme-quiet-trail (multi-region) NOT logging"), "{quiet_line}");
    let never_line = table.lines().find(|l| l.starts_with(never.as_str())).unwrap();
    assert!(never_line.contains("no trail covers the account"), "{never_line}");

    // Once the quiet and the new account deliver, every active account is fine: exit 0.
    deliver(&clients, &org_id, quiet, "us-east-1", now - 60_000).await;
    deliver(&clients, &org_id, never, "us-east-1", now - 60_000).await;
    let mut cmd = trailwatch(&moto);
    cmd.args(["onboarding", "--aws", "--json"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let report = report_of(&out);
    assert_eq!(report["all_delivering"], true);
    assert_eq!(account(&report, quiet)["status"], "ONBOARDED");
}
