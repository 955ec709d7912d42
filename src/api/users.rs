//! `/users/me` and user administration.

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::{self, Principal};
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::http::schema::{Documented, Schema};
use crate::http::validate::{self, Field, Model, QueryInt};
use crate::http::{Request, Response};
use crate::identity::{IdentityError, NewUser, User, UserPatch};
use crate::revocation::{Revocation, Source};
use serde_json::json;

/// The contract's user object. It never carries a password or hash.
#[derive(Serialize)]
pub(super) struct UserOut<'a> {
    username: &'a str,
    email: &'a str,
    id: i64,
}

impl Documented for UserOut<'static> {
    const NAME: &'static str = "User";

    fn schema() -> Schema {
        Schema::object()
            .field("username", Schema::string())
            .field("email", Schema::string().format("email"))
            .field("id", Schema::integer())
            .describe("A user; never a password or its hash.")
    }

    fn example() -> Self {
        Self {
            username: "ada",
            email: "ada@example.com",
            id: 42,
        }
    }
}

/// `GET /users/?offset=`: users to skip.
pub(super) const OFFSET: QueryInt = QueryInt {
    name: "offset",
    default: 0,
    min: 0,
    max: i32::MAX as i64,
};

/// `GET /users/?limit=`: most users in the answer.
pub(super) const LIMIT: QueryInt = QueryInt {
    name: "limit",
    default: 100,
    min: 0,
    max: 1000,
};

impl<'a> From<&'a User> for UserOut<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            username: &user.username,
            email: &user.email,
            id: user.id,
        }
    }
}

fn user_response(user: &User) -> Response {
    Response::json(StatusCode::OK, &UserOut::from(user))
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateBody {
    username: String,
    email: String,
    password: String,
}

impl Model for CreateBody {
    const FIELDS: &'static [Field] = &[
        Field::string("username", 3, 50),
        Field::email("email"),
        Field::string("password", 8, 128),
    ];
}

#[derive(Debug, Deserialize)]
pub(super) struct UpdateBody {
    email: Option<String>,
    password: Option<String>,
    is_verified: Option<bool>,
}

impl Model for UpdateBody {
    const FIELDS: &'static [Field] = &[
        Field::email("email").optional(),
        Field::string("password", 8, 128).optional(),
        Field::boolean("is_verified").optional(),
    ];
}

pub async fn me(app: &App, req: &Request) -> Result<Response, ApiError> {
    let principal = auth::require(app, req).await?;
    let user = app
        .sessions
        .user(app.backend.as_ref(), principal.user_id)
        .await?;
    Ok(user_response(&user))
}

pub async fn list(app: &App, req: &Request) -> Result<Response, ApiError> {
    auth::require(app, req).await?;
    let offset = OFFSET.read(req)?;
    let limit = LIMIT.read(req)?;
    let users = app.backend.list_users(offset, limit).await?;
    let out: Vec<UserOut<'_>> = users.iter().map(UserOut::from).collect();
    Ok(Response::json(StatusCode::OK, &out))
}

pub async fn create(app: &App, req: &Request) -> Result<Response, ApiError> {
    let principal = auth::require(app, req).await?;
    auth::require_admin(app, &principal).await?;
    let body: CreateBody = validate::json_body(req)?;
    let user = app
        .backend
        .register(
            NewUser {
                username: body.username,
                email: body.email,
                password: body.password,
            },
            None,
        )
        .await?;
    tracing::info!(
        user_id = user.id,
        by = principal.user_id,
        "user created by admin"
    );
    app.audit(
        AuditEvent::success("user.created")
            .actor(principal.user_id)
            .subject(user.id)
            .from(req),
    )
    .await;
    Ok(user_response(&user))
}

pub async fn get(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    auth::require(app, req).await?;
    let id = validate::path_int("user_id", id)?;
    let user = app
        .backend
        .user_by_id(id)
        .await?
        .ok_or(IdentityError::NotFound)?;
    Ok(user_response(&user))
}

/// The user themself or an admin; returns whether the caller is an admin.
async fn self_or_admin(app: &App, principal: &Principal, id: i64) -> Result<bool, ApiError> {
    let admin = auth::is_admin(app, principal).await?;
    if principal.user_id != id && !admin {
        return Err(ApiError::forbidden(auth::NOT_PERMITTED));
    }
    Ok(admin)
}

pub async fn update(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let principal = auth::require(app, req).await?;
    let id = validate::path_int("user_id", id)?;
    let body: UpdateBody = validate::json_body(req)?;
    let admin = self_or_admin(app, &principal, id).await?;
    if body.is_verified.is_some() && !admin {
        return Err(ApiError::forbidden(auth::NOT_PERMITTED));
    }
    let changed: Vec<&str> = [
        ("email", body.email.is_some()),
        ("password", body.password.is_some()),
        ("is_verified", body.is_verified.is_some()),
    ]
    .iter()
    .filter(|(_, given)| *given)
    .map(|(name, _)| *name)
    .collect();
    let user = app
        .backend
        .update_user(
            id,
            UserPatch {
                email: body.email,
                password: body.password,
                is_verified: body.is_verified,
            },
        )
        .await?;
    app.sessions.forget();
    tracing::info!(user_id = id, by = principal.user_id, "user updated");
    app.audit(
        AuditEvent::success("user.updated")
            .actor(principal.user_id)
            .subject(id)
            .from(req)
            .detail(json!({ "fields": changed })),
    )
    .await;
    Ok(user_response(&user))
}

pub async fn delete(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let principal = auth::require(app, req).await?;
    let id = validate::path_int("user_id", id)?;
    self_or_admin(app, &principal, id).await?;
    app.backend.delete_user(id).await?;
    // Every token of the user, those of this very second too.
    app.revocations
        .revoke(&Revocation::user(id, app.clock.unix() + 1), Source::Admin)
        .await;
    app.sessions.forget();
    tracing::info!(user_id = id, by = principal.user_id, "user deleted");
    app.audit(
        AuditEvent::success("user.deleted")
            .actor(principal.user_id)
            .subject(id)
            .from(req),
    )
    .await;
    Ok(Response::message(
        StatusCode::OK,
        "User deleted successfully",
    ))
}

/// Hostile bytes: the request bodies of `/users` (the long run is
/// `scripts/fuzz.sh`).
#[cfg(test)]
mod prop {
    use proptest::prelude::*;

    use super::*;
    use crate::http::validate::email;
    use crate::http::validate::prop::{body, check_refusal, content_type, request};

    proptest! {
        #[test]
        fn create_body(body in body(&["username", "email", "password"]), ct in content_type()) {
            let req = request(body, ct);
            let outcome = validate::json_body::<CreateBody>(&req);
            check_refusal(&req, &outcome)?;
            if let Ok(created) = outcome {
                prop_assert!((3..=50).contains(&created.username.chars().count()));
                prop_assert!((8..=128).contains(&created.password.chars().count()));
                prop_assert!(!created.username.contains('\0') && !created.password.contains('\0'));
                prop_assert_eq!(email::normalize(&created.email), Ok(created.email.clone()));
            }
        }

        #[test]
        fn update_body(body in body(&["email", "password", "is_verified"]), ct in content_type()) {
            let req = request(body, ct);
            let outcome = validate::json_body::<UpdateBody>(&req);
            check_refusal(&req, &outcome)?;
            if let Ok(update) = outcome {
                if let Some(password) = &update.password {
                    prop_assert!((8..=128).contains(&password.chars().count()));
                }
                if let Some(address) = &update.email {
                    prop_assert_eq!(email::normalize(address), Ok(address.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod in_process {
    //! `/users/me` and user administration on the in-process kit.

    use http::{Method, StatusCode};
    use serde_json::json;

    use crate::testkit::{Kit, KitUser};

    async fn admin(kit: &Kit) -> KitUser {
        let admin = kit.verified_user("root").await;
        kit.app
            .backend
            .grant_role(&admin.username, "admin")
            .await
            .unwrap();
        admin
    }

    #[tokio::test]
    async fn me_answers_on_both_paths() {
        let kit = Kit::native().await;
        let user = kit.verified_user("ada").await;
        for path in ["/users/me/", "/users/me"] {
            let me = kit
                .bearer(Method::GET, path, &user.access_token, None)
                .await;
            assert_eq!(me.status, StatusCode::OK);
            assert_eq!(
                me.json,
                json!({ "username": "ada", "email": "ada@example.com", "id": user.id })
            );
        }
        let anonymous = kit.get("/users/me/").await;
        assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
        assert_eq!(anonymous.detail(), "Unauthorized.");
    }

    #[tokio::test]
    async fn an_admin_creates_lists_reads_and_deletes_users() {
        let kit = Kit::native().await;
        let root = admin(&kit).await;
        let created = kit
            .bearer(
                Method::POST,
                "/users/",
                &root.access_token,
                Some(json!({ "username": "bob", "email": "bob@example.com", "password": "long enough password" })),
            )
            .await;
        assert_eq!(created.status, StatusCode::OK, "{:?}", created.json);
        let id = created.json["id"].as_i64().unwrap();

        let list = kit
            .bearer(
                Method::GET,
                "/users/?offset=0&limit=10",
                &root.access_token,
                None,
            )
            .await;
        let names: Vec<&str> = list
            .json
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["username"].as_str())
            .collect();
        assert_eq!(names, ["root", "bob"]);

        let one = kit
            .bearer(
                Method::GET,
                &format!("/users/{id}"),
                &root.access_token,
                None,
            )
            .await;
        assert_eq!(one.json["email"], "bob@example.com");

        let deleted = kit
            .bearer(
                Method::DELETE,
                &format!("/users/{id}"),
                &root.access_token,
                None,
            )
            .await;
        assert_eq!(deleted.json["message"], "User deleted successfully");
        let gone = kit
            .bearer(
                Method::GET,
                &format!("/users/{id}"),
                &root.access_token,
                None,
            )
            .await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert_eq!(gone.detail(), "User not found");
        let signin = kit.signin("bob", "long enough password").await;
        assert_eq!(signin.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn only_an_admin_creates_and_only_oneself_or_an_admin_changes() {
        let kit = Kit::native().await;
        let ada = kit.verified_user("ada").await;
        let bob = kit.verified_user("bob").await;
        let create = kit
            .bearer(
                Method::POST,
                "/users/",
                &ada.access_token,
                Some(json!({ "username": "cyd", "email": "cyd@example.com", "password": "long enough password" })),
            )
            .await;
        assert_eq!(create.status, StatusCode::FORBIDDEN);
        assert_eq!(create.detail(), "Not enough permissions");

        let other = kit
            .bearer(
                Method::PUT,
                &format!("/users/{}", bob.id),
                &ada.access_token,
                Some(json!({ "password": "taken over password" })),
            )
            .await;
        assert_eq!(other.status, StatusCode::FORBIDDEN);

        let own = kit
            .bearer(
                Method::PUT,
                &format!("/users/{}", ada.id),
                &ada.access_token,
                Some(json!({ "email": "ada@new.example" })),
            )
            .await;
        assert_eq!(own.status, StatusCode::OK, "{:?}", own.json);
        assert_eq!(own.json["email"], "ada@new.example");

        let verify_self = kit
            .bearer(
                Method::PUT,
                &format!("/users/{}", ada.id),
                &ada.access_token,
                Some(json!({ "is_verified": false })),
            )
            .await;
        assert_eq!(verify_self.status, StatusCode::FORBIDDEN);
    }
}
