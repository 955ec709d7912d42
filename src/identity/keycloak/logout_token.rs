//! Logout tokens of Keycloak's back-channel logout, validated as OpenID
//! Connect Back-Channel Logout 1.0 (section 2.6) says: an RS256 signature
//! by a key of the realm's cached JWKS (never `none` nor an HMAC), a header
//! `typ` of `logout+jwt` or none, the realm as `iss`, this client in `aud`,
//! `iat` and `exp` with a small leeway, the back-channel logout event,
//! `sid` or `sub`, no `nonce`, and a `jti` (whether it was used before is
//! the caller's to check: that needs the shared store).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use super::jwks::Jwks;
use crate::identity::logout::LogoutRefusal;

/// The member of `events` a logout token carries.
pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Clock difference tolerated on `iat` and `exp` (seconds).
pub const LEEWAY: i64 = 30;
/// The oldest `iat` accepted, and the furthest `exp` (seconds from now):
/// Keycloak's tokens live 2 minutes, and a logout is sent as it happens.
pub const MAX_AGE: i64 = 600;

/// What a valid logout token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// Unix seconds.
    pub iat: i64,
    pub exp: i64,
}

/// Who the token must come from and be for.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
}

fn segment(text: &str) -> Result<Value, LogoutRefusal> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| LogoutRefusal::Malformed)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| LogoutRefusal::Malformed)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(LogoutRefusal::Malformed)
    }
}

/// The header's `alg`, `typ` and `kid` rules; the key id.
fn check_header(header: &Value) -> Result<String, LogoutRefusal> {
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(LogoutRefusal::Algorithm);
    }
    if header.get("crit").is_some() {
        return Err(LogoutRefusal::Malformed);
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ))
            if typ.eq_ignore_ascii_case("logout+jwt")
                || typ.eq_ignore_ascii_case("application/logout+jwt") => {}
        Some(_) => return Err(LogoutRefusal::Type),
    }
    header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(LogoutRefusal::Signature)
}

fn seconds(value: Option<&Value>) -> Option<i64> {
    let number = value?.as_f64()?;
    number.is_finite().then_some(number.floor() as i64)
}

fn text(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The claims' rules, once the signature is known good.
pub fn check_claims(
    claims: &Value,
    expected: Expected<'_>,
    now: i64,
) -> Result<LogoutClaims, LogoutRefusal> {
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(LogoutRefusal::Issuer);
    }
    let for_us = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(expected.audience)),
        _ => false,
    };
    if !for_us {
        return Err(LogoutRefusal::Audience);
    }
    let exp = seconds(claims.get("exp")).ok_or(LogoutRefusal::Expired)?;
    if exp + LEEWAY <= now || exp > now + MAX_AGE {
        return Err(LogoutRefusal::Expired);
    }
    let iat = seconds(claims.get("iat")).ok_or(LogoutRefusal::IssuedAt)?;
    if iat > now + LEEWAY || iat < now - MAX_AGE {
        return Err(LogoutRefusal::IssuedAt);
    }
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(EVENT));
    if !event.is_some_and(Value::is_object) {
        return Err(LogoutRefusal::Event);
    }
    let sub = text(claims.get("sub"));
    let sid = text(claims.get("sid"));
    if sub.is_none() && sid.is_none() {
        return Err(LogoutRefusal::Subject);
    }
    if claims.get("nonce").is_some() {
        return Err(LogoutRefusal::Nonce);
    }
    let jti = text(claims.get("jti")).ok_or(LogoutRefusal::TokenId)?;
    if jti.len() > 512 || sid.as_ref().is_some_and(|s| s.len() > 64) {
        return Err(LogoutRefusal::Malformed);
    }
    Ok(LogoutClaims {
        sub,
        sid,
        jti,
        iat,
        exp,
    })
}

/// Validates a logout token against the realm's keys.
pub async fn verify(
    jwks: &Jwks,
    token: &str,
    expected: Expected<'_>,
    now: i64,
) -> Result<LogoutClaims, LogoutRefusal> {
    if token.len() > 16 * 1024 {
        return Err(LogoutRefusal::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(LogoutRefusal::Malformed);
    };
    let kid = check_header(&segment(header)?)?;
    let key = jwks
        .signing_key(&kid)
        .await
        .ok_or(LogoutRefusal::Signature)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|err| match err.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => LogoutRefusal::Signature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => LogoutRefusal::Algorithm,
            _ => LogoutRefusal::Malformed,
        })?
        .claims;
    check_claims(&claims, expected, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const EXPECTED: Expected<'static> = Expected {
        issuer: "http://kc/realms/authgate",
        audience: "authgate",
    };

    fn good() -> Value {
        json!({
            "iss": "http://kc/realms/authgate",
            "aud": "authgate",
            "iat": NOW - 1,
            "exp": NOW + 119,
            "jti": "1fc5bbbc-c9f2-a29e-62b2-37e76350f447",
            "sub": "bc396b68-7e85-43df-90ae-9f89522f6ff3",
            "sid": "E1CQ2YljsRe9whKNrvdVgpRb",
            "typ": "Logout",
            "events": { EVENT: {} },
        })
    }

    fn with(mut claims: Value, key: &str, value: Option<Value>) -> Value {
        let object = claims.as_object_mut().unwrap();
        match value {
            Some(value) => object.insert(key.into(), value),
            None => object.remove(key),
        };
        claims
    }

    #[test]
    fn keycloaks_token_passes() {
        let claims = check_claims(&good(), EXPECTED, NOW).unwrap();
        assert_eq!(claims.sid.as_deref(), Some("E1CQ2YljsRe9whKNrvdVgpRb"));
        assert_eq!(claims.iat, NOW - 1);
        // `aud` as a list, `sub` alone, `sid` alone, a little clock skew.
        let list = with(good(), "aud", Some(json!(["other", "authgate"])));
        assert!(check_claims(&list, EXPECTED, NOW).is_ok());
        assert!(check_claims(&with(good(), "sid", None), EXPECTED, NOW).is_ok());
        assert!(check_claims(&with(good(), "sub", None), EXPECTED, NOW).is_ok());
        assert!(check_claims(&good(), EXPECTED, NOW + 119 + LEEWAY - 1).is_ok());
        assert!(check_claims(&good(), EXPECTED, NOW - LEEWAY).is_ok());
    }

    #[test]
    fn each_rule_refuses_alone() {
        let cases = [
            (
                with(good(), "iss", Some(json!("http://evil/realms/authgate"))),
                LogoutRefusal::Issuer,
            ),
            (with(good(), "iss", None), LogoutRefusal::Issuer),
            (
                with(good(), "aud", Some(json!("another-client"))),
                LogoutRefusal::Audience,
            ),
            (
                with(good(), "aud", Some(json!([]))),
                LogoutRefusal::Audience,
            ),
            (with(good(), "exp", None), LogoutRefusal::Expired),
            (
                with(good(), "exp", Some(json!(NOW - LEEWAY))),
                LogoutRefusal::Expired,
            ),
            (
                with(good(), "exp", Some(json!(NOW + MAX_AGE + 1))),
                LogoutRefusal::Expired,
            ),
            (
                with(good(), "exp", Some(json!("soon"))),
                LogoutRefusal::Expired,
            ),
            (with(good(), "iat", None), LogoutRefusal::IssuedAt),
            (
                with(good(), "iat", Some(json!(NOW + LEEWAY + 1))),
                LogoutRefusal::IssuedAt,
            ),
            (
                with(good(), "iat", Some(json!(NOW - MAX_AGE - 1))),
                LogoutRefusal::IssuedAt,
            ),
            (with(good(), "events", None), LogoutRefusal::Event),
            (
                with(good(), "events", Some(json!({"http://other/event": {}}))),
                LogoutRefusal::Event,
            ),
            (
                with(good(), "events", Some(json!({ EVENT: "yes" }))),
                LogoutRefusal::Event,
            ),
            (
                with(with(good(), "sid", None), "sub", None),
                LogoutRefusal::Subject,
            ),
            (
                with(good(), "nonce", Some(json!("n-0S6_WzA2Mj"))),
                LogoutRefusal::Nonce,
            ),
            (with(good(), "jti", None), LogoutRefusal::TokenId),
            (with(good(), "jti", Some(json!(""))), LogoutRefusal::TokenId),
        ];
        for (claims, refusal) in cases {
            assert_eq!(
                check_claims(&claims, EXPECTED, NOW),
                Err(refusal),
                "{claims}"
            );
        }
    }

    #[test]
    fn header_rules() {
        let kid = |h: Value| check_header(&h);
        assert_eq!(
            kid(json!({"alg": "RS256", "typ": "logout+jwt", "kid": "k1"})),
            Ok("k1".into())
        );
        assert_eq!(kid(json!({"alg": "RS256", "kid": "k1"})), Ok("k1".into()));
        assert!(kid(json!({"alg": "RS256", "typ": "application/logout+jwt", "kid": "k"})).is_ok());
        for alg in ["none", "HS256", "HS512", "RS512", "ES256", "PS256"] {
            assert_eq!(
                kid(json!({"alg": alg, "kid": "k1"})),
                Err(LogoutRefusal::Algorithm),
                "{alg}"
            );
        }
        assert_eq!(kid(json!({"kid": "k1"})), Err(LogoutRefusal::Algorithm));
        assert_eq!(
            kid(json!({"alg": "RS256", "typ": "JWT", "kid": "k1"})),
            Err(LogoutRefusal::Type)
        );
        assert_eq!(
            kid(json!({"alg": "RS256", "typ": "logout+jwt"})),
            Err(LogoutRefusal::Signature)
        );
        assert_eq!(
            kid(json!({"alg": "RS256", "kid": "k", "crit": ["exp"]})),
            Err(LogoutRefusal::Malformed)
        );
    }

    #[test]
    fn unreadable_segments() {
        assert_eq!(segment("!!"), Err(LogoutRefusal::Malformed));
        assert_eq!(
            segment(&URL_SAFE_NO_PAD.encode("[1]")),
            Err(LogoutRefusal::Malformed)
        );
        assert!(segment(&URL_SAFE_NO_PAD.encode("{\"alg\":\"RS256\"}")).is_ok());
    }
}
