//! The model, the borrowed view, event validation and the streaming reader,
//! held to the checked-in CloudTrail fixtures (`fixtures/` at the repository
//! root; `fixtures/README.md` says what each file is for) and to a real
//! exported trail (`shared/data/real/`, beside the repository).

// The helpers below are test code too: a fixture that does not read is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use trailwatch_core::event::Event;
use trailwatch_core::layout::{classify, ObjectKind};
use trailwatch_core::model::{IdentityType, LogFile, Record};
use trailwatch_core::reader::{decode, ReadError, RecordReader, Shape};
use trailwatch_core::time::{parse_utc, EpochMillis};
use trailwatch_core::view::RecordView;

// ------------------------------------------------------------------ finding files

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn fixture(rel: &str) -> PathBuf {
    fixtures_dir().join(rel)
}

/// `shared/data` sits beside the repository (`/work/shared` next to
/// `/work/main`, and the same in CI). Missing data is a failure, not a skip.
fn shared_data(rel: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(dir.is_dir(), "the shared test data directory {} is missing: clone or copy `shared/` beside the repository", dir.display());
    let path = dir.join(rel);
    assert!(path.is_file(), "the shared data file {} is missing", path.display());
    path
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every fixture that is a CloudTrail log file: `records/*.json` and the
/// gzipped files under `usage-before-issue/`.
fn log_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(&fixture("records"), &mut files);
    files_under(&fixture("usage-before-issue"), &mut files);
    files.sort();
    let names: BTreeSet<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for scenario in SCENARIOS {
        assert!(names.contains(*scenario), "fixture {scenario} is missing");
    }
    assert_eq!(files.len(), SCENARIOS.len() + 2, "every log fixture is covered: {names:?}");
    files
}

const SCENARIOS: &[&str] = &[
    "iam-user-to-role.json",
    "role-chain-three-accounts.json",
    "identity-center-permission-set.json",
    "saml-federation.json",
    "web-identity-ci.json",
    "federation-token.json",
    "session-token-then-role.json",
    "ec2-instance-profile.json",
    "reused-access-key.json",
    "root-and-console.json",
    "failed-assume-role.json",
    "every-identity-type.json",
];

const USAGE_FILE: &str = "usage-before-issue/AWSLogs/o-7q3k9x2m1p/629384751068/CloudTrail/eu-west-1/2024/03/12/629384751068_CloudTrail_eu-west-1_20240312T1010Z_b3NcY8fJq1VsD6aE.json.gz";
const ISSUING_FILE: &str = "usage-before-issue/AWSLogs/o-7q3k9x2m1p/629384751068/CloudTrail/us-east-1/2024/03/12/629384751068_CloudTrail_us-east-1_20240312T1020Z_Hq7vR2mXk9LpT4wZ.json.gz";

// ------------------------------------------------------------------ reading

/// The bytes of a file, gunzipped when gzipped.
fn decompressed(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    decode(File::open(path).unwrap()).unwrap().read_to_end(&mut out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    out
}

/// What the streaming reader made of a file.
struct Streamed {
    records: Vec<Vec<u8>>,
    error: Option<ReadError>,
    shape: Option<Shape>,
}

fn stream(path: &Path) -> Streamed {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = RecordReader::new(decode(file).unwrap());
    let mut records = Vec::new();
    let error = loop {
        match reader.next_record() {
            Ok(Some(record)) => {
                assert_eq!(record.index, records.len());
                records.push(record.bytes.to_vec());
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    Streamed { records, error, shape: reader.shape() }
}

/// The records of a fixture log file, as JSON values.
fn records_of(rel: &str) -> Vec<Value> {
    let value: Value = serde_json::from_slice(&decompressed(&fixture(rel))).unwrap();
    value["Records"].as_array().unwrap().clone()
}

fn scenario(name: &str) -> Vec<Value> {
    records_of(&format!("records/{name}"))
}

fn bytes(record: &Value) -> Vec<u8> {
    serde_json::to_vec(record).unwrap()
}

fn text<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn time(text: &str) -> EpochMillis {
    parse_utc(text).unwrap()
}

/// STS writes `credentials.expiration` as `Mar 12, 2024, 10:14:27 AM` (and,
/// in older records, without the comma after the year).
fn sts_expiration(text: &str) -> EpochMillis {
    let parts: Vec<&str> = text.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let [month, day, year, clock, half] = parts[..] else { panic!("expiration {text:?}") };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].iter().position(|m| *m == month).unwrap() + 1;
    let (hour, rest) = clock.split_once(':').unwrap();
    let hour: u32 = hour.parse().unwrap();
    let hour = match half {
        "AM" => hour % 12,
        "PM" => hour % 12 + 12,
        _ => panic!("expiration {text:?}"),
    };
    let day: u32 = day.parse().unwrap();
    time(&format!("{year}-{month:02}-{day:02}T{hour:02}:{rest}Z"))
}

// ------------------------------------------------------------------ the model

#[test]
fn every_log_file_round_trips_through_the_model() {
    for path in log_files() {
        let raw = decompressed(&path);
        let original: Value = serde_json::from_slice(&raw).unwrap();
        let file: LogFile = serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(serde_json::to_value(&file).unwrap(), original, "{} written back differs", path.display());
        for (i, record) in original["Records"].as_array().unwrap().iter().enumerate() {
            let parsed: Record = serde_json::from_value(record.clone()).unwrap();
            assert_eq!(&serde_json::to_value(&parsed).unwrap(), record, "{} record {i} written back differs", path.display());
        }
    }
}

/// The model names every field CloudTrail writes in these stories; only the
/// deliberately unknown fields of `every-identity-type.json` land in `extra`.
#[test]
fn the_model_names_the_fields_cloudtrail_writes() {
    for path in log_files() {
        let file: LogFile = serde_json::from_slice(&decompressed(&path)).unwrap();
        let special = path.ends_with("every-identity-type.json");
        for (i, record) in file.records.iter().enumerate() {
            let mut unknown: Vec<String> = record.extra.keys().cloned().collect();
            if let Some(identity) = record.user_identity.as_ref() {
                unknown.extend(identity.extra.keys().map(|k| format!("userIdentity.{k}")));
                if let Some(context) = identity.session_context.as_ref() {
                    unknown.extend(context.extra.keys().map(|k| format!("sessionContext.{k}")));
                    if let Some(issuer) = context.session_issuer.as_ref() {
                        unknown.extend(issuer.extra.keys().map(|k| format!("sessionIssuer.{k}")));
                    }
                }
            }
            if let Some(tls) = record.tls_details.as_ref() {
                unknown.extend(tls.extra.keys().map(|k| format!("tlsDetails.{k}")));
            }
            let expected: Vec<&str> = if special && i == 0 { vec!["eventContext", "requestRegionGroup", "userIdentity.credentialScope"] } else { vec![] };
            assert_eq!(unknown, expected, "{} record {i}", path.display());
        }
    }
    // The unknown fields keep their values, the explicit null included.
    let file: LogFile = serde_json::from_slice(&decompressed(&fixture("records/every-identity-type.json"))).unwrap();
    let first = &file.records[0];
    assert_eq!(first.extra["requestRegionGroup"], Value::Null);
    assert_eq!(first.extra["eventContext"]["tagContext"], serde_json::json!({"resourceTags": []}));
    assert_eq!(first.user_identity.as_ref().unwrap().extra["credentialScope"], "console");
}

#[test]
fn identity_types_parse_and_unknown_ones_are_kept() {
    let known = [
        ("Root", IdentityType::Root),
        ("IAMUser", IdentityType::IamUser),
        ("AssumedRole", IdentityType::AssumedRole),
        ("Role", IdentityType::Role),
        ("FederatedUser", IdentityType::FederatedUser),
        ("Directory", IdentityType::Directory),
        ("AWSAccount", IdentityType::AwsAccount),
        ("AWSService", IdentityType::AwsService),
        ("IdentityCenterUser", IdentityType::IdentityCenterUser),
        ("SAMLUser", IdentityType::SamlUser),
        ("WebIdentityUser", IdentityType::WebIdentityUser),
        ("Unknown", IdentityType::Unknown),
    ];
    for (text, kind) in &known {
        assert_eq!(&IdentityType::parse(text), kind);
        assert_eq!(kind.as_str(), *text);
    }
    let future = IdentityType::parse("AgentSession");
    assert_eq!(future, IdentityType::Other("AgentSession".into()));
    assert_eq!(future.as_str(), "AgentSession");
    // Inside a record, too: read and written back unchanged.
    let raw = serde_json::json!({"eventID": "e1", "userIdentity": {"type": "AgentSession", "principalId": "AROAEXAMPLEAGENT:run-1"}});
    let record: Record = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(record.user_identity.as_ref().unwrap().identity_type.as_ref(), Some(&future));
    assert_eq!(serde_json::to_value(&record).unwrap(), raw);

    // The fixture with one record of each type has them all, and nothing else.
    let mut types = BTreeSet::new();
    for path in log_files() {
        let file: LogFile = serde_json::from_slice(&decompressed(&path)).unwrap();
        for record in &file.records {
            if let Some(kind) = record.user_identity.as_ref().and_then(|i| i.identity_type.as_ref()) {
                assert!(!matches!(kind, IdentityType::Other(_)), "{}: unexpected type {kind:?}", path.display());
                if path.ends_with("every-identity-type.json") {
                    types.insert(kind.as_str().to_owned());
                }
            }
        }
    }
    let wanted: BTreeSet<String> =
        ["Root", "IAMUser", "AssumedRole", "FederatedUser", "AWSAccount", "AWSService", "IdentityCenterUser", "SAMLUser", "WebIdentityUser", "Unknown"]
            .map(String::from)
            .into();
    assert_eq!(types, wanted);
}

// ------------------------------------------------------------------ the reader and events

#[test]
fn the_reader_yields_exactly_the_records_of_each_file() {
    for path in log_files() {
        let streamed = stream(&path);
        assert!(streamed.error.is_none(), "{}: {}", path.display(), streamed.error.unwrap());
        assert_eq!(streamed.shape, Some(Shape::LogFile), "{}", path.display());
        let original: Value = serde_json::from_slice(&decompressed(&path)).unwrap();
        let expected = original["Records"].as_array().unwrap();
        let got: Vec<Value> = streamed.records.iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
        assert_eq!(&got, expected, "{}", path.display());
    }
}

#[test]
fn every_fixture_record_becomes_an_event() {
    for path in log_files() {
        for (index, raw) in stream(&path).records.iter().enumerate() {
            let record: Value = serde_json::from_slice(raw).unwrap();
            let where_ = format!("{} record {index}", path.display());
            let event = Event::from_record(index, raw, "000000000000").unwrap_or_else(|e| panic!("{where_}: {e}"));
            assert_eq!(event.event_id, record["eventID"].as_str().unwrap(), "{where_}");
            assert_eq!(event.account_id, record["recipientAccountId"].as_str().unwrap(), "{where_}");
            assert_eq!(event.event_time, time(record["eventTime"].as_str().unwrap()), "{where_}");
            assert_eq!(event.region, record["awsRegion"].as_str().unwrap(), "{where_}");
            let (source, name) = match record.get("insightDetails") {
                Some(insight) => (&insight["eventSource"], &insight["eventName"]),
                None => (&record["eventSource"], &record["eventName"]),
            };
            assert_eq!((Some(event.event_source.as_str()), Some(event.event_name.as_str())), (source.as_str(), name.as_str()), "{where_}");
            assert_eq!(
                event.identity_type(),
                text(&record, "/userIdentity/type").or_else(|| record.pointer("/userIdentity").filter(|u| u.is_object()).map(|_| "Unknown")),
                "{where_}"
            );
            assert_eq!(event.actor_arn(), text(&record, "/userIdentity/arn").filter(|a| !a.is_empty()), "{where_}");
            assert_eq!(event.access_key_id(), text(&record, "/userIdentity/accessKeyId").filter(|k| !k.is_empty()), "{where_}");
            assert_eq!(event.source_ip.as_deref(), text(&record, "/sourceIPAddress"), "{where_}");
            assert_eq!(event.error_code.as_deref(), text(&record, "/errorCode"), "{where_}");
            assert_eq!(event.read_only, record.get("readOnly").and_then(Value::as_bool), "{where_}");
            assert_eq!(event.raw.as_bytes(), &raw[..], "{where_}: the original bytes are kept");
        }
    }
}

#[test]
fn an_insights_event_is_about_the_api_in_its_details() {
    let records = scenario("every-identity-type.json");
    let insight = records.iter().find(|r| r["eventType"] == "AwsCloudTrailInsight").unwrap();
    assert!(insight.get("userIdentity").is_none() && insight.get("eventSource").is_none());
    let event = Event::from_record(0, &bytes(insight), "963852741036").unwrap();
    assert_eq!((event.event_source.as_str(), event.event_name.as_str()), ("ec2.amazonaws.com", "RunInstances"));
    assert_eq!((event.identity_type(), event.actor_arn(), event.account_id.as_str()), (None, None, "963852741036"));
}

// ------------------------------------------------------------------ what the view reads

fn view_of(record: &Value, check: impl FnOnce(&RecordView<'_>)) {
    let raw = bytes(record);
    let view = RecordView::parse(&raw).unwrap();
    check(&view);
}

#[test]
fn the_view_reads_who_called() {
    // An IAM user's role session.
    view_of(&scenario("iam-user-to-role.json")[2], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!(v.identity_type(), Some("AssumedRole"));
        assert_eq!(id.arn.as_deref(), Some("arn:aws:sts::508917263341:assumed-role/BillingReadOnly/maria.santos-cli"));
        assert_eq!(id.principal_id.as_deref(), Some("AROA53R2OVAM6EGWZE5Z6:maria.santos-cli"));
        assert_eq!(id.access_key_id.as_deref(), Some("ASIANWUMEAJF6VREM6US"));
        let context = id.session_context.as_ref().unwrap();
        let issuer = context.session_issuer.as_ref().unwrap();
        assert_eq!(issuer.issuer_type.as_deref(), Some("Role"));
        assert_eq!(issuer.arn.as_deref(), Some("arn:aws:iam::508917263341:role/BillingReadOnly"));
        assert_eq!(issuer.user_name.as_deref(), Some("BillingReadOnly"));
        let attributes = context.attributes.as_ref().unwrap();
        assert_eq!((attributes.creation_date.as_deref(), attributes.mfa_authenticated.as_deref()), (Some("2024-03-12T09:14:27Z"), Some("false")));
        assert_eq!(context.source_identity, None);
    });

    // The end of a three-account chain carries the source identity set at its start.
    view_of(&scenario("role-chain-three-accounts.json")[7], |v| {
        let context = v.user_identity.as_ref().unwrap().session_context.as_ref().unwrap();
        assert_eq!(context.source_identity.as_deref(), Some("devon.clarke"));
        assert_eq!(context.session_issuer.as_ref().unwrap().arn.as_deref(), Some("arn:aws:iam::852963741025:role/LedgerExportWriter"));
        assert_eq!(v.event_category.as_deref(), Some("Data"));
    });

    // The role owner's copy of a cross-account AssumeRole names only the calling account and principal.
    let chain = scenario("role-chain-three-accounts.json");
    view_of(&chain[3], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!(v.identity_type(), Some("AWSAccount"));
        assert_eq!(id.principal_id.as_deref(), Some("AROAOXU43D2MPVBER3IGP:devon.clarke"));
        assert_eq!(id.account_id.as_deref(), Some("963852741036"));
        assert_eq!((id.arn.as_deref(), id.access_key_id.as_deref()), (None, None));
        assert_eq!(v.recipient_account_id.as_deref(), Some("741258963012"));
        assert_eq!(v.shared_event_id.as_deref(), text(&chain[2], "/sharedEventID"));
    });

    // Identity Center: the person behind the portal call.
    let sso = scenario("identity-center-permission-set.json");
    view_of(&sso[3], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!(v.identity_type(), Some("IdentityCenterUser"));
        let on_behalf_of = id.on_behalf_of.as_ref().unwrap();
        assert_eq!(on_behalf_of.user_id.as_deref(), Some("a4e8c4d8-7031-70be-91f3-5c2d7e8b9a10"));
        assert_eq!(on_behalf_of.identity_store_arn.as_deref(), Some("arn:aws:identitystore::318246550911:identitystore/d-93671c2a5e"));
        assert_eq!(id.credential_id.as_deref(), Some("AAAAAGXwZ0kX3Jq9aQ1Z2pVf8T0n4bRk7sLw2uHc6mYd0eNi5oPq1rS3tU_bXF3LW5ndXllbkBleGFtcGxlLmNvbQ"));
        assert_eq!(v.event_name.as_deref(), Some("GetRoleCredentials"));
    });
    view_of(&sso[0], |v| {
        assert_eq!(v.identity_type(), Some("Unknown"));
        assert_eq!(v.user_identity.as_ref().unwrap().user_name.as_deref(), Some("alice.nguyen@example.com"));
        assert_eq!(v.event_type.as_deref(), Some("AwsServiceEvent"));
    });
    view_of(&sso[4], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!(v.identity_type(), Some("SAMLUser"));
        assert_eq!(id.user_name.as_deref(), Some("alice.nguyen@example.com"));
        assert_eq!(id.identity_provider.as_deref(), Some("pXo3Hq9vT2mR8wLz5hN1cF7zYbA="));
    });
    view_of(&sso[5], |v| {
        let issuer = v.user_identity.as_ref().unwrap().session_context.as_ref().unwrap().session_issuer.as_ref().unwrap();
        assert_eq!(
            issuer.arn.as_deref(),
            Some("arn:aws:iam::741258963012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_PlatformAdmin_3f9c2a7b1d8e4f60")
        );
        let name = issuer.user_name.as_deref().unwrap();
        let (permission_set, suffix) = name.strip_prefix("AWSReservedSSO_").unwrap().rsplit_once('_').unwrap();
        assert_eq!(permission_set, "PlatformAdmin");
        assert!(suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
    });

    // GitHub Actions through OIDC.
    let ci = scenario("web-identity-ci.json");
    let provider = "arn:aws:iam::963852741036:oidc-provider/token.actions.githubusercontent.com";
    view_of(&ci[0], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!(v.identity_type(), Some("WebIdentityUser"));
        assert_eq!(id.user_name.as_deref(), Some("repo:acme/payments-api:ref:refs/heads/main"));
        assert_eq!(id.identity_provider.as_deref(), Some(provider));
    });
    view_of(&ci[2], |v| {
        let context = v.user_identity.as_ref().unwrap().session_context.as_ref().unwrap();
        assert_eq!(context.web_id_federation_data.as_ref().unwrap().federated_provider.as_deref(), Some(provider));
    });

    // An instance profile: issued by EC2, used inside through a VPC endpoint and outside from the internet.
    let ec2 = scenario("ec2-instance-profile.json");
    view_of(&ec2[0], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!(v.identity_type(), Some("AWSService"));
        assert_eq!(id.invoked_by.as_deref(), Some("ec2.amazonaws.com"));
        assert_eq!(v.source_ip_address.as_deref(), Some("ec2.amazonaws.com"));
    });
    view_of(&ec2[1], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!(id.session_context.as_ref().unwrap().ec2_role_delivery.as_deref(), Some("2.0"));
        assert_eq!(v.vpc_endpoint_id.as_deref(), Some("vpce-0a7c3e5b9d1f24680"));
        assert_eq!(v.source_ip_address.as_deref(), Some("10.42.3.117"));
        assert_eq!(id.access_key_id.as_deref(), Some("ASIATKTDHQJ3DW4OXP6G"));
    });
    view_of(&ec2[7], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!(id.access_key_id.as_deref(), Some("ASIATKTDHQJ3DW4OXP6G"));
        assert_eq!(id.session_context.as_ref().unwrap().ec2_role_delivery.as_deref(), Some("2.0"));
        assert_eq!((v.vpc_endpoint_id.as_deref(), v.source_ip_address.as_deref()), (None, Some("203.0.113.77")));
        assert_eq!(v.error_code.as_deref(), Some("AccessDenied"));
        assert!(v.error_message.as_deref().unwrap().contains("secretsmanager:ListSecrets"));
    });

    // A federation token's session names the IAM user that asked for it.
    view_of(&scenario("federation-token.json")[2], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!(v.identity_type(), Some("FederatedUser"));
        assert_eq!(id.arn.as_deref(), Some("arn:aws:sts::629384751068:federated-user/jo.rivera"));
        let issuer = id.session_context.as_ref().unwrap().session_issuer.as_ref().unwrap();
        assert_eq!((issuer.issuer_type.as_deref(), issuer.user_name.as_deref()), (Some("IAMUser"), Some("partner-portal-broker")));
    });

    // An IAM user with MFA session credentials from GetSessionToken.
    view_of(&scenario("session-token-then-role.json")[1], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!((v.identity_type(), id.access_key_id.as_deref()), (Some("IAMUser"), Some("ASIAJJHAG5JMDNSAA6M3")));
        assert_eq!(id.session_context.as_ref().unwrap().attributes.as_ref().unwrap().mfa_authenticated.as_deref(), Some("true"));
    });

    // Root, signed in without MFA, creating itself an access key.
    let console = scenario("root-and-console.json");
    view_of(&console[4], |v| {
        let id = v.user_identity.as_ref().unwrap();
        assert_eq!(v.identity_type(), Some("Root"));
        assert_eq!(id.arn.as_deref(), Some("arn:aws:iam::741258963012:root"));
        assert_eq!(id.session_context.as_ref().unwrap().attributes.as_ref().unwrap().mfa_authenticated.as_deref(), Some("false"));
        assert_eq!(v.event_name.as_deref(), Some("CreateAccessKey"));
    });
    view_of(&console[1], |v| {
        assert_eq!((v.event_name.as_deref(), v.error_message.as_deref()), (Some("ConsoleLogin"), Some("Failed authentication")));
        assert_eq!(v.user_identity.as_ref().unwrap().user_name.as_deref(), Some("ops-legacy"));
    });

    // A key-less service event (automatic KMS key rotation).
    let every = scenario("every-identity-type.json");
    view_of(every.iter().find(|r| r["eventName"] == "RotateKey").unwrap(), |v| {
        assert_eq!(v.identity_type(), None);
        assert_eq!(v.user_identity.as_ref().unwrap().invoked_by.as_deref(), Some("AWS Internal"));
        assert_eq!(v.event_type.as_deref(), Some("AwsServiceEvent"));
    });

    // A root session from sts:AssumeRoot (read through the owned model: the view does not name it).
    let assumed_root: Record = serde_json::from_value(every[1].clone()).unwrap();
    let context = assumed_root.user_identity.as_ref().unwrap().session_context.as_ref().unwrap();
    assert_eq!(context.assumed_root.as_ref().map(String::as_str), Some("true"));
}

// ------------------------------------------------------------------ sessions line up

/// A credential-issuing event: who got which key, valid when.
#[derive(Debug)]
struct Issue {
    key: String,
    from: EpochMillis,
    until: EpochMillis,
    /// The ARN the session's calls carry.
    session_arn: String,
    /// The caller: its ARN, or `<type>:<name>` for callers without one.
    caller: String,
    caller_key: Option<String>,
    /// `sharedEventID` (both copies of a cross-account call) or `eventID`.
    id: String,
}

fn caller_label(identity: &Value) -> String {
    if let Some(arn) = text(identity, "/arn").filter(|a| !a.is_empty()) {
        return arn.to_owned();
    }
    let kind = text(identity, "/type").unwrap_or("none");
    let name = text(identity, "/userName").or_else(|| text(identity, "/invokedBy")).or_else(|| text(identity, "/principalId")).unwrap_or("");
    format!("{kind}:{name}")
}

/// The issuing events of a set of records, one per issuance (the role owner's
/// `AWSAccount` copy of a cross-account call is left to its caller's copy).
fn issues(records: &[Value]) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut ordered: Vec<&Value> = records.iter().collect();
    ordered.sort_by_key(|r| text(r, "/userIdentity/type") == Some("AWSAccount"));
    for record in ordered {
        let Some(key) = text(record, "/responseElements/credentials/accessKeyId") else { continue };
        assert!(record.get("errorCode").is_none());
        let id = text(record, "/sharedEventID").or_else(|| text(record, "/eventID")).unwrap().to_owned();
        if !seen.insert(id.clone()) {
            continue;
        }
        let response = &record["responseElements"];
        let session_arn = match (text(response, "/assumedRoleUser/arn"), text(response, "/federatedUser/arn"), text(record, "/requestParameters/roleArn")) {
            (Some(arn), _, _) | (None, Some(arn), _) => arn.to_owned(),
            // EC2 does not log the assumed-role user; it follows from the request.
            (None, None, Some(role)) => {
                let account = role.split(':').nth(4).unwrap();
                let name = role.rsplit('/').next().unwrap();
                format!("arn:aws:sts::{account}:assumed-role/{name}/{}", text(record, "/requestParameters/roleSessionName").unwrap())
            }
            // GetSessionToken: the session is the caller's own.
            (None, None, None) => text(record, "/userIdentity/arn").unwrap().to_owned(),
        };
        out.push(Issue {
            key: key.to_owned(),
            from: time(text(record, "/eventTime").unwrap()),
            until: sts_expiration(text(response, "/credentials/expiration").unwrap()),
            session_arn,
            caller: caller_label(&record["userIdentity"]),
            caller_key: text(record, "/userIdentity/accessKeyId").filter(|k| !k.is_empty()).map(str::to_owned),
            id,
        });
    }
    out
}

/// The issuance of `key` whose validity window holds `at`; None when no record issues the key.
fn issue_for<'i>(issues: &'i [Issue], key: &str, at: EpochMillis) -> Option<&'i Issue> {
    let with_key: Vec<&Issue> = issues.iter().filter(|i| i.key == key).collect();
    if with_key.is_empty() {
        return None;
    }
    let in_window: Vec<&Issue> = with_key.iter().copied().filter(|i| i.from <= at && at < i.until).collect();
    assert_eq!(in_window.len(), 1, "key {key} at {at}: exactly one issuance is valid, found {in_window:?}");
    Some(in_window[0])
}

/// Every temporary key used in a story was issued in it (apart from the named
/// console sessions), to the session the call names, with the creation date
/// the call carries, and is used only inside its validity window.
#[test]
fn sessions_line_up_by_access_key_and_validity_window() {
    let mut stories: Vec<(String, Vec<Value>, BTreeSet<&str>)> = SCENARIOS
        .iter()
        .filter(|name| **name != "every-identity-type.json")
        .map(|name| {
            let orphans: BTreeSet<&str> = match *name {
                // Console sign-ins: no STS record issues the console session's key.
                "root-and-console.json" => ["ASIA6JMJ37YP7PKEYFOY", "ASIA4VGEILTD73PJMTCN"].into(),
                // The denied call came from a session issued before this file.
                "failed-assume-role.json" => ["ASIA3WON5DPRFRAHFSHC"].into(),
                _ => BTreeSet::new(),
            };
            (name.to_string(), scenario(name), orphans)
        })
        .collect();
    let mut late = records_of(ISSUING_FILE);
    late.extend(records_of(USAGE_FILE));
    stories.push(("usage-before-issue".into(), late, BTreeSet::new()));

    for (name, records, expected_orphans) in &stories {
        let issues = issues(records);
        let mut orphans = BTreeSet::new();
        let mut used = BTreeSet::new();
        for record in records {
            let Some(key) = text(record, "/userIdentity/accessKeyId").filter(|k| k.starts_with("ASIA")) else { continue };
            let at = time(text(record, "/eventTime").unwrap());
            let Some(issue) = issue_for(&issues, key, at) else {
                orphans.insert(key);
                continue;
            };
            used.insert(issue.id.clone());
            let what = format!("{name}: {} at {}", record["eventName"], record["eventTime"]);
            assert_eq!(text(record, "/userIdentity/arn"), Some(issue.session_arn.as_str()), "{what}");
            let created = text(record, "/userIdentity/sessionContext/attributes/creationDate").unwrap_or_else(|| panic!("{what}: no creationDate"));
            assert_eq!(time(created), issue.from, "{what}: creationDate is the issue time");
            if text(record, "/userIdentity/type") == Some("AssumedRole") {
                let session = issue.session_arn.rsplit('/').next().unwrap();
                assert!(text(record, "/userIdentity/principalId").unwrap().ends_with(&format!(":{session}")), "{what}");
            }
        }
        assert_eq!(&orphans, expected_orphans, "{name}: keys used without an issuing record");
        let unused: Vec<&Issue> = issues.iter().filter(|i| !used.contains(&i.id)).collect();
        assert!(unused.is_empty(), "{name}: sessions never used: {unused:?}");
    }
}

/// Follows a call back through the sessions that issued its key, to the
/// first caller whose key no record issued.
fn origin(records: &[Value], usage: &Value) -> Vec<String> {
    let issues = issues(records);
    let mut chain = vec![caller_label(&usage["userIdentity"])];
    let mut key = text(usage, "/userIdentity/accessKeyId").map(str::to_owned);
    let mut at = time(text(usage, "/eventTime").unwrap());
    while let Some(issue) = key.as_deref().and_then(|k| issue_for(&issues, k, at)) {
        chain.push(issue.caller.clone());
        key = issue.caller_key.clone();
        at = issue.from;
    }
    chain
}

#[test]
fn each_story_resolves_to_the_person_or_workload_behind_it() {
    let last = |name: &str| {
        let records = scenario(name);
        let usage = records.last().unwrap().clone();
        origin(&records, &usage)
    };
    assert_eq!(
        last("iam-user-to-role.json"),
        ["arn:aws:sts::508917263341:assumed-role/BillingReadOnly/maria.santos-cli", "arn:aws:iam::508917263341:user/maria.santos"]
    );
    assert_eq!(
        last("role-chain-three-accounts.json"),
        [
            "arn:aws:sts::852963741025:assumed-role/LedgerExportWriter/ledger-export-7731",
            "arn:aws:sts::741258963012:assumed-role/PaymentsDeployer/deploy-payments-7731",
            "arn:aws:sts::963852741036:assumed-role/DeploymentHub/devon.clarke",
            "arn:aws:iam::508917263341:user/devon.clarke",
        ]
    );
    assert_eq!(
        last("identity-center-permission-set.json"),
        [
            "arn:aws:sts::852963741025:assumed-role/DataPlatformOperator/alice.nguyen@example.com",
            "arn:aws:sts::741258963012:assumed-role/AWSReservedSSO_PlatformAdmin_3f9c2a7b1d8e4f60/alice.nguyen@example.com",
            "SAMLUser:alice.nguyen@example.com",
        ]
    );
    assert_eq!(
        last("saml-federation.json"),
        ["arn:aws:sts::852963741025:assumed-role/OktaDataAnalyst/sam.okafor@example.com", "SAMLUser:sam.okafor@example.com"]
    );
    assert_eq!(
        last("web-identity-ci.json"),
        ["arn:aws:sts::963852741036:assumed-role/gha-payments-api-deploy/GitHubActions", "WebIdentityUser:repo:acme/payments-api:ref:refs/heads/main"]
    );
    assert_eq!(last("federation-token.json"), ["arn:aws:sts::629384751068:federated-user/jo.rivera", "arn:aws:iam::629384751068:user/partner-portal-broker"]);
    // The user's MFA session, issued by GetSessionToken to the same user's long-term key.
    assert_eq!(last("session-token-then-role.json"), ["arn:aws:iam::508917263341:user/priya.raman", "arn:aws:iam::508917263341:user/priya.raman"]);
    // The role session, the user's MFA session, then the user's long-term key.
    let records = scenario("session-token-then-role.json");
    assert_eq!(
        origin(&records, &records[5]),
        [
            "arn:aws:sts::508917263341:assumed-role/SecurityAuditor/priya.raman",
            "arn:aws:iam::508917263341:user/priya.raman",
            "arn:aws:iam::508917263341:user/priya.raman"
        ]
    );
    assert_eq!(
        last("ec2-instance-profile.json"),
        ["arn:aws:sts::741258963012:assumed-role/payments-api-instance/i-0c4e7a19b2d3f5a68", "AWSService:ec2.amazonaws.com"]
    );

    // The source identity set on the first hop is on every later session of the chain.
    let chain = scenario("role-chain-three-accounts.json");
    let sessions: Vec<&Value> = chain.iter().filter(|r| text(r, "/userIdentity/type") == Some("AssumedRole")).collect();
    assert_eq!(sessions.len(), 5);
    for record in sessions {
        assert_eq!(text(record, "/userIdentity/sessionContext/sourceIdentity"), Some("devon.clarke"), "{}", record["eventID"]);
    }
    assert_eq!(text(&chain[0], "/requestParameters/sourceIdentity"), Some("devon.clarke"));
}

#[test]
fn a_reused_access_key_resolves_by_its_validity_window() {
    let records = scenario("reused-access-key.json");
    let issues = issues(&records);
    let key = "ASIAKGSBB32KHZINRL53";
    let issued: Vec<&str> = issues.iter().filter(|i| i.key == key).map(|i| i.session_arn.as_str()).collect();
    assert_eq!(
        issued,
        ["arn:aws:sts::852963741025:assumed-role/GlueLedgerETL/GlueJobRunnerSession", "arn:aws:sts::852963741025:assumed-role/SupportReadOnly/ticket-48213"]
    );
    let night = records.iter().find(|r| r["eventName"] == "PutObject").unwrap();
    let morning = records.iter().find(|r| r["eventName"] == "GetQueryExecution").unwrap();
    assert_eq!((text(night, "/userIdentity/accessKeyId"), text(morning, "/userIdentity/accessKeyId")), (Some(key), Some(key)));
    assert_eq!(origin(&records, night), ["arn:aws:sts::852963741025:assumed-role/GlueLedgerETL/GlueJobRunnerSession", "AWSService:glue.amazonaws.com"]);
    assert_eq!(origin(&records, morning), ["arn:aws:sts::852963741025:assumed-role/SupportReadOnly/ticket-48213", "arn:aws:iam::508917263341:user/oncall.sre"]);
}

/// Both copies of each cross-account call: one per account, same
/// `sharedEventID`, different `eventID`, the same request and response.
#[test]
fn cross_account_copies_pair_up_on_shared_event_id() {
    let mut pairs = 0;
    for name in SCENARIOS {
        let records = scenario(name);
        for theirs in records.iter().filter(|r| text(r, "/userIdentity/type") == Some("AWSAccount") && r["eventName"] == "AssumeRole") {
            let shared = text(theirs, "/sharedEventID").unwrap();
            let copies: Vec<&Value> = records.iter().filter(|r| text(r, "/sharedEventID") == Some(shared)).collect();
            assert_eq!(copies.len(), 2, "{name}: {shared}");
            let mine = copies.iter().find(|r| r["eventID"] != theirs["eventID"]).unwrap();
            assert_eq!(mine["recipientAccountId"], theirs["userIdentity"]["accountId"], "{name}: the caller's copy goes to the caller's account");
            assert_eq!(mine["userIdentity"]["principalId"], theirs["userIdentity"]["principalId"], "{name}");
            assert_ne!(mine["recipientAccountId"], theirs["recipientAccountId"], "{name}");
            for field in ["eventTime", "requestID", "requestParameters", "responseElements", "sourceIPAddress"] {
                assert_eq!(mine[field], theirs[field], "{name}: {field}");
            }
            let role_account = text(theirs, "/requestParameters/roleArn").unwrap().split(':').nth(4).unwrap();
            assert_eq!(text(theirs, "/recipientAccountId"), Some(role_account), "{name}: the role owner's copy");
            pairs += 1;
        }
    }
    assert_eq!(pairs, 5, "three hops of the chain, the Identity Center chain, and the support role");
}

#[test]
fn a_session_can_be_used_in_a_file_delivered_before_the_one_that_issued_it() {
    let usage_key = classify(USAGE_FILE.strip_prefix("usage-before-issue/").unwrap()).unwrap();
    let issuing_key = classify(ISSUING_FILE.strip_prefix("usage-before-issue/").unwrap()).unwrap();
    assert_eq!((usage_key.kind, issuing_key.kind), (ObjectKind::Log, ObjectKind::Log));
    assert_eq!((usage_key.account_id.as_str(), issuing_key.account_id.as_str()), ("629384751068", "629384751068"));
    assert_eq!((usage_key.region.as_str(), issuing_key.region.as_str()), ("eu-west-1", "us-east-1"));
    assert!(usage_key.file_time < issuing_key.file_time, "the usage file is named earlier");

    let usage = records_of(USAGE_FILE);
    let issuing = records_of(ISSUING_FILE);
    let issued = issues(&issuing);
    assert_eq!(issued.len(), 1);
    for record in &usage {
        let at = time(text(record, "/eventTime").unwrap());
        assert!(issued[0].from < at && at < usage_key.file_time, "used after it was issued, delivered before");
        assert_eq!(text(record, "/userIdentity/accessKeyId"), Some(issued[0].key.as_str()));
        // Alone, the usage file cannot say who it was; with the issuing file it can.
        assert_eq!(origin(&usage, record), ["arn:aws:sts::629384751068:assumed-role/ExperimentRunner/li.wei-notebook"]);
        let both: Vec<Value> = issuing.iter().chain(&usage).cloned().collect();
        assert_eq!(origin(&both, record), ["arn:aws:sts::629384751068:assumed-role/ExperimentRunner/li.wei-notebook", "arn:aws:iam::629384751068:user/li.wei"]);
    }
}

// ------------------------------------------------------------------ files that are not event logs

#[test]
fn a_digest_file_is_recognized_by_its_key_and_never_read_as_events() {
    let path = fixture("digest/741258963012_CloudTrail-Digest_eu-west-1_acme-org-trail_us-east-1_20240312T110518Z.json");
    let digest: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert!(digest.get("Records").is_none());
    let own_key = text(&digest, "/digestS3Object").unwrap();
    assert_eq!(own_key.rsplit('/').next().unwrap(), format!("{}.gz", path.file_name().unwrap().to_string_lossy()));
    let key = classify(own_key).unwrap();
    assert_eq!(key.kind, ObjectKind::Digest);
    assert!(!key.kind.has_events());
    assert_eq!((key.account_id.as_str(), key.region.as_str(), key.unique.as_str()), ("741258963012", "eu-west-1", "acme-org-trail_us-east-1"));
    assert_eq!(key.file_time, time("2024-03-12T11:05:18Z"));
    assert_eq!(key.to_key(), own_key);
    assert_eq!(classify(text(&digest, "/previousDigestS3Object").unwrap()).unwrap().kind, ObjectKind::Digest);

    let logs = digest["logFiles"].as_array().unwrap();
    assert_eq!(logs.len(), 4);
    for log in logs {
        let listed = classify(text(log, "/s3Object").unwrap()).unwrap();
        assert_eq!((listed.kind, listed.account_id.as_str(), listed.region.as_str()), (ObjectKind::Log, "741258963012", "eu-west-1"));
        assert!(time(text(log, "/oldestEventTime").unwrap()) <= time(text(log, "/newestEventTime").unwrap()));
        assert_eq!(text(log, "/hashValue").unwrap().len(), 64);
    }

    // Were it ever handed to the reader, nothing in it would pass as an event.
    let streamed = stream(&path);
    assert_eq!((streamed.records.len(), streamed.shape), (1, Some(Shape::Lines)));
    assert_eq!(Event::from_record(0, &streamed.records[0], "741258963012").unwrap_err().to_string(), "record 0: missing field `eventID`");
}

#[test]
fn bad_inputs_are_rejected_with_the_reason() {
    // A gzip cut in the middle: the records before the cut, then Truncated.
    let truncated = stream(&fixture("bad/truncated.json.gz"));
    assert!(matches!(truncated.error, Some(ReadError::Truncated { .. })), "{:?}", truncated.error);
    assert!(truncated.error.as_ref().unwrap().to_string().contains("truncated file"));
    let whole = scenario("iam-user-to-role.json");
    assert!(!truncated.records.is_empty() && truncated.records.len() < whole.len(), "{} records before the cut", truncated.records.len());
    for (i, raw) in truncated.records.iter().enumerate() {
        assert_eq!(serde_json::from_slice::<Value>(raw).unwrap(), whole[i], "record {i} before the cut is whole");
    }

    // Gzip magic then garbage: the decompressor fails.
    let corrupt = stream(&fixture("bad/corrupt.json.gz"));
    assert!(matches!(corrupt.error, Some(ReadError::Io { .. })), "{:?}", corrupt.error);
    assert!(corrupt.records.is_empty());
    assert!(corrupt.error.unwrap().to_string().starts_with("read failed at byte 0"));

    // Valid JSON that is not a log file: an array of records without the wrapper.
    let array = stream(&fixture("bad/not-cloudtrail.json"));
    assert!(array.records.is_empty());
    match array.error {
        Some(ReadError::Syntax { offset: 0, ref message }) => assert_eq!(message, "expected '{', found '['"),
        other => panic!("expected a syntax error at byte 0, got {other:?}"),
    }

    // A JSON object without `Records` reads as one newline-delimited record, which is not an event.
    let manifest = stream(&fixture("bad/s3-inventory-manifest.json"));
    assert!(manifest.error.is_none());
    assert_eq!((manifest.records.len(), manifest.shape), (1, Some(Shape::Lines)));
    assert_eq!(Event::from_record(0, &manifest.records[0], "318246550911").unwrap_err().to_string(), "record 0: missing field `eventID`");

    // `{"Records":[]}`: read to the end, nothing in it.
    let empty = stream(&fixture("bad/empty-records.json"));
    assert!(empty.error.is_none() && empty.records.is_empty());
    assert_eq!(empty.shape, Some(Shape::LogFile));

    // An object of 0 bytes.
    let zero = stream(&fixture("bad/zero-bytes.json.gz"));
    assert!(matches!(zero.error, Some(ReadError::Empty)), "{:?}", zero.error);
    assert!(zero.records.is_empty());
}

#[test]
fn records_missing_required_fields_are_rejected_by_name_and_the_rest_kept() {
    let path = fixture("bad/missing-fields.json");
    let streamed = stream(&path);
    assert!(streamed.error.is_none());
    let source: Vec<Value> = records_of("bad/missing-fields.json");
    let id = |i: usize| source[i]["eventID"].as_str().unwrap().to_owned();
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for (index, raw) in streamed.records.iter().enumerate() {
        match Event::from_record(index, raw, "963852741036") {
            Ok(event) => accepted.push(event.event_id),
            Err(error) => rejected.push((error.index, error.event_id.clone(), error.to_string())),
        }
    }
    assert_eq!(accepted, [id(0), id(3), id(6)]);
    assert_eq!(rejected.len(), 4);
    assert_eq!(rejected[0], (1, None, "record 1: missing field `eventID`".to_owned()));
    assert_eq!(rejected[1], (2, Some(id(2)), format!("record 2 (eventID {}): missing field `eventTime`", id(2))));
    assert_eq!(rejected[2], (4, Some(id(4)), format!("record 4 (eventID {}): missing field `eventName`", id(4))));
    let (index, event_id, message) = &rejected[3];
    assert_eq!((*index, event_id.clone()), (5, Some(id(5))));
    assert!(message.starts_with(&format!("record 5 (eventID {}): field `eventTime`: not a UTC timestamp", id(5))), "{message}");
}

// ------------------------------------------------------------------ a real trail

#[test]
fn the_real_exported_trail_reads_through_the_same_reader() {
    let path = shared_data("real/otrf-ec2-proxy-s3-exfiltration.ndjson.gz");
    let streamed = stream(&path);
    assert!(streamed.error.is_none(), "{:?}", streamed.error);
    assert_eq!(streamed.shape, Some(Shape::Lines));
    assert_eq!(streamed.records.len(), 103);

    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut records = Vec::new();
    for (index, raw) in streamed.records.iter().enumerate() {
        let event = Event::from_record(index, raw, "123456789123").unwrap_or_else(|e| panic!("{e}"));
        let record: Value = serde_json::from_slice(raw).unwrap();
        // The exporter moved eventTime to @timestamp; the event keeps that time.
        assert_eq!(event.event_time, time(text(&record, "/@timestamp").unwrap()));
        let parsed: Record = serde_json::from_value(record.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), record, "record {index} written back differs");
        let kind = event.identity_type().unwrap_or_default().to_owned();
        let name = if kind == "AWSService" { event.event_name.clone() } else { String::new() };
        *counts.entry((kind, name)).or_default() += 1;
        records.push(record);
    }
    let expected: BTreeMap<(String, String), usize> =
        [(("AWSService".into(), "AssumeRole".into()), 5), (("AssumedRole".into(), String::new()), 11), (("IAMUser".into(), String::new()), 87)].into();
    assert_eq!(counts, expected);

    // Every call of the stolen session resolves to the instance it was issued to.
    for record in records.iter().filter(|r| text(r, "/userIdentity/type") == Some("AssumedRole")) {
        assert_eq!(text(record, "/userIdentity/accessKeyId"), Some("ASIA5FLZVX4OPVKKVBMX"));
        let issuer = records.iter().find(|r| text(r, "/responseElements/credentials/accessKeyId") == Some("ASIA5FLZVX4OPVKKVBMX")).unwrap();
        assert_eq!(text(issuer, "/userIdentity/invokedBy"), Some("ec2.amazonaws.com"));
        assert_eq!(text(issuer, "/requestParameters/roleSessionName"), Some("i-0317f6c6b66ae9c40"));
        let at = time(text(record, "/@timestamp").unwrap());
        assert!(time(text(issuer, "/@timestamp").unwrap()) <= at && at < sts_expiration(text(issuer, "/responseElements/credentials/expiration").unwrap()));
    }
}
