//! librdkafka client settings shared by the consumer and the dead-letter producer:
//! bootstrap servers, the client's own settings, then the security settings and
//! KAFKA_PROPERTIES last, so an operator can override anything. Each setting is checked
//! on its own by librdkafka before any client is made, so an error names the variable
//! it came from; a client librdkafka then refuses to create is blamed on the variable
//! whose settings, added in the order they are applied, make the creation fail.
use rdkafka::{config::ClientConfig, error::KafkaError, producer::BaseProducer};

use crate::config::{Config, SettingError};

/// The bound on each blocking librdkafka request the service makes outside the
/// consumer's poll (metadata, watermarks, offsets for times, committed offsets, seeks).
pub const KAFKA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
            .map_err(|e| SettingError::caused(var, e.to_string(), e))?;
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

/// The variable to blame for a client librdkafka refused to create with `settings`
/// (the service's own) and the configuration's: the first variable whose settings make
/// a client fail; the settings of the service itself when it fails without any.
pub fn creation_error(cfg: &Config, settings: &[(&str, String)], e: KafkaError) -> SettingError {
    let fails = |c: &ClientConfig| c.create::<BaseProducer>().is_err();
    let mut c = ClientConfig::new();
    for (k, v) in settings {
        c.set(*k, v);
    }
    if fails(&c) {
        return SettingError::caused(
            "KAFKA_BOOTSTRAP_SERVERS",
            format!("a Kafka client cannot be created: {e}"),
            e,
        );
    }
    let props = sourced_properties(cfg);
    let mut blamed = "KAFKA_PROPERTIES";
    for (i, (k, v, var)) in props.iter().enumerate() {
        c.set(k, v);
        let last_of_var = props.get(i + 1).is_none_or(|next| next.2 != *var);
        if last_of_var && fails(&c) {
            blamed = var;
            break;
        }
    }
    SettingError::caused(blamed, format!("librdkafka refused the settings: {e}"), e)
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
