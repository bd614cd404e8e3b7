//! Access tokens we issue ourselves: HS256 JWTs signed with the current
//! secret and verified against it or an earlier one, chosen by `kid`.
//!
//! Validation pins the algorithm and requires `exp`, `nbf`, `iss`, `aud` and
//! `sub` with a 5 s leeway (jsonwebtoken's defaults are far weaker: 60 s,
//! only `exp` required). A token without a `kid`, or with one we do not
//! hold, never reaches signature verification.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::access::Role;
use crate::config::ApiArgs;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub(crate) const LEEWAY_SECS: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub role: Role,
}

struct Key {
    kid: String,
    decoding: DecodingKey,
}

/// Signing key, verification keys by `kid`, and the validation rules.
pub(crate) struct LocalKeys {
    kid: String,
    encoding: EncodingKey,
    verifying: Vec<Key>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl std::fmt::Debug for LocalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeys").field("kid", &self.kid).field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// The `kid` of a secret: a fingerprint that names it without revealing it.
fn kid_of(secret: &[u8]) -> String {
    let digest = Sha256::digest([b"tokenusage-kid:".as_slice(), secret].concat());
    format!("tu-{}", hex::encode(&digest[..8]))
}

fn secret_bytes(s: &SecretString, what: &str) -> anyhow::Result<Vec<u8>> {
    let b = s.expose_secret().as_bytes();
    anyhow::ensure!(b.len() >= 32, "{what} must be at least 32 bytes");
    Ok(b.to_vec())
}

impl LocalKeys {
    pub(crate) fn from_args(args: &ApiArgs) -> anyhow::Result<Self> {
        let current = match &args.jwt.secret {
            Some(s) => secret_bytes(s, "TOKENUSAGE_JWT_SECRET")?,
            None => {
                tracing::warn!(
                    "no TOKENUSAGE_JWT_SECRET set: using a random one; sign-ins end when this process stops"
                );
                let mut b = vec![0u8; 32];
                rand::rng().fill_bytes(&mut b);
                b
            }
        };
        let mut verifying = vec![Key { kid: kid_of(&current), decoding: DecodingKey::from_secret(&current) }];
        for s in &args.jwt.previous_secrets {
            let b = secret_bytes(s, "every TOKENUSAGE_JWT_PREVIOUS_SECRETS entry")?;
            verifying.push(Key { kid: kid_of(&b), decoding: DecodingKey::from_secret(&b) });
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&args.jwt.issuer]);
        validation.set_audience(&[&args.jwt.audience]);
        Ok(Self {
            kid: kid_of(&current),
            encoding: EncodingKey::from_secret(&current),
            verifying,
            validation,
            issuer: args.jwt.issuer.clone(),
            audience: args.jwt.audience.clone(),
            ttl_secs: args.jwt.access_token_ttl_secs,
        })
    }

    pub(crate) fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// Whether `kid` names one of our keys (otherwise the token may be an
    /// identity provider's).
    pub(crate) fn holds(&self, kid: &str) -> bool {
        self.verifying.iter().any(|k| k.kid == kid)
    }

    pub(crate) fn issue(&self, user: &str, role: Role) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + self.ttl_secs,
            nbf: now,
            iat: now,
            role,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    /// The claims of a valid token signed by the key named `kid`.
    pub(crate) fn verify(&self, kid: &str, token: &str) -> Option<Claims> {
        let key = self.verifying.iter().find(|k| k.kid == kid)?;
        match jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation) {
            Ok(data) if !data.claims.sub.is_empty() => Some(data.claims),
            Ok(_) => None,
            Err(e) => {
                // The reason helps operators; the token itself is never logged.
                tracing::debug!(reason = %e, "access token rejected");
                None
            }
        }
    }
}
