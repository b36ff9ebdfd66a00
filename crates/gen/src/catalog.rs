//! The management API calls the synthetic callers make: which service, read
//! or write, and plausible `requestParameters` / `responseElements`.

use trailwatch_core::time::{civil_from_days, EpochMillis};

use crate::prng::Rng;
use crate::text::{human_time, push_str, push_u64};

#[derive(Debug, Clone, Copy)]
pub enum Params {
    Null,
    Empty,
    Instances,
    Filters,
    /// An S3 bucket sub-resource read (`policy`, `acl`, `encryption`, `location`).
    Bucket(&'static str),
    ListBuckets,
    PutBucketTagging,
    RoleName,
    UserName,
    Function,
    LogGroup,
    LogStream,
    Secret,
    Decrypt,
    DataKey,
    Parameter,
    DescribeServices,
    UpdateService,
    TaskDefinition,
    Stack,
    ChangeSet,
    /// On-demand (`spot: false`) or on the spot market.
    RunInstances {
        spot: bool,
    },
    RequestSpotInstances,
    /// Opens port 22 to the world.
    AuthorizeIngress,
    CreateRole,
    TagRole,
    /// An inline policy granting everything (`Deployer` escalating itself).
    PutRolePolicy,
    /// `AdministratorAccess` attached to `Deployer`.
    AttachRolePolicy,
    CreateLogGroup,
    DescribeTrails,
    /// The organization trail, by ARN.
    TrailName,
    CreateTags,
    TerminateInstances,
    CostAndUsage,
    InstanceInformation,
    Alarms,
}

#[derive(Debug)]
pub struct Api {
    pub source: &'static str,
    pub name: &'static str,
    pub read_only: bool,
    /// IAM, Cost Explorer and the like: logged in us-east-1 whatever the caller's region.
    pub global: bool,
    pub params: Params,
}

const fn read(source: &'static str, name: &'static str, params: Params) -> Api {
    Api { source, name, read_only: true, global: false, params }
}
const fn write(source: &'static str, name: &'static str, params: Params) -> Api {
    Api { source, name, read_only: false, global: false, params }
}
const fn global(source: &'static str, name: &'static str, read_only: bool, params: Params) -> Api {
    Api { source, name, read_only, global: true, params }
}

const EC2: &str = "ec2.amazonaws.com";
const S3: &str = "s3.amazonaws.com";
const IAM: &str = "iam.amazonaws.com";

pub const DESCRIBE_INSTANCES: Api = read(EC2, "DescribeInstances", Params::Instances);
pub const DESCRIBE_SECURITY_GROUPS: Api = read(EC2, "DescribeSecurityGroups", Params::Filters);
pub const DESCRIBE_VPCS: Api = read(EC2, "DescribeVpcs", Params::Filters);
pub const DESCRIBE_VOLUMES: Api = read(EC2, "DescribeVolumes", Params::Filters);
pub const DESCRIBE_NETWORK_INTERFACES: Api = read(EC2, "DescribeNetworkInterfaces", Params::Filters);
pub const DESCRIBE_TAGS: Api = read(EC2, "DescribeTags", Params::Filters);
pub const RUN_INSTANCES: Api = write(EC2, "RunInstances", Params::RunInstances { spot: false });
pub const TERMINATE_INSTANCES: Api = write(EC2, "TerminateInstances", Params::TerminateInstances);
pub const CREATE_TAGS: Api = write(EC2, "CreateTags", Params::CreateTags);
pub const LIST_BUCKETS: Api = read(S3, "ListBuckets", Params::ListBuckets);
pub const GET_BUCKET_POLICY: Api = read(S3, "GetBucketPolicy", Params::Bucket("policy"));
pub const GET_BUCKET_ACL: Api = read(S3, "GetBucketAcl", Params::Bucket("acl"));
pub const GET_BUCKET_ENCRYPTION: Api = read(S3, "GetBucketEncryption", Params::Bucket("encryption"));
pub const GET_BUCKET_LOCATION: Api = read(S3, "GetBucketLocation", Params::Bucket("location"));
pub const PUT_BUCKET_TAGGING: Api = write(S3, "PutBucketTagging", Params::PutBucketTagging);
pub const LIST_ROLES: Api = global(IAM, "ListRoles", true, Params::Null);
pub const GET_ROLE: Api = global(IAM, "GetRole", true, Params::RoleName);
pub const LIST_USERS: Api = global(IAM, "ListUsers", true, Params::Null);
pub const GET_USER: Api = global(IAM, "GetUser", true, Params::UserName);
pub const LIST_ATTACHED_ROLE_POLICIES: Api = global(IAM, "ListAttachedRolePolicies", true, Params::RoleName);
pub const LIST_ROLE_POLICIES: Api = global(IAM, "ListRolePolicies", true, Params::RoleName);
pub const CREATE_ROLE: Api = global(IAM, "CreateRole", false, Params::CreateRole);
pub const TAG_ROLE: Api = global(IAM, "TagRole", false, Params::TagRole);
pub const GET_CALLER_IDENTITY: Api = read("sts.amazonaws.com", "GetCallerIdentity", Params::Null);
pub const LIST_FUNCTIONS: Api = read("lambda.amazonaws.com", "ListFunctions20150331", Params::Null);
pub const GET_FUNCTION: Api = read("lambda.amazonaws.com", "GetFunction20150331v2", Params::Function);
pub const UPDATE_FUNCTION_CODE: Api = write("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", Params::Function);
pub const DESCRIBE_LOG_GROUPS: Api = read("logs.amazonaws.com", "DescribeLogGroups", Params::Empty);
pub const FILTER_LOG_EVENTS: Api = read("logs.amazonaws.com", "FilterLogEvents", Params::LogGroup);
pub const CREATE_LOG_STREAM: Api = write("logs.amazonaws.com", "CreateLogStream", Params::LogStream);
pub const CREATE_LOG_GROUP: Api = write("logs.amazonaws.com", "CreateLogGroup", Params::CreateLogGroup);
pub const DESCRIBE_ALARMS: Api = read("monitoring.amazonaws.com", "DescribeAlarms", Params::Alarms);
pub const DECRYPT: Api = read("kms.amazonaws.com", "Decrypt", Params::Decrypt);
pub const GENERATE_DATA_KEY: Api = read("kms.amazonaws.com", "GenerateDataKey", Params::DataKey);
pub const LIST_ALIASES: Api = read("kms.amazonaws.com", "ListAliases", Params::Null);
pub const GET_SECRET_VALUE: Api = read("secretsmanager.amazonaws.com", "GetSecretValue", Params::Secret);
pub const GET_PARAMETER: Api = read("ssm.amazonaws.com", "GetParameter", Params::Parameter);
pub const UPDATE_INSTANCE_INFORMATION: Api = write("ssm.amazonaws.com", "UpdateInstanceInformation", Params::InstanceInformation);
pub const GET_AUTHORIZATION_TOKEN: Api = read("ecr.amazonaws.com", "GetAuthorizationToken", Params::Null);
pub const DESCRIBE_SERVICES: Api = read("ecs.amazonaws.com", "DescribeServices", Params::DescribeServices);
pub const UPDATE_SERVICE: Api = write("ecs.amazonaws.com", "UpdateService", Params::UpdateService);
pub const REGISTER_TASK_DEFINITION: Api = write("ecs.amazonaws.com", "RegisterTaskDefinition", Params::TaskDefinition);
pub const DESCRIBE_STACKS: Api = read("cloudformation.amazonaws.com", "DescribeStacks", Params::Stack);
pub const CREATE_CHANGE_SET: Api = write("cloudformation.amazonaws.com", "CreateChangeSet", Params::ChangeSet);
pub const EXECUTE_CHANGE_SET: Api = write("cloudformation.amazonaws.com", "ExecuteChangeSet", Params::ChangeSet);
pub const DESCRIBE_DB_INSTANCES: Api = read("rds.amazonaws.com", "DescribeDBInstances", Params::Empty);
pub const GET_COST_AND_USAGE: Api = global("ce.amazonaws.com", "GetCostAndUsage", true, Params::CostAndUsage);

/// Calls only the incidents make: each of the writes is one the detection
/// pack reports, which is why no benign mix below contains them.
pub mod incident {
    use super::*;

    pub const GET_ACCOUNT_SUMMARY: Api = global(IAM, "GetAccountSummary", true, Params::Null);
    pub const DESCRIBE_TRAILS: Api = read("cloudtrail.amazonaws.com", "DescribeTrails", Params::DescribeTrails);
    pub const STOP_LOGGING: Api = write("cloudtrail.amazonaws.com", "StopLogging", Params::TrailName);
    pub const AUTHORIZE_INGRESS: Api = write(EC2, "AuthorizeSecurityGroupIngress", Params::AuthorizeIngress);
    pub const REQUEST_SPOT_INSTANCES: Api = write(EC2, "RequestSpotInstances", Params::RequestSpotInstances);
    pub const RUN_SPOT_INSTANCES: Api = write(EC2, "RunInstances", Params::RunInstances { spot: true });
    pub const PUT_ROLE_POLICY: Api = global(IAM, "PutRolePolicy", false, Params::PutRolePolicy);
    pub const ATTACH_ROLE_POLICY: Api = global(IAM, "AttachRolePolicy", false, Params::AttachRolePolicy);

    /// Every one of them, for tests.
    #[cfg(test)]
    pub const ALL: [&Api; 8] = [
        &GET_ACCOUNT_SUMMARY,
        &DESCRIBE_TRAILS,
        &STOP_LOGGING,
        &AUTHORIZE_INGRESS,
        &REQUEST_SPOT_INSTANCES,
        &RUN_SPOT_INSTANCES,
        &PUT_ROLE_POLICY,
        &ATTACH_ROLE_POLICY,
    ];
}

/// A weighted set of calls. None holds a call the detection pack reports
/// (security group, bucket policy or IAM policy changes, spot capacity…):
/// benign traffic raises no alert.
pub type Mix = &'static [(&'static Api, u32)];

pub static HUMAN: Mix = &[
    (&DESCRIBE_INSTANCES, 140),
    (&DESCRIBE_SECURITY_GROUPS, 80),
    (&DESCRIBE_VPCS, 40),
    (&LIST_BUCKETS, 80),
    (&GET_BUCKET_POLICY, 30),
    (&LIST_ROLES, 50),
    (&GET_ROLE, 40),
    (&LIST_USERS, 20),
    (&GET_USER, 10),
    (&GET_CALLER_IDENTITY, 60),
    (&LIST_FUNCTIONS, 40),
    (&DESCRIBE_LOG_GROUPS, 50),
    (&FILTER_LOG_EVENTS, 30),
    (&DESCRIBE_ALARMS, 40),
    (&DESCRIBE_DB_INSTANCES, 30),
    (&GET_COST_AND_USAGE, 10),
    (&DESCRIBE_STACKS, 40),
    (&LIST_ALIASES, 20),
    (&RUN_INSTANCES, 10),
    (&TERMINATE_INSTANCES, 8),
    (&CREATE_TAGS, 18),
    (&CREATE_LOG_GROUP, 4),
    (&CREATE_ROLE, 3),
    (&TAG_ROLE, 3),
    (&PUT_BUCKET_TAGGING, 2),
    (&UPDATE_FUNCTION_CODE, 5),
];

pub static CI: Mix = &[
    (&GET_CALLER_IDENTITY, 40),
    (&GET_AUTHORIZATION_TOKEN, 100),
    (&DESCRIBE_SERVICES, 60),
    (&REGISTER_TASK_DEFINITION, 40),
    (&UPDATE_SERVICE, 40),
    (&DESCRIBE_STACKS, 80),
    (&CREATE_CHANGE_SET, 30),
    (&EXECUTE_CHANGE_SET, 20),
    (&UPDATE_FUNCTION_CODE, 30),
    (&GET_FUNCTION, 30),
    (&GET_BUCKET_LOCATION, 30),
];

/// What CloudFormation does on a deployer's behalf (`invokedBy` cloudformation).
pub static CLOUDFORMATION: Mix = &[
    (&CREATE_LOG_GROUP, 30),
    (&RUN_INSTANCES, 10),
    (&CREATE_TAGS, 50),
    (&CREATE_ROLE, 10),
    (&TAG_ROLE, 20),
    (&PUT_BUCKET_TAGGING, 10),
    (&DESCRIBE_SECURITY_GROUPS, 30),
];

pub static TERRAFORM: Mix = &[
    (&DESCRIBE_INSTANCES, 60),
    (&DESCRIBE_SECURITY_GROUPS, 60),
    (&DESCRIBE_VPCS, 60),
    (&GET_ROLE, 80),
    (&LIST_ATTACHED_ROLE_POLICIES, 60),
    (&LIST_ROLE_POLICIES, 40),
    (&GET_BUCKET_POLICY, 50),
    (&GET_BUCKET_ACL, 40),
    (&GET_BUCKET_ENCRYPTION, 40),
    (&DESCRIBE_LOG_GROUPS, 30),
    (&GET_CALLER_IDENTITY, 30),
    (&CREATE_LOG_GROUP, 10),
    (&CREATE_ROLE, 10),
    (&TAG_ROLE, 20),
    (&CREATE_TAGS, 30),
    (&PUT_BUCKET_TAGGING, 10),
];

pub static INSTANCE: Mix = &[
    (&UPDATE_INSTANCE_INFORMATION, 100),
    (&GET_PARAMETER, 60),
    (&DECRYPT, 80),
    (&GENERATE_DATA_KEY, 40),
    (&GET_SECRET_VALUE, 60),
    (&DESCRIBE_TAGS, 40),
    (&GET_AUTHORIZATION_TOKEN, 30),
    (&CREATE_LOG_STREAM, 40),
    (&GET_CALLER_IDENTITY, 20),
];

pub static SCANNER: Mix = &[
    (&DESCRIBE_INSTANCES, 80),
    (&DESCRIBE_SECURITY_GROUPS, 80),
    (&DESCRIBE_VPCS, 50),
    (&DESCRIBE_VOLUMES, 50),
    (&LIST_ROLES, 60),
    (&LIST_USERS, 40),
    (&GET_BUCKET_ACL, 60),
    (&GET_BUCKET_POLICY, 60),
    (&GET_BUCKET_ENCRYPTION, 50),
    (&LIST_BUCKETS, 40),
    (&DESCRIBE_DB_INSTANCES, 30),
    (&LIST_FUNCTIONS, 30),
    (&LIST_ALIASES, 30),
];

pub static CONFIG: Mix = &[
    (&DESCRIBE_INSTANCES, 60),
    (&DESCRIBE_SECURITY_GROUPS, 60),
    (&DESCRIBE_NETWORK_INTERFACES, 60),
    (&DESCRIBE_VOLUMES, 50),
    (&DESCRIBE_VPCS, 40),
    (&GET_ROLE, 50),
    (&LIST_ATTACHED_ROLE_POLICIES, 40),
    (&LIST_ROLE_POLICIES, 30),
    (&GET_BUCKET_ACL, 40),
    (&GET_BUCKET_POLICY, 30),
    (&DESCRIBE_DB_INSTANCES, 20),
];

/// Long-term-key machine users (backups, an old Jenkins).
pub static MACHINE: Mix = &[
    (&DESCRIBE_INSTANCES, 50),
    (&DESCRIBE_VOLUMES, 50),
    (&LIST_BUCKETS, 30),
    (&GET_BUCKET_LOCATION, 20),
    (&DESCRIBE_DB_INSTANCES, 30),
    (&GET_CALLER_IDENTITY, 30),
    (&DESCRIBE_TAGS, 20),
    (&CREATE_TAGS, 10),
    (&RUN_INSTANCES, 3),
    (&TERMINATE_INSTANCES, 3),
];

pub fn pick(rng: &mut Rng, mix: Mix) -> &'static Api {
    let total: u32 = mix.iter().map(|m| m.1).sum();
    let mut x = rng.below(u64::from(total)) as u32;
    for (api, w) in mix {
        if x < *w {
            return api;
        }
        x -= w;
    }
    mix[0].0
}

/// A read-only call of a mix (`GetCallerIdentity` if the mix has hardly any).
pub fn pick_read(rng: &mut Rng, mix: Mix) -> &'static Api {
    (0..16).map(|_| pick(rng, mix)).find(|api| api.read_only).unwrap_or(&GET_CALLER_IDENTITY)
}

/// The IAM action prefix of a service (`monitoring.amazonaws.com` → `cloudwatch`).
pub fn action_prefix(source: &str) -> &str {
    match source {
        "monitoring.amazonaws.com" => "cloudwatch",
        "ce.amazonaws.com" => "ce",
        s => s.split('.').next().unwrap_or(s),
    }
}

/// `errorCode` of an authorization failure in this service.
pub fn denied_code(source: &str) -> &'static str {
    match source {
        "ec2.amazonaws.com" => "Client.UnauthorizedOperation",
        "iam.amazonaws.com" | "sts.amazonaws.com" | "s3.amazonaws.com" => "AccessDenied",
        _ => "AccessDeniedException",
    }
}

/// `errorCode` and `errorMessage` of throttling in this service.
pub fn throttled(source: &str) -> (&'static str, &'static str) {
    match source {
        "ec2.amazonaws.com" => ("Client.RequestLimitExceeded", "Request limit exceeded."),
        "s3.amazonaws.com" => ("SlowDown", "Please reduce your request rate."),
        _ => ("ThrottlingException", "Rate exceeded"),
    }
}

/// What a call is about, for its parameters.
pub struct Ctx<'a> {
    pub account_id: &'a str,
    pub region: &'a str,
    pub time: EpochMillis,
    /// The instance making the call, for the SSM agent's calls.
    pub instance: Option<&'a str>,
    pub ip: &'a str,
}

const PURPOSES: [&str; 6] = ["assets", "artifacts", "data-lake", "backups", "terraform-state", "access-logs"];
const FUNCTIONS: [&str; 4] = ["order-events-consumer", "thumbnail-resizer", "nightly-report", "slack-notifier"];
const SERVICES: [&str; 4] = ["payments-api", "web-frontend", "ledger-worker", "search-indexer"];
const ROLE_NAMES: [&str; 5] = ["Deployer", "lambda-exec-role", "ecs-task-execution-role", "rds-monitoring-role", "ReadOnly"];
const STACKS: [&str; 4] = ["network-baseline", "app-service", "iam-roles", "monitoring"];
const PEOPLE: [&str; 4] = ["alice.nguyen", "bob.okafor", "grace.lee", "terraform-ci"];

/// A single-field object: `{"key":"value"}`.
fn single(out: &mut Vec<u8>, key: &[u8], value: &str) {
    obj(out, key, value);
    out.push(b'}');
}

fn obj(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(key);
    push_str(out, value);
}

fn one(rng: &mut Rng, items: &[&'static str]) -> &'static str {
    items[rng.index(items.len())]
}

fn id(rng: &mut Rng, prefix: &str, hex: usize) -> String {
    format!("{prefix}{}", rng.hex(hex))
}

fn date(out: &mut Vec<u8>, ms: EpochMillis) {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    push_str(out, &format!("{y:04}-{m:02}-{d:02}"));
}

fn request_id_obj(out: &mut Vec<u8>, rng: &mut Rng) {
    out.extend_from_slice(b"{\"requestId\":\"");
    rng.push_uuid(out);
    out.push(b'"');
}

/// Writes `,"requestParameters":…,"responseElements":…` for a call.
/// Failed calls (`failed`) have no response.
pub fn write_call(out: &mut Vec<u8>, rng: &mut Rng, api: &Api, ctx: &Ctx<'_>, failed: bool) {
    out.extend_from_slice(b",\"requestParameters\":");
    let mut response: Option<String> = None;
    let mut ec2_return = false;
    match api.params {
        Params::Null => out.extend_from_slice(b"null"),
        Params::Empty => out.extend_from_slice(b"{}"),
        Params::Filters => out.extend_from_slice(b"{\"filterSet\":{}}"),
        Params::Alarms => out.extend_from_slice(b"{\"maxRecords\":100}"),
        Params::Instances => {
            if rng.chance(0.5) {
                out.extend_from_slice(b"{\"instancesSet\":{},\"filterSet\":{}}");
            } else {
                let i = id(rng, "i-0", 16);
                out.extend_from_slice(b"{\"instancesSet\":{\"items\":[{\"instanceId\":");
                push_str(out, &i);
                out.extend_from_slice(b"}]},\"filterSet\":{}}");
            }
        }
        Params::Bucket(sub) => {
            let bucket = format!("acme-{}-{}", one(rng, &PURPOSES), ctx.account_id);
            obj(out, b"{\"bucketName\":", &bucket);
            obj(out, b",\"Host\":", &format!("{bucket}.s3.{}.amazonaws.com", ctx.region));
            out.extend_from_slice(b",\"");
            out.extend_from_slice(sub.as_bytes());
            out.extend_from_slice(b"\":\"\"}");
        }
        Params::ListBuckets => single(out, b"{\"Host\":", &format!("s3.{}.amazonaws.com", ctx.region)),
        Params::PutBucketTagging => {
            let bucket = format!("acme-{}-{}", one(rng, &PURPOSES), ctx.account_id);
            obj(out, b"{\"Tagging\":{\"xmlns\":\"http://s3.amazonaws.com/doc/2006-03-01/\",\"TagSet\":{\"Tag\":[{\"Key\":\"owner\",\"Value\":", one(rng, &PEOPLE));
            obj(out, b"},{\"Key\":\"cost-center\",\"Value\":", one(rng, &SERVICES));
            obj(out, b"}]}},\"bucketName\":", &bucket);
            obj(out, b",\"Host\":", &format!("{bucket}.s3.{}.amazonaws.com", ctx.region));
            out.extend_from_slice(b",\"tagging\":\"\"}");
        }
        Params::RoleName => single(out, b"{\"roleName\":", one(rng, &ROLE_NAMES)),
        Params::UserName => single(out, b"{\"userName\":", one(rng, &PEOPLE)),
        Params::Function => single(out, b"{\"functionName\":", one(rng, &FUNCTIONS)),
        Params::LogGroup => single(out, b"{\"logGroupName\":", &format!("/aws/lambda/{}", one(rng, &FUNCTIONS))),
        Params::LogStream => {
            obj(out, b"{\"logGroupName\":", &format!("/ecs/{}", one(rng, &SERVICES)));
            let stream = format!("app/app/{}", rng.hex(32));
            single(out, b",\"logStreamName\":", &stream);
        }
        Params::Secret => single(out, b"{\"secretId\":", &format!("prod/{}/db-credentials", one(rng, &SERVICES))),
        Params::Decrypt => out.extend_from_slice(b"{\"encryptionAlgorithm\":\"SYMMETRIC_DEFAULT\"}"),
        Params::DataKey => {
            obj(out, b"{\"keyId\":", &format!("alias/{}", one(rng, &SERVICES)));
            out.extend_from_slice(b",\"keySpec\":\"AES_256\"}");
        }
        Params::Parameter => {
            obj(out, b"{\"name\":", &format!("/{}/config/database_url", one(rng, &SERVICES)));
            out.extend_from_slice(b",\"withDecryption\":true}");
        }
        Params::DescribeServices => {
            let svc = one(rng, &SERVICES);
            obj(out, b"{\"cluster\":", "main");
            out.extend_from_slice(b",\"services\":[");
            push_str(out, svc);
            out.extend_from_slice(b"]}");
        }
        Params::UpdateService => {
            let svc = one(rng, &SERVICES);
            obj(out, b"{\"cluster\":", "main");
            obj(out, b",\"service\":", svc);
            obj(out, b",\"taskDefinition\":", &format!("{svc}:{}", rng.between(10, 400)));
            out.extend_from_slice(b",\"forceNewDeployment\":false}");
        }
        Params::TaskDefinition => {
            let svc = one(rng, &SERVICES);
            obj(out, b"{\"family\":", svc);
            out.extend_from_slice(b",\"containerDefinitions\":[{\"name\":\"app\",\"image\":");
            push_str(out, &format!("{}.dkr.ecr.{}.amazonaws.com/{svc}:{}", ctx.account_id, ctx.region, rng.hex(7)));
            out.extend_from_slice(b",\"cpu\":256,\"memory\":512,\"essential\":true}],\"networkMode\":\"awsvpc\",\"requiresCompatibilities\":[\"FARGATE\"],\"cpu\":\"256\",\"memory\":\"512\"}");
        }
        Params::Stack => single(out, b"{\"stackName\":", one(rng, &STACKS)),
        Params::ChangeSet => {
            let stack = one(rng, &STACKS);
            let change_set = format!("deploy-{}", rng.hex(8));
            obj(out, b"{\"stackName\":", stack);
            obj(out, b",\"changeSetName\":", &change_set);
            out.push(b'}');
            if api.name == "CreateChangeSet" {
                response = Some(format!(
                    "{{\"id\":\"arn:aws:cloudformation:{r}:{a}:changeSet/{change_set}/{}\",\"stackId\":\"arn:aws:cloudformation:{r}:{a}:stack/{stack}/{}\"}}",
                    rng.uuid(),
                    rng.uuid(),
                    r = ctx.region,
                    a = ctx.account_id
                ));
            }
        }
        Params::RunInstances { spot } => {
            let ami = id(rng, "ami-0", 16);
            let itype = if spot { *rng.pick(&["p3.8xlarge", "g5.12xlarge", "c6i.32xlarge"]) } else { *rng.pick(&["t3.medium", "m6i.large", "c6g.xlarge"]) };
            obj(out, b"{\"instancesSet\":{\"items\":[{\"imageId\":", &ami);
            out.extend_from_slice(b",\"minCount\":1,\"maxCount\":1}]},\"instanceType\":");
            push_str(out, itype);
            out.extend_from_slice(
                b",\"blockDeviceMapping\":{},\"monitoring\":{\"enabled\":false},\"disableApiTermination\":false,\"disableApiStop\":false,\"clientToken\":\"",
            );
            rng.push_uuid(out);
            out.push(b'"');
            if spot {
                out.extend_from_slice(b",\"instanceMarketOptions\":{\"marketType\":\"spot\",\"spotOptions\":{\"spotInstanceType\":\"one-time\",\"instanceInterruptionBehavior\":\"terminate\"}}");
            }
            out.push(b'}');
            let (a, b, c) = (rng.between(0, 255), rng.between(0, 255), rng.between(4, 250));
            response = Some(format!(
                "{{\"requestId\":\"{}\",\"reservationId\":\"r-0{}\",\"ownerId\":\"{acct}\",\"groupSet\":{{}},\"instancesSet\":{{\"items\":[{{\"instanceId\":\"i-0{}\",\"imageId\":\"{ami}\",\"instanceState\":{{\"code\":0,\"name\":\"pending\"}},\"privateDnsName\":\"ip-10-{a}-{b}-{c}.ec2.internal\",\"amiLaunchIndex\":0,\"productCodes\":{{}},\"instanceType\":\"{itype}\",\"launchTime\":{},\"placement\":{{\"availabilityZone\":\"{}a\",\"tenancy\":\"default\"}},\"monitoring\":{{\"state\":\"disabled\"}},\"privateIpAddress\":\"10.{a}.{b}.{c}\"}}]}}}}",
                rng.uuid(),
                rng.hex(16),
                rng.hex(16),
                ctx.time,
                ctx.region,
                acct = ctx.account_id
            ));
        }
        Params::TerminateInstances => {
            let i = id(rng, "i-0", 16);
            obj(out, b"{\"instancesSet\":{\"items\":[{\"instanceId\":", &i);
            out.extend_from_slice(b"}]}}");
            response = Some(format!(
                "{{\"requestId\":\"{}\",\"instancesSet\":{{\"items\":[{{\"instanceId\":\"{i}\",\"currentState\":{{\"code\":32,\"name\":\"shutting-down\"}},\"previousState\":{{\"code\":16,\"name\":\"running\"}}}}]}}}}",
                rng.uuid()
            ));
        }
        Params::RequestSpotInstances => {
            let (ami, itype, count) = (id(rng, "ami-0", 16), *rng.pick(&["p3.8xlarge", "g5.12xlarge"]), rng.between(2, 4) as u64);
            out.extend_from_slice(b"{\"spotPrice\":\"14.688\",\"instanceCount\":");
            push_u64(out, count);
            obj(out, b",\"type\":\"one-time\",\"launchSpecification\":{\"imageId\":", &ami);
            obj(out, b",\"instanceType\":", itype);
            out.extend_from_slice(b",\"monitoring\":{\"enabled\":false}}}");
            let mut items = Vec::new();
            for _ in 0..count {
                items.push(format!(
                    "{{\"spotInstanceRequestId\":\"sir-{}\",\"spotPrice\":\"14.688000\",\"type\":\"one-time\",\"state\":\"open\",\"status\":{{\"code\":\"pending-evaluation\",\"message\":\"Your Spot request has been submitted for review, and is pending evaluation.\"}},\"launchSpecification\":{{\"imageId\":\"{ami}\",\"instanceType\":\"{itype}\"}},\"instanceInterruptionBehavior\":\"terminate\"}}",
                    rng.lower_alnum(8)
                ));
            }
            response = Some(format!("{{\"requestId\":\"{}\",\"spotInstanceRequestSet\":{{\"items\":[{}]}}}}", rng.uuid(), items.join(",")));
        }
        Params::AuthorizeIngress => {
            let sg = id(rng, "sg-0", 16);
            obj(out, b"{\"groupId\":", &sg);
            out.extend_from_slice(b",\"ipPermissions\":{\"items\":[{\"ipProtocol\":\"tcp\",\"fromPort\":22,\"toPort\":22,\"groups\":{},\"ipRanges\":{\"items\":[{\"cidrIp\":\"0.0.0.0/0\"}]},\"ipv6Ranges\":{},\"prefixListIds\":{}}]}}");
            response = Some(format!(
                "{{\"requestId\":\"{}\",\"_return\":true,\"securityGroupRuleSet\":{{\"items\":[{{\"groupOwnerId\":\"{}\",\"groupId\":\"{sg}\",\"securityGroupRuleId\":\"sgr-0{}\",\"isEgress\":false,\"ipProtocol\":\"tcp\",\"fromPort\":22,\"toPort\":22,\"cidrIpv4\":\"0.0.0.0/0\"}}]}}}}",
                rng.uuid(),
                ctx.account_id,
                rng.hex(16)
            ));
        }
        Params::DescribeTrails => out.extend_from_slice(b"{\"trailNameList\":[],\"includeShadowTrails\":true}"),
        Params::TrailName => single(out, b"{\"name\":", &format!("arn:aws:cloudtrail:{}:{}:trail/{}", ctx.region, ctx.account_id, crate::org::TRAIL_NAME)),
        Params::CreateLogGroup => single(out, b"{\"logGroupName\":", &format!("/aws/lambda/{}", one(rng, &FUNCTIONS))),
        Params::CreateTags => {
            let instance = id(rng, "i-0", 16);
            obj(out, b"{\"resourcesSet\":{\"items\":[{\"resourceId\":", &instance);
            obj(out, b"}]},\"tagSet\":{\"items\":[{\"key\":\"owner\",\"value\":", one(rng, &PEOPLE));
            out.extend_from_slice(b"}]}}");
            ec2_return = true;
        }
        Params::CreateRole => {
            let name = format!("{}-role-{}", one(rng, &FUNCTIONS), rng.hex(6));
            obj(out, b"{\"roleName\":", &name);
            out.extend_from_slice(b",\"assumeRolePolicyDocument\":\"{\\\"Version\\\":\\\"2012-10-17\\\",\\\"Statement\\\":[{\\\"Effect\\\":\\\"Allow\\\",\\\"Principal\\\":{\\\"Service\\\":\\\"lambda.amazonaws.com\\\"},\\\"Action\\\":\\\"sts:AssumeRole\\\"}]}\"}");
            response = Some(format!(
                "{{\"role\":{{\"path\":\"/\",\"roleName\":\"{name}\",\"roleId\":\"{}\",\"arn\":\"arn:aws:iam::{}:role/{name}\",\"createDate\":\"{}\"}}}}",
                rng.key_id("AROA", 17),
                ctx.account_id,
                human_time(ctx.time)
            ));
        }
        Params::TagRole => {
            obj(out, b"{\"roleName\":", one(rng, &ROLE_NAMES));
            obj(out, b",\"tags\":[{\"key\":\"owner\",\"value\":", one(rng, &PEOPLE));
            out.extend_from_slice(b"}]}");
        }
        Params::PutRolePolicy => out.extend_from_slice(
            b"{\"roleName\":\"Deployer\",\"policyName\":\"ci-bootstrap\",\"policyDocument\":\"{\\\"Version\\\":\\\"2012-10-17\\\",\\\"Statement\\\":[{\\\"Effect\\\":\\\"Allow\\\",\\\"Action\\\":\\\"*\\\",\\\"Resource\\\":\\\"*\\\"}]}\"}",
        ),
        Params::AttachRolePolicy => out.extend_from_slice(b"{\"roleName\":\"Deployer\",\"policyArn\":\"arn:aws:iam::aws:policy/AdministratorAccess\"}"),
        Params::CostAndUsage => {
            out.extend_from_slice(b"{\"timePeriod\":{\"start\":");
            date(out, ctx.time - 30 * 86_400_000);
            out.extend_from_slice(b",\"end\":");
            date(out, ctx.time);
            out.extend_from_slice(b"},\"granularity\":\"DAILY\",\"metrics\":[\"UnblendedCost\"]}");
        }
        Params::InstanceInformation => {
            obj(out, b"{\"instanceId\":", ctx.instance.unwrap_or("i-0"));
            out.extend_from_slice(b",\"agentVersion\":\"3.3.40.0\",\"agentStatus\":\"Active\",\"platformType\":\"Linux\",\"platformName\":\"Amazon Linux\",\"platformVersion\":\"2023\",\"iPAddress\":");
            push_str(out, ctx.ip);
            out.extend_from_slice(b",\"computerName\":");
            push_str(out, &format!("ip-{}.ec2.internal", ctx.ip.replace('.', "-")));
            out.extend_from_slice(b",\"availabilityZone\":");
            push_str(out, &format!("{}a", ctx.region));
            out.push(b'}');
        }
    }
    out.extend_from_slice(b",\"responseElements\":");
    if failed {
        out.extend_from_slice(b"null");
    } else if let Some(r) = response {
        out.extend_from_slice(r.as_bytes());
    } else if ec2_return {
        request_id_obj(out, rng);
        out.extend_from_slice(b",\"_return\":true}");
    } else {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_writes_valid_json() {
        let mut rng = Rng::new(1, 1);
        let ctx = Ctx { account_id: "210987654321", region: "eu-west-1", time: 1_793_491_200_000, instance: Some("i-0abc"), ip: "10.1.2.3" };
        let incident: Vec<(&Api, u32)> = incident::ALL.iter().map(|a| (*a, 1)).collect();
        for mix in [HUMAN, CI, CLOUDFORMATION, TERRAFORM, INSTANCE, SCANNER, CONFIG, MACHINE, &incident[..]] {
            for (api, _) in mix {
                for failed in [false, true] {
                    let mut out = b"{\"x\":1".to_vec();
                    write_call(&mut out, &mut rng, api, &ctx, failed);
                    out.push(b'}');
                    let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{}: {e}: {}", api.name, String::from_utf8_lossy(&out)));
                    assert!(v.get("requestParameters").is_some());
                    if failed {
                        assert!(v["responseElements"].is_null());
                    }
                }
            }
        }
    }

    #[test]
    fn error_codes_follow_the_service() {
        assert_eq!(denied_code("ec2.amazonaws.com"), "Client.UnauthorizedOperation");
        assert_eq!(denied_code("iam.amazonaws.com"), "AccessDenied");
        assert_eq!(denied_code("kms.amazonaws.com"), "AccessDeniedException");
        assert_eq!(action_prefix("monitoring.amazonaws.com"), "cloudwatch");
        assert_eq!(action_prefix("ec2.amazonaws.com"), "ec2");
    }
}
