//! Whole records, written as compact JSON in CloudTrail's field order:
//! API calls, credential-issuing events (both copies of a cross-account
//! AssumeRole), console sign-ins, AWS service events and incident records.

use trailwatch_core::time::EpochMillis;

use crate::catalog::{self, Api, Ctx};
use crate::identity;
use crate::org::Org;
use crate::plan::{Act, ActKind, IssueKind, Issuer, Plan, Session};
use crate::prng::Rng;
use crate::text::{field, human_time, push_str, push_time, push_u64};

const GITHUB_ACTIONS_UA: &str = "aws-sdk-nodejs/2.1552.0 linux/v20.11.0 configure-aws-credentials-for-github-actions promise";

/// `eventVersion` by service: most services write 1.09 now, a few 1.08.
fn version(source: &str) -> &'static str {
    match source {
        "s3.amazonaws.com" | "kms.amazonaws.com" | "ssm.amazonaws.com" | "backup.amazonaws.com" | "ecr.amazonaws.com" => "1.08",
        _ => "1.09",
    }
}

fn begin(out: &mut Vec<u8>, version: &str) {
    out.extend_from_slice(b"{\"eventVersion\":\"");
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(b"\",\"userIdentity\":");
}

fn middle(out: &mut Vec<u8>, time: EpochMillis, source: &str, name: &str, region: &str, ip: &str, ua: &str) {
    out.extend_from_slice(b",\"eventTime\":");
    push_time(out, time);
    field(out, b",\"eventSource\":", source);
    field(out, b",\"eventName\":", name);
    field(out, b",\"awsRegion\":", region);
    field(out, b",\"sourceIPAddress\":", ip);
    field(out, b",\"userAgent\":", ua);
}

/// `eventID` is `event_id` when given (planned ahead), else drawn.
fn request_and_event_id(out: &mut Vec<u8>, rng: &mut Rng, source: &str, event_id: Option<&str>) {
    out.extend_from_slice(b",\"requestID\":\"");
    if source == "s3.amazonaws.com" {
        rng.push_upper_hex(out, 16);
    } else {
        rng.push_uuid(out);
    }
    out.push(b'"');
    event_id_field(out, rng, event_id);
}

fn event_id_field(out: &mut Vec<u8>, rng: &mut Rng, event_id: Option<&str>) {
    match event_id {
        Some(id) => field(out, b",\"eventID\":", id),
        None => {
            out.extend_from_slice(b",\"eventID\":\"");
            rng.push_uuid(out);
            out.push(b'"');
        }
    }
}

/// The endpoint a client named (`ec2.eu-west-1.amazonaws.com`).
fn push_host(out: &mut Vec<u8>, source: &str, region: &str, global: bool) {
    let service = source.strip_suffix(".amazonaws.com").unwrap_or(source);
    let service = if service == "ecr" { "api.ecr" } else { service };
    out.extend_from_slice(service.as_bytes());
    if !global {
        out.push(b'.');
        out.extend_from_slice(region.as_bytes());
    }
    out.extend_from_slice(b".amazonaws.com");
}

fn tls(out: &mut Vec<u8>, modern: bool, host: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(if modern {
        b",\"tlsDetails\":{\"tlsVersion\":\"TLSv1.3\",\"cipherSuite\":\"TLS_AES_128_GCM_SHA256\",\"clientProvidedHostHeader\":\""
    } else {
        b",\"tlsDetails\":{\"tlsVersion\":\"TLSv1.2\",\"cipherSuite\":\"ECDHE-RSA-AES128-GCM-SHA256\",\"clientProvidedHostHeader\":\""
    });
    host(out);
    out.extend_from_slice(b"\"}");
}

/// Why a call failed, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Denied,
    Throttled,
    NoSuchBucketPolicy,
}

/// One API call by a caller whose `userIdentity` is `identity`.
pub struct Call<'a> {
    pub api: &'a Api,
    pub time: EpochMillis,
    pub region: &'a str,
    pub account: usize,
    pub ip: &'a str,
    pub ua: &'a str,
    /// The caller's ARN, for authorization failure messages.
    pub arn: &'a str,
    /// A service acting with the caller's credentials (no TLS details then).
    pub via_service: bool,
    pub failure: Option<Failure>,
    pub console: bool,
    pub vpc_endpoint: Option<&'a str>,
    pub instance: Option<&'a str>,
    /// The planned `eventID` of an incident record.
    pub event_id: Option<&'a str>,
}

pub fn api_call(out: &mut Vec<u8>, rng: &mut Rng, org: &Org, call: &Call<'_>, identity: impl FnOnce(&mut Vec<u8>)) {
    let api = call.api;
    let account_id = &org.accounts[call.account].id;
    begin(out, version(api.source));
    identity(out);
    middle(out, call.time, api.source, api.name, call.region, call.ip, call.ua);
    match call.failure {
        Some(Failure::Denied) => {
            let action = catalog::action_prefix(api.source);
            field(out, b",\"errorCode\":", catalog::denied_code(api.source));
            let because = format!(
                "User: {} is not authorized to perform: {action}:{} because no identity-based policy allows the {action}:{} action",
                call.arn, api.name, api.name
            );
            let message = if api.source == "ec2.amazonaws.com" { format!("You are not authorized to perform this operation. {because}") } else { because };
            field(out, b",\"errorMessage\":", &message);
        }
        Some(Failure::Throttled) => {
            let (code, message) = catalog::throttled(api.source);
            field(out, b",\"errorCode\":", code);
            field(out, b",\"errorMessage\":", message);
        }
        Some(Failure::NoSuchBucketPolicy) => {
            out.extend_from_slice(b",\"errorCode\":\"NoSuchBucketPolicy\",\"errorMessage\":\"The bucket policy does not exist\"");
        }
        None => {}
    }
    let ctx = Ctx { account_id, region: call.region, time: call.time, instance: call.instance, ip: call.ip };
    catalog::write_call(out, rng, api, &ctx, call.failure.is_some());
    request_and_event_id(out, rng, api.source, call.event_id);
    out.extend_from_slice(if api.read_only { b",\"readOnly\":true" } else { b",\"readOnly\":false" });
    out.extend_from_slice(b",\"eventType\":\"AwsApiCall\",\"managementEvent\":true");
    field(out, b",\"recipientAccountId\":", account_id);
    if let Some(vpce) = call.vpc_endpoint {
        field(out, b",\"vpcEndpointId\":", vpce);
        field(out, b",\"vpcEndpointAccountId\":", account_id);
    }
    out.extend_from_slice(b",\"eventCategory\":\"Management\"");
    if !call.via_service && call.ua != "AWS Internal" {
        let modern = rng.chance(0.7);
        tls(out, modern, |out| push_host(out, api.source, call.region, api.global));
    }
    if call.console {
        out.extend_from_slice(b",\"sessionCredentialFromConsole\":\"true\"");
    }
    out.push(b'}');
}

fn credentials(out: &mut Vec<u8>, s: &Session) {
    field(out, b"\"credentials\":{\"accessKeyId\":", &s.key);
    field(out, b",\"sessionToken\":", &s.token);
    field(out, b",\"expiration\":", &human_time(s.expires));
    out.push(b'}');
}

fn assumed_role_user(out: &mut Vec<u8>, s: &Session) {
    field(out, b",\"assumedRoleUser\":{\"assumedRoleId\":", &s.principal_id);
    field(out, b",\"arn\":", &s.arn);
    out.push(b'}');
}

fn duration(out: &mut Vec<u8>, s: &Session) {
    out.extend_from_slice(b",\"durationSeconds\":");
    push_u64(out, ((s.expires - s.issued) / 1000) as u64);
}

/// Copy `copy` of a session's issuing event. Everything but the caller,
/// the `eventID` and the recipient account is the same in both copies.
pub fn issuing(out: &mut Vec<u8>, org: &Org, plan: &Plan, s: &Session, copy: usize) {
    let service = matches!(s.issuer, Issuer::Service { .. });
    let (ip, ua): (&str, &str) = match s.issuer {
        Issuer::User(u) => (&org.users[u].ip, &org.users[u].ua),
        Issuer::Session(p) => (&plan.sessions[p as usize].ip, &plan.sessions[p as usize].ua),
        Issuer::Saml { .. } => (&s.ip, &s.ua),
        Issuer::Web { .. } => (&s.ip, GITHUB_ACTIONS_UA),
        Issuer::Service { service } => (service, service),
    };
    let role = s.role.map(|r| &org.roles[r]);
    begin(out, if service { "1.08" } else { "1.09" });
    identity::issuer(out, org, plan, s, copy);
    middle(out, s.issued, "sts.amazonaws.com", s.kind.event_name(), s.region, ip, ua);

    out.extend_from_slice(b",\"requestParameters\":{");
    match s.kind {
        IssueKind::AssumeRole | IssueKind::AssumeRoleWithWebIdentity => {
            field(out, b"\"roleArn\":", role.map_or("", |r| &r.arn));
            field(out, b",\"roleSessionName\":", &s.name);
            if s.kind == IssueKind::AssumeRoleWithWebIdentity || (!service && s.expires - s.issued != 3_600_000) {
                duration(out, s);
            }
            if s.sets_source_identity {
                field(out, b",\"sourceIdentity\":", s.source_identity.as_deref().unwrap_or_default());
            }
            if let (true, Issuer::User(u)) = (s.mfa, s.issuer) {
                let user = &org.users[u];
                field(out, b",\"serialNumber\":", &format!("arn:aws:iam::{}:mfa/{}", org.accounts[user.account].id, user.name));
            }
        }
        IssueKind::AssumeRoleWithSaml => {
            // The assertion id: any stable unique value; the first copy's event id, undashed.
            out.extend_from_slice(b"\"sAMLAssertionID\":\"_");
            out.extend(s.copies[0].event_id.bytes().filter(|b| *b != b'-'));
            out.push(b'"');
            field(out, b",\"roleSessionName\":", &s.name);
            duration(out, s);
            field(out, b",\"roleArn\":", role.map_or("", |r| &r.arn));
            let okta = matches!(s.issuer, Issuer::Saml { okta: true, .. });
            field(out, b",\"principalArn\":", identity::saml_provider(org, s.account, okta));
        }
        IssueKind::GetSessionToken => {
            out.extend_from_slice(b"\"durationSeconds\":");
            push_u64(out, ((s.expires - s.issued) / 1000) as u64);
            if let Issuer::User(u) = s.issuer {
                let user = &org.users[u];
                field(out, b",\"serialNumber\":", &format!("arn:aws:iam::{}:mfa/{}", org.accounts[user.account].id, user.name));
            }
        }
        IssueKind::GetFederationToken => {
            field(out, b"\"name\":", &s.name);
            duration(out, s);
            out.extend_from_slice(b",\"policyArns\":[{\"arn\":\"arn:aws:iam::aws:policy/ReadOnlyAccess\"}]");
        }
    }
    out.extend_from_slice(b"},\"responseElements\":{");
    match s.kind {
        IssueKind::AssumeRole => {
            credentials(out, s);
            assumed_role_user(out, s);
            if let Some(source) = &s.source_identity {
                field(out, b",\"sourceIdentity\":", source);
            }
        }
        IssueKind::AssumeRoleWithSaml => {
            let (person, okta) = match s.issuer {
                Issuer::Saml { person, okta } => (person, okta),
                _ => (0, false),
            };
            let email = &org.people[person].email;
            let subject_type = if okta { "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress" } else { "persistent" };
            field(out, b"\"subjectType\":", subject_type);
            field(out, b",\"issuer\":", if okta { &org.okta_issuer } else { &org.sso_issuer });
            out.push(b',');
            credentials(out, s);
            out.extend_from_slice(b",\"audience\":\"https://signin.aws.amazon.com/saml\"");
            field(out, b",\"nameQualifier\":", identity::saml_qualifier(org, s.account, okta));
            assumed_role_user(out, s);
            field(out, b",\"subject\":", email);
        }
        IssueKind::AssumeRoleWithWebIdentity => {
            let subject = match s.issuer {
                Issuer::Web { repo } => org.repos[repo].subject.as_str(),
                _ => "",
            };
            credentials(out, s);
            field(out, b",\"subjectFromWebIdentityToken\":", subject);
            assumed_role_user(out, s);
            field(out, b",\"provider\":", org.accounts[s.account].github_provider.as_deref().unwrap_or_default());
            out.extend_from_slice(b",\"audience\":\"sts.amazonaws.com\"");
        }
        IssueKind::GetSessionToken => credentials(out, s),
        IssueKind::GetFederationToken => {
            credentials(out, s);
            field(out, b",\"federatedUser\":{\"federatedUserId\":", &s.principal_id);
            field(out, b",\"arn\":", &s.arn);
            out.extend_from_slice(b"},\"packedPolicySize\":6");
        }
    }
    out.push(b'}');
    if !service {
        out.extend_from_slice(b",\"additionalEventData\":{");
        if s.kind == IssueKind::AssumeRoleWithWebIdentity {
            out.extend_from_slice(b"\"identityProviderConnectionVerificationMethod\":\"IAMTrustStore\",");
        }
        field(out, b"\"RequestDetails\":{\"awsServingRegion\":", s.region);
        out.extend_from_slice(if s.global_endpoint { b",\"endpointType\":\"global\"}}" } else { b",\"endpointType\":\"regional\"}}" });
    }
    field(out, b",\"requestID\":", &s.request_id);
    field(out, b",\"eventID\":", &s.copies[copy].event_id);
    out.extend_from_slice(b",\"readOnly\":true");
    if let Some(role) = role {
        let role_account = &org.accounts[role.account].id;
        field(out, b",\"resources\":[{\"accountId\":", role_account);
        field(out, b",\"type\":\"AWS::IAM::Role\",\"ARN\":", &role.arn);
        out.push(b'}');
        if let Issuer::Saml { okta, .. } = s.issuer {
            field(out, b",{\"accountId\":", role_account);
            field(out, b",\"type\":\"AWS::IAM::SAMLProvider\",\"ARN\":", identity::saml_provider(org, s.account, okta));
            out.push(b'}');
        }
        out.push(b']');
    }
    out.extend_from_slice(b",\"eventType\":\"AwsApiCall\",\"managementEvent\":true");
    field(out, b",\"recipientAccountId\":", &org.accounts[s.copies[copy].account].id);
    if let Some(shared) = &s.shared_event_id {
        field(out, b",\"sharedEventID\":", shared);
    }
    out.extend_from_slice(b",\"eventCategory\":\"Management\"");
    if !service {
        tls(out, true, |out| {
            if s.global_endpoint {
                out.extend_from_slice(b"sts.amazonaws.com");
            } else {
                push_host(out, "sts.amazonaws.com", s.region, false);
            }
        });
    }
    out.push(b'}');
}

/// Who signs in to the console.
#[derive(Clone, Copy)]
pub enum SignIn<'a> {
    User(&'a crate::org::IamUser),
    Root(usize),
}

/// A console sign-in attempt.
pub struct Login<'a> {
    pub who: SignIn<'a>,
    pub time: EpochMillis,
    pub success: bool,
    pub mfa: bool,
    pub ip: &'a str,
    pub ua: &'a str,
    /// The planned `eventID` of an incident record.
    pub event_id: Option<&'a str>,
}

pub fn console_login(out: &mut Vec<u8>, rng: &mut Rng, org: &Org, login: &Login<'_>) {
    let Login { who, time, success, mfa, ip, ua, event_id } = *login;
    let account = match who {
        SignIn::User(u) => u.account,
        SignIn::Root(a) => a,
    };
    let account_id = &org.accounts[account].id;
    begin(out, "1.09");
    match who {
        SignIn::User(u) => {
            field(out, b"{\"type\":\"IAMUser\",\"principalId\":", &u.principal_id);
            if success {
                field(out, b",\"arn\":", &u.arn);
            }
            field(out, b",\"accountId\":", account_id);
            if !success {
                out.extend_from_slice(b",\"accessKeyId\":\"\"");
            }
            field(out, b",\"userName\":", &u.name);
            out.push(b'}');
        }
        SignIn::Root(_) => {
            field(out, b"{\"type\":\"Root\",\"principalId\":", account_id);
            field(out, b",\"arn\":", &format!("arn:aws:iam::{account_id}:root"));
            field(out, b",\"accountId\":", account_id);
            out.extend_from_slice(b",\"accessKeyId\":\"\"}");
        }
    }
    middle(out, time, "signin.amazonaws.com", "ConsoleLogin", "us-east-1", ip, ua);
    if !success {
        out.extend_from_slice(b",\"errorMessage\":\"Failed authentication\"");
    }
    out.extend_from_slice(b",\"requestParameters\":null,\"responseElements\":{\"ConsoleLogin\":");
    out.extend_from_slice(if success { b"\"Success\"}" } else { b"\"Failure\"}" });
    out.extend_from_slice(
        b",\"additionalEventData\":{\"LoginTo\":\"https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true&state=hashArgsFromTB_us-east-1_",
    );
    rng.push_hex(out, 16);
    out.extend_from_slice(b"\",\"MobileVersion\":\"No\",\"MFAUsed\":");
    out.extend_from_slice(if mfa { b"\"Yes\"}" } else { b"\"No\"}" });
    event_id_field(out, rng, event_id);
    out.extend_from_slice(b",\"readOnly\":false,\"eventType\":\"AwsConsoleSignIn\",\"managementEvent\":true");
    field(out, b",\"recipientAccountId\":", account_id);
    out.extend_from_slice(b",\"eventCategory\":\"Management\"");
    tls(out, true, |out| out.extend_from_slice(b"signin.aws.amazon.com"));
    out.push(b'}');
}

/// Events AWS itself records in an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceEvent {
    /// CloudTrail (or Config) checking the ACL of the bucket it delivers to (`AwsApiCall` by `AWSService`).
    BucketAclCheck,
    /// Scheduled KMS key rotation (`AwsServiceEvent`).
    KeyRotation,
    /// An AWS Backup job finishing (`AwsServiceEvent`).
    BackupJob,
    /// ECR lifecycle policy run, by `AWS Internal`.
    EcrLifecycle,
}

pub fn service_event(out: &mut Vec<u8>, rng: &mut Rng, org: &Org, account: usize, region: &str, time: EpochMillis, kind: ServiceEvent) {
    let account_id = &org.accounts[account].id;
    let (invoker, source, name) = match kind {
        ServiceEvent::BucketAclCheck => {
            (*rng.pick(&["cloudtrail.amazonaws.com", "cloudtrail.amazonaws.com", "config.amazonaws.com"]), "s3.amazonaws.com", "GetBucketAcl")
        }
        ServiceEvent::KeyRotation => ("kms.amazonaws.com", "kms.amazonaws.com", "RotateKey"),
        ServiceEvent::BackupJob => ("backup.amazonaws.com", "backup.amazonaws.com", "BackupJobCompleted"),
        ServiceEvent::EcrLifecycle => ("AWS Internal", "ecr.amazonaws.com", "PolicyExecutionEvent"),
    };
    begin(out, version(source));
    if kind == ServiceEvent::EcrLifecycle {
        field(out, b"{\"accountId\":", account_id);
        field(out, b",\"invokedBy\":", invoker);
    } else {
        field(out, b"{\"type\":\"AWSService\",\"invokedBy\":", invoker);
    }
    out.push(b'}');
    middle(out, time, source, name, region, invoker, invoker);
    let (resource_type, arn) = match kind {
        ServiceEvent::BucketAclCheck => {
            out.extend_from_slice(b",\"requestParameters\":{\"bucketName\":");
            push_str(out, &org.bucket);
            field(out, b",\"Host\":", &format!("{}.s3.amazonaws.com", org.bucket));
            out.extend_from_slice(b",\"acl\":\"\"},\"responseElements\":null");
            ("AWS::S3::Bucket", format!("arn:aws:s3:::{}", org.bucket))
        }
        ServiceEvent::KeyRotation => {
            out.extend_from_slice(b",\"requestParameters\":null,\"responseElements\":null");
            ("AWS::KMS::Key", format!("arn:aws:kms:{region}:{account_id}:key/{}", rng.uuid()))
        }
        ServiceEvent::BackupJob => {
            out.extend_from_slice(b",\"requestParameters\":null,\"responseElements\":null");
            ("AWS::Backup::BackupVault", format!("arn:aws:backup:{region}:{account_id}:backup-vault:Default"))
        }
        ServiceEvent::EcrLifecycle => {
            out.extend_from_slice(b",\"requestParameters\":null,\"responseElements\":null");
            ("AWS::ECR::Repository", format!("arn:aws:ecr:{region}:{account_id}:repository/payments-api"))
        }
    };
    if kind == ServiceEvent::BucketAclCheck {
        request_and_event_id(out, rng, source, None);
    } else {
        out.extend_from_slice(b",\"eventID\":\"");
        rng.push_uuid(out);
        out.push(b'"');
    }
    out.extend_from_slice(if kind == ServiceEvent::BucketAclCheck { b",\"readOnly\":true" } else { b",\"readOnly\":false" });
    field(out, b",\"resources\":[{\"accountId\":", account_id);
    field(out, b",\"type\":", resource_type);
    field(out, b",\"ARN\":", &arn);
    out.extend_from_slice(if kind == ServiceEvent::BucketAclCheck { b"}],\"eventType\":\"AwsApiCall\"" } else { b"}],\"eventType\":\"AwsServiceEvent\"" });
    out.extend_from_slice(b",\"managementEvent\":true");
    field(out, b",\"recipientAccountId\":", account_id);
    out.extend_from_slice(b",\"sharedEventID\":\"");
    rng.push_uuid(out);
    out.push(b'"');
    match kind {
        ServiceEvent::BackupJob => {
            out.extend_from_slice(b",\"serviceEventDetails\":{\"backupJobId\":\"");
            rng.push_uuid(out);
            field(out, b"\",\"backupVaultName\":\"Default\",\"resourceArn\":", &format!("arn:aws:ec2:{region}:{account_id}:volume/vol-0{}", rng.hex(16)));
            out.extend_from_slice(b",\"resourceType\":\"EBS\",\"state\":\"COMPLETED\",\"percentDone\":\"100.0\",\"backupSizeInBytes\":");
            push_u64(out, rng.between(1 << 30, 1 << 36) as u64);
            out.push(b'}');
        }
        ServiceEvent::EcrLifecycle => {
            out.extend_from_slice(
                b",\"serviceEventDetails\":{\"repositoryName\":\"payments-api\",\"lifecycleEventImageActions\":[],\"lifecycleEventFailureDetails\":[]}",
            );
        }
        _ => {}
    }
    out.extend_from_slice(b",\"eventCategory\":\"Management\"}");
}

/// An incident's record.
pub fn act(out: &mut Vec<u8>, rng: &mut Rng, org: &Org, plan: &Plan, act: &Act) {
    let event_id = Some(act.event_id.as_str());
    let (api, console) = match &act.what {
        ActKind::SignIn { user, success, mfa } => {
            let who = match user {
                Some(u) => SignIn::User(&org.users[*u]),
                None => SignIn::Root(act.account),
            };
            let login = Login { who, time: act.time, success: *success, mfa: *mfa, ip: &act.ip, ua: &act.ua, event_id };
            return console_login(out, rng, org, &login);
        }
        ActKind::RootCall { api, .. } => (*api, true),
        ActKind::SessionCall { api, session } => (*api, plan.sessions[*session as usize].console),
    };
    let root_arn;
    let arn = match &act.what {
        ActKind::SessionCall { session, .. } => plan.sessions[*session as usize].arn.as_str(),
        _ => {
            root_arn = format!("arn:aws:iam::{}:root", org.accounts[act.account].id);
            root_arn.as_str()
        }
    };
    let call = Call {
        api,
        time: act.time,
        region: act.region,
        account: act.account,
        ip: &act.ip,
        ua: &act.ua,
        arn,
        via_service: false,
        failure: None,
        console,
        vpc_endpoint: None,
        instance: None,
        event_id,
    };
    api_call(out, rng, org, &call, |out| match &act.what {
        ActKind::RootCall { key, since, .. } => identity::root(out, &org.accounts[act.account].id, key, *since),
        ActKind::SessionCall { session, .. } => identity::session(out, org, &plan.sessions[*session as usize], None),
        ActKind::SignIn { .. } => {}
    });
}
