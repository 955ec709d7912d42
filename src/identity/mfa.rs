//! Second factors: TOTP enrolment, its check at sign-in, and removal.

use async_trait::async_trait;

#[async_trait]
pub trait Mfa: Send + Sync + std::fmt::Debug {}
