//! The contract suite (CONTRACT.md), case by case, against the wire only.

pub mod audit;
pub mod auth;
pub mod email_flows;
pub mod limits;
pub mod meta;
pub mod openapi;
pub mod users;
pub mod validation;
pub mod walk;
