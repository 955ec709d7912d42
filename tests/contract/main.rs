//! The integration suite: one test binary, real servers (PostgreSQL, SMTP
//! with a readable mailbox, Keycloak), one `authgate serve` process per test.
//!
//! `cases` is the contract suite, written against the wire only, so the same
//! cases run against every backend and store (`suite!` makes one test per
//! case and backend: native on PostgreSQL, native on the embedded SQLite
//! store, keycloak). The other modules test what only one backend or the process
//! itself has (the legacy database, faults, configuration).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code, helpers included: a failure is the test's answer (clippy.toml allows these in #[test] functions only)"
)]

mod authority;
mod backpressure;
mod cases;
mod config_errors;
mod devices;
mod edge;
mod embedded;
mod faults;
mod forward_auth;
mod forwarding;
mod front_door;
mod harness;
mod hostile;
mod hostile_set;
mod import_users;
mod kc_admin;
mod keycloak_mode;
mod legacy_db;
mod mfa;
mod proxies;
mod roles;
mod routes_reload;
mod slow_clients;
mod smtp;
mod sso;
mod tls;
mod upstream;

use harness::{Gateway, Mailbox, Options, TempDir, TestDb, TestUser};

/// Where a backend under test keeps its data.
pub enum Store {
    Postgres(TestDb),
    /// The folder holding the SQLite file.
    Embedded(TempDir),
}

/// One backend under test: its gateway, its store, its mailbox.
pub struct Env {
    // Field order is drop order: the process goes before its database.
    pub gw: Gateway,
    pub store: Store,
    pub mail: Mailbox,
}

impl Env {
    pub async fn native() -> Self {
        Self::native_with(|o| o).await
    }

    pub async fn native_with(tweak: impl FnOnce(Options) -> Options) -> Self {
        let db = TestDb::create().await;
        let gw = Gateway::start(tweak(Options::native(&db.url))).await;
        Self {
            gw,
            store: Store::Postgres(db),
            mail: Mailbox::plain(),
        }
    }

    /// The native backend on the embedded SQLite store.
    pub async fn embedded() -> Self {
        let dir = TempDir::new("authgate-embedded");
        let gw = Gateway::start(Options::embedded(dir.path())).await;
        Self {
            gw,
            store: Store::Embedded(dir),
            mail: Mailbox::plain(),
        }
    }

    pub async fn keycloak() -> Self {
        Self::keycloak_with(|o| o).await
    }

    pub async fn keycloak_with(tweak: impl FnOnce(Options) -> Options) -> Self {
        let db = TestDb::create().await;
        let mut options = tweak(Options::keycloak(&db.url));
        let out = harness::run_command(&options, &["migrate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        db.scatter_ids().await;
        options.migrate = false;
        let gw = Gateway::start(options).await;
        Self {
            gw,
            store: Store::Postgres(db),
            mail: Mailbox::plain(),
        }
    }

    /// Another gateway on the same backend and store, with changed settings.
    pub async fn sibling(&self, tweak: impl FnOnce(Options) -> Options) -> Gateway {
        let mut options = tweak(self.gw.options.clone());
        options.env.remove("APP_PORT");
        options.env.remove("APP_URL");
        Gateway::start(options).await
    }

    /// Gives a user the `admin` role the way an operator would.
    pub async fn make_admin(&self, user: &TestUser) {
        self.gw.grant_role(&user.username, "admin");
    }
}

/// One `#[tokio::test]` per case and backend.
macro_rules! suite {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod native {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let env = crate::Env::native().await;
                    crate::cases::$module::$case(&env).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let env = crate::Env::embedded().await;
                    crate::cases::$module::$case(&env).await;
                }
            )*
        }
        mod keycloak {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let env = crate::Env::keycloak().await;
                    crate::cases::$module::$case(&env).await;
                }
            )*
        }
    };
}

suite! {
    walk::signup_verify_signin_refresh_signout_reset,
    walk::links_follow_the_given_urls,
    walk::signup_tokens_work_before_verification,
    walk::unverified_signin_mails_a_link_and_sets_no_cookies,
    meta::root_health_ready,
    meta::routing_like_starlette,
    validation::signup_validation_shapes,
    validation::bodies_that_are_not_json_objects,
    validation::over_long_fields_are_422_not_500,
    validation::signin_refresh_and_reset_validation,
    validation::oversized_body_is_413,
    auth::token_required_rules,
    auth::legacy_vectors_accepted_or_refused_by_name,
    auth::forged_and_cross_scope_tokens,
    auth::signout_revokes_access_and_refresh,
    auth::tokens_beyond_the_lifetime_ceiling_are_refused,
    auth::duplicate_access_cookies_decide_regardless_of_order,
    auth::device_ids_are_uuids_and_survive_refresh,
    email_flows::duplicates_and_case_insensitive_email,
    email_flows::email_tokens_are_single_use_and_scoped,
    email_flows::unknown_addresses_answer_like_known_ones,
    email_flows::resend_limit_and_retry_after,
    email_flows::unverified_signins_count_toward_the_limit,
    email_flows::already_verified,
    email_flows::reset_ends_sessions,
    email_flows::reset_ends_signup_tokens,
    users::list_requires_token_and_pages,
    users::admin_create_get_update_delete,
    users::non_admins_are_refused,
    users::deleted_user_cannot_sign_in,
    users::deleted_users_signup_tokens_stop_working,
    users::me_shows_an_update_at_once,
    users::email_test_is_admin_only,
    limits::signin_is_rate_limited,
    limits::concurrent_signins_all_succeed,
    openapi::document_lists_every_route,
    openapi::live_answers_fit_the_document,
    audit::trail_records_each_event_for_admins,
}
