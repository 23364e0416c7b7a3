//! Masking of the secrets inside values that are shown (logs, `--help`, error
//! messages, `/health`): a URL's password and its secret-looking query options, and
//! the values of secret-looking librdkafka properties.

/// Whether a property or URL option name looks like it holds a secret: a password, a
/// secret, a key, a token, credentials, or librdkafka's `sasl.oauthbearer.config`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "key",
        "token",
        "credential",
        "oauthbearer",
        "authmechanismproperties",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Replaces the password of a `scheme://user:password@host` URL, and the values of its
/// secret-looking query options (`tlsCertificateKeyFilePassword=`, say), with `****`.
/// The password ends at the last `@` before the query, so one holding an unescaped `/`
/// or `@` is masked whole.
pub fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let query_at = url[scheme_end..]
        .find('?')
        .map_or(url.len(), |i| scheme_end + i);
    let (head, query) = url.split_at(query_at);
    let head = match head[scheme_end..].rfind('@') {
        Some(at) => {
            let userinfo = &head[scheme_end..scheme_end + at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:****{}",
                    &head[..scheme_end],
                    &userinfo[..colon],
                    &head[scheme_end + at..]
                ),
                None => head.to_string(),
            }
        }
        None => head.to_string(),
    };
    head + &mask_query(query)
}

/// `?a=1&tlsCertificateKeyFilePassword=x` with the secret values masked.
fn mask_query(query: &str) -> String {
    let Some(options) = query.strip_prefix('?') else {
        return query.to_string();
    };
    let masked: Vec<String> = options
        .split('&')
        .map(|opt| match opt.split_once('=') {
            Some((k, _)) if is_secret_key(k) => format!("{k}=****"),
            _ => opt.to_string(),
        })
        .collect();
    format!("?{}", masked.join("&"))
}

/// A setting's value as it may be shown: masked whole when the variable holds a token
/// or password, else with a URL's password and secret options or secret properties
/// masked.
pub fn mask_value(var: &str, value: &str) -> String {
    let v = var.to_ascii_uppercase();
    if ["TOKEN", "PASSWORD", "SECRET"]
        .iter()
        .any(|s| v.contains(s))
    {
        return "****".into();
    }
    if value.contains("://") {
        return mask_url_password(value);
    }
    value
        .split(',')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_key(k) => format!("{k}=****"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A command-line parse error as it is printed, with the refused value masked
/// (clap quotes the raw value of an invalid setting).
pub fn masked_parse_error(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = err.to_string();
    let get = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match (get(ContextKind::InvalidArg), get(ContextKind::InvalidValue)) {
        (Some(arg), Some(value)) if !value.is_empty() => text.replace(
            &format!("'{value}'"),
            &format!("'{}'", mask_value(&arg, &value)),
        ),
        _ => text,
    }
}

/// The secrets inside `url`: its password and its secret options' values, each also
/// in the pieces a parser may cut it into at `/`, `@`, `:` or `%`.
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return Vec::new();
    };
    let query_at = url[scheme_end..]
        .find('?')
        .map_or(url.len(), |i| scheme_end + i);
    let mut whole = Vec::new();
    if let Some(at) = url[scheme_end..query_at].rfind('@') {
        if let Some((_, pw)) = url[scheme_end..scheme_end + at].split_once(':') {
            whole.push(pw.to_string());
        }
    }
    for opt in url[query_at..].trim_start_matches('?').split('&') {
        if let Some((k, v)) = opt.split_once('=').filter(|(k, _)| is_secret_key(k)) {
            let _ = k;
            whole.push(v.to_string());
        }
    }
    let pieces: Vec<String> = whole
        .iter()
        .flat_map(|w| {
            w.split(['/', '@', ':', '%'])
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    whole
        .into_iter()
        .chain(pieces)
        .filter(|s| s.len() >= 3)
        .collect()
}

/// `text` with each of `secrets` replaced by `****`, longest first.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    sorted
        .into_iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "****"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_with_slashes_and_at_signs_and_secret_options_are_masked() {
        for (url, want) in [
            ("mongodb://u:p@h/db", "mongodb://u:****@h/db"),
            ("mongodb://u:pa/ss@h:1/db", "mongodb://u:****@h:1/db"),
            ("mongodb://u:p@ss@h/db?x=1", "mongodb://u:****@h/db?x=1"),
            (
                "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=hunter2&w=1",
                "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=****&w=1",
            ),
            (
                "mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:abc",
                "mongodb://h/?authMechanismProperties=****",
            ),
            ("https://u:p@reg:8081", "https://u:****@reg:8081"),
            ("mongodb://h:1/x", "mongodb://h:1/x"),
            ("mongodb://u@h", "mongodb://u@h"),
            ("plain", "plain"),
        ] {
            assert_eq!(mask_url_password(url), want, "{url}");
        }
    }

    #[test]
    fn shown_values_are_masked_by_variable_and_by_shape() {
        assert_eq!(
            mask_value("--producer-token <PRODUCER_TOKEN>", "abc"),
            "****"
        );
        assert_eq!(
            mask_value("--mongodb-url <MONGODB_URL>", "mongodb://u:p@h"),
            "mongodb://u:****@h"
        );
        assert_eq!(
            mask_value(
                "--kafka-properties <KAFKA_PROPERTIES>",
                "a=1,sasl.oauthbearer.config=x"
            ),
            "a=1,sasl.oauthbearer.config=****"
        );
    }

    #[test]
    fn a_parser_error_is_scrubbed_of_the_password_and_its_pieces() {
        let url = "mongodb://u:Pw/secret@h/?tlsCertificateKeyFilePassword=opt-pw";
        let err = "invalid host `u:Pw`, then `secret@h` and opt-pw";
        let clean = scrub(err, &url_secrets(url));
        assert!(
            !clean.contains("secret") && !clean.contains("opt-pw"),
            "{clean}"
        );
    }

    #[test]
    fn secret_property_names() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.config",
            "ssl.keystore.password",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["bootstrap.servers", "security.protocol", "sasl.mechanism"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }
}
