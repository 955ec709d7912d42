//! The flows several handlers share, below them: opening a device session,
//! mailing an e-mail token, the second factor at sign-in. Handlers import
//! these, never each other.
//!
//! Imports: the api's `App`, errors and deferred jobs, and the layers below
//! the api (`identity`, `tokens`, `mail`, `http`, `config`, `audit`); never
//! a handler.

pub mod second_factor;
pub mod session;
pub mod verification_mail;
