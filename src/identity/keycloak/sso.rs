//! [`Sso`] through Keycloak.

use super::KeycloakBackend;
use crate::identity::sso::Sso;

impl Sso for KeycloakBackend {}
