//! Keycloak stays the authority: what ends in Keycloak ends in authgate.
//! Its back-channel logouts ([`BackchannelLogout`]) and the changes read
//! from its admin events ([`KeycloakBackend::apply`]) are recorded in the
//! registry here (the store every replica re-reads), and returned as the
//! [`Revocation`] every replica must refuse from memory at once.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::KeycloakBackend;
use super::admin_events::Change;
use super::jwks::Jwks;
use super::logout_token::{self, Expected};
use super::registry::IdentityRow;
use super::used_tokens::UsedTokens;
use crate::identity::IdentityError;
use crate::identity::logout::{BackchannelLogout, LoggedOut, LogoutRefusal};
use crate::revocation::{Reach, Revocation};

/// What back-channel logout needs: the realm's keys, the used `jti`s.
#[derive(Debug)]
pub struct AuthorityParts {
    pub jwks: Arc<Jwks>,
    pub used_tokens: UsedTokens,
}

/// What a change read from Keycloak came to.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The user it concerned, when authgate knows them.
    pub user_id: Option<i64>,
    /// What every replica must refuse now (empty for a change that ends
    /// nothing, or ended nothing new).
    pub revocation: Revocation,
}

/// A Keycloak time (milliseconds) as the cut-off of a change: whole
/// seconds, rounded up, so that tokens of that very second are refused too
/// (tokens carry whole seconds; a sign-in in the second of the change has
/// to be made again).
fn cutoff(ms: i64) -> i64 {
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

/// Rounded down, for a change of roles or of credentials: the refresh or
/// sign-in that follows at once
/// must give a token that passes (a token issued in the second of the
/// change, before it, keeps its roles until it expires).
fn roles_cutoff(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

impl KeycloakBackend {
    /// Ends every session authgate saw of the user and refuses every token
    /// issued before `not_before`: the sessions newly ended and the cut-off.
    async fn end_user(
        &self,
        identity: &IdentityRow,
        not_before: i64,
    ) -> Result<Revocation, IdentityError> {
        let legacy_id = i64::from(identity.legacy_id);
        let mut ended = Vec::new();
        for device in self.registry.devices_of_user(identity.keycloak_id).await? {
            let device = device.to_string();
            if self.registry.end_session(&device, None, legacy_id).await? {
                ended.push(device);
            }
        }
        self.registry
            .revoke_before(identity.legacy_id, not_before)
            .await?;
        Ok(Revocation::sessions(ended).and_user(legacy_id, not_before, Reach::All))
    }

    /// Ends one Keycloak session by its `sid` (of `owner` when the sid was
    /// never seen: it is recorded then, so that a token naming it later is
    /// refused too); the session's UUID when it was not ended before.
    async fn end_sid(
        &self,
        sid: &str,
        owner: Option<&IdentityRow>,
    ) -> Result<(Option<i64>, Option<String>), IdentityError> {
        let (device, legacy_id) = match self.registry.session_by_sid(sid).await? {
            Some((device, legacy_id)) => (device, i64::from(legacy_id)),
            None => {
                let Some(owner) = owner else {
                    return Ok((None, None));
                };
                let legacy_id = i64::from(owner.legacy_id);
                (
                    self.registry.device_for_session(sid, legacy_id).await?,
                    legacy_id,
                )
            }
        };
        let device = device.to_string();
        let fresh = self
            .registry
            .end_session(&device, Some(sid), legacy_id)
            .await?;
        self.registry.forget_devices(&[sid.to_string()]).await?;
        Ok((Some(legacy_id), fresh.then_some(device)))
    }

    async fn identity_by_subject(&self, sub: &str) -> Result<Option<IdentityRow>, IdentityError> {
        match Uuid::parse_str(sub) {
            Ok(id) => self.registry.by_keycloak_id(id).await,
            Err(_) => Ok(None),
        }
    }

    /// Records a change read from Keycloak's admin events (made at `at_ms`,
    /// Keycloak's milliseconds) and returns what every replica must refuse.
    pub async fn apply(&self, change: &Change, at_ms: i64) -> Result<Applied, IdentityError> {
        let user = |id: &Uuid| self.registry.by_keycloak_id(*id);
        let known = |identity: &IdentityRow| Some(i64::from(identity.legacy_id));
        Ok(match change {
            Change::Disabled(id) | Change::Deleted(id) => {
                let Some(identity) = user(id).await? else {
                    return Ok(Applied::default());
                };
                let revocation = self.end_user(&identity, cutoff(at_ms)).await?;
                if matches!(change, Change::Deleted(_)) {
                    self.registry.mark_deleted(identity.legacy_id).await?;
                }
                Applied {
                    user_id: known(&identity),
                    revocation,
                }
            }
            Change::LoggedOut(id) => {
                let Some(identity) = user(id).await? else {
                    return Ok(Applied::default());
                };
                Applied {
                    user_id: known(&identity),
                    revocation: self.end_user(&identity, cutoff(at_ms)).await?,
                }
            }
            Change::Credentials(id) => {
                let Some(identity) = user(id).await? else {
                    return Ok(Applied::default());
                };
                // Rounded down, as for roles: the sign-in with the new
                // password that follows at once must give a token that passes.
                let at = roles_cutoff(at_ms);
                self.registry.revoke_before(identity.legacy_id, at).await?;
                Applied {
                    user_id: known(&identity),
                    revocation: Revocation::user(i64::from(identity.legacy_id), at),
                }
            }
            Change::Roles(id) => {
                let Some(identity) = user(id).await? else {
                    return Ok(Applied::default());
                };
                let at = roles_cutoff(at_ms);
                self.registry
                    .revoke_access_before(identity.legacy_id, at)
                    .await?;
                Applied {
                    user_id: known(&identity),
                    revocation: Revocation::default().and_user(
                        i64::from(identity.legacy_id),
                        at,
                        Reach::Access,
                    ),
                }
            }
            Change::SessionEnded(sid) => {
                let (user_id, fresh) = self.end_sid(sid, None).await?;
                Applied {
                    user_id,
                    revocation: Revocation::sessions(fresh),
                }
            }
            Change::Verified(id, verified) => {
                self.registry.set_verified(*id, *verified).await?;
                Applied::default()
            }
            Change::Email(id, email) => {
                if let Some(identity) = user(id).await? {
                    self.registry.set_email(identity.legacy_id, email).await?;
                }
                Applied::default()
            }
            Change::Updated(id) => {
                // Keycloak kept no representation: read the user again.
                let Some(identity) = user(id).await? else {
                    return Ok(Applied::default());
                };
                match self.admin.get(&id.to_string()).await? {
                    Some(kc) if kc.enabled => {
                        self.registry.set_verified(*id, kc.email_verified).await?;
                        Applied::default()
                    }
                    // Disabled, or deleted since (its own event follows).
                    _ => Applied {
                        user_id: known(&identity),
                        revocation: self.end_user(&identity, cutoff(at_ms)).await?,
                    },
                }
            }
            Change::RealmLoggedOut => {
                let at = cutoff(at_ms);
                self.registry
                    .set_realm_not_before(&self.http.settings().realm, at)
                    .await?;
                Applied {
                    user_id: None,
                    revocation: Revocation {
                        everyone: Some(at),
                        ..Revocation::default()
                    },
                }
            }
        })
    }
}

#[async_trait]
impl BackchannelLogout for KeycloakBackend {
    async fn logout(
        &self,
        logout_token: &str,
    ) -> Result<Result<LoggedOut, LogoutRefusal>, IdentityError> {
        let settings = self.http.settings();
        let jwks = &self.authority.jwks;
        let expected = Expected {
            issuer: jwks.issuer(),
            audience: &settings.client_id,
        };
        let claims =
            match logout_token::verify(jwks, logout_token, expected, self.sso.clock.unix()).await {
                Ok(claims) => claims,
                Err(refusal) => return Ok(Err(refusal)),
            };
        if !self
            .authority
            .used_tokens
            .first_use(&claims.jti, claims.exp)
            .await?
        {
            return Ok(Err(LogoutRefusal::Replayed));
        }
        let owner = match &claims.sub {
            Some(sub) => self.identity_by_subject(sub).await?,
            None => None,
        };
        let logged_out = match (&claims.sid, &owner) {
            // One session (Keycloak's "backchannel logout session required").
            (Some(sid), _) => {
                let (user_id, fresh) = self.end_sid(sid, owner.as_ref()).await?;
                LoggedOut {
                    user_id,
                    session: Some(sid.clone()),
                    revocation: Revocation::sessions(fresh),
                }
            }
            // Every session of the user, and every token issued before
            // (of the logout's second too).
            (None, Some(identity)) => LoggedOut {
                user_id: Some(i64::from(identity.legacy_id)),
                session: None,
                revocation: self.end_user(identity, claims.iat + 1).await?,
            },
            // A user authgate never saw: nothing of theirs to end.
            (None, None) => LoggedOut::default(),
        };
        Ok(Ok(logged_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keycloak_times_as_cutoffs() {
        assert_eq!(cutoff(1_796_527_324_275), 1_796_527_325);
        assert_eq!(cutoff(1_796_527_324_000), 1_796_527_324);
        assert_eq!(cutoff(1_796_527_324_999), 1_796_527_325);
        assert_eq!(roles_cutoff(1_796_527_324_999), 1_796_527_324);
    }
}
