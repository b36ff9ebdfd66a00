//! Bearer tokens and roles.
//!
//! Tokens are configured as `name:role:token` or
//! `name:role:token:expires=2026-12-31T00:00:00Z` (one per line in a file,
//! `#` comments allowed; a token itself holds no `:` and no whitespace).
//! Only the SHA-256 of each token is kept; a presented token is hashed and
//! compared with every configured hash in constant time, so neither the
//! tokens nor the timing of a comparison tell anything. A token past its
//! `expires` time is refused like an unknown one.
//!
//! A token file is watched: at most once per [`RELOAD_CHECK`] a request
//! looks at the file's size, modification time and inode, and when they
//! changed reads it again (and compares its SHA-256, so a touch alone does
//! nothing). A line removed is a token revoked, without a restart. A file
//! that no longer parses, or cannot be read, fails closed: its tokens are
//! refused (the tokens given as options still work) and the error, naming
//! the line, is logged once per change of the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_graphql::{Context, ErrorExtensions, Guard};
use sha2::{Digest, Sha256};
use trailwatch_core::time::{format_utc, parse_utc, EpochMillis};

/// How often a request may look at a token file for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// What a token may do. Each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Queries and subscriptions.
    Viewer,
    /// And acknowledging and resolving alerts.
    Responder,
    /// And setting account aliases.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Responder, Role::Admin].into_iter().find(|r| r.as_str() == s)
    }
}

/// Who made a request: the name and role of the token it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// Why a token configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct TokenError(String);

/// Why a presented token was refused (for the server's log; the client
/// always gets the same 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer <token>` value, or a malformed one.
    Malformed,
    /// Not a configured token (or one revoked).
    Unknown,
    /// The token of `name`, past its expiry.
    Expired { name: String, at: EpochMillis },
}

/// The shortest token accepted in configuration.
pub const MIN_TOKEN_LEN: usize = 16;
/// The longest token looked at: a longer one is refused unhashed.
const MAX_TOKEN_LEN: usize = 512;

struct Entry {
    name: String,
    role: Role,
    hash: [u8; 32],
    expires: Option<EpochMillis>,
}

/// A watched token file and the tokens it held when last read.
struct TokenFile {
    path: PathBuf,
    every: Duration,
    state: Mutex<FileState>,
}

struct FileState {
    /// Empty while the file does not parse (fail closed).
    entries: Arc<Vec<Entry>>,
    stamp: Option<Stamp>,
    digest: Option<[u8; 32]>,
    checked: Instant,
}

/// What tells a file changed without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    Stamp { len: meta.len(), modified: meta.modified().ok(), inode }
}

/// The configured tokens, as hashes: those given directly and those of watched files.
#[derive(Default)]
pub struct Tokens {
    fixed: Vec<Entry>,
    files: Vec<TokenFile>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<(&str, &str)> = self.fixed.iter().map(|e| (e.name.as_str(), e.role.as_str())).collect();
        let files: Vec<String> = self.files.iter().map(|t| t.path.display().to_string()).collect();
        f.debug_struct("Tokens").field("entries", &names).field("files", &files).finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equal without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses `name:role:token[:expires=TIME]`. `origin` names the spec in
/// errors (the token itself never appears in one).
fn parse_spec(spec: &str, origin: &str) -> Result<Entry, TokenError> {
    let fields: Vec<&str> = spec.trim().splitn(4, ':').collect();
    let expected = || TokenError(format!("{origin}: expected name:role:token or name:role:token:expires=2026-12-31T00:00:00Z"));
    if fields.len() < 3 {
        return Err(expected());
    }
    let name = fields[0].trim();
    if name.is_empty() {
        return Err(TokenError(format!("{origin}: the token has no name")));
    }
    let Some(role) = Role::parse(fields[1].trim()) else {
        return Err(TokenError(format!("{origin}: token {name:?} has role {:?}: expected viewer, responder or admin", fields[1].trim())));
    };
    let token = fields[2].trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenError(format!("{origin}: token {name:?} is shorter than {MIN_TOKEN_LEN} characters")));
    }
    if token.len() > MAX_TOKEN_LEN || token.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(TokenError(format!("{origin}: token {name:?} must be at most {MAX_TOKEN_LEN} visible ASCII characters")));
    }
    let expires = match fields.get(3) {
        None => None,
        Some(attribute) => {
            let Some(time) = attribute.trim().strip_prefix("expires=") else {
                return Err(TokenError(format!("{origin}: token {name:?}: after the token only expires=<time> may follow (a token holds no ':')")));
            };
            match parse_utc(time) {
                Ok(at) => Some(at),
                Err(_) => return Err(TokenError(format!("{origin}: token {name:?}: expires={time:?} is not a UTC time like 2026-12-31T00:00:00Z"))),
            }
        }
    };
    Ok(Entry { name: name.to_owned(), role, hash: sha256(token.as_bytes()), expires })
}

/// The entries of a token file's text; `taken` are names already configured elsewhere.
fn parse_file(text: &str, path: &Path, taken: &[Entry]) -> Result<Vec<Entry>, TokenError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = format!("{}:{}", path.display(), i + 1);
        let entry = parse_spec(line, &origin)?;
        if taken.iter().chain(entries.iter()).any(|e| e.name == entry.name) {
            return Err(TokenError(format!("{origin}: token {:?} is configured twice", entry.name)));
        }
        entries.push(entry);
    }
    Ok(entries)
}

impl TokenFile {
    /// The file's entries now, reading it again when it changed (at most once per `every`).
    fn current(&self, fixed: &[Entry]) -> Arc<Vec<Entry>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= self.every {
            state.checked = Instant::now();
            self.refresh(&mut state, fixed);
        }
        state.entries.clone()
    }

    fn refresh(&self, state: &mut FileState, fixed: &[Entry]) {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) => {
                if state.stamp.take().is_some() || state.digest.is_some() {
                    tracing::error!(file = %self.path.display(), "api.token_file_unreadable: {e}; its tokens are refused until it can be read");
                }
                state.digest = None;
                state.entries = Arc::new(Vec::new());
                return;
            }
        };
        let stamp = stamp_of(&meta);
        if state.stamp.as_ref() == Some(&stamp) {
            return;
        }
        state.stamp = Some(stamp);
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(file = %self.path.display(), "api.token_file_unreadable: {e}; its tokens are refused until it can be read");
                state.digest = None;
                state.entries = Arc::new(Vec::new());
                return;
            }
        };
        let digest = sha256(text.as_bytes());
        if state.digest == Some(digest) {
            return;
        }
        state.digest = Some(digest);
        match parse_file(&text, &self.path, fixed) {
            Ok(entries) => {
                tracing::info!(file = %self.path.display(), tokens = entries.len(), "api.token_file_reloaded");
                warn_expired(&entries);
                state.entries = Arc::new(entries);
            }
            Err(e) => {
                tracing::error!(file = %self.path.display(), "api.token_file_invalid: {e}; its tokens are refused until it is fixed");
                state.entries = Arc::new(Vec::new());
            }
        }
    }
}

fn warn_expired(entries: &[Entry]) {
    let now = crate::now_ms();
    for e in entries.iter().filter(|e| e.expires.is_some_and(|at| at <= now)) {
        tracing::warn!(token = %e.name, expired = %format_utc(e.expires.unwrap_or_default()), "api.token_already_expired");
    }
}

impl Tokens {
    pub fn new() -> Self {
        Self::default()
    }

    fn names(&self) -> impl Iterator<Item = String> + '_ {
        let fixed = self.fixed.iter().map(|e| e.name.clone());
        let files =
            self.files.iter().flat_map(|f| f.state.lock().unwrap_or_else(PoisonError::into_inner).entries.iter().map(|e| e.name.clone()).collect::<Vec<_>>());
        fixed.chain(files)
    }

    /// Adds a token from `name:role:token[:expires=TIME]`. `origin` names it
    /// in errors (the token itself never appears in one).
    pub fn add_spec(&mut self, spec: &str, origin: &str) -> Result<(), TokenError> {
        let entry = parse_spec(spec, origin)?;
        if self.names().any(|n| n == entry.name) {
            return Err(TokenError(format!("{origin}: token {:?} is configured twice", entry.name)));
        }
        warn_expired(std::slice::from_ref(&entry));
        self.fixed.push(entry);
        Ok(())
    }

    /// Tokens from `name:role:token[:expires=TIME]` specs (command-line options).
    pub fn from_specs<S: AsRef<str>>(specs: &[S]) -> Result<Self, TokenError> {
        let mut tokens = Tokens::new();
        for (i, spec) in specs.iter().enumerate() {
            tokens.add_spec(spec.as_ref(), &format!("token {}", i + 1))?;
        }
        Ok(tokens)
    }

    /// Adds the tokens of a file (one spec per line; blank lines and lines
    /// starting with `#` are skipped) and watches it: see the module doc.
    /// An error here (the file at start) names the line.
    pub fn add_file(&mut self, path: &Path) -> Result<(), TokenError> {
        self.watch_file(path, RELOAD_CHECK)
    }

    /// [`Tokens::add_file`], looking for changes at most once per `every`.
    pub fn watch_file(&mut self, path: &Path, every: Duration) -> Result<(), TokenError> {
        let meta = std::fs::metadata(path).map_err(|e| TokenError(format!("{}: {e}", path.display())))?;
        let text = std::fs::read_to_string(path).map_err(|e| TokenError(format!("{}: {e}", path.display())))?;
        let mut taken: Vec<Entry> = Vec::new();
        for name in self.names() {
            taken.push(Entry { name, role: Role::Viewer, hash: [0; 32], expires: None });
        }
        let entries = parse_file(&text, path, &taken)?;
        warn_expired(&entries);
        let state = FileState { entries: Arc::new(entries), stamp: Some(stamp_of(&meta)), digest: Some(sha256(text.as_bytes())), checked: Instant::now() };
        self.files.push(TokenFile { path: path.to_owned(), every, state: Mutex::new(state) });
        Ok(())
    }

    /// Tokens configured now (a watched file counted as last read).
    pub fn len(&self) -> usize {
        self.names().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The principal of a presented token, if it is one of ours and not expired.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        self.check(token, crate::now_ms()).ok()
    }

    /// The principal of a presented token at `now`, or why it is refused.
    /// Every configured hash is compared, whichever matches.
    pub fn check(&self, token: &str, now: EpochMillis) -> Result<Principal, Refusal> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(Refusal::Malformed);
        }
        let hash = sha256(token.as_bytes());
        let files: Vec<Arc<Vec<Entry>>> = self.files.iter().map(|f| f.current(&self.fixed)).collect();
        let mut found: Option<&Entry> = None;
        for entry in self.fixed.iter().chain(files.iter().flat_map(|f| f.iter())) {
            if same(&entry.hash, &hash) && found.is_none() {
                found = Some(entry);
            }
        }
        match found {
            None => Err(Refusal::Unknown),
            Some(e) => match e.expires {
                Some(at) if at <= now => Err(Refusal::Expired { name: e.name.clone(), at }),
                _ => Ok(Principal { name: e.name.clone(), role: e.role }),
            },
        }
    }

    /// The principal of an `Authorization: Bearer …` value.
    pub fn verify_header(&self, value: &str) -> Option<Principal> {
        self.check_header(value, crate::now_ms()).ok()
    }

    /// [`Tokens::check`] of an `Authorization` value: `Bearer` (any case),
    /// one space or more, one token of visible ASCII, nothing after it.
    pub fn check_header(&self, value: &str, now: EpochMillis) -> Result<Principal, Refusal> {
        let (scheme, token) = value.trim().split_once(' ').ok_or(Refusal::Malformed)?;
        let token = token.trim_start();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Refusal::Malformed);
        }
        self.check(token, now)
    }
}

/// A fresh random token (`tw_` and 43 base64url characters: 256 bits).
pub fn generate_token() -> Result<String, getrandom::Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(format!("tw_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// Lets a field through only for a principal with at least `role`; others
/// get an error with code `FORBIDDEN` (or `UNAUTHENTICATED` without one,
/// which the HTTP layer never lets happen).
pub struct RoleGuard(pub Role);

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Principal>() {
            Some(p) if p.role >= self.0 => Ok(()),
            Some(p) => Err(async_graphql::Error::new(format!("the {} role cannot do this: it needs {}", p.role.as_str(), self.0.as_str()))
                .extend_with(|_, e| e.set("code", "FORBIDDEN"))),
            None => Err(async_graphql::Error::new("not authenticated").extend_with(|_, e| e.set("code", "UNAUTHENTICATED"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_by_hash_and_keep_their_role() {
        let tokens = Tokens::from_specs(&["alice:admin:0123456789abcdef0123", "bob:viewer:fedcba9876543210fedc"]).unwrap();
        assert_eq!(tokens.verify("0123456789abcdef0123"), Some(Principal { name: "alice".into(), role: Role::Admin }));
        assert_eq!(tokens.verify_header("Bearer fedcba9876543210fedc").map(|p| p.role), Some(Role::Viewer));
        assert_eq!(tokens.verify_header("bearer fedcba9876543210fedc").map(|p| p.name), Some("bob".into()));
        assert_eq!(tokens.verify("0123456789abcdef012"), None);
        assert_eq!(tokens.verify_header("Basic 0123456789abcdef0123"), None);
        assert!(!format!("{tokens:?}").contains("0123456789"));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let tokens = Tokens::from_specs(&["alice:admin:0123456789abcdef0123"]).unwrap();
        for value in
            ["Bearer", "Bearer ", "0123456789abcdef0123", "Bearer 0123456789abcdef0123 extra", "Bearer\t0123456789abcdef0123", "Token 0123456789abcdef0123"]
        {
            assert!(tokens.check_header(value, 0).is_err(), "{value:?}");
        }
        assert_eq!(tokens.check_header("Bearer 0123456789abcdef0123 x", 0), Err(Refusal::Malformed));
        assert!(tokens.check_header("BEARER  0123456789abcdef0123", 0).is_ok());
    }

    #[test]
    fn bad_specs_are_refused_without_the_token() {
        let err = Tokens::from_specs(&["alice:root:0123456789abcdef0123"]).unwrap_err();
        assert_eq!(err.0, r#"token 1: token "alice" has role "root": expected viewer, responder or admin"#);
        let err = Tokens::from_specs(&["alice:admin:short"]).unwrap_err();
        assert!(!err.0.contains("short") || err.0.contains("shorter"), "{err}");
        assert!(Tokens::from_specs(&["alice"]).is_err());
        assert!(Tokens::from_specs(&["a:viewer:0123456789abcdef", "a:admin:0123456789abcdeg"]).is_err());
    }

    #[test]
    fn expiry_is_parsed_strictly_and_enforced() {
        let tokens = Tokens::from_specs(&["carol:responder:0123456789abcdef0123:expires=2026-12-31T00:00:00Z"]).unwrap();
        let before = parse_utc("2026-12-30T23:59:59Z").unwrap();
        let after = parse_utc("2026-12-31T00:00:00Z").unwrap();
        assert_eq!(tokens.check("0123456789abcdef0123", before).map(|p| p.role), Ok(Role::Responder));
        assert_eq!(tokens.check("0123456789abcdef0123", after), Err(Refusal::Expired { name: "carol".into(), at: after }));
        for (spec, says) in [
            ("c:viewer:0123456789abcdef0123:expires=2026-12-31", "expires=\"2026-12-31\" is not a UTC time"),
            ("c:viewer:0123456789abcdef0123:expires=2026-13-01T00:00:00Z", "is not a UTC time"),
            ("c:viewer:0123456789abcdef0123:expiry=2026-12-31T00:00:00Z", "only expires=<time> may follow"),
            ("c:viewer:0123456789abcdef0123:expires=2026-12-31T00:00:00Z:x", "is not a UTC time"),
        ] {
            let err = Tokens::from_specs(&[spec]).unwrap_err();
            assert!(err.0.starts_with("token 1: ") && err.0.contains(says), "{spec}: {err}");
            assert!(!err.0.contains("0123456789abcdef0123"), "{err}");
        }
    }

    #[test]
    fn generated_tokens_are_long_and_differ() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 43);
        assert!(Tokens::from_specs(&[format!("demo:admin:{a}")]).unwrap().verify(&a).is_some());
    }
}
