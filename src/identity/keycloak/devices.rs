//! [`Devices`] through Keycloak.

use super::KeycloakBackend;
use crate::identity::devices::Devices;

impl Devices for KeycloakBackend {}
