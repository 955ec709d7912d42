//! Request and response plumbing: routing, JSON bodies and 422 errors,
//! cookies, the JSON schemas of bodies. Nothing here knows about users or
//! tokens.
//!
//! Imports: `config` (the cookie settings).

pub mod client_ip;
pub mod cookies;
pub mod endpoints;
pub mod grpc;
mod request;
mod response;
pub mod schema;
pub mod validate;

pub use request::{Request, cookie_in, cookies_in};
pub use response::{Detail, Message, Response};
