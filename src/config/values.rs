//! The value types of settings that are more than a number or a string: the log
//! format, librdkafka properties and the MongoDB URL, whose `Debug` masks secrets.
use std::fmt;

use clap::ValueEnum;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// librdkafka properties given as `key=value,key=value`; `Debug` masks the values of
/// secret-looking keys.
#[derive(Clone, Default, PartialEq)]
pub struct Properties(pub Vec<(String, String)>);

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |k: &str| ["password", "secret", "key"].iter().any(|s| k.contains(s));
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, if secret(k) { "****" } else { v.as_str() })),
            )
            .finish()
    }
}

/// A MongoDB connection string; `Debug` masks its password.
#[derive(Clone, PartialEq)]
pub struct MongoUrl(pub String);

impl fmt::Debug for MongoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_url_password(&self.0))
    }
}

impl std::ops::Deref for MongoUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Replaces the password of a `mongodb://user:password@host` URL with `****`.
pub fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:****{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}
