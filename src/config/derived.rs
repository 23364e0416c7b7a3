//! What the settings add up to: the defaults derived from other settings (the
//! dead-letter topic and collection), the durations, the validator's rules, the schema
//! registry's settings and the check of the settings that only work together, the
//! tokens in force, and the librdkafka properties with the variable each comes from.
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{Config, SettingError};
use crate::{format::RegistrySettings, validate::Rules};

impl Config {
    /// The dead-letter topic, defaulting to `<KAFKA_TOPIC>.dlq`.
    pub fn dlq_topic(&self) -> String {
        self.kafka_dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.kafka_topic))
    }

    /// The dead-letter collection for gRPC events, defaulting to `<MONGODB_COLLECTION>_dlq`.
    pub fn dlq_collection(&self) -> String {
        self.mongodb_dlq_collection
            .clone()
            .unwrap_or_else(|| format!("{}_dlq", self.mongodb_collection))
    }

    /// FLUSH_INTERVAL as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_secs_f64(self.flush_interval)
    }

    /// GRPC_STREAM_IDLE_TIMEOUT as a duration.
    pub fn grpc_stream_idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.grpc_stream_idle_timeout)
    }

    /// The validator's rules: MAX_QTY, MAX_PRICE, MAX_SKU_CHARS, MAX_EVENT_ID_CHARS,
    /// NAIVE_TS, and KAFKA_TOPIC (whose generated ids are reserved, also while Kafka is
    /// disabled: stored documents and dead letters of earlier runs carry them).
    pub fn rules(&self) -> Rules {
        Rules {
            max_qty: self.max_qty,
            max_price: self.max_price,
            max_sku_chars: self.max_sku_chars as usize,
            max_event_id_chars: self.max_event_id_chars as usize,
            naive_ts: self.naive_ts,
            kafka_topic: self.kafka_topic.clone().into(),
        }
    }

    /// Where the schema registry is and how to log in (SCHEMA_REGISTRY_*).
    pub fn schema_registry(&self) -> RegistrySettings {
        RegistrySettings {
            url: self
                .schema_registry_url
                .as_deref()
                .unwrap_or_default()
                .to_string(),
            username: self.schema_registry_username.clone(),
            password: self.schema_registry_password.clone(),
        }
    }

    /// Checks the settings that only work together: the schema registry's
    /// SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD need each other and
    /// SCHEMA_REGISTRY_URL. Err is the variable that is set and what is missing.
    pub fn check(&self) -> Result<(), SettingError> {
        let user = self.schema_registry_username.is_some();
        let password = self.schema_registry_password.is_some();
        let set = if user {
            "SCHEMA_REGISTRY_USERNAME"
        } else {
            "SCHEMA_REGISTRY_PASSWORD"
        };
        if (user || password) && self.schema_registry_url.is_none() {
            return Err(SettingError::new(
                set,
                "SCHEMA_REGISTRY_URL is missing: the credentials are for a schema registry; \
                 set SCHEMA_REGISTRY_URL or unset SCHEMA_REGISTRY_USERNAME and \
                 SCHEMA_REGISTRY_PASSWORD",
            ));
        }
        if user != password {
            let missing = if user {
                "SCHEMA_REGISTRY_PASSWORD"
            } else {
                "SCHEMA_REGISTRY_USERNAME"
            };
            return Err(SettingError::new(
                set,
                format!(
                    "{missing} is missing: the schema registry's basic auth needs both \
                     SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD"
                ),
            ));
        }
        Ok(())
    }

    /// SHUTDOWN_TIMEOUT as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_timeout)
    }

    /// The admin token when one is configured and not blank (surrounding whitespace,
    /// such as the newline of a token read from a file, is not part of it).
    pub fn admin_token(&self) -> Option<&SecretString> {
        self.admin_token
            .as_ref()
            .filter(|t| !t.expose_secret().is_empty())
    }

    /// The producer token when one is configured and not blank.
    pub fn producer_token(&self) -> Option<&SecretString> {
        self.producer_token
            .as_ref()
            .filter(|t| !t.expose_secret().is_empty())
    }

    /// Every librdkafka property the security settings and KAFKA_PROPERTIES add, with
    /// the variable each comes from, in the order they are applied (KAFKA_PROPERTIES
    /// last, so it can override).
    pub fn kafka_client_properties(&self) -> Vec<(String, String, &'static str)> {
        let password = self
            .kafka_sasl_password
            .as_ref()
            .map(|p| p.expose_secret().to_string());
        let named = [
            (
                "security.protocol",
                self.kafka_security_protocol.clone(),
                "KAFKA_SECURITY_PROTOCOL",
            ),
            (
                "sasl.mechanism",
                self.kafka_sasl_mechanism.clone(),
                "KAFKA_SASL_MECHANISM",
            ),
            (
                "sasl.username",
                self.kafka_sasl_username.clone(),
                "KAFKA_SASL_USERNAME",
            ),
            ("sasl.password", password, "KAFKA_SASL_PASSWORD"),
            (
                "ssl.ca.location",
                self.kafka_ssl_ca_location.clone(),
                "KAFKA_SSL_CA_LOCATION",
            ),
        ];
        named
            .into_iter()
            .filter_map(|(k, v, var)| v.map(|v| (k.to_string(), v, var)))
            .chain(
                self.kafka_properties
                    .0
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone(), "KAFKA_PROPERTIES")),
            )
            .collect()
    }
}
