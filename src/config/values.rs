//! The value parsers of the settings: each turns one variable's text into its value or
//! into the message clap prints after the variable's name (exit 2).
use secrecy::SecretString;

use super::{mask_url_password, MaskedUrl, Properties};

pub(super) fn mongodb_url(s: &str) -> Result<MaskedUrl, String> {
    Ok(MaskedUrl(s.to_string()))
}

/// An `http://` or `https://` URL with a host.
pub(super) fn http_url(s: &str) -> Result<MaskedUrl, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(MaskedUrl(s.to_string())),
        _ => Err(format!(
            "`{}` is not an http:// or https:// URL",
            mask_url_password(s)
        )),
    }
}

/// A secret, with surrounding whitespace (a file's trailing newline) trimmed once here.
pub(super) fn secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s.trim().to_string()))
}

/// The shortest bearer token accepted: 16 characters (`openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_CHARS: usize = 16;

/// ADMIN_TOKEN: blank leaves the admin RPCs disabled; otherwise at least
/// MIN_TOKEN_CHARS characters, so a placeholder such as `change-me` is refused.
pub(super) fn admin_token(s: &str) -> Result<SecretString, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(SecretString::from(String::new()));
    }
    token_length(t)
}

/// PRODUCER_TOKEN: never blank (unset it to leave IngestEvents open, which start-up
/// warns about) and at least MIN_TOKEN_CHARS characters.
pub(super) fn producer_token(s: &str) -> Result<SecretString, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("is blank: a blank token would leave IngestEvents open to anyone; set a                     token or unset the variable"
            .into());
    }
    token_length(t)
}

fn token_length(t: &str) -> Result<SecretString, String> {
    let n = t.chars().count();
    if n < MIN_TOKEN_CHARS {
        return Err(format!(
            "is {n} characters long; a token needs at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(SecretString::from(t.to_string()))
}

/// A legal Kafka topic name: 1 to 249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`.
pub(super) fn topic_name(s: &str) -> Result<String, String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if s.is_empty() || s.len() > 249 || s == "." || s == ".." || !s.chars().all(legal) {
        return Err(format!(
            "`{s}` is not a Kafka topic name (1 to 249 characters of a-z, A-Z, 0-9, `.`, `_`, `-`; not `.` or `..`)"
        ));
    }
    Ok(s.to_string())
}

pub(super) fn parse_properties(s: &str) -> Result<Properties, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!("`{pair}` is not key=value")),
        })
        .collect::<Result<_, _>>()
        .map(Properties)
}

pub(super) fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("`{s}` is not a log filter: {e}"))
}

pub(super) fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

pub(super) fn positive_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` must be greater than 0 and at most 86400"))
    }
}

/// A finite price limit of at least 0.
pub(super) fn max_price(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a finite number of at least 0")),
    }
}

pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("`{s}` is not a boolean (true/false)")),
    }
}

/// A replication factor: -1 (the brokers' default) or 1 to 32767.
pub(super) fn replication_factor(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(v) if v == -1 || (1..=i32::from(i16::MAX)).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a replication factor (-1 for the brokers' default, or 1 to 32767)"
        )),
    }
}

/// The SASL mechanisms this build of librdkafka offers. GSSAPI needs librdkafka built
/// with Cyrus SASL (Kerberos), which this build is not.
pub(super) fn sasl_mechanism(s: &str) -> Result<String, String> {
    const OFFERED: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];
    match s.trim() {
        m if OFFERED.contains(&m) => Ok(m.to_string()),
        "GSSAPI" => Err(
            "GSSAPI (Kerberos) is not supported: this build of librdkafka has no \
             GSSAPI support (it is built without Cyrus SASL); use SCRAM-SHA-512, \
             SCRAM-SHA-256, PLAIN or OAUTHBEARER"
                .into(),
        ),
        other => Err(format!(
            "`{other}` is not a SASL mechanism (one of {})",
            OFFERED.join(", ")
        )),
    }
}
