//! Bearer tokens and roles.
//!
//! Tokens are configured as `name:role:token` (one per line in a file, `#`
//! comments allowed). Only the SHA-256 of each token is kept; a presented
//! token is hashed and compared with every configured hash in constant time,
//! so neither the tokens nor the timing of a comparison tell anything.

use std::fmt;
use std::path::Path;

use async_graphql::{Context, ErrorExtensions, Guard};
use sha2::{Digest, Sha256};

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

/// The shortest token accepted in configuration.
pub const MIN_TOKEN_LEN: usize = 16;

struct Entry {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The configured tokens, as hashes.
#[derive(Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<(&str, &str)> = self.entries.iter().map(|e| (e.name.as_str(), e.role.as_str())).collect();
        f.debug_struct("Tokens").field("entries", &names).finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equal without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token from `name:role:token`. `origin` names it in errors (the
    /// token itself never appears in one).
    pub fn add_spec(&mut self, spec: &str, origin: &str) -> Result<(), TokenError> {
        let mut parts = spec.trim().splitn(3, ':');
        let (Some(name), Some(role), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError(format!("{origin}: expected name:role:token")));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(TokenError(format!("{origin}: the token has no name")));
        }
        let Some(role) = Role::parse(role.trim()) else {
            return Err(TokenError(format!("{origin}: token {name:?} has role {:?}: expected viewer, responder or admin", role.trim())));
        };
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError(format!("{origin}: token {name:?} is shorter than {MIN_TOKEN_LEN} characters")));
        }
        if self.entries.iter().any(|e| e.name == name) {
            return Err(TokenError(format!("{origin}: token {name:?} is configured twice")));
        }
        self.entries.push(Entry { name: name.to_owned(), role, hash: sha256(token.as_bytes()) });
        Ok(())
    }

    /// Tokens from `name:role:token` specs (command-line options).
    pub fn from_specs<S: AsRef<str>>(specs: &[S]) -> Result<Self, TokenError> {
        let mut tokens = Tokens::new();
        for (i, spec) in specs.iter().enumerate() {
            tokens.add_spec(spec.as_ref(), &format!("token {}", i + 1))?;
        }
        Ok(tokens)
    }

    /// Adds the tokens of a file: one `name:role:token` per line; blank
    /// lines and lines starting with `#` are skipped.
    pub fn add_file(&mut self, path: &Path) -> Result<(), TokenError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokenError(format!("{}: {e}", path.display())))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add_spec(line, &format!("{}:{}", path.display(), i + 1))?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of a presented token, if it is one of ours.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let hash = sha256(token.trim().as_bytes());
        let mut found = None;
        for entry in &self.entries {
            if same(&entry.hash, &hash) && found.is_none() {
                found = Some(Principal { name: entry.name.clone(), role: entry.role });
            }
        }
        found
    }

    /// The principal of an `Authorization: Bearer …` value.
    pub fn verify_header(&self, value: &str) -> Option<Principal> {
        let (scheme, token) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.verify(token)
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
    fn bad_specs_are_refused_without_the_token() {
        let err = Tokens::from_specs(&["alice:root:0123456789abcdef0123"]).unwrap_err();
        assert_eq!(err.0, r#"token 1: token "alice" has role "root": expected viewer, responder or admin"#);
        let err = Tokens::from_specs(&["alice:admin:short"]).unwrap_err();
        assert!(!err.0.contains("short") || err.0.contains("shorter"), "{err}");
        assert!(Tokens::from_specs(&["alice"]).is_err());
        assert!(Tokens::from_specs(&["a:viewer:0123456789abcdef", "a:admin:0123456789abcdeg"]).is_err());
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
