//! [`Mfa`] through Keycloak.

use super::KeycloakBackend;
use crate::identity::mfa::Mfa;

impl Mfa for KeycloakBackend {}
