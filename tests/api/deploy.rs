//! The deployment files, checked as far as this machine can without a Docker engine:
//! docker-compose.yml parses, everything it references exists and it starts in
//! health-checked order, and `.env.example` lists every variable ([`compose`]); the
//! Dockerfile's stages, user, ports and health check, the binary needs no library
//! bookworm-slim lacks and its `healthcheck` subcommand works ([`dockerfile`]);
//! promtool accepts the Prometheus config and the alert rules (and their unit tests
//! pass) and the live `/metrics`, and the Grafana dashboard and the alerts only query
//! metrics the service exposes ([`prometheus`]); the dashboard has the panels operators
//! need ([`grafana`]). This file holds what they share: reading the files.
mod compose;
mod dockerfile;
mod grafana;
mod prometheus;

use std::collections::BTreeMap;

use clap::CommandFactory;
use sales_ingest::Config;
use serde_json::Value;

use crate::tools::repo_path;

/// A YAML file of the repository, as JSON values.
pub fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

/// A JSON file of the repository.
pub fn json(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not valid JSON: {e}"))
}

/// The `services` mapping of a compose file.
pub fn services(compose: &Value) -> &serde_json::Map<String, Value> {
    compose["services"].as_object().expect("services mapping")
}

/// `host:container[:mode]` bind mounts of a service (named volumes left out).
pub fn bind_mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .filter(|s| s.starts_with("./") || s.starts_with('/'))
                .map(|s| {
                    let mut parts = s.split(':');
                    (
                        parts.next().unwrap().to_string(),
                        parts.next().expect("container path").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The environment variables the server accepts, with their defaults.
pub fn accepted_env() -> BTreeMap<String, Option<String>> {
    Config::command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            let default = a
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned());
            Some((env, default))
        })
        .collect()
}
