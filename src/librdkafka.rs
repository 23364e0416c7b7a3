//! The librdkafka settings every Kafka client of the service is built from: the source's
//! consumer, the dead-letter producer and admin client, and the re-driver's reader of
//! the dead-letter topic. It belongs to none of them, so it sits beside them rather than
//! in `source/`. Bootstrap servers, the client's own settings, then the security
//! settings and KAFKA_PROPERTIES last, so an operator can override anything. Each
//! setting is checked on its own by librdkafka before any client is made, so an error
//! names the variable it came from; a client librdkafka then refuses to create is blamed
//! on the variable whose settings, added in the order they are applied, make the
//! creation fail. Also the consumer-group protocol and the settings it rules out, and
//! the bound on the blocking requests the clients make.
use clap::ValueEnum;
use rdkafka::{config::ClientConfig, error::KafkaError, producer::BaseProducer};

use crate::config::{Config, SettingError};

/// The bound on each blocking librdkafka request the service makes outside the
/// consumer's poll (metadata, watermarks, offsets for times, committed offsets, seeks).
pub const KAFKA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The consumer-group protocol (librdkafka `group.protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup: the group's leader assigns the partitions.
    Classic,
    /// KIP-848: the broker assigns incrementally; session timeout and heartbeat
    /// interval are the broker's.
    Consumer,
}

impl GroupProtocol {
    /// Its librdkafka name.
    pub fn name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

/// The settings the consumer protocol leaves to the broker: each variable (or
/// KAFKA_PROPERTIES key) that sets one, and why it cannot apply.
const BROKER_OWNED: [(&str, &str, &str); 4] = [
    (
        "KAFKA_SESSION_TIMEOUT_MS",
        "session.timeout.ms",
        "the session timeout is the broker's group.consumer.session.timeout.ms (or the \
         group's consumer.session.timeout.ms)",
    ),
    (
        "KAFKA_HEARTBEAT_INTERVAL_MS",
        "heartbeat.interval.ms",
        "the heartbeat interval is the broker's group.consumer.heartbeat.interval.ms (or \
         the group's consumer.heartbeat.interval.ms)",
    ),
    (
        "KAFKA_PARTITION_ASSIGNMENT",
        "partition.assignment.strategy",
        "the broker assigns the partitions, incrementally (its assignor is chosen with \
         group.remote.assignor in KAFKA_PROPERTIES)",
    ),
    (
        "KAFKA_PROPERTIES",
        "group.protocol.type",
        "it belongs to the classic protocol",
    ),
];

/// Refuses what the group protocol rules out, naming the variable: `group.protocol`
/// in KAFKA_PROPERTIES (KAFKA_GROUP_PROTOCOL sets it), and with `consumer` any
/// setting the broker owns that the operator set (left unset, it is not passed).
fn check_group_protocol(cfg: &Config) -> Result<(), SettingError> {
    let props = &cfg.kafka_properties.0;
    if props.iter().any(|(k, _)| k == "group.protocol") {
        return Err(SettingError::new(
            "KAFKA_PROPERTIES",
            "group.protocol is set with KAFKA_GROUP_PROTOCOL, not KAFKA_PROPERTIES",
        ));
    }
    if cfg.kafka_group_protocol != GroupProtocol::Consumer {
        return Ok(());
    }
    let set_by_variable = [
        cfg.kafka_session_timeout_ms.is_some(),
        cfg.kafka_heartbeat_interval_ms.is_some(),
        cfg.kafka_partition_assignment.is_some(),
        false,
    ];
    for ((var, key, why), by_variable) in BROKER_OWNED.into_iter().zip(set_by_variable) {
        let (var, what) = if by_variable {
            (var, var.to_string())
        } else if props.iter().any(|(k, _)| k == key) {
            ("KAFKA_PROPERTIES", format!("{key} in KAFKA_PROPERTIES"))
        } else {
            continue;
        };
        return Err(SettingError::new(
            var,
            format!(
                "{what} is set, but with KAFKA_GROUP_PROTOCOL=consumer {why}; unset it or \
                 use KAFKA_GROUP_PROTOCOL=classic"
            ),
        ));
    }
    Ok(())
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
    check_group_protocol(cfg)?;
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

    #[test]
    fn the_consumer_protocol_refuses_the_settings_the_broker_owns() {
        let consumer = "--kafka-group-protocol=consumer";
        assert!(
            check(&config(&[consumer])).is_ok(),
            "defaults are not passed"
        );
        for (flag, var) in [
            (
                "--kafka-session-timeout-ms=6000",
                "KAFKA_SESSION_TIMEOUT_MS",
            ),
            (
                "--kafka-heartbeat-interval-ms=1000",
                "KAFKA_HEARTBEAT_INTERVAL_MS",
            ),
            (
                "--kafka-partition-assignment=range",
                "KAFKA_PARTITION_ASSIGNMENT",
            ),
            (
                "--kafka-properties=session.timeout.ms=6000",
                "KAFKA_PROPERTIES",
            ),
            (
                "--kafka-properties=partition.assignment.strategy=range",
                "KAFKA_PROPERTIES",
            ),
            (
                "--kafka-properties=group.protocol.type=consumer",
                "KAFKA_PROPERTIES",
            ),
        ] {
            let err = check(&config(&[consumer, flag])).unwrap_err();
            assert_eq!(err.var, var, "{flag}");
            assert!(
                err.message.contains("KAFKA_GROUP_PROTOCOL=consumer"),
                "{}",
                err.message
            );
            assert!(
                check(&config(&[flag])).is_ok(),
                "{flag} is fine with classic"
            );
        }
        let err = check(&config(&["--kafka-properties=group.protocol=consumer"])).unwrap_err();
        assert_eq!(err.var, "KAFKA_PROPERTIES");
        assert!(
            err.message.contains("KAFKA_GROUP_PROTOCOL"),
            "{}",
            err.message
        );
    }
}
