//! Mail over STARTTLS or implicit TLS with AUTH (a real SMTP server that
//! requires them), and
//! a mail server that is down (sign-up still succeeds).

use serde_json::json;

use crate::Env;
use crate::harness::{Mailbox, Options, Relay, TestUser, env};

/// Mail through the test mailbox that requires TLS and AUTH.
pub fn tls_mail(options: Options, mode: &str, port: &str) -> Options {
    options
        .set("SMTP_TLS", mode)
        .set("SMTP_HOST", "localhost")
        .set("SMTP_PORT", port)
        .set("SMTP_USERNAME", &env("AUTHGATE_TEST_SMTP_USER"))
        .set("SMTP_PASSWORD", &env("AUTHGATE_TEST_SMTP_PASSWORD"))
        .set("SMTP_CA_FILE", &env("AUTHGATE_TEST_SMTP_CA_FILE"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_auth_delivers() {
    let env_ =
        Env::native_with(|o| tls_mail(o, "starttls", &env("AUTHGATE_TEST_SMTP_TLS_PORT"))).await;
    let user = TestUser::new("tls");
    assert_eq!(
        env_.gw
            .post("/users/signup", user.signup_body())
            .await
            .status,
        200
    );
    let mailbox = Mailbox::tls();
    let link = mailbox
        .wait_for_link(&user.email, "Verify Your Email Address")
        .await;
    assert!(link.contains("/verify-email?token="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_with_auth_delivers() {
    let env_ = Env::native_with(|o| tls_mail(o, "tls", &env("AUTHGATE_TEST_SMTPS_PORT"))).await;
    let user = TestUser::new("smtps");
    assert_eq!(
        env_.gw
            .post("/users/forgot-password", json!({"email": user.email}))
            .await
            .status,
        200
    );
    assert_eq!(
        env_.gw
            .post("/users/signup", user.signup_body())
            .await
            .status,
        200
    );
    let link = Mailbox::tls()
        .wait_for_link(&user.email, "Verify Your Email Address")
        .await;
    assert!(link.contains("/verify-email?token="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_refusing_smtp_does_not_fail_requests() {
    // Wrong credentials on the TLS server, then a port nobody listens on.
    let refusing = Env::native_with(|o| {
        o.set("SMTP_TLS", "starttls")
            .set("SMTP_HOST", "localhost")
            .set("SMTP_PORT", &env("AUTHGATE_TEST_SMTP_TLS_PORT"))
            .set("SMTP_USERNAME", "mailer")
            .set("SMTP_PASSWORD", "wrong")
            .set("SMTP_CA_FILE", &env("AUTHGATE_TEST_SMTP_CA_FILE"))
            .set("SMTP_TIMEOUT_SECONDS", "3")
    })
    .await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Env::native_with(|o| {
        o.set("SMTP_PORT", &dead_port.to_string())
            .set("SMTP_TIMEOUT_SECONDS", "3")
    })
    .await;
    for env_ in [&refusing, &down] {
        let user = TestUser::new("nomail");
        let reply = env_.gw.post("/users/signup", user.signup_body()).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let reply = env_
            .gw
            .post("/users/forgot-password", json!({"email": user.email}))
            .await;
        assert_eq!(reply.status, 200);
        let reply = env_
            .gw
            .post("/users/resend-verification", json!({"email": user.email}))
            .await;
        assert_eq!(reply.status, 200);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !env_.gw.log_text().contains("mail could not be sent") {
            assert!(std::time::Instant::now() < deadline, "failure is logged");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // The log names the failure but never the link's token.
        assert!(!env_.gw.log_text().contains("token="));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_refused_while_smtp_is_down_is_sent_when_it_returns() {
    // The plain test mailbox behind a relay that is cut: the SMTP server is
    // down when the sign-up's mail is first tried.
    let smtp: std::net::SocketAddr = format!("127.0.0.1:{}", env("AUTHGATE_TEST_SMTP_PORT"))
        .parse()
        .unwrap();
    let relay = Relay::start(smtp).await;
    relay.cut();
    let port = relay.port.to_string();
    let env_ =
        Env::native_with(|o| o.set("SMTP_PORT", &port).set("SMTP_TIMEOUT_SECONDS", "3")).await;
    let user = TestUser::new("smtpback");
    let reply = env_.gw.post("/users/signup", user.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !env_.gw.log_text().contains("mail could not be sent yet") {
        assert!(
            std::time::Instant::now() < deadline,
            "the failed attempt is logged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    relay.restore().await;
    let mailbox = Mailbox::plain();
    let link = mailbox
        .wait_for_link(&user.email, "Verify Your Email Address")
        .await;
    assert!(link.contains("/verify-email?token="));
    assert_eq!(
        mailbox
            .count_settled(&user.email, "Verify Your Email Address")
            .await,
        1,
        "sent once"
    );
}
