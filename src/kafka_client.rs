//! librdkafka client settings shared by the consumer and the dead-letter producer:
//! bootstrap servers, the client's own settings, then the security settings and
//! KAFKA_PROPERTIES last, so an operator can override anything. Each setting is checked
//! on its own by librdkafka before any client is made, so an error names the variable
//! it came from.
use rdkafka::config::ClientConfig;

use crate::config::Config;

/// A Kafka setting librdkafka refused, with the variable it came from.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SettingError {
    pub var: &'static str,
    pub message: String,
}

/// Every librdkafka property the configuration sets, with the variable it came from.
fn sourced_properties(cfg: &Config) -> Vec<(String, String, &'static str)> {
    let mut props = vec![(
        "bootstrap.servers".to_string(),
        cfg.kafka_bootstrap_servers.clone(),
        "KAFKA_BOOTSTRAP_SERVERS",
    )];
    props.extend(cfg.kafka_client_properties());
    props
}

/// Checks every setting on its own; the first one librdkafka refuses is named.
pub fn check(cfg: &Config) -> Result<(), SettingError> {
    for (key, value, var) in sourced_properties(cfg) {
        ClientConfig::new()
            .set(&key, &value)
            .create_native_config()
            .map_err(|e| SettingError {
                var,
                message: e.to_string(),
            })?;
    }
    Ok(())
}

/// A client configuration: bootstrap servers, `settings`, then the operator's.
pub fn client_config(cfg: &Config, settings: &[(&str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka_bootstrap_servers);
    for (k, v) in settings {
        c.set(*k, v);
    }
    for (k, v, _) in cfg.kafka_client_properties() {
        c.set(k, v);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("sales-ingest").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn a_refused_setting_names_its_variable() {
        let err = check(&config(&["--kafka-properties=fetch.wait.max.ms=banana"])).unwrap_err();
        assert_eq!(err.var, "KAFKA_PROPERTIES");
        let err = check(&config(&["--kafka-properties=no.such.property=1"])).unwrap_err();
        assert_eq!(err.var, "KAFKA_PROPERTIES");
        assert!(check(&config(&[])).is_ok());
    }
}
