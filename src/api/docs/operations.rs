//! What each route does, per method: the part of the document that only
//! people can write (summaries, who may call, which answers). The match on
//! [`Route`] has no catch-all, so a new route does not compile until it is
//! described here; the tests check that every method of every path is.

use http::Method;

use super::super::account::SignupBody;
use super::super::auth::{INVALID, NOT_PERMITTED, UNAUTHORIZED};
use super::super::email_test::TestBody;
use super::super::meta::{Root, Status};
use super::super::mfa::{self as totp, ConfirmBody, RemoveBody};
use super::super::password::{ForgotBody, ResetBody};
use super::super::session::{RefreshAnswer, RefreshBody, SessionAnswer, SignedOut, SigninBody};
use super::super::users::{CreateBody, LIMIT, OFFSET, UpdateBody, UserOut};
use super::super::verification::{
    INVALID_OR_EXPIRED, ResendAnswer, ResendBody, VerifiedAnswer, VerifyBody,
};
use crate::http::Message;
use crate::http::router::Route;
use crate::http::schema::{Documented, Schema, request_body};
use crate::http::validate::{Model, QueryInt};
use crate::identity::IdentityError;

/// Groups of operations, in the order the document lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Service,
    Account,
    Session,
    Users,
    Mail,
    Enterprise,
}

impl Tag {
    pub const ALL: [Self; 6] = [
        Self::Service,
        Self::Account,
        Self::Session,
        Self::Users,
        Self::Mail,
        Self::Enterprise,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Account => "account",
            Self::Session => "session",
            Self::Users => "users",
            Self::Mail => "mail",
            Self::Enterprise => "enterprise",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Service => {
                "The service itself: name, health, readiness, metrics, this documentation."
            }
            Self::Account => {
                "Sign-up and the e-mailed single-use links: verification and password reset."
            }
            Self::Session => "Sign-in, refresh and sign-out of a device session.",
            Self::Users => "The signed-in user and user administration.",
            Self::Mail => "Mail delivery check (admins).",
            Self::Enterprise => {
                "What the old service never had, under `/auth/...` (keycloak mode): single sign-on, TOTP, device sessions, audit, service credentials."
            }
        }
    }
}

/// Who may call an operation ("token required" is the contract's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Token,
    /// A token of a user with the `admin` role.
    Admin,
    /// A token of the user named by the path, or of an admin.
    SelfOrAdmin,
}

/// A header of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Both token cookies are set.
    SetCookies,
    /// Both token cookies are cleared.
    ClearCookies,
    RetryAfter,
}

/// The body of an answer.
#[derive(Debug, Clone)]
pub enum Content {
    Json(Schema),
    /// `{"detail": ...}` with one of these texts.
    Details(Vec<String>),
    /// Another media type (e.g. `text/plain`) with this schema.
    Other(&'static str, Schema),
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub description: &'static str,
    pub content: Content,
    pub headers: Vec<Header>,
}

impl Answer {
    fn json(status: u16, description: &'static str, schema: Schema) -> Self {
        Self {
            status,
            description,
            content: Content::Json(schema),
            headers: Vec::new(),
        }
    }

    fn ok<T: Documented>(description: &'static str) -> Self {
        Self::json(200, description, Schema::of::<T>())
    }

    fn details(status: u16, description: &'static str, details: &[&str]) -> Self {
        Self {
            status,
            description,
            content: Content::Details(details.iter().map(|d| (*d).to_string()).collect()),
            headers: Vec::new(),
        }
    }

    fn with(mut self, header: Header) -> Self {
        self.headers.push(header);
        self
    }
}

/// A JSON request body: its model's name and schema.
#[derive(Debug, Clone)]
pub struct Body {
    pub name: &'static str,
    pub schema: Schema,
}

/// The body model `M` (named after its type).
fn body<M: Model>() -> Option<Body> {
    let full = std::any::type_name::<M>();
    Some(Body {
        name: full.rsplit("::").next().unwrap_or(full),
        schema: request_body::<M>(),
    })
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub id: &'static str,
    pub tag: Tag,
    pub summary: &'static str,
    pub description: &'static str,
    pub access: Access,
    pub body: Option<Body>,
    pub query: Vec<QueryInt>,
    /// Answers particular to the operation; the shared ones (403, 413, 422,
    /// 429, 503) follow from the fields below and from `access` and `body`.
    pub answers: Vec<Answer>,
    /// Rate-limited: may answer 429 with `Retry-After`.
    pub limited: bool,
    /// Asks the identity backend: may answer 503 when it does not answer.
    pub backend: bool,
    /// A keycloak-mode feature: answers 501 on a backend without it.
    pub enterprise: bool,
}

impl Operation {
    fn new(id: &'static str, tag: Tag, summary: &'static str) -> Self {
        Self {
            id,
            tag,
            summary,
            description: "",
            access: Access::Public,
            body: None,
            query: Vec::new(),
            answers: Vec::new(),
            limited: false,
            backend: true,
            enterprise: false,
        }
    }

    fn describe(mut self, text: &'static str) -> Self {
        self.description = text;
        self
    }

    fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    fn body(mut self, body: Option<Body>) -> Self {
        self.body = body;
        self
    }

    fn answer(mut self, answer: Answer) -> Self {
        self.answers.push(answer);
        self
    }

    fn limited(mut self) -> Self {
        self.limited = true;
        self
    }

    /// A feature of keycloak mode (tagged `enterprise`; 501 elsewhere).
    #[allow(dead_code)] // used by the `/auth/...` operations
    fn enterprise(mut self) -> Self {
        self.enterprise = true;
        self.tag = Tag::Enterprise;
        self
    }

    fn local(mut self) -> Self {
        self.backend = false;
        self
    }

    /// The `detail` texts of a refused token, for this access rule.
    pub fn forbidden_details(&self) -> Vec<&'static str> {
        match self.access {
            Access::Public => Vec::new(),
            Access::Token => vec![UNAUTHORIZED, INVALID],
            Access::Admin | Access::SelfOrAdmin => vec![UNAUTHORIZED, INVALID, NOT_PERMITTED],
        }
    }
}

fn taken() -> Vec<String> {
    vec![
        IdentityError::EmailTaken.to_string(),
        IdentityError::UsernameTaken.to_string(),
    ]
}

fn details(status: u16, description: &'static str, details: Vec<String>) -> Answer {
    Answer {
        status,
        description,
        content: Content::Details(details),
        headers: Vec::new(),
    }
}

/// The 501 of the TOTP routes in native mode.
fn totp_unsupported() -> Answer {
    details(
        501,
        "The backend has no second factors (native mode).",
        vec![IdentityError::Unsupported(totp::FEATURE).to_string()],
    )
}

fn user_not_found() -> Answer {
    details(
        404,
        "No such user.",
        vec![IdentityError::NotFound.to_string()],
    )
}

/// The operation of `route` for `method`; `None` for a method the route does
/// not answer (and for HEAD, which every GET operation answers).
pub fn operation(route: Route, method: &Method) -> Option<Operation> {
    let get = method == Method::GET;
    let post = method == Method::POST;
    let op = match route {
        Route::Root if get => Operation::new("root", Tag::Service, "Name and version")
            .local()
            .answer(Answer::ok::<Root>("The service's name, version and contact.")),
        Route::Health if get => Operation::new("health", Tag::Service, "Liveness")
            .describe("Answers while the process runs; asks nothing else.")
            .local()
            .answer(Answer::ok::<Status>("`{\"status\": \"ok\"}`")),
        Route::Ready if get => Operation::new("ready", Tag::Service, "Readiness")
            .describe("Checks the database (and Keycloak in keycloak mode).")
            .answer(Answer::ok::<Status>("`{\"status\": \"ready\"}`")),
        Route::Metrics if get => Operation::new("metrics", Tag::Service, "Prometheus metrics")
            .describe("Served here unless `METRICS_ADDR` is set; then only on that listener.")
            .local()
            .answer(Answer {
                status: 200,
                description: "Prometheus text exposition.",
                content: Content::Other("text/plain", Schema::string()),
                headers: Vec::new(),
            })
            .answer(Answer::details(
                404,
                "`METRICS_ADDR` is set: metrics are served on that listener only.",
                &["Not Found"],
            )),
        Route::Docs if get => Operation::new("docs", Tag::Service, "This documentation, as a page")
            .describe("A self-contained page that renders `/docs/json`; it loads nothing else.")
            .local()
            .answer(Answer {
                status: 200,
                description: "An HTML page.",
                content: Content::Other("text/html", Schema::string()),
                headers: Vec::new(),
            }),
        Route::DocsJson if get => {
            Operation::new("openapi", Tag::Service, "This documentation (OpenAPI 3.1)")
                .describe("Generated from the gateway's route table and models.")
                .local()
                .answer(Answer::json(
                    200,
                    "The OpenAPI document.",
                    Schema::object().open().field("openapi", Schema::string()),
                ))
        }
        Route::Signup if post => Operation::new("signup", Tag::Account, "Sign up")
            .describe(
                "Creates an unverified user, stores a single-use verification token and mails the link \
                 `<verification_url or APP_URL/verify-email>?token=...`. The answer carries working \
                 tokens for the still-unverified user; no cookies are set. A mail that cannot be sent \
                 does not fail the sign-up.",
            )
            .body(body::<SignupBody>())
            .limited()
            .answer(Answer::ok::<SessionAnswer>(
                "Signed up; `message` is `Verification email sent successfully`.",
            ))
            .answer(details(
                400,
                "The address (regardless of case) or the username is taken; the address wins.",
                taken(),
            )),
        Route::Signin if post => Operation::new("signin", Tag::Session, "Sign in")
            .describe(
                "`username` is a username or an e-mail address (case-insensitive). A verified user gets \
                 a new device session: tokens in the body and in both cookies. An unverified user gets \
                 null tokens, `fallback_url` (the request's, else `/verify-email`) and a fresh \
                 verification mail; no cookies.",
            )
            .body(body::<SigninBody>())
            .limited()
            .answer(
                Answer::ok::<SessionAnswer>(
                    "Signed in (cookies set), or `Please verify your email first` with null tokens.",
                )
                .with(Header::SetCookies),
            )
            .answer(Answer::details(
                401,
                "Wrong password or unknown user; or, in keycloak mode, the password is right but the \
                 user has TOTP and `otp` is missing or wrong (`otp` is ignored for users without it).",
                &["Invalid credentials", totp::CODE_REQUIRED, totp::CODE_INVALID],
            )),
        Route::RefreshToken if post => Operation::new("refresh", Tag::Session, "Refresh the access token")
            .describe(
                "Only the JSON body is read (not the cookie). With `TOKEN_FORMAT=keycloak`, Keycloak's \
                 own refresh token is accepted too.",
            )
            .body(body::<RefreshBody>())
            .answer(Answer::ok::<RefreshAnswer>("A new access token."))
            .answer(Answer::details(
                401,
                "Not a valid refresh token, expired, or its session or user is gone.",
                &[
                    "Invalid refresh token",
                    "Refresh token expired",
                    "Session has ended",
                    "User is no longer active",
                ],
            )),
        Route::Signout if post => Operation::new("signout", Tag::Session, "Sign out")
            .describe(
                "Ends the token's device session: its refresh token stops refreshing and its access \
                 tokens are refused from then on. Clears both cookies.",
            )
            .access(Access::Token)
            .answer(Answer::ok::<SignedOut>("Signed out.").with(Header::ClearCookies)),
        Route::VerifyEmail if post => Operation::new("verifyEmail", Tag::Account, "Verify the e-mail address")
            .describe(
                "Redeems a single-use verification token: marks the user verified and signs them in \
                 (tokens in the body and in both cookies).",
            )
            .body(body::<VerifyBody>())
            .answer(Answer::ok::<VerifiedAnswer>("Verified and signed in.").with(Header::SetCookies))
            .answer(Answer::details(
                400,
                "Unknown, used or expired token, or a password-reset token.",
                &[INVALID_OR_EXPIRED, "Invalid verification token"],
            )),
        Route::ResendVerification if post => Operation::new("resendVerification", Tag::Account, "Mail a new verification link")
            .describe(
                "Unknown addresses get the same answer as known ones. After `VERIFICATION_MAIL_LIMIT` \
                 mails within `VERIFICATION_MAIL_WINDOW_SECONDS` the answer says so and gives \
                 `retry_after`.",
            )
            .body(body::<ResendBody>())
            .limited()
            .answer(Answer::ok::<ResendAnswer>("Sent, or the mail limit is reached."))
            .answer(Answer::details(400, "The address is already verified.", &["Email already verified"])),
        Route::ForgotPassword if post => Operation::new("forgotPassword", Tag::Account, "Mail a password-reset link")
            .describe(
                "Mails `<reset_url or APP_URL>/reset-password?token=...` to a known address; unknown \
                 addresses get the same answer.",
            )
            .body(body::<ForgotBody>())
            .limited()
            .answer(Answer::ok::<Message>(
                "`Password reset instructions have been sent to your email.`",
            )),
        Route::ResetPassword if post => Operation::new("resetPassword", Tag::Account, "Set a new password")
            .describe("Redeems a single-use reset token; all the user's sessions end.")
            .body(body::<ResetBody>())
            .answer(Answer::ok::<Message>("`Password has been reset successfully`"))
            .answer(Answer::details(
                400,
                "Unknown, used or expired token, or a verification token.",
                &[INVALID_OR_EXPIRED, "Invalid or expired password reset token"],
            )),
        Route::Me if get => Operation::new("me", Tag::Users, "The signed-in user")
            .describe("`/users/me/` (the legacy path) and `/users/me` answer alike.")
            .access(Access::Token)
            .answer(Answer::ok::<UserOut>("The token's user."))
            .answer(user_not_found()),
        Route::Users if get => Operation::new("listUsers", Tag::Users, "List users")
            .describe("Active users by id. `/users` (without the slash) answers 307 to here.")
            .access(Access::Token)
            .query(OFFSET)
            .query(LIMIT)
            .answer(Answer::json(
                200,
                "A page of users.",
                Schema::array(Schema::of::<UserOut>()),
            )),
        Route::Users if post => Operation::new("createUser", Tag::Users, "Create a user (admin)")
            .describe("Creates an unverified user without mailing anything.")
            .access(Access::Admin)
            .body(body::<CreateBody>())
            .answer(Answer::ok::<UserOut>("The new user."))
            .answer(details(400, "The address or the username is taken.", taken())),
        Route::User if get => Operation::new("getUser", Tag::Users, "One user")
            .access(Access::Token)
            .answer(Answer::ok::<UserOut>("The user."))
            .answer(user_not_found()),
        Route::User if method == Method::PUT => {
            Operation::new("updateUser", Tag::Users, "Change a user")
                .describe(
                    "The user themself or an admin; `is_verified` only by an admin. A new password \
                     ends all the user's sessions.",
                )
                .access(Access::SelfOrAdmin)
                .body(body::<UpdateBody>())
                .answer(Answer::ok::<UserOut>("The changed user."))
                .answer(details(
                    400,
                    "The new address is taken.",
                    vec![IdentityError::EmailTaken.to_string()],
                ))
                .answer(user_not_found())
        }
        Route::User if method == Method::DELETE => {
            Operation::new("deleteUser", Tag::Users, "Delete a user")
                .describe(
                    "The user themself or an admin. The user is marked deleted (the address stays \
                     taken), can no longer sign in, and all their sessions end.",
                )
                .access(Access::SelfOrAdmin)
                .answer(Answer::ok::<Message>("`User deleted successfully`"))
                .answer(user_not_found())
        }
        Route::EmailTest if post => Operation::new("emailTest", Tag::Mail, "Send a test mail (admin)")
            .describe("The legacy path, prefix doubled as it was; answered for admins only.")
            .access(Access::Admin)
            .body(body::<TestBody>())
            .answer(Answer::ok::<Message>("`Test email sent successfully`"))
            .answer(Answer::details(
                502,
                "The SMTP server refused or did not answer.",
                &["Test email could not be sent"],
            )),
        Route::Totp if get => Operation::new("totpStatus", Tag::Enterprise, "TOTP: status")
            .describe("Whether the caller has a TOTP second factor (keycloak mode).")
            .access(Access::Token)
            .enterprise()
            .answer(Answer::json(200, "The caller's TOTP status.", totp::status_schema()))
            .answer(user_not_found())
            .answer(totp_unsupported()),
        Route::Totp if post => Operation::new("totpStart", Tag::Enterprise, "TOTP: start an enrolment")
            .describe(
                "A fresh key for the caller, not stored yet: base32, `otpauth://` URI (issuer \
                 `APP_NAME`, account the user's e-mail), an SVG QR code of the URI, and an enrolment \
                 token (sealed, valid 10 minutes) for `/auth/mfa/totp/confirm`. No request body.",
            )
            .access(Access::Token)
            .enterprise()
            .answer(Answer::json(200, "The pending enrolment.", totp::enrolment_schema()))
            .answer(Answer::details(400, "TOTP is already enabled (remove it first).", &[totp::ALREADY_ENABLED]))
            .answer(user_not_found())
            .answer(totp_unsupported()),
        Route::Totp if method == Method::DELETE => Operation::new("totpRemove", Tag::Enterprise, "TOTP: remove")
            .describe(
                "Removes the caller's TOTP; the body repeats the password. Each call counts against \
                 `RATE_LIMIT_OTP_PER_ACCOUNT`.",
            )
            .access(Access::Token)
            .enterprise()
            .body(body::<RemoveBody>())
            .limited()
            .answer(Answer::ok::<Message>("`TOTP disabled`"))
            .answer(Answer::details(400, "Wrong password; nothing changed.", &[totp::BAD_PASSWORD]))
            .answer(details(
                404,
                "The caller has no TOTP (or is gone).",
                vec![totp::NOT_ENABLED.into(), IdentityError::NotFound.to_string()],
            ))
            .answer(totp_unsupported()),
        Route::TotpConfirm if post => Operation::new("totpConfirm", Tag::Enterprise, "TOTP: confirm an enrolment")
            .describe(
                "Checks a code of the pending key (the current 30-second step or one next to it); \
                 only then is the key stored in Keycloak. Each call counts against \
                 `RATE_LIMIT_OTP_PER_ACCOUNT`.",
            )
            .access(Access::Token)
            .enterprise()
            .body(body::<ConfirmBody>())
            .limited()
            .answer(Answer::ok::<Message>("`TOTP enabled`"))
            .answer(Answer::details(
                400,
                "Bad, expired or another user's enrolment token, wrong code, or TOTP already enabled; nothing changed.",
                &[totp::BAD_ENROLMENT, totp::CODE_INVALID, totp::ALREADY_ENABLED],
            ))
            .answer(user_not_found())
            .answer(totp_unsupported()),
        Route::Root
        | Route::Health
        | Route::Ready
        | Route::Metrics
        | Route::Docs
        | Route::DocsJson
        | Route::Signup
        | Route::Signin
        | Route::RefreshToken
        | Route::Signout
        | Route::VerifyEmail
        | Route::ResendVerification
        | Route::ForgotPassword
        | Route::ResetPassword
        | Route::Me
        | Route::Users
        | Route::User
        | Route::EmailTest
        | Route::Totp
        | Route::TotpConfirm => return None,
    };
    Some(op)
}

impl Operation {
    fn query(mut self, param: QueryInt) -> Self {
        self.query.push(param);
        self
    }
}
