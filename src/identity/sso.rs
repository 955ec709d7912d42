//! Single sign-on: the OIDC authorization-code flow (with PKCE) through the
//! identity provider, which brokers to a customer's own provider.

use async_trait::async_trait;

#[async_trait]
pub trait Sso: Send + Sync + std::fmt::Debug {}
