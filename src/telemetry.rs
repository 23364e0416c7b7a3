//! Logging: one function builds the tracing subscriber, text or JSON, filtered by
//! RUST_LOG. librdkafka's and the MongoDB driver's `log` records flow into it too.
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber writing to stderr; returns false if one was already
/// installed (tests install one per process).
pub fn init(filter: &str, format: LogFormat) -> bool {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().try_init().is_ok(),
        LogFormat::Text => builder.try_init().is_ok(),
    }
}
