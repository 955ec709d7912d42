//! `POST /email/email/test`: a sample mail, for admins only (deliberate
//! difference 6: the old service sent it for anyone).

use http::StatusCode;
use serde::Deserialize;

use super::{ApiError, App, auth};
use crate::http::validate::{self, Field, Model};
use crate::http::{Request, Response};
use crate::mail::{Mail, MailKind};

#[derive(Debug, Deserialize)]
pub(super) struct TestBody {
    email: String,
}

impl Model for TestBody {
    const FIELDS: &'static [Field] = &[Field::email("email")];
}

pub async fn send(app: &App, req: &Request) -> Result<Response, ApiError> {
    let principal = auth::require(app, req).await?;
    auth::require_admin(app, &principal).await?;
    let body: TestBody = validate::json_body(req)?;
    app.mailer
        .send(&Mail {
            kind: MailKind::Test,
            to: body.email,
            username: String::new(),
            link: String::new(),
        })
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "test mail failed");
            ApiError::status(StatusCode::BAD_GATEWAY, "Test email could not be sent")
        })?;
    Ok(Response::message(
        StatusCode::OK,
        "Test email sent successfully",
    ))
}
