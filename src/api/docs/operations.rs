//! What each route does, per method: the part of the document that only
//! people can write (summaries, who may call, which answers). The match on
//! [`Endpoint`] has no catch-all, so a new route does not compile until it is
//! described here; the tests check that every method of every path is.

use http::Method;

use super::super::account::SignupBody;
use super::super::admin_mail::TestBody;
use super::super::audit::{
    ACTION as AUDIT_ACTION, AuditPage, BEFORE as AUDIT_BEFORE, LIMIT as AUDIT_LIMIT,
    OUTCOME as AUDIT_OUTCOME, SINCE as AUDIT_SINCE, UNTIL as AUDIT_UNTIL, USER_ID as AUDIT_USER_ID,
};
use super::super::auth::{INVALID, NOT_PERMITTED, UNAUTHORIZED};
use super::super::backchannel::{self, LogoutError};
use super::super::devices::{self, Ended, SessionOut};
use super::super::flows::session::SessionAnswer;
use super::super::forward_auth::{AMBIGUOUS, INVALID_PATH, NO_TARGET, UNTRUSTED};
use super::super::meta::{Root, Status};
use super::super::mfa::{self as totp, ConfirmBody, RemoveBody};
use super::super::password::{ForgotBody, ResetBody};
use super::super::session::{RefreshAnswer, RefreshBody, SignedOut, SigninBody};
use super::super::sso::{FEATURE as SSO, LOGIN_COOKIE, MISSING_PROVIDER, REDIRECT_NOT_ALLOWED};
use super::super::users::{CreateBody, LIMIT, OFFSET, UpdateBody, UserOut};
use super::super::verification::{
    INVALID_OR_EXPIRED, ResendAnswer, ResendBody, VerifiedAnswer, VerifyBody,
};
use crate::http::Message;
use crate::http::endpoints::Endpoint;
use crate::http::schema::{Documented, Schema};
use crate::http::validate::request_body;
use crate::http::validate::{Model, QueryInt, QueryText};
use crate::identity::IdentityError;
use crate::identity::sso::SsoRefusal;

/// Groups of operations, in the order the document lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Service,
    Account,
    Session,
    Users,
    Mail,
    Enterprise,
    Edge,
}

impl Tag {
    pub const ALL: [Self; 7] = [
        Self::Service,
        Self::Account,
        Self::Session,
        Self::Users,
        Self::Mail,
        Self::Enterprise,
        Self::Edge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Account => "account",
            Self::Session => "session",
            Self::Users => "users",
            Self::Mail => "mail",
            Self::Enterprise => "enterprise",
            Self::Edge => "edge",
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
                "What the old service never had, under `/auth/...`: the audit trail, and (keycloak mode) single sign-on, TOTP and device sessions."
            }
            Self::Edge => {
                "Forward-auth: the route policies of `ROUTES_FILE` for a proxy that is already there (nginx, ingress-nginx, Traefik, Caddy, Envoy)."
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
    /// What the route policy of the original request asks (forward-auth),
    /// from a trusted proxy.
    RoutePolicy,
}

/// A header of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Both token cookies are set.
    SetCookies,
    /// Both token cookies are cleared.
    ClearCookies,
    RetryAfter,
    /// `Location` of a redirect.
    Location,
    /// A cookie of this name is set.
    LoginCookie(&'static str),
    /// `Cache-Control: no-store`.
    NoStore,
    /// An optional header: its name and what it says.
    Named(&'static str, &'static str),
}

/// The body of an answer.
#[derive(Debug, Clone)]
pub enum Content {
    Json(Schema),
    /// `{"detail": ...}` with one of these texts.
    Details(Vec<String>),
    /// Another media type (e.g. `text/plain`) with this schema.
    Other(&'static str, Schema),
    /// No body (a redirect).
    None,
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

/// A request body: its model's name and schema, JSON unless `form`.
#[derive(Debug, Clone)]
pub struct Body {
    pub name: &'static str,
    pub schema: Schema,
    /// `application/x-www-form-urlencoded` (read as the operation says; a
    /// bad one is the operation's own 400, never a 422).
    pub form: bool,
}

/// The body model `M` (named after its type).
fn body<M: Model>() -> Option<Body> {
    let full = std::any::type_name::<M>();
    Some(Body {
        name: full.rsplit("::").next().unwrap_or(full),
        schema: request_body::<M>(),
        form: false,
    })
}

/// The form body of a back-channel logout.
fn logout_form() -> Option<Body> {
    Some(Body {
        name: "BackchannelLogoutForm",
        schema: Schema::object()
            .field(
                backchannel::FIELD,
                Schema::string().describe("The logout token: a JWT signed by the realm (RS256)."),
            )
            .describe("`application/x-www-form-urlencoded`, as Keycloak posts it."),
        form: true,
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
    pub query: Vec<QueryParam>,
    /// Optional text query parameters: name and description (read as they
    /// come; a bad value is the operation's own 400, never a 422).
    pub query_text: Vec<(&'static str, &'static str)>,
    /// Answers particular to the operation; the shared ones (403, 413, 422,
    /// 429, 503) follow from the fields below and from `access` and `body`.
    pub answers: Vec<Answer>,
    /// Rate-limited: may answer 429 with `Retry-After`.
    pub limited: bool,
    /// Asks the identity backend: may answer 503 when it does not answer.
    pub backend: bool,
    /// A keycloak-mode feature: answers 501 on a backend without it.
    pub enterprise: bool,
    /// The feature's name in that 501 answer (`IdentityError::Unsupported`).
    pub feature: &'static str,
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
            query_text: Vec::new(),
            answers: Vec::new(),
            limited: false,
            backend: true,
            enterprise: false,
            feature: "This feature",
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
    fn enterprise(mut self) -> Self {
        self.enterprise = true;
        self.tag = Tag::Enterprise;
        self
    }

    /// Names the feature in the 501 answer.
    fn feature(mut self, name: &'static str) -> Self {
        self.feature = name;
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
            Access::RoutePolicy => vec![UNAUTHORIZED, INVALID, NOT_PERMITTED, UNTRUSTED],
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
pub fn operation(route: Endpoint, method: &Method) -> Option<Operation> {
    let get = method == Method::GET;
    let post = method == Method::POST;
    let op = match route {
        Endpoint::Root if get => Operation::new("root", Tag::Service, "Name and version")
            .local()
            .answer(Answer::ok::<Root>("The service's name, version and contact.")),
        Endpoint::Health if get => Operation::new("health", Tag::Service, "Liveness")
            .describe("Answers while the process runs; asks nothing else.")
            .local()
            .answer(Answer::ok::<Status>("`{\"status\": \"ok\"}`")),
        Endpoint::Ready if get => Operation::new("ready", Tag::Service, "Readiness")
            .describe("Checks the database (and Keycloak in keycloak mode).")
            .answer(Answer::ok::<Status>("`{\"status\": \"ready\"}`")),
        Endpoint::Metrics if get => Operation::new("metrics", Tag::Service, "Prometheus metrics")
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
        Endpoint::Docs if get => Operation::new("docs", Tag::Service, "This documentation, as a page")
            .describe("A self-contained page that renders `/docs/json`; it loads nothing else.")
            .local()
            .answer(Answer {
                status: 200,
                description: "An HTML page.",
                content: Content::Other("text/html", Schema::string()),
                headers: Vec::new(),
            }),
        Endpoint::DocsJson if get => {
            Operation::new("openapi", Tag::Service, "This documentation (OpenAPI 3.1)")
                .describe("Generated from the gateway's route table and models.")
                .local()
                .answer(Answer::json(
                    200,
                    "The OpenAPI document.",
                    Schema::object().open().field("openapi", Schema::string()),
                ))
        }
        Endpoint::Signup if post => Operation::new("signup", Tag::Account, "Sign up")
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
        Endpoint::Signin if post => Operation::new("signin", Tag::Session, "Sign in")
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
        Endpoint::RefreshToken if post => Operation::new("refresh", Tag::Session, "Refresh the access token")
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
        Endpoint::Signout if post => Operation::new("signout", Tag::Session, "Sign out")
            .describe(
                "Ends the token's device session: its refresh token stops refreshing and its access \
                 tokens are refused from then on. Clears both cookies.",
            )
            .access(Access::Token)
            .answer(Answer::ok::<SignedOut>("Signed out.").with(Header::ClearCookies)),
        Endpoint::VerifyEmail if post => Operation::new("verifyEmail", Tag::Account, "Verify the e-mail address")
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
        Endpoint::ResendVerification if post => Operation::new("resendVerification", Tag::Account, "Mail a new verification link")
            .describe(
                "Unknown addresses get the same answers as known ones, in the same time. After \
                 `VERIFICATION_MAIL_LIMIT` mails within `VERIFICATION_MAIL_WINDOW_SECONDS` of the \
                 last one (the sign-up mail and those of unverified sign-ins count) the answer says \
                 so and gives `retry_after`.",
            )
            .body(body::<ResendBody>())
            .limited()
            .answer(Answer::ok::<ResendAnswer>("Sent, or the mail limit is reached."))
            .answer(Answer::details(400, "The address is already verified.", &["Email already verified"])),
        Endpoint::ForgotPassword if post => Operation::new("forgotPassword", Tag::Account, "Mail a password-reset link")
            .describe(
                "Mails `<reset_url or APP_URL>/reset-password?token=...` to a known address; unknown \
                 addresses get the same answer, in the same time (the address is looked up after \
                 the answer).",
            )
            .body(body::<ForgotBody>())
            .limited()
            .answer(Answer::ok::<Message>(
                "`Password reset instructions have been sent to your email.`",
            )),
        Endpoint::ResetPassword if post => Operation::new("resetPassword", Tag::Account, "Set a new password")
            .describe("Redeems a single-use reset token; all the user's sessions end.")
            .body(body::<ResetBody>())
            .answer(Answer::ok::<Message>("`Password has been reset successfully`"))
            .answer(Answer::details(
                400,
                "Unknown, used or expired token, or a verification token.",
                &[INVALID_OR_EXPIRED, "Invalid or expired password reset token"],
            )),
        Endpoint::Me if get => Operation::new("me", Tag::Users, "The signed-in user")
            .describe("`/users/me/` (the legacy path) and `/users/me` answer alike.")
            .access(Access::Token)
            .answer(Answer::ok::<UserOut>("The token's user."))
            .answer(user_not_found()),
        Endpoint::Users if get => Operation::new("listUsers", Tag::Users, "List users")
            .describe("Active users by id. `/users` (without the slash) answers 307 to here.")
            .access(Access::Token)
            .query(OFFSET)
            .query(LIMIT)
            .answer(Answer::json(
                200,
                "A page of users.",
                Schema::array(Schema::of::<UserOut>()),
            )),
        Endpoint::Users if post => Operation::new("createUser", Tag::Users, "Create a user (admin)")
            .describe("Creates an unverified user without mailing anything.")
            .access(Access::Admin)
            .body(body::<CreateBody>())
            .answer(Answer::ok::<UserOut>("The new user."))
            .answer(details(400, "The address or the username is taken.", taken())),
        Endpoint::User if get => Operation::new("getUser", Tag::Users, "One user")
            .access(Access::Token)
            .answer(Answer::ok::<UserOut>("The user."))
            .answer(user_not_found()),
        Endpoint::User if method == Method::PUT => {
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
        Endpoint::User if method == Method::DELETE => {
            Operation::new("deleteUser", Tag::Users, "Delete a user")
                .describe(
                    "The user themself or an admin. The user is marked deleted (the address stays \
                     taken), can no longer sign in, and all their sessions end.",
                )
                .access(Access::SelfOrAdmin)
                .answer(Answer::ok::<Message>("`User deleted successfully`"))
                .answer(user_not_found())
        }
        Endpoint::EmailTest if post => Operation::new("emailTest", Tag::Mail, "Send a test mail (admin)")
            .describe("The legacy path, prefix doubled as it was; answered for admins only.")
            .access(Access::Admin)
            .body(body::<TestBody>())
            .answer(Answer::ok::<Message>("`Test email sent successfully`"))
            .answer(Answer::details(
                502,
                "The SMTP server refused or did not answer.",
                &["Test email could not be sent"],
            )),
        Endpoint::Audit if get => Operation::new("listAudit", Tag::Enterprise, "The audit trail (admin)")
            .describe(
                "Authentication events (sign-up, sign-in success and failure, sign-out, verification, \
                 password reset, MFA changes, session revocation, admin actions), newest first: who, \
                 what, when, from where, outcome. Append-only. Page with `limit` and `before` \
                 (`next_before` of the previous page).",
            )
            .access(Access::Admin)
            .query(AUDIT_USER_ID)
            .query(AUDIT_ACTION)
            .query(AUDIT_OUTCOME)
            .query(AUDIT_SINCE)
            .query(AUDIT_UNTIL)
            .query(AUDIT_BEFORE)
            .query(AUDIT_LIMIT)
            .answer(Answer::ok::<AuditPage>("A page of events.")),
        Endpoint::Sessions if get => Operation::new("listSessions", Tag::Enterprise, "My device sessions")
            .describe(
                "The caller's open sessions (Keycloak's, merged with the device the gateway saw at \
                 sign-in), oldest first; `current` marks the token's own.",
            )
            .enterprise()
            .feature(devices::FEATURE)
            .access(Access::Token)
            .answer(Answer::json(200, "The open sessions.", Schema::array(Schema::of::<SessionOut>()))),
        Endpoint::Sessions if method == Method::DELETE => {
            Operation::new("endOtherSessions", Tag::Enterprise, "Sign out my other devices")
                .describe(
                    "Ends every open session of the caller but the token's own: their refresh tokens \
                     stop working and their access tokens are refused.",
                )
                .enterprise()
                .feature(devices::FEATURE)
                .access(Access::Token)
                .answer(Answer::ok::<Ended>("Ended; `ended` counts them."))
        }
        Endpoint::Session if method == Method::DELETE => {
            Operation::new("endSession", Tag::Enterprise, "Sign out one of my devices")
                .describe(
                    "Ends one open session of the caller, as a sign-out would. Another user's session \
                     or an unknown id is not found, and nothing changes.",
                )
                .enterprise()
                .feature(devices::FEATURE)
                .access(Access::Token)
                .answer(Answer::ok::<Ended>("Ended."))
                .answer(Answer::details(404, "No such open session of the caller.", &[devices::SESSION_NOT_FOUND]))
        }
        Endpoint::UserSessions if method == Method::DELETE => {
            Operation::new("endUserSessions", Tag::Enterprise, "Sign a user out everywhere (admin)")
                .describe(
                    "Ends every session of the user, including tokens not yet used: refresh tokens \
                     stop working and access tokens are refused.",
                )
                .enterprise()
                .feature(devices::FEATURE)
                .access(Access::Admin)
                .answer(Answer::ok::<Ended>("Ended; `ended` counts the open sessions."))
                .answer(user_not_found())
        }
        Endpoint::Sessions | Endpoint::Session | Endpoint::UserSessions => return None,
        Endpoint::SsoLogin if get => Operation::new("ssoLogin", Tag::Enterprise, "Single sign-on: begin")
            .describe(
                "Starts the OIDC authorization-code flow with PKCE (S256) at Keycloak, which brokers \
                 straight to the identity provider `provider` (`kc_idp_hint`). Answers 302 to Keycloak \
                 and sets the short-lived `authgate_sso` cookie that binds the login to this browser. \
                 `redirect` (default `/`) is where the browser goes once signed in: a path on this \
                 site, or an absolute URL under `SSO_REDIRECT_ALLOWLIST`.",
            )
            .query_text("provider", "The identity provider's alias in the realm (required).")
            .query_text("redirect", "Where to go after signing in (default `/`).")
            .answer(Answer {
                status: 302,
                description: "To Keycloak's authorization endpoint; sets the `authgate_sso` cookie.",
                content: Content::None,
                headers: vec![Header::Location, Header::LoginCookie(LOGIN_COOKIE)],
            })
            .answer(details(
                400,
                "No provider, an unknown or disabled one, or a redirect that is not allowed.",
                vec![
                    MISSING_PROVIDER.to_string(),
                    SsoRefusal::UnknownProvider.to_string(),
                    REDIRECT_NOT_ALLOWED.to_string(),
                ],
            ))
            .unsupported(SSO),
        Endpoint::SsoCallback if get => Operation::new("ssoCallback", Tag::Enterprise, "Single sign-on: callback")
            .describe(
                "Where Keycloak sends the browser back. The `state` must be known, unexpired, unused and \
                 this browser's (`authgate_sso` cookie); it is used up at once. The code is exchanged \
                 with the PKCE verifier, the ID token checked (signature, issuer, audience, nonce), and \
                 a first-time user gets their integer id. Then a session opens as at sign-in: 302 to the \
                 saved redirect with both token cookies. Any error: no session, no cookies.",
            )
            .query_text("code", "The authorization code.")
            .query_text("state", "The state given at `/auth/login`.")
            .query_text("error", "Set by the identity provider when the sign-in failed (e.g. `access_denied`).")
            .answer(Answer {
                status: 302,
                description: "Signed in: to the saved redirect, with both token cookies.",
                content: Content::None,
                headers: vec![Header::Location, Header::SetCookies],
            })
            .answer(details(
                400,
                "Missing, unknown, used, expired or another browser's state; the identity provider's \
                 error; or a code Keycloak refused.",
                sso_refusals(400),
            ))
            .answer(details(401, "The ID token did not verify.", sso_refusals(401)))
            .unsupported(SSO),
        Endpoint::Totp if get => Operation::new("totpStatus", Tag::Enterprise, "TOTP: status")
            .describe("Whether the caller has a TOTP second factor (keycloak mode).")
            .access(Access::Token)
            .enterprise()
            .answer(Answer::json(200, "The caller's TOTP status.", totp::status_schema()))
            .answer(user_not_found())
            .answer(totp_unsupported()),
        Endpoint::Totp if post => Operation::new("totpStart", Tag::Enterprise, "TOTP: start an enrolment")
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
        Endpoint::Totp if method == Method::DELETE => Operation::new("totpRemove", Tag::Enterprise, "TOTP: remove")
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
        Endpoint::TotpConfirm if post => Operation::new("totpConfirm", Tag::Enterprise, "TOTP: confirm an enrolment")
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
        Endpoint::BackchannelLogout if post => {
            Operation::new("backchannelLogout", Tag::Enterprise, "Back-channel logout (Keycloak)")
                .describe(
                    "Keycloak's OpenID Connect Back-Channel Logout 1.0 call for the `authgate` client \
                     (the realm sets it as the client's back-channel logout URL, session required). \
                     The logout token must be signed RS256 by a key of the realm, come from the realm \
                     (`iss`) for this client (`aud`), be current (`iat`, `exp`), carry the back-channel \
                     logout event and `sid` or `sub`, have no `nonce`, a `typ` of `logout+jwt` or none, \
                     and a `jti` never used before. It ends that session (`sid`), or every session of \
                     the user (`sub` alone), on every replica at their next request; their refresh \
                     tokens stop refreshing. Not for clients: Keycloak calls it.",
                )
                .unsupported(backchannel::FEATURE)
                .body(logout_form())
                .answer(Answer {
                    status: 200,
                    description: "Logged out (or nothing of it was left to end); empty body.",
                    content: Content::None,
                    headers: vec![Header::NoStore],
                })
                .answer(
                    Answer::json(
                        400,
                        "The logout token was refused; nothing was revoked.",
                        Schema::of::<LogoutError>(),
                    )
                    .with(Header::NoStore),
                )
        }
        Endpoint::ForwardAuth => {
            let id = match *method {
                Method::GET => "forwardAuth",
                Method::POST => "forwardAuthPost",
                Method::PUT => "forwardAuthPut",
                Method::PATCH => "forwardAuthPatch",
                Method::DELETE => "forwardAuthDelete",
                Method::OPTIONS => "forwardAuthOptions",
                _ => return None,
            };
            forward_auth(id)
        }
        Endpoint::Root
        | Endpoint::Health
        | Endpoint::Ready
        | Endpoint::Metrics
        | Endpoint::Docs
        | Endpoint::DocsJson
        | Endpoint::Signup
        | Endpoint::Signin
        | Endpoint::RefreshToken
        | Endpoint::Signout
        | Endpoint::VerifyEmail
        | Endpoint::ResendVerification
        | Endpoint::ForgotPassword
        | Endpoint::ResetPassword
        | Endpoint::Me
        | Endpoint::Users
        | Endpoint::User
        | Endpoint::EmailTest
        | Endpoint::Audit => return None,
        | Endpoint::SsoLogin
        | Endpoint::SsoCallback => return None,
        | Endpoint::Totp
        | Endpoint::TotpConfirm => return None,
        | Endpoint::BackchannelLogout => return None,
    };
    Some(op)
}

/// `/auth/forward`, for one method (any is answered: the original's).
fn forward_auth(id: &'static str) -> Operation {
    let identity = |name: &'static str| Header::Named(name, IDENTITY_HEADER);
    Operation::new(
        id,
        Tag::Edge,
        "Forward-auth: may the original request pass?",
    )
    .describe(
        "Asked by a proxy (nginx `auth_request`, ingress-nginx `auth-url`, Traefik `ForwardAuth`, \
             Caddy `forward_auth`, Envoy `ext_authz`) for a request it is about to pass on, and \
             answered only to a `TRUSTED_PROXIES` peer. The original target is read from \
             `X-Original-URI`, `X-Original-URL`, `X-Forwarded-Uri`, `x-envoy-original-path`, or \
             what follows `/auth/forward` in the request's own path (Envoy's `path_prefix`); every \
             one present must name the same path. The path is made canonical as for forwarded \
             routes, and each of its readings takes its route's policy, or \
             `FORWARD_AUTH_DEFAULT_POLICY` when no route matches it. Tokens are checked in-process \
             (bearer or cookie, as the contract reads them) and the route's rate limit counts. \
             200 carries the identity headers a forwarded request gets, for the proxy to copy \
             upstream (none on a public route).",
    )
    .access(Access::RoutePolicy)
    .limited()
    .answer(Answer {
        status: 200,
        description: "The request may pass; no body.",
        content: Content::None,
        headers: vec![
            identity("X-Auth-User-Id"),
            identity("X-Auth-Email"),
            identity("X-Auth-Roles"),
            identity("X-Auth-Device-Id"),
            identity("X-Auth-Client-Id"),
        ],
    })
    .answer(Answer::details(
        400,
        "The original target has no canonical form, is named by no header, or headers name \
             different targets.",
        &[INVALID_PATH, NO_TARGET, AMBIGUOUS],
    ))
}

/// What an identity header of forward-auth's 200 says.
const IDENTITY_HEADER: &str = "The caller's identity as a forwarded request carries it (percent-encoded \
     outside visible ASCII, `%` and `,`); copy it upstream and drop the client's own.";

/// A query parameter of an operation.
#[derive(Debug, Clone, Copy)]
pub enum QueryParam {
    Int(QueryInt),
    Text(QueryText),
}

impl From<QueryInt> for QueryParam {
    fn from(param: QueryInt) -> Self {
        Self::Int(param)
    }
}

impl From<QueryText> for QueryParam {
    fn from(param: QueryText) -> Self {
        Self::Text(param)
    }
}

impl Operation {
    fn query(mut self, param: impl Into<QueryParam>) -> Self {
        self.query.push(param.into());
        self
    }

    fn query_text(mut self, name: &'static str, description: &'static str) -> Self {
        self.query_text.push((name, description));
        self
    }

    /// A keycloak-mode feature, named in its 501 answer.
    fn unsupported(self, feature: &'static str) -> Self {
        self.enterprise().feature(feature)
    }
}

/// The `detail`s of a refused single sign-on callback, by status.
fn sso_refusals(status: u16) -> Vec<String> {
    SsoRefusal::ALL
        .iter()
        .filter(|r| **r != SsoRefusal::UnknownProvider && (status == 401) == r.unauthorized())
        .map(ToString::to_string)
        .collect()
}
