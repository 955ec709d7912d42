//! A user's device sessions: listed with where they came from, and revoked
//! one by one, all but the current one, or all of them (an admin's
//! force-logout).

use async_trait::async_trait;

#[async_trait]
pub trait Devices: Send + Sync + std::fmt::Debug {}
