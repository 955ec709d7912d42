//! Outgoing mail: lettre over SMTP (STARTTLS, implicit TLS or plain; with or
//! without AUTH) and HTML templates from `templates/` rendered by minijinja.
//!
//! Imports: `config` (the SMTP settings), `clock`, `metrics`.

use std::path::Path;
use std::sync::Arc;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::Environment;
use tokio::sync::OnceCell;

use crate::clock::Clock;
use crate::config::{SmtpSettings, SmtpTls};
use crate::metrics::Metrics;

/// The templates shipped in the binary; `TEMPLATES_DIR` may override them.
const BUILTIN: &[(&str, &str)] = &[
    (
        "verify_email.html",
        include_str!("../templates/verify_email.html"),
    ),
    (
        "reset_password.html",
        include_str!("../templates/reset_password.html"),
    ),
    (
        "test_email.html",
        include_str!("../templates/test_email.html"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("template {0}: {1}")]
    Template(&'static str, String),
    #[error("message cannot be built: {0}")]
    Build(String),
    #[error("SMTP transport cannot be set up: {0}")]
    Transport(String),
    #[error("SMTP delivery failed: {0}")]
    Send(String),
    #[error("SMTP server refused the mail: {0}")]
    Refused(String),
    #[error("mail outbox cannot be written: {0}")]
    Outbox(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    Verification,
    PasswordReset,
    Test,
}

impl MailKind {
    pub fn subject(self) -> &'static str {
        match self {
            Self::Verification => "Verify Your Email Address",
            Self::PasswordReset => "Reset Your Password",
            Self::Test => "Test email",
        }
    }

    fn template(self) -> &'static str {
        match self {
            Self::Verification => "verify_email.html",
            Self::PasswordReset => "reset_password.html",
            Self::Test => "test_email.html",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Verification => "verification",
            Self::PasswordReset => "password_reset",
            Self::Test => "test",
        }
    }
}

/// Waits between the attempts at a mail the SMTP server did not take for a
/// passing reason: 63 s in all, then it is given up (and logged).
const RETRY_DELAYS: [std::time::Duration; 6] = [
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(2),
    std::time::Duration::from_secs(4),
    std::time::Duration::from_secs(8),
    std::time::Duration::from_secs(16),
    std::time::Duration::from_secs(32),
];

/// One mail to send. `link` carries a token: it is never logged.
#[derive(Clone)]
pub struct Mail {
    pub kind: MailKind,
    pub to: String,
    pub username: String,
    pub link: String,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("kind", &self.kind)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Escapes text for HTML as Jinja2 (markupsafe) does (`& < > " '`, but not
/// `/`, so links read the same in the mail's source) and marks it safe.
fn safe(text: &str) -> minijinja::Value {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    minijinja::Value::from_safe_string(out)
}

pub struct Mailer {
    settings: SmtpSettings,
    app_name: String,
    link_hours: u64,
    from: Mailbox,
    templates: Environment<'static>,
    /// Built on first use, inside the runtime that sends (its pool holds sockets).
    transport: OnceCell<Option<Transport>>,
    metrics: Arc<Metrics>,
    /// Names the outbox's files.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Loads and checks the templates (from `templates_dir` where a file exists there).
    pub fn new(
        settings: &SmtpSettings,
        app_name: &str,
        email_token_minutes: u64,
        templates_dir: Option<&Path>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, MailError> {
        let mut templates = Environment::new();
        for (name, builtin) in BUILTIN {
            let source = match templates_dir.map(|dir| dir.join(name)) {
                Some(path) if path.is_file() => std::fs::read_to_string(&path)
                    .map_err(|err| MailError::Template(name, err.to_string()))?,
                _ => (*builtin).to_string(),
            };
            templates
                .add_template_owned(*name, source)
                .map_err(|err| MailError::Template(name, err.to_string()))?;
        }
        let address = settings
            .from_address
            .parse()
            .map_err(|err| MailError::Build(format!("sender address: {err}")))?;
        let mailer = Self {
            settings: settings.clone(),
            app_name: app_name.to_string(),
            link_hours: email_token_minutes.div_ceil(60),
            from: Mailbox::new(Some(settings.sender_name.clone()), address),
            templates,
            transport: OnceCell::new(),
            metrics,
            clock,
        };
        // Render each template once now, so a broken override stops start-up.
        for kind in [
            MailKind::Verification,
            MailKind::PasswordReset,
            MailKind::Test,
        ] {
            mailer.render(kind, "user", "https://example.invalid/check")?;
        }
        Ok(mailer)
    }

    fn render(&self, kind: MailKind, username: &str, link: &str) -> Result<String, MailError> {
        let template = self
            .templates
            .get_template(kind.template())
            .map_err(|err| MailError::Template(kind.template(), err.to_string()))?;
        template
            .render(minijinja::context! {
                app_name => safe(&self.app_name),
                username => safe(username),
                link => safe(link),
                expires_hours => self.link_hours,
            })
            .map_err(|err| MailError::Template(kind.template(), err.to_string()))
    }

    fn plain_text(&self, mail: &Mail) -> String {
        match mail.kind {
            MailKind::Verification => format!(
                "Hello {},\n\nPlease verify your email address for {}:\n{}\n\nThe link expires in {} hours.\n",
                mail.username, self.app_name, mail.link, self.link_hours
            ),
            MailKind::PasswordReset => format!(
                "Hello {},\n\nReset the password of your {} account here:\n{}\n\nThe link expires in {} hours and works once.\n",
                mail.username, self.app_name, mail.link, self.link_hours
            ),
            MailKind::Test => format!("This is a test email from {}.\n", self.app_name),
        }
    }

    fn build_transport(&self) -> Result<Option<Transport>, MailError> {
        let Some(host) = self.settings.host.as_deref() else {
            return Ok(None);
        };
        let transport_err =
            |err: lettre::transport::smtp::Error| MailError::Transport(err.to_string());
        let tls_parameters = || -> Result<TlsParameters, MailError> {
            let mut builder = TlsParameters::builder(host.to_string());
            if let Some(path) = &self.settings.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|err| MailError::Transport(format!("SMTP_CA_FILE: {err}")))?;
                builder = builder
                    .add_root_certificate(Certificate::from_pem(&pem).map_err(transport_err)?);
            }
            builder.build_rustls().map_err(transport_err)
        };
        let mut builder = match self.settings.tls {
            SmtpTls::StartTls => {
                Transport::builder_dangerous(host).tls(Tls::Required(tls_parameters()?))
            }
            SmtpTls::Tls => Transport::builder_dangerous(host).tls(Tls::Wrapper(tls_parameters()?)),
            SmtpTls::None => Transport::builder_dangerous(host),
        }
        .port(self.settings.port)
        .timeout(Some(self.settings.timeout));
        if let (Some(user), Some(password)) = (&self.settings.username, &self.settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Some(builder.build()))
    }

    /// Connects to the SMTP server (TLS and AUTH as configured) without
    /// sending anything; `Ok(false)` when no server is configured.
    pub async fn check_connection(&self) -> Result<bool, MailError> {
        let transport = self
            .transport
            .get_or_try_init(|| async { self.build_transport() })
            .await?;
        let Some(transport) = transport else {
            return Ok(false);
        };
        match transport.test_connection().await {
            Ok(true) => Ok(true),
            Ok(false) => Err(MailError::Send("the server did not answer NOOP".into())),
            Err(err) => Err(MailError::Send(err.to_string())),
        }
    }

    /// Sends one mail and waits for the server's answer.
    #[tracing::instrument(skip_all, fields(kind = mail.kind.label()))]
    pub async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let result = self.deliver(mail).await;
        let outcome = if result.is_ok() { "sent" } else { "failed" };
        self.metrics
            .mails
            .with_label_values(&[mail.kind.label(), outcome])
            .inc();
        result
    }

    async fn deliver(&self, mail: &Mail) -> Result<(), MailError> {
        let html = self.render(mail.kind, &mail.username, &mail.link)?;
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|err| MailError::Build(format!("recipient: {err}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.kind.subject())
            .multipart(MultiPart::alternative_plain_html(
                self.plain_text(mail),
                html,
            ))
            .map_err(|err| MailError::Build(err.to_string()))?;
        let transport = self
            .transport
            .get_or_try_init(|| async { self.build_transport() })
            .await?;
        let Some(transport) = transport else {
            return self.to_outbox(mail, &message).await;
        };
        transport.send(message).await.map_err(|err| {
            // A permanent answer (5xx: bad credentials, a refused address)
            // will not change; anything else (no connection, a timeout, a
            // 4xx) may pass on a later attempt.
            if err.is_permanent() {
                MailError::Refused(err.to_string())
            } else {
                MailError::Send(err.to_string())
            }
        })?;
        tracing::info!(kind = mail.kind.label(), "mail sent");
        Ok(())
    }

    /// Without an SMTP server: the mail goes to the outbox folder as an
    /// `.eml` file (the log names the file, never the link), or nowhere.
    async fn to_outbox(&self, mail: &Mail, message: &Message) -> Result<(), MailError> {
        let Some(folder) = &self.settings.outbox else {
            tracing::warn!(
                kind = mail.kind.label(),
                "SMTP_HOST is not set: mail not sent"
            );
            return Ok(());
        };
        let name = format!(
            "{}-{}-{}.eml",
            self.clock.now().format("%Y%m%dT%H%M%S%.3fZ"),
            mail.kind.label(),
            uuid::Uuid::new_v4().simple()
        );
        let path = folder.join(name);
        let outbox_err =
            |err: std::io::Error| MailError::Outbox(format!("{}: {err}", path.display()));
        tokio::fs::create_dir_all(folder)
            .await
            .map_err(outbox_err)?;
        tokio::fs::write(&path, message.formatted())
            .await
            .map_err(outbox_err)?;
        // The mail in the log: who, what, where to read it; the link (a
        // token) only in the file.
        tracing::info!(
            kind = mail.kind.label(),
            to = %mail.to,
            subject = mail.kind.subject(),
            file = %path.display(),
            "SMTP_HOST is not set: mail written to the outbox"
        );
        Ok(())
    }

    /// Sends in the background: the request does not wait for the SMTP
    /// server, and a failure is logged, never shown to the client. A mail
    /// the server could not take for a passing reason (down, restarting, a
    /// 4xx answer) is tried again after each of `RETRY_DELAYS` (about a
    /// minute in all), so a short outage of the mail server loses no mail.
    pub fn send_in_background(self: &Arc<Self>, mail: Mail) {
        let mailer = Arc::clone(self);
        tokio::spawn(async move {
            let mut delays = RETRY_DELAYS.iter();
            loop {
                match mailer.send(&mail).await {
                    Ok(()) => return,
                    Err(err @ MailError::Send(_)) => {
                        let Some(delay) = delays.next() else {
                            tracing::error!(kind = mail.kind.label(), error = %err, "mail could not be sent");
                            return;
                        };
                        tracing::warn!(
                            kind = mail.kind.label(),
                            error = %err,
                            retry_in_s = delay.as_secs(),
                            "mail could not be sent yet, trying again"
                        );
                        tokio::time::sleep(*delay).await;
                    }
                    Err(err) => {
                        tracing::error!(kind = mail.kind.label(), error = %err, "mail could not be sent");
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new().unwrap())
    }

    fn clock() -> Arc<dyn Clock> {
        Arc::new(crate::clock::ManualClock::at(1_700_000_000))
    }

    fn settings() -> SmtpSettings {
        SmtpSettings {
            host: None,
            port: 25,
            username: None,
            password: None,
            sender_name: "Auth".into(),
            from_address: "no-reply@example.com".into(),
            tls: SmtpTls::None,
            ca_file: None,
            timeout: Duration::from_secs(1),
            outbox: None,
        }
    }

    /// Without an SMTP server the mail lands in the outbox folder, named by
    /// the clock it was given.
    #[tokio::test]
    async fn outbox_files_are_named_by_the_given_clock() {
        let dir = std::env::temp_dir().join(format!("authgate-outbox-{}", uuid::Uuid::new_v4()));
        let mut settings = settings();
        settings.host = None;
        settings.outbox = Some(dir.clone());
        let mailer = Mailer::new(&settings, "Demo", 1440, None, metrics(), clock()).unwrap();
        let mail = Mail {
            kind: MailKind::Verification,
            to: "ada@example.com".into(),
            username: "ada".into(),
            link: "https://example.com/verify?token=t".into(),
        };
        mailer.send(&mail).await.unwrap();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(
            names[0].starts_with("20231114T221320.000Z-verification-"),
            "{names:?}"
        );
    }

    #[test]
    fn templates_render_with_escaped_links() {
        let mailer = Mailer::new(&settings(), "Demo", 1440, None, metrics(), clock()).unwrap();
        let html = mailer
            .render(
                MailKind::Verification,
                "ada",
                "https://a.example/verify-email?token=x&y=<z>",
            )
            .unwrap();
        assert!(html.contains("Hello ada"));
        assert!(html.contains("https://a.example/verify-email?token=x&amp;y=&lt;z&gt;"));
        assert!(html.contains("24 hours"));
    }

    #[test]
    fn broken_override_template_is_an_error() {
        let dir = std::env::temp_dir().join(format!("authgate-tpl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("verify_email.html"), "{% if %}").unwrap();
        let err =
            Mailer::new(&settings(), "Demo", 1440, Some(&dir), metrics(), clock()).unwrap_err();
        assert!(matches!(err, MailError::Template("verify_email.html", _)));
        std::fs::remove_dir_all(dir).ok();
    }
}

/// Hostile bytes: the SMTP server's replies are read by lettre's parser
/// (not written here) and recipients' addresses by its `Mailbox` parser;
/// both are checked for panics over random and built input (the long run
/// is `scripts/fuzz.sh`).
#[cfg(test)]
mod prop {
    use lettre::transport::smtp::response::Response;
    use proptest::prelude::prop;
    use proptest::prelude::*;

    use super::*;

    fn reply() -> impl Strategy<Value = String> {
        let line = (
            prop_oneof![100u16..600, Just(250), Just(0), Just(999)],
            prop_oneof![Just('-'), Just(' '), Just('x')],
            "[ -~]{0,30}",
        )
            .prop_map(|(code, sep, text)| format!("{code}{sep}{text}"));
        prop_oneof![
            prop::collection::vec(line, 1..6).prop_map(|lines| lines.join("\r\n") + "\r\n"),
            (
                prop::collection::vec("[ -~]{0,20}", 0..4),
                prop_oneof![Just("\r\n"), Just("\n"), Just("")]
            )
                .prop_map(|(lines, end)| lines.join(end)),
            any::<String>(),
        ]
    }

    proptest! {
        /// A reply parses or is refused, never a panic; a parsed one has
        /// a three-digit code and no more lines than were sent.
        #[test]
        fn smtp_replies(text in reply()) {
            if let Ok(response) = text.parse::<Response>() {
                let code = u16::from(response.code());
                prop_assert!((100..600).contains(&code));
                prop_assert!(response.message().count() <= text.lines().count().max(1));
            }
        }

        /// A recipient's address (from a sign-up) parses or is refused.
        #[test]
        fn recipients(
            text in prop_oneof![
                any::<String>(),
                "[A-Za-z \"]{0,8}<?[a-z.+]{0,10}@[a-z0-9.\\[\\]-]{0,15}>?",
            ]
        ) {
            let _ = text.parse::<Mailbox>();
        }
    }
}
