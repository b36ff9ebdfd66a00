//! The synthetic organization: its accounts, the people who work in it, IAM
//! users, roles, identity providers, EC2 applications and CI repositories.
//! Everything here is drawn from the organization's own random stream.

use std::io::Write;

use serde::Serialize;
use trailwatch_core::time::EpochMillis;

use crate::prng::{Rng, STREAM_ORG};
use crate::text::cli_time;

/// The organization trail's name, as it appears in digest file names.
pub const TRAIL_NAME: &str = "org-trail";
/// The mail domain of the synthetic company (a reserved `.example` name).
pub const DOMAIN: &str = "acme.example";
const GITHUB_OWNER: &str = "acme";
const HOME_REGION: &str = "us-east-1";
const OTHER_REGIONS: [&str; 5] = ["us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2", "us-east-2"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Management,
    Identity,
    LogArchive,
    Security,
    Shared,
    Prod,
    Staging,
    Dev,
    Sandbox,
}

impl AccountKind {
    /// The organizational unit the account sits in, from the root.
    pub fn ou_path(self) -> &'static str {
        match self {
            AccountKind::Management => "Root",
            AccountKind::Identity | AccountKind::LogArchive | AccountKind::Security => "Root/Security",
            AccountKind::Shared => "Root/Infrastructure",
            AccountKind::Prod => "Root/Workloads/Prod",
            AccountKind::Staging => "Root/Workloads/Staging",
            AccountKind::Dev => "Root/Workloads/Dev",
            AccountKind::Sandbox => "Root/Sandbox",
        }
    }

    /// The `environment` tag of its accounts.
    pub fn environment(self) -> &'static str {
        match self {
            AccountKind::Prod => "production",
            AccountKind::Staging => "staging",
            AccountKind::Dev | AccountKind::Sandbox => "development",
            AccountKind::Management | AccountKind::Identity | AccountKind::LogArchive | AccountKind::Security | AccountKind::Shared => "platform",
        }
    }

    fn base_weight(self) -> f64 {
        match self {
            AccountKind::Management => 1.0,
            AccountKind::Identity => 2.0,
            AccountKind::LogArchive => 0.8,
            AccountKind::Security => 2.0,
            AccountKind::Shared => 2.5,
            AccountKind::Prod => 5.0,
            AccountKind::Staging => 2.0,
            AccountKind::Dev => 1.5,
            AccountKind::Sandbox => 0.4,
        }
    }

    /// Accounts that run applications, deploy from CI and take cross-account work.
    pub fn is_workload(self) -> bool {
        matches!(self, AccountKind::Shared | AccountKind::Prod | AccountKind::Staging | AccountKind::Dev)
    }
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub email: String,
    pub kind: AccountKind,
    /// The regions the account works in, `us-east-1` first.
    pub regions: Vec<&'static str>,
    pub region_weights: Vec<f64>,
    /// How busy the account is, relative to the others.
    pub weight: f64,
    pub joined_method: &'static str,
    pub joined: EpochMillis,
    /// `arn:aws:iam::<id>:saml-provider/AWSSSO_<16 hex>_DO_NOT_DELETE`.
    pub sso_provider: String,
    /// The SAML name qualifier of the Identity Center provider (CloudTrail's `identityProvider` for SAML users).
    pub sso_qualifier: String,
    /// An external IdP (Okta) provider and its qualifier, in some workload accounts.
    pub okta: Option<(String, String)>,
    /// `arn:aws:iam::<id>:oidc-provider/token.actions.githubusercontent.com`, in workload accounts.
    pub github_provider: Option<String>,
    pub vpc_endpoint: String,
    pub roles: Vec<usize>,
}

impl Account {
    pub fn region_index(&self, region: &str) -> Option<usize> {
        self.regions.iter().position(|r| *r == region)
    }
}

#[derive(Debug, Clone)]
pub struct Person {
    /// `alice.nguyen`.
    pub handle: String,
    pub email: String,
    pub ip: String,
    pub cli_ua: String,
    pub browser_ua: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserJob {
    Human,
    Terraform,
    Broker,
    Backup,
    Jenkins,
    /// A local console user of a workload account that nobody uses any
    /// more: a password, no MFA device, no traffic. The brute-force
    /// incident's target.
    Local,
}

/// An IAM user with a long-term access key.
#[derive(Debug, Clone)]
pub struct IamUser {
    pub account: usize,
    pub name: String,
    pub arn: String,
    pub principal_id: String,
    pub key: String,
    pub person: Option<usize>,
    pub mfa: bool,
    pub job: UserJob,
    pub ip: String,
    pub ua: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionSet {
    Admin,
    ReadOnly,
    PowerUser,
    Billing,
}

impl PermissionSet {
    pub fn name(self) -> &'static str {
        match self {
            PermissionSet::Admin => "AdministratorAccess",
            PermissionSet::ReadOnly => "ReadOnlyAccess",
            PermissionSet::PowerUser => "PowerUserAccess",
            PermissionSet::Billing => "Billing",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    OrgAccess,
    Admin,
    ReadOnly,
    Deploy,
    Sso(PermissionSet),
    GithubDeploy,
    Instance,
    Config,
    SecurityAudit,
    Okta,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub account: usize,
    pub name: String,
    /// The IAM ARN, with the role's path.
    pub arn: String,
    /// `AROA…`.
    pub principal_id: String,
    pub kind: RoleKind,
}

impl Role {
    /// `arn:aws:sts::<account>:assumed-role/<name>/<session>` (the path is not part of it).
    pub fn assumed_arn(&self, account_id: &str, session: &str) -> String {
        format!("arn:aws:sts::{account_id}:assumed-role/{}/{session}", self.name)
    }
}

/// An application running on EC2 instances with an instance profile.
#[derive(Debug, Clone)]
pub struct App {
    pub account: usize,
    pub role: usize,
    pub region: &'static str,
    /// The security tooling scanner, which assumes `SecurityAudit` in every account.
    pub scanner: bool,
    pub subnet: (u8, u8),
    pub ua: String,
}

/// A GitHub repository whose workflows deploy with OIDC.
#[derive(Debug, Clone)]
pub struct Repo {
    pub account: usize,
    /// The token's `sub`: `repo:acme/payments-api:ref:refs/heads/main`.
    pub subject: String,
    pub role: usize,
}

#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub accounts: Vec<Account>,
    pub people: Vec<Person>,
    pub users: Vec<IamUser>,
    pub roles: Vec<Role>,
    pub apps: Vec<App>,
    pub repos: Vec<Repo>,
    /// The trail bucket.
    pub bucket: String,
    pub sso_issuer: String,
    pub okta_issuer: String,
}

/// Index of the management account.
pub const MANAGEMENT: usize = 0;
/// Index of the identity account, where the IAM users live.
pub const IDENTITY: usize = 1;

const PEOPLE: [(&str, &str); 16] = [
    ("Alice", "Nguyen"),
    ("Bob", "Okafor"),
    ("Carol", "Schmidt"),
    ("Dan", "Kowalski"),
    ("Erin", "Yamamoto"),
    ("Frank", "Moreau"),
    ("Grace", "Lee"),
    ("Hiro", "Tanaka"),
    ("Ines", "Garcia"),
    ("Jamal", "Wright"),
    ("Kim", "Larsen"),
    ("Luis", "Fernandez"),
    ("Maya", "Patel"),
    ("Noah", "Fischer"),
    ("Olga", "Ivanova"),
    ("Priya", "Raman"),
];

const NAMED_ACCOUNTS: [(&str, AccountKind); 16] = [
    ("Log Archive", AccountKind::LogArchive),
    ("Security Tooling", AccountKind::Security),
    ("Prod Payments", AccountKind::Prod),
    ("Prod Web", AccountKind::Prod),
    ("Shared Services", AccountKind::Shared),
    ("Staging Payments", AccountKind::Staging),
    ("Dev Platform", AccountKind::Dev),
    ("Sandbox Alice", AccountKind::Sandbox),
    ("Prod Data", AccountKind::Prod),
    ("Staging Web", AccountKind::Staging),
    ("Dev Payments", AccountKind::Dev),
    ("Sandbox Bob", AccountKind::Sandbox),
    ("Prod Search", AccountKind::Prod),
    ("Staging Data", AccountKind::Staging),
    ("Dev Web", AccountKind::Dev),
    ("Sandbox Carol", AccountKind::Sandbox),
];

const MORE_TEAMS: [&str; 10] = ["Ledger", "Mobile", "Analytics", "Messaging", "Checkout", "Risk", "Catalog", "Billing", "Notifications", "Media"];

const BROWSERS: [&str; 3] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:122.0) Gecko/20100101 Firefox/122.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2.1 Safari/605.1.15",
];

fn slug(name: &str) -> String {
    name.to_ascii_lowercase().replace(' ', "-")
}

/// The team word of a workload account's name (`Prod Payments` → `payments`).
fn team(name: &str) -> String {
    name.split_once(' ').map_or(name, |(_, t)| t).to_ascii_lowercase().replace(' ', "-")
}

fn account_names(count: usize) -> Vec<(String, AccountKind)> {
    let mut out = vec![("Management".to_owned(), AccountKind::Management), ("Identity".to_owned(), AccountKind::Identity)];
    for (name, kind) in NAMED_ACCOUNTS {
        out.push((name.to_owned(), kind));
    }
    let envs = [("Prod", AccountKind::Prod), ("Staging", AccountKind::Staging), ("Dev", AccountKind::Dev)];
    let mut i = 0usize;
    while out.len() < count {
        let (env, kind) = envs[i % 3];
        let team = MORE_TEAMS[(i / 3) % MORE_TEAMS.len()];
        let round = i / (3 * MORE_TEAMS.len());
        let name = if round == 0 { format!("{env} {team}") } else { format!("{env} {team} {}", round + 1) };
        out.push((name, kind));
        i += 1;
    }
    out.truncate(count);
    out
}

fn account_id(rng: &mut Rng, taken: &[Account]) -> String {
    loop {
        let id = format!("{}{:011}", rng.between(1, 9), rng.below(100_000_000_000));
        if id != "123456789012" && !taken.iter().any(|a| a.id == id) {
            return id;
        }
    }
}

fn cli_ua(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => format!("aws-cli/2.15.{} Python/3.11.{} Darwin/23.{}.0 exe/x86_64 prompt/off", rng.between(10, 40), rng.between(6, 8), rng.between(1, 4)),
        1 => format!(
            "aws-cli/2.15.{} Python/3.11.{} Linux/6.5.0-{}-generic exe/x86_64.ubuntu.22 prompt/off",
            rng.between(10, 40),
            rng.between(6, 8),
            rng.between(14, 30)
        ),
        _ => {
            let v = rng.between(20, 40);
            format!("Boto3/1.34.{v} md/Botocore#1.34.{v} ua/2.0 os/macos#23.2.0 md/arch#arm64 lang/python#3.11.7 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.{v}")
        }
    }
}

fn terraform_ua(rng: &mut Rng) -> String {
    format!(
        "APN/1.0 HashiCorp/1.0 Terraform/1.7.{} (+https://www.terraform.io) terraform-provider-aws/5.{}.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.25.{} os/linux lang/go#1.21.{} md/GOOS#linux md/GOARCH#amd64",
        rng.between(0, 5),
        rng.between(30, 40),
        rng.between(0, 3),
        rng.between(5, 8)
    )
}

fn sdk_ua(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => format!("aws-sdk-go-v2/1.24.{} os/linux lang/go#1.21.6 md/GOOS#linux md/GOARCH#amd64", rng.between(0, 4)),
        1 => format!("aws-sdk-java/2.21.{} Linux/5.10.205-195.804.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/17.0.9+8-LTS Java/17.0.9 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/legacy", rng.between(30, 46)),
        _ => format!("Boto3/1.34.{0} md/Botocore#1.34.{0} ua/2.0 os/linux#5.10.205-195.804.amzn2.x86_64 md/arch#x86_64 lang/python#3.11.6 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.{0}", rng.between(10, 30)),
    }
}

fn add_role(roles: &mut Vec<Role>, accounts: &mut [Account], rng: &mut Rng, account: usize, kind: RoleKind, name: String, path: &str) -> usize {
    let id = &accounts[account].id;
    let role = Role { account, arn: format!("arn:aws:iam::{id}:role{path}{name}"), name, principal_id: rng.key_id("AROA", 17), kind };
    roles.push(role);
    accounts[account].roles.push(roles.len() - 1);
    roles.len() - 1
}

impl Org {
    /// Builds the organization of `accounts` accounts (at least 2) for a seed.
    #[cfg(test)]
    pub fn build(seed: u64, accounts: usize, end: EpochMillis) -> Org {
        Org::build_with(seed, accounts, end, &[])
    }

    /// Like [`Org::build`], with the first accounts' ids given (management first).
    pub fn build_with(seed: u64, accounts: usize, end: EpochMillis, ids: &[String]) -> Org {
        let mut rng = Rng::new(seed, STREAM_ORG);
        let id = format!("o-{}", rng.lower_alnum(10));
        let mut accts: Vec<Account> = Vec::with_capacity(accounts);
        let management_joined = end - rng.between(4 * 365, 6 * 365) * 86_400_000 - rng.between(0, 86_399_999);
        for (i, (name, kind)) in account_names(accounts.max(2)).into_iter().enumerate() {
            let generated = account_id(&mut rng, &accts);
            let aid = ids.get(i).cloned().unwrap_or(generated);
            let mut regions = vec![HOME_REGION];
            let extra = if matches!(kind, AccountKind::Management | AccountKind::Identity | AccountKind::LogArchive) || rng.chance(0.6) { 1 } else { 2 };
            while regions.len() < 1 + extra {
                let r = *rng.pick(&OTHER_REGIONS);
                if !regions.contains(&r) {
                    regions.push(r);
                }
            }
            let region_weights = if extra == 1 { vec![0.7, 0.3] } else { vec![0.6, 0.25, 0.15] };
            // A few busy accounts: a heavy-tailed factor from a product of uniforms.
            let u = rng.unit();
            let weight = kind.base_weight() * rng.uniform(0.6, 1.4) * (1.0 + 2.5 * u * u * u);
            let email = match kind {
                AccountKind::Sandbox => {
                    let first = name.rsplit(' ').next().unwrap_or("sandbox").to_ascii_lowercase();
                    let last = PEOPLE.iter().find(|(f, _)| f.eq_ignore_ascii_case(&first)).map_or("dev", |(_, l)| l).to_ascii_lowercase();
                    format!("{first}.{last}+sandbox@{DOMAIN}")
                }
                _ => format!("aws-{}@{DOMAIN}", slug(&name)),
            };
            let joined = if i == MANAGEMENT { management_joined } else { management_joined + rng.between(1, 1200) * 86_400_000 + rng.between(0, 86_399_999) };
            let joined_method = if i == MANAGEMENT || (kind == AccountKind::Prod && rng.chance(0.4)) { "INVITED" } else { "CREATED" };
            let sso_provider = format!("arn:aws:iam::{aid}:saml-provider/AWSSSO_{}_DO_NOT_DELETE", rng.hex(16));
            let sso_qualifier = format!("{}=", rng.base64(27));
            let okta = (kind.is_workload() && (kind == AccountKind::Prod || rng.chance(0.5)))
                .then(|| (format!("arn:aws:iam::{aid}:saml-provider/Okta"), format!("{}=", rng.base64(27))));
            let github_provider = kind.is_workload().then(|| format!("arn:aws:iam::{aid}:oidc-provider/token.actions.githubusercontent.com"));
            let vpc_endpoint = format!("vpce-0{}", rng.hex(16));
            accts.push(Account {
                id: aid,
                name,
                email,
                kind,
                regions,
                region_weights,
                weight,
                joined_method,
                joined: joined.min(end - 30 * 86_400_000),
                sso_provider,
                sso_qualifier,
                okta,
                github_provider,
                vpc_endpoint,
                roles: Vec::new(),
            });
        }

        let people: Vec<Person> = PEOPLE
            .iter()
            .map(|(first, last)| {
                let handle = format!("{}.{}", first.to_ascii_lowercase(), last.to_ascii_lowercase());
                let ip = match rng.below(3) {
                    0 => format!("198.51.100.{}", rng.between(10, 250)),
                    1 => format!("203.0.113.{}", rng.between(10, 250)),
                    _ => format!("192.0.2.{}", rng.between(10, 250)),
                };
                Person { email: format!("{handle}@{DOMAIN}"), handle, ip, cli_ua: cli_ua(&mut rng), browser_ua: BROWSERS[rng.index(BROWSERS.len())] }
            })
            .collect();

        let mut roles = Vec::new();
        let mut apps = Vec::new();
        let mut repos = Vec::new();
        for a in 0..accts.len() {
            let kind = accts[a].kind;
            let mut sets = vec![PermissionSet::Admin, PermissionSet::ReadOnly];
            if kind.is_workload() || kind == AccountKind::Sandbox {
                sets.push(PermissionSet::PowerUser);
            }
            if kind == AccountKind::Management {
                sets.push(PermissionSet::Billing);
            }
            for ps in sets {
                let name = format!("AWSReservedSSO_{}_{}", ps.name(), rng.hex(16));
                add_role(&mut roles, &mut accts, &mut rng, a, RoleKind::Sso(ps), name, "/aws-reserved/sso.amazonaws.com/");
            }
            if a != MANAGEMENT {
                add_role(&mut roles, &mut accts, &mut rng, a, RoleKind::OrgAccess, "OrganizationAccountAccessRole".into(), "/");
            }
            if kind != AccountKind::Management {
                add_role(&mut roles, &mut accts, &mut rng, a, RoleKind::Admin, "Admin".into(), "/");
            }
            if !matches!(kind, AccountKind::Management | AccountKind::Sandbox | AccountKind::Security) {
                add_role(&mut roles, &mut accts, &mut rng, a, RoleKind::ReadOnly, "ReadOnly".into(), "/");
            }
            add_role(&mut roles, &mut accts, &mut rng, a, RoleKind::Config, "AWSServiceRoleForConfig".into(), "/aws-service-role/config.amazonaws.com/");
            add_role(&mut roles, &mut accts, &mut rng, a, RoleKind::SecurityAudit, "SecurityAudit".into(), "/");
            if accts[a].okta.is_some() {
                add_role(&mut roles, &mut accts, &mut rng, a, RoleKind::Okta, "okta-engineer".into(), "/");
            }
            let team = team(&accts[a].name);
            let app_names: Vec<String> = match kind {
                AccountKind::Security => vec!["security-scanner".into()],
                AccountKind::Sandbox => vec![format!("{team}-test")],
                AccountKind::Shared => vec!["ci-runner".into(), "artifact-proxy".into()],
                k if k.is_workload() => {
                    let n = rng.between(1, 3) as usize;
                    ["api", "worker", "web"].iter().take(n).map(|s| format!("{team}-{s}")).collect()
                }
                _ => vec![],
            };
            for name in app_names {
                let role = add_role(&mut roles, &mut accts, &mut rng, a, RoleKind::Instance, format!("{name}-instance-role"), "/");
                let w = accts[a].region_weights.clone();
                let region = accts[a].regions[rng.weighted(&w)];
                let subnet = (rng.between(0, 255) as u8, rng.between(0, 255) as u8);
                apps.push(App { account: a, scanner: name == "security-scanner", role, region, subnet, ua: sdk_ua(&mut rng) });
            }
            if kind.is_workload() {
                add_role(&mut roles, &mut accts, &mut rng, a, RoleKind::Deploy, "Deployer".into(), "/");
                let gh = add_role(&mut roles, &mut accts, &mut rng, a, RoleKind::GithubDeploy, "github-actions-deploy".into(), "/");
                let names: Vec<String> =
                    if kind == AccountKind::Shared { vec!["platform-infra".into()] } else { vec![format!("{team}-api"), format!("{team}-infra")] };
                for repo in names.into_iter().take(rng.between(1, 2) as usize) {
                    let full = format!("{GITHUB_OWNER}/{repo}");
                    let subject = if kind == AccountKind::Prod && rng.chance(0.5) {
                        format!("repo:{full}:environment:production")
                    } else {
                        format!("repo:{full}:ref:refs/heads/main")
                    };
                    repos.push(Repo { account: a, subject, role: gh });
                }
            }
        }

        let mut users = Vec::new();
        let identity = IDENTITY.min(accts.len() - 1);
        let mut user = |rng: &mut Rng, account: usize, name: String, person: Option<usize>, job: UserJob, ip: String, ua: String| {
            let aid = &accts[account].id;
            users.push(IamUser {
                account,
                arn: format!("arn:aws:iam::{aid}:user/{name}"),
                name,
                principal_id: rng.key_id("AIDA", 17),
                key: rng.key_id("AKIA", 16),
                person,
                mfa: job == UserJob::Human && rng.chance(0.85),
                job,
                ip,
                ua,
            });
        };
        for (p, person) in people.iter().enumerate() {
            if p % 3 != 2 {
                user(&mut rng, identity, person.handle.clone(), Some(p), UserJob::Human, person.ip.clone(), person.cli_ua.clone());
            }
        }
        let ua = terraform_ua(&mut rng);
        let ip = format!("192.0.2.{}", rng.between(2, 60));
        user(&mut rng, identity, "terraform-ci".into(), None, UserJob::Terraform, ip, ua);
        let ua = sdk_ua(&mut rng);
        user(&mut rng, identity, "federation-broker".into(), None, UserJob::Broker, "198.51.100.200".into(), ua);
        let ua = sdk_ua(&mut rng);
        user(&mut rng, identity, "backup-agent".into(), None, UserJob::Backup, "203.0.113.50".into(), ua);
        if let Some(dev) = accts.iter().position(|a| a.kind == AccountKind::Dev) {
            let ua = format!("aws-cli/1.18.{} Python/2.7.18 Linux/4.14.355-1.amzn2.x86_64 botocore/1.17.{}", rng.between(100, 220), rng.between(20, 40));
            user(&mut rng, dev, "legacy-jenkins".into(), None, UserJob::Jenkins, "198.51.100.77".into(), ua);
        }

        let bucket_owner = accts.iter().find(|a| a.kind == AccountKind::LogArchive).unwrap_or(&accts[MANAGEMENT]).id.clone();
        let sso_issuer = format!("https://portal.sso.us-east-1.amazonaws.com/saml/assertion/{}", rng.base64(36));
        let okta_issuer = format!("http://www.okta.com/exk{}", rng.alnum(17));
        let workloads: Vec<usize> = (0..accts.len()).filter(|&a| accts[a].kind.is_workload()).collect();
        if !workloads.is_empty() {
            let a = workloads[rng.index(workloads.len())];
            let name = format!("{}-support", team(&accts[a].name));
            let ua = sdk_ua(&mut rng);
            user(&mut rng, a, name, None, UserJob::Local, "198.51.100.31".into(), ua);
        }
        Org { id, accounts: accts, people, users, roles, apps, repos, bucket: format!("acme-org-cloudtrail-{bucket_owner}"), sso_issuer, okta_issuer }
    }

    pub fn management_id(&self) -> &str {
        &self.accounts[MANAGEMENT].id
    }

    /// The role of a kind in an account, if the account has one.
    pub fn role(&self, account: usize, kind: RoleKind) -> Option<usize> {
        self.accounts[account].roles.iter().copied().find(|&r| self.roles[r].kind == kind)
    }

    /// Writes `accounts.json` in the shape `aws organizations list-accounts` prints.
    pub fn write_accounts_json(&self, out: impl Write) -> std::io::Result<()> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Listed<'a> {
            id: &'a str,
            arn: String,
            email: &'a str,
            name: &'a str,
            status: &'static str,
            joined_method: &'static str,
            joined_timestamp: String,
            /// Not printed by `list-accounts`; trailwatch reads it when present.
            ou_path: &'static str,
            tags: Vec<Tag>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Tag {
            key: &'static str,
            value: &'static str,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Listing<'a> {
            accounts: Vec<Listed<'a>>,
        }
        let listing = Listing {
            accounts: self
                .accounts
                .iter()
                .map(|a| Listed {
                    id: &a.id,
                    arn: format!("arn:aws:organizations::{}:account/{}/{}", self.management_id(), self.id, a.id),
                    email: &a.email,
                    name: &a.name,
                    status: "ACTIVE",
                    joined_method: a.joined_method,
                    joined_timestamp: cli_time(a.joined),
                    ou_path: a.kind.ou_path(),
                    tags: vec![Tag { key: "environment", value: a.kind.environment() }],
                })
                .collect(),
        };
        let mut ser = serde_json::Serializer::with_formatter(out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
        listing.serialize(&mut ser).map_err(std::io::Error::other)?;
        let mut out = ser.into_inner();
        out.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_plausible_organization() {
        let org = Org::build(1, 12, 1_793_491_200_000);
        assert!(org.id.starts_with("o-") && org.id.len() == 12);
        assert_eq!(org.accounts.len(), 12);
        assert_eq!(org.accounts[MANAGEMENT].name, "Management");
        let mut ids: Vec<&str> = org.accounts.iter().map(|a| a.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 12, "account ids are unique");
        assert!(ids.iter().all(|id| id.len() == 12 && *id != "123456789012"));
        assert!(org.accounts.iter().all(|a| a.regions[0] == "us-east-1" && (2..=3).contains(&a.regions.len())));
        assert!(org.users.iter().any(|u| u.job == UserJob::Human && u.account == IDENTITY));
        assert!(!org.repos.is_empty() && !org.apps.is_empty());
        assert!(org.apps.iter().any(|a| a.scanner));
        for role in &org.roles {
            assert!(role.arn.starts_with(&format!("arn:aws:iam::{}:role/", org.accounts[role.account].id)), "{}", role.arn);
        }
    }

    #[test]
    fn names_many_accounts_uniquely() {
        let names = account_names(60);
        let mut unique: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 60);
        let org = Org::build(5, 2, 1_793_491_200_000);
        assert_eq!(org.accounts.len(), 2);
        assert!(org.users.iter().all(|u| u.account == IDENTITY));
    }

    #[test]
    fn lists_accounts_like_the_cli() {
        let org = Org::build(2, 3, 1_793_491_200_000);
        let mut out = Vec::new();
        org.write_accounts_json(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let first = &v["Accounts"][0];
        assert_eq!(first["Status"], "ACTIVE");
        assert_eq!(first["JoinedMethod"], "INVITED");
        assert_eq!(first["OuPath"], "Root");
        assert_eq!(first["Tags"][0]["Key"], "environment");
        assert_eq!(first["Arn"], format!("arn:aws:organizations::{}:account/{}/{}", org.management_id(), org.id, org.accounts[0].id));
        assert!(first["JoinedTimestamp"].as_str().unwrap().ends_with("+00:00"));
    }
}
