//! Bearer JWTs from an external OpenID Connect provider, validated against
//! its published keys (JWKS).
//!
//! The JWKS location comes from the issuer's discovery document. Keys are
//! cached; a token with an unknown `kid` triggers a refetch (the provider
//! may have rotated), at most once per `--oidc-jwks-min-refetch-secs` so a
//! stream of forged `kid`s cannot turn us into a load generator against the
//! provider. Only asymmetric keys are accepted and each key is bound to one
//! algorithm, so a token cannot pick HS256 and use a public key as the
//! HMAC secret (key confusion).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::access::Role;
use crate::config::ApiArgs;
use crate::teams::TeamRole;
use crate::tokens::LEEWAY_SECS;

/// Keys older than this are refetched on the next use even if the `kid` is known.
const MAX_KEY_AGE: Duration = Duration::from_secs(3600);

/// Who an identity provider's token says the caller is.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub user: String,
    pub role: Role,
    /// `exp` of the token (Unix seconds).
    pub exp: u64,
    /// The teams the groups claim names, when team prefixes are set.
    pub teams: Option<Vec<(String, TeamRole)>>,
}

#[derive(Clone)]
struct Key {
    decoding: DecodingKey,
    alg: Algorithm,
}

#[derive(Default)]
struct Fetched {
    jwks_uri: Option<String>,
    /// The last fetch, for any reason.
    at: Option<Instant>,
    /// The last fetch caused by an unknown `kid` (the rate-limited kind).
    unknown_at: Option<Instant>,
}

pub(crate) struct Oidc {
    issuer: String,
    audience: String,
    user_claim: String,
    role_claim: String,
    admin_values: Vec<String>,
    groups: GroupMapping,
    min_refetch: Duration,
    http: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, Key>>>,
    /// Serializes fetches; holds when and from where we last fetched.
    fetched: tokio::sync::Mutex<Fetched>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The one algorithm a JWK may verify, or `None` for keys we refuse
/// (symmetric ones above all).
fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    // KeyAlgorithm names match Algorithm names for every signing algorithm.
    let declared = jwk.common.key_algorithm.and_then(|a| format!("{a:?}").parse::<Algorithm>().ok());
    let alg = match (&jwk.algorithm, declared) {
        (AlgorithmParameters::OctetKey(_), _) | (AlgorithmParameters::Other(_), _) => return None,
        (_, Some(a)) => a,
        (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        (AlgorithmParameters::OctetKeyPair(_), None) => Algorithm::EdDSA,
        (_, None) => return None,
    };
    (!matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)).then_some(alg)
}

impl Oidc {
    pub(crate) fn from_args(args: &ApiArgs) -> anyhow::Result<Option<Self>> {
        let Some(issuer) = &args.oidc.issuer else { return Ok(None) };
        let issuer = issuer.trim_end_matches('/').to_owned();
        anyhow::ensure!(
            issuer.starts_with("https://")
                || issuer.starts_with("http://127.0.0.1")
                || issuer.starts_with("http://localhost"),
            "--oidc-issuer must be an https:// URL (plain http is allowed only on loopback)"
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Some(Self {
            issuer,
            audience: args.oidc.audience.clone(),
            user_claim: args.oidc.user_claim.clone(),
            role_claim: args.oidc.role_claim.clone(),
            admin_values: args.oidc.admin_values.clone(),
            groups: GroupMapping {
                claim: args.oidc.groups_claim.clone(),
                member_prefix: args.oidc.team_member_prefix.clone().filter(|p| !p.is_empty()),
                manager_prefix: args.oidc.team_manager_prefix.clone().filter(|p| !p.is_empty()),
            },
            min_refetch: Duration::from_secs(args.oidc.jwks_min_refetch_secs),
            http,
            keys: RwLock::new(Arc::new(HashMap::new())),
            fetched: tokio::sync::Mutex::new(Fetched::default()),
        }))
    }

    fn key(&self, kid: &str) -> Option<Key> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).get(kid).cloned()
    }

    /// The key named `kid`, fetching the JWKS when it is unknown or stale
    /// (and the last fetch is not too recent).
    async fn key_for(&self, kid: &str) -> Option<Key> {
        let mut fetched = self.fetched.lock().await;
        let stale = fetched.at.is_none_or(|t| t.elapsed() > MAX_KEY_AGE);
        let known = self.key(kid);
        if known.is_some() && !stale {
            return known;
        }
        if !stale {
            // An unknown kid with fresh keys: maybe the provider rotated,
            // maybe someone is probing. Refetch, but not too often.
            if fetched.unknown_at.is_some_and(|t| t.elapsed() < self.min_refetch) {
                return None;
            }
            fetched.unknown_at = Some(Instant::now());
        }
        fetched.at = Some(Instant::now());
        match self.fetch(&mut fetched).await {
            Ok(n) => tracing::info!(issuer = %self.issuer, keys = n, "fetched the identity provider's keys"),
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(issuer = %self.issuer, %error, "cannot fetch the identity provider's keys");
            }
        }
        self.key(kid)
    }

    async fn fetch(&self, fetched: &mut Fetched) -> anyhow::Result<usize> {
        if fetched.jwks_uri.is_none() {
            let url = format!("{}/.well-known/openid-configuration", self.issuer);
            let d: Discovery = self.http.get(&url).send().await?.error_for_status()?.json().await?;
            anyhow::ensure!(
                d.issuer.trim_end_matches('/') == self.issuer,
                "the discovery document names issuer {} instead of {}",
                d.issuer,
                self.issuer
            );
            fetched.jwks_uri = Some(d.jwks_uri);
        }
        let uri = fetched.jwks_uri.as_deref().unwrap_or_default();
        let set: JwkSet = self.http.get(uri).send().await?.error_for_status()?.json().await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), algorithm_of(jwk)) else { continue };
            if let Ok(decoding) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, Key { decoding, alg });
            }
        }
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(n)
    }

    /// The identity in a valid token of this issuer, or `None`.
    pub(crate) async fn verify(&self, kid: &str, token: &str) -> Option<Identity> {
        let key = self.key_for(kid).await?;
        let mut v = Validation::new(key.alg);
        v.algorithms = vec![key.alg];
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.set_issuer(&[&self.issuer, &format!("{}/", self.issuer)]);
        v.set_audience(&[&self.audience]);
        let claims = match jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &v) {
            Ok(d) => d.claims,
            Err(e) => {
                tracing::debug!(reason = %e, "identity provider token rejected");
                return None;
            }
        };
        let user = claim(&claims, &self.user_claim)?.as_str()?.to_owned();
        if user.is_empty() || user.len() > tokenusage_contract::Limits::ID_MAX_CHARS {
            return None;
        }
        let is_admin = strings(claim(&claims, &self.role_claim)).any(|s| self.admin_values.iter().any(|a| a == s));
        let exp = claims.get("exp").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let teams = self.groups.teams(strings(claim(&claims, &self.groups.claim)));
        Some(Identity { user, role: if is_admin { Role::Admin } else { Role::Viewer }, exp, teams })
    }
}

/// The strings of a claim that is a string or a list of them.
fn strings(v: Option<&serde_json::Value>) -> impl Iterator<Item = &str> {
    let (one, many) = match v {
        Some(serde_json::Value::String(s)) => (Some(s.as_str()), None),
        Some(serde_json::Value::Array(a)) => (None, Some(a.iter().filter_map(|v| v.as_str()))),
        _ => (None, None),
    };
    one.into_iter().chain(many.into_iter().flatten())
}

/// How group names map to team membership.
#[derive(Debug, Clone)]
struct GroupMapping {
    claim: String,
    member_prefix: Option<String>,
    manager_prefix: Option<String>,
}

/// At most this many teams are taken from one token.
const MAX_GROUP_TEAMS: usize = 100;

impl GroupMapping {
    /// The teams named by `groups` (`None` when no prefix is set). A
    /// manager group wins over a member group of the same team; names
    /// that are not valid team names are ignored.
    fn teams<'a>(&self, groups: impl Iterator<Item = &'a str>) -> Option<Vec<(String, TeamRole)>> {
        if self.member_prefix.is_none() && self.manager_prefix.is_none() {
            return None;
        }
        let mut out: std::collections::BTreeMap<String, TeamRole> = Default::default();
        for g in groups {
            for (prefix, role) in [(&self.manager_prefix, TeamRole::Manager), (&self.member_prefix, TeamRole::Member)] {
                if let Some(team) = prefix.as_deref().and_then(|p| g.strip_prefix(p))
                    && crate::teams::valid_name(team)
                    && (out.len() < MAX_GROUP_TEAMS || out.contains_key(team))
                {
                    let r = out.entry(team.to_owned()).or_insert(role);
                    *r = (*r).max(role);
                }
            }
        }
        Some(out.into_iter().collect())
    }
}

/// A claim by name, where dots walk into objects (`realm_access.roles`).
fn claim<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    claims.get(path).or_else(|| path.split('.').try_fold(claims, |v, part| v.get(part)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_teams_with_manager_winning_and_bad_names_ignored() {
        let m = GroupMapping {
            claim: "groups".into(),
            member_prefix: Some("team:".into()),
            manager_prefix: Some("manager:".into()),
        };
        let groups = ["team:a", "manager:a", "team:b", "team:Bad Name", "other", "manager:"];
        assert_eq!(
            m.teams(groups.into_iter()),
            Some(vec![("a".to_owned(), TeamRole::Manager), ("b".to_owned(), TeamRole::Member)])
        );
        let off = GroupMapping { member_prefix: None, manager_prefix: None, ..m };
        assert_eq!(off.teams(groups.into_iter()), None);
        let claims = serde_json::json!({"g": "team:x", "realm": {"groups": ["team:y"]}});
        assert_eq!(strings(claim(&claims, "g")).collect::<Vec<_>>(), vec!["team:x"]);
        assert_eq!(strings(claim(&claims, "realm.groups")).collect::<Vec<_>>(), vec!["team:y"]);
    }
}
