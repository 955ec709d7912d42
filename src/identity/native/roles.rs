//! The native backend's `Roles` role: roles, asked and granted, on the
//! legacy schema, for both stores (`for_every_store!`).

use crate::identity::{IdentityError, User, db_error};

for_every_store! {
    impl Roles {
        async fn roles(&self, id: i64) -> Result<Vec<String>, IdentityError> {
            // A deleted or deactivated user holds no role.
            sqlx::query_scalar(concat!(
                "SELECT CAST(role AS TEXT) FROM authgate_user_roles r JOIN users ON users.id = r.user_id \
                 WHERE r.user_id = $1 AND ",
                alive!(),
                " ORDER BY role"
            ))
            .bind(id)
            .fetch_all(self.pool().await)
            .await
            .map_err(db_error)
        }

        /// A row of authgate's roles table (the legacy schema had none).
        async fn grant_role(&self, login: &str, role: &str) -> Result<User, IdentityError> {
            let user = self
                .user_by_login(login)
                .await?
                .ok_or(IdentityError::NotFound)?;
            self.insert_role(user.id, role).await?;
            Ok(user)
        }

        async fn is_admin(&self, id: i64) -> Result<bool, IdentityError> {
            sqlx::query_scalar(concat!(
                "SELECT EXISTS (SELECT 1 FROM authgate_user_roles r JOIN users ON users.id = r.user_id \
                 WHERE r.user_id = $1 AND r.role = 'admin' AND ",
                alive!(),
                ")"
            ))
            .bind(id)
            .fetch_one(self.pool().await)
            .await
            .map_err(db_error)
        }
    }
}
