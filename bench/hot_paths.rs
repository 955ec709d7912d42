//! Micro-benchmarks of the request path's hot functions (`cargo bench --bench hot_paths`).
//!
//! - `tokens/verify_access_hs256`: [`TokenService::verify_access`] on a legacy
//!   access token minted by the same service, checked in full each time;
//!   `tokens/verify_access_hs256_again`: the same token presented again
//!   (answered from the verified tokens);
//! - `keycloak/verify_rs256_cached_key` (feature `keycloak`): [`Jwks::verify`]
//!   on a Keycloak-like RS256 access token whose key is already cached (no
//!   HTTP), checked in full each time; `keycloak/verify_rs256_again`: the
//!   same token presented again;
//! - `tokens/jwe_decrypt_refresh`: [`DirA256Gcm::decrypt`] of a legacy refresh
//!   token wrapping a ~1 KB Keycloak refresh token;
//! - `http/cookie_in_access_token`: [`cookie_in`] on a browser-like `Cookie`
//!   header with the access token among other cookies;
//! - `edge/canonicalize_plain` and `edge/canonicalize_encoded`:
//!   [`canonicalize`] on a typical API path, and on one with a percent-
//!   encoding, a doubled slash, a dot segment and a `;` parameter (the slow
//!   path); `edge/settle_request_head`: [`settle`] on a browser-like request
//!   head (canonical target, header caps, untrusted headers removed);
//! - `password/pbkdf2_verify_default_rounds`: [`PasswordHasher::verify`] at
//!   [`DEFAULT_ROUNDS`] (a few samples only: it is the sign-in ceiling).
//!
//! The RSA key pair is a bench-only fixture (`bench/fixtures/`: the PKCS#1
//! private key and the JWKS a realm would serve for it).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark whose setup fails ends there, with its message; nothing here serves a request"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use http::HeaderMap;

use authgate::clock::{Clock, SystemClock};
use authgate::config::DEFAULT_ROUNDS;
use authgate::edge::path::canonicalize;
use authgate::edge::settle;
use authgate::http::cookie_in;
use authgate::password::PasswordHasher;
use authgate::tokens::{DirA256Gcm, Lifetimes, Subject, TokenService};

/// A 32-byte `SECRET_KEY`, as the tests use.
const SECRET: &[u8] = b"9e25a2588fcee7d21ea15fb1a63d5135";

fn token_service() -> TokenService {
    TokenService::new(
        SECRET,
        Lifetimes {
            access: Duration::from_secs(3600),
            refresh: Duration::from_secs(7 * 86400),
            email: Duration::from_secs(86400),
        },
        Arc::new(SystemClock),
    )
    .expect("token service")
}

fn subject(upstream_refresh: Option<String>) -> Subject {
    Subject {
        user_id: 42,
        email: Some("ada.lovelace@example.com".into()),
        device_id: Some("6f1c2a8e-3b7d-4e59-9a41-2c8d7f0b5e13".into()),
        upstream_refresh,
        roles: None,
    }
}

/// A Keycloak refresh token as the realm issues it (HS512, ~1 KB).
fn keycloak_refresh_token() -> String {
    let now = SystemClock.unix();
    let issuer = "https://sso.example.com/realms/authgate";
    let claims = serde_json::json!({
        "exp": now + 1800,
        "iat": now,
        "jti": "b3c1f0d2-6a47-4e8b-9f3e-2d5c7a1e8b90",
        "iss": issuer,
        "aud": issuer,
        "sub": "0f8e6b4a-2c1d-4e3f-9a8b-7c6d5e4f3a2b",
        "typ": "Refresh",
        "azp": "authgate",
        "sid": "5d2e8c1a-9b7f-4a3e-8d6c-1f0e2b3a4c5d",
        "scope": "openid profile email roles web-origins acr basic",
        "session_state": "5d2e8c1a-9b7f-4a3e-8d6c-1f0e2b3a4c5d",
        "realm_access": {
            "roles": ["default-roles-authgate", "offline_access", "uma_authorization", "user"]
        },
        "resource_access": {
            "account": { "roles": ["manage-account", "manage-account-links", "view-profile"] }
        },
        "allowed-origins": ["https://app.example.com"],
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512);
    header.kid = Some("7a9c3e1f-5b2d-4c8a-9e6f-0d1b3a5c7e9f".into());
    let key = jsonwebtoken::EncodingKey::from_secret(&[7u8; 64]).expect("hs512 key");
    jsonwebtoken::encode(&header, &claims, &key).expect("keycloak refresh token")
}

fn verify_access(c: &mut Criterion) {
    let full = token_service().without_verified_cache();
    let again = token_service();
    let token = full.mint_access(&subject(None)).expect("mint access");
    assert_eq!(full.verify_access(&token).expect("verifies").user_id, 42);
    assert_eq!(again.verify_access(&token).expect("verifies").user_id, 42);
    c.bench_function("tokens/verify_access_hs256", |b| {
        b.iter(|| full.verify_access(black_box(&token)))
    });
    c.bench_function("tokens/verify_access_hs256_again", |b| {
        b.iter(|| again.verify_access(black_box(&token)))
    });
}

fn jwe_decrypt(c: &mut Criterion) {
    let tokens = token_service();
    let upstream = keycloak_refresh_token();
    let refresh = tokens
        .mint_refresh(&subject(Some(upstream.clone())))
        .expect("mint refresh");
    assert_eq!(
        tokens.verify_refresh(&refresh).expect("verifies").kc_rt,
        Some(upstream.clone())
    );
    let jwe = DirA256Gcm::new(SECRET).expect("jwe key");
    let plain = jwe.decrypt(&refresh).expect("decrypts");
    eprintln!(
        "jwe_decrypt_refresh: Keycloak refresh token {} B, legacy refresh JWT {} B, JWE {} B",
        upstream.len(),
        plain.len(),
        refresh.len()
    );
    c.bench_function("tokens/jwe_decrypt_refresh", |b| {
        b.iter(|| jwe.decrypt(black_box(&refresh)))
    });
}

fn cookie_parsing(c: &mut Criterion) {
    let tokens = token_service();
    let access = tokens.mint_access(&subject(None)).expect("mint access");
    let header = format!(
        "_ga=GA1.1.1283746510.1732790000; _ga_7XK2M9Q4PL=GS1.1.1732790000.3.1.1732790412.0.0.0; \
         theme=dark; lang=en-GB; access_token={access}; \
         csrftoken=Qm9wZk1kX2V4YW1wbGVfY3NyZl90b2tlbl92YWx1ZQ; \
         consent=%7B%22analytics%22%3Atrue%2C%22ads%22%3Afalse%7D; sidebar_collapsed=false"
    );
    let mut headers = HeaderMap::new();
    headers.insert(http::header::COOKIE, header.parse().expect("header value"));
    headers.insert(http::header::ACCEPT, "application/json".parse().unwrap());
    headers.insert(
        http::header::USER_AGENT,
        "Mozilla/5.0 (X11; Linux x86_64)".parse().unwrap(),
    );
    assert_eq!(
        cookie_in(&headers, "access_token").as_deref(),
        Some(access.as_str())
    );
    c.bench_function("http/cookie_in_access_token", |b| {
        b.iter(|| cookie_in(black_box(&headers), black_box("access_token")))
    });
}

fn canonical_paths(c: &mut Criterion) {
    let plain = b"/api/v1/projects/42/charts/7";
    let encoded = b"/api/v1//projects/%34%32/./charts;v=2/7";
    assert_eq!(
        canonicalize(encoded).expect("canonical").path,
        "/api/v1/projects/42/charts;v=2/7"
    );
    c.bench_function("edge/canonicalize_plain", |b| {
        b.iter(|| canonicalize(black_box(plain)))
    });
    c.bench_function("edge/canonicalize_encoded", |b| {
        b.iter(|| canonicalize(black_box(encoded)))
    });
    let mut head = pingora::http::RequestHeader::build("GET", plain, None).expect("head");
    for (name, value) in [
        ("Host", "app.example.com"),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("Accept", "application/json"),
        ("Accept-Language", "en-GB,en;q=0.9"),
        ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        ("Cookie", "theme=dark; lang=en"),
        ("Connection", "keep-alive"),
    ] {
        head.append_header(name, value).expect("header");
    }
    c.bench_function("edge/settle_request_head", |b| {
        b.iter_batched_ref(
            || head.clone(),
            |head| settle(black_box(head), false, 100),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn pbkdf2_verify(c: &mut Criterion) {
    let hasher = PasswordHasher::new(DEFAULT_ROUNDS, SECRET);
    let password = "correct horse battery staple";
    let stored = hasher.hash(password);
    assert_eq!(hasher.verify(&stored, password), Ok(true));
    let mut group = c.benchmark_group("password");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("pbkdf2_verify_default_rounds", |b| {
        b.iter(|| hasher.verify(black_box(&stored), black_box(password)))
    });
    group.finish();
}

#[cfg(feature = "keycloak")]
fn verify_rs256(c: &mut Criterion) {
    use authgate::config::{KeycloakSettings, TokenFormat};
    use authgate::identity::keycloak::client::KcClient;
    use authgate::identity::keycloak::jwks::Jwks;
    use authgate::metrics::Metrics;
    use base64::Engine;
    use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};

    const PRIVATE_PEM: &str = include_str!("fixtures/bench-rsa2048.pem");
    const JWKS: &str = include_str!("fixtures/bench-jwks.json");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Never contacted: the key is put into the cache below. Should the
    // background refresh (every 300 s) ever fire, it goes to the discard port.
    let settings = KeycloakSettings {
        url: "http://127.0.0.1:9".parse().expect("url"),
        public_url: "http://127.0.0.1:9".parse().expect("url"),
        realm: "authgate".into(),
        client_id: "authgate".into(),
        client_secret: "authgate-dev-secret".into(),
        password_check_client_id: "authgate-password-check".into(),
        password_check_client_secret: "authgate-password-check-dev-secret".into(),
        import_client_id: "authgate-import".into(),
        import_client_secret: "authgate-import-dev-secret".into(),
        timeout: Duration::from_secs(1),
        request_deadline: Duration::from_secs(1),
        token_format: TokenFormat::Legacy,
        admin_events_interval: None,
    };
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let http = Arc::new(KcClient::new(&settings, metrics).expect("http client"));
    let issuer = http.realm_url().to_string();
    let jwks =
        Arc::new(Jwks::new(Arc::clone(&http), Arc::new(SystemClock)).without_verified_cache());
    let again = Arc::new(Jwks::new(http, Arc::new(SystemClock)));

    // The key as the fetch makes it: from the JWK's modulus and exponent.
    let set: JwkSet = serde_json::from_str(JWKS).expect("jwks fixture");
    let jwk = set.keys.first().expect("a key in the fixture");
    let kid = jwk.common.key_id.clone().expect("kid");
    let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
        unreachable!("the fixture key is RSA");
    };
    let decoding = DecodingKey::from_rsa_components(&rsa.n, &rsa.e).expect("decoding key");
    runtime.block_on(jwks.insert_key(&kid, decoding.clone()));
    runtime.block_on(again.insert_key(&kid, decoding));

    // A Keycloak access token (~1 KB of claims) for user 42.
    let now = SystemClock.unix();
    let claims = serde_json::json!({
        "exp": now + 3600,
        "iat": now,
        "auth_time": now,
        "jti": "onrtac:3f1e5d7c-9b2a-4c6e-8f0d-1a3b5c7d9e2f",
        "iss": issuer,
        "aud": "account",
        "sub": "0f8e6b4a-2c1d-4e3f-9a8b-7c6d5e4f3a2b",
        "typ": "Bearer",
        "azp": "authgate",
        "sid": "5d2e8c1a-9b7f-4a3e-8d6c-1f0e2b3a4c5d",
        "acr": "1",
        "allowed-origins": ["https://app.example.com"],
        "realm_access": {
            "roles": ["default-roles-authgate", "offline_access", "uma_authorization", "user"]
        },
        "resource_access": {
            "account": { "roles": ["manage-account", "manage-account-links", "view-profile"] }
        },
        "scope": "openid profile email",
        "email_verified": true,
        "user_id": 42,
        "name": "Ada Lovelace",
        "preferred_username": "ada",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "email": "ada.lovelace@example.com",
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid);
    // PKCS#1 DER, as jsonwebtoken's aws-lc backend takes it (no `use_pem` feature here).
    let der: String = PRIVATE_PEM
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .expect("private key PEM");
    let signing = EncodingKey::from_rsa_der(&der);
    let token = jsonwebtoken::encode(&header, &claims, &signing).expect("rs256 token");
    for verifier in [&jwks, &again] {
        let verified = runtime.block_on(verifier.verify(&token)).expect("verifies");
        assert_eq!(verified.user_id, Some(42));
    }
    eprintln!("verify_rs256_cached_key: token {} B", token.len());

    let token = token.as_str();
    for (name, verifier) in [
        ("keycloak/verify_rs256_cached_key", &jwks),
        ("keycloak/verify_rs256_again", &again),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| async move { verifier.verify(black_box(token)).await })
        });
    }
}

#[cfg(not(feature = "keycloak"))]
fn verify_rs256(_: &mut Criterion) {}

criterion_group!(
    hot_paths,
    verify_access,
    verify_rs256,
    jwe_decrypt,
    cookie_parsing,
    canonical_paths,
    pbkdf2_verify
);
criterion_main!(hot_paths);
