//! E-mail address checks with the rules (and reasons) of python's
//! `email-validator`, which the old service's `EmailStr` used: a dot-atom local
//! part, a dotted DNS domain that is not a special-use name, length limits.
//! The domain is lower-cased; the local part keeps its case.

/// Longest address the legacy `users.email` column (varchar(100)) holds.
pub const MAX_STORED_LEN: usize = 100;

const MAX_LOCAL_LEN: usize = 64;
const MAX_ADDRESS_LEN: usize = 254;
/// Domains (and their subdomains) no address may use.
pub const SPECIAL_USE: &[&str] = &["arpa", "invalid", "local", "localhost", "onion", "test"];
const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";

/// Returns the normalised address, or the reason it is not one.
pub fn normalize(input: &str) -> Result<String, String> {
    let address = strip_display_name(input.trim()).trim();
    let (local, domain) = match address.rsplit_once('@') {
        None => return Err("An email address must have an @-sign.".into()),
        Some(parts) => parts,
    };
    if local.is_empty() {
        return Err("There must be something before the @-sign.".into());
    }
    if domain.is_empty() {
        return Err("There must be something after the @-sign.".into());
    }
    check_local(local)?;
    let domain = check_domain(domain)?;
    let normalized = format!("{local}@{domain}");
    let len = normalized.chars().count();
    if len > MAX_ADDRESS_LEN {
        return Err(too_long("", len - MAX_ADDRESS_LEN));
    }
    if len > MAX_STORED_LEN {
        return Err(too_long("", len - MAX_STORED_LEN));
    }
    Ok(normalized)
}

/// Accepts `Display Name <address>` as pydantic does and keeps the address.
fn strip_display_name(input: &str) -> &str {
    match (input.find('<'), input.ends_with('>')) {
        (Some(open), true) => &input[open + 1..input.len() - 1],
        _ => input,
    }
}

fn too_long(part: &str, excess: usize) -> String {
    let unit = if excess == 1 {
        "character"
    } else {
        "characters"
    };
    format!("The email address is too long{part} ({excess} {unit} too many).")
}

fn check_local(local: &str) -> Result<(), String> {
    let len = local.chars().count();
    if len > MAX_LOCAL_LEN {
        return Err(too_long(" before the @-sign", len - MAX_LOCAL_LEN));
    }
    let bad: Vec<String> = local
        .chars()
        .filter(|c| !local_char_ok(*c))
        .map(describe)
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "The email address contains invalid characters before the @-sign: {}.",
            dedup(bad).join(", ")
        ));
    }
    if local.starts_with('.') {
        return Err("An email address cannot start with a period.".into());
    }
    if local.ends_with('.') {
        return Err("An email address cannot have a period immediately before the @-sign.".into());
    }
    if local.contains("..") {
        return Err("An email address cannot have two periods in a row.".into());
    }
    Ok(())
}

/// A dot-atom character, or any non-ASCII letter (SMTPUTF8 is allowed).
fn local_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || ATEXT_SPECIALS.contains(c)
        || c == '.'
        || (!c.is_ascii() && !c.is_whitespace() && !c.is_control())
}

fn check_domain(domain: &str) -> Result<String, String> {
    if domain.starts_with('[') {
        return Err("A bracketed IP address after the @-sign is not allowed here.".into());
    }
    let domain = domain.to_lowercase();
    let bad: Vec<String> = domain
        .chars()
        .filter(|c| !(c.is_alphanumeric() || *c == '-' || *c == '.'))
        .map(describe)
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "The part after the @-sign contains invalid characters: {}.",
            dedup(bad).join(", ")
        ));
    }
    if domain.starts_with('.') {
        return Err("An email address cannot have a period immediately after the @-sign.".into());
    }
    if domain.ends_with('.') {
        return Err("An email address cannot end with a period.".into());
    }
    if domain.contains("..") {
        return Err("An email address cannot have two periods in a row.".into());
    }
    for label in domain.split('.') {
        if label.starts_with('-') {
            return Err("An email address cannot have a hyphen immediately after the @-sign or after a period.".into());
        }
        if label.ends_with('-') {
            return Err(
                "An email address cannot end with a hyphen or have a hyphen before a period."
                    .into(),
            );
        }
        if label.chars().count() > 63 {
            return Err("The email address is too long after the @-sign.".into());
        }
    }
    if SPECIAL_USE
        .iter()
        .any(|name| domain == *name || domain.ends_with(&format!(".{name}")))
    {
        return Err("The part after the @-sign is a special-use or reserved name that cannot be used with email.".into());
    }
    let Some(tld) = domain.rsplit_once('.').map(|(_, tld)| tld) else {
        return Err("The part after the @-sign is not valid. It should have a period.".into());
    };
    if tld.chars().all(|c| c.is_ascii_digit()) {
        return Err("The part after the @-sign is not valid IDNA.".into());
    }
    Ok(domain)
}

fn describe(c: char) -> String {
    match c {
        ' ' => "SPACE".into(),
        '\t' => "TAB".into(),
        c if c.is_control() => format!("U+{:04X}", c as u32),
        c => format!("'{c}'"),
    }
}

fn dedup(mut items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(normalize("Ada@Example.ORG").unwrap(), "Ada@example.org");
        assert_eq!(normalize(" ada@example.com ").unwrap(), "ada@example.com");
        assert_eq!(
            normalize("Ada <ada@example.com>").unwrap(),
            "ada@example.com"
        );
        assert_eq!(
            normalize("a.b+tag@sub.example.co").unwrap(),
            "a.b+tag@sub.example.co"
        );
        assert_eq!(
            normalize("jörg@bücher.example").unwrap(),
            "jörg@bücher.example"
        );
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            ("plainaddress", "An email address must have an @-sign."),
            ("@example.com", "There must be something before the @-sign."),
            ("ada@", "There must be something after the @-sign."),
            ("ada@localhost", "special-use"),
            ("ada@example", "It should have a period."),
            (
                "a b@example.com",
                "invalid characters before the @-sign: SPACE.",
            ),
            (".ada@example.com", "cannot start with a period"),
            ("ada..b@example.com", "two periods in a row"),
            ("ada@-x.com", "hyphen"),
            ("ada@[127.0.0.1]", "bracketed IP"),
            ("ada@exa_mple.com", "invalid characters: '_'"),
            ("ada@1.2.3.4", "not valid IDNA"),
        ];
        for (input, reason) in cases {
            let err = normalize(input).unwrap_err();
            assert!(err.contains(reason), "{input}: {err}");
        }
    }

    #[test]
    fn length_limits() {
        let local = "a".repeat(65);
        assert!(
            normalize(&format!("{local}@example.com"))
                .unwrap_err()
                .contains("before the @-sign (1 character too many)")
        );
        let long = format!("{}@example.com", "a".repeat(60));
        assert!(normalize(&long).is_ok());
        let too_long_for_column = format!("{}@{}.example.com", "a".repeat(50), "b".repeat(50));
        assert!(
            normalize(&too_long_for_column)
                .unwrap_err()
                .contains("too long")
        );
    }
}
