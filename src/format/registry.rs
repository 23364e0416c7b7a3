//! The Confluent Schema Registry client: `GET /schemas/ids/{id}` (with basic auth when
//! configured), each schema parsed once and cached by id for the life of the process
//! (a registered id never changes its schema); an id the registry does not know is
//! remembered for `MISSING_TTL`. A registry that cannot answer (connection refused,
//! timeout, 5xx, any answer other than 200 or 404) is asked again with backoff until
//! it answers: the event waits, and so does the pipeline behind it, exactly as for a
//! MongoDB outage; nothing is dead-lettered for it. The client owns the "schema
//! registry" dependency state: down while lookups fail, up at the next answer.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    deps::{State, StateWriter},
    format::proto_schema::{self, Message},
    metrics::Metrics,
    sink::retry::backoff,
};

/// How long an id the registry answered 404 for is refused without asking again.
pub const MISSING_TTL: Duration = Duration::from_secs(30);

/// Time allowed for one registry request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A schema as the registry returned it: its messages, or why they cannot be read as
/// SalesEvents (not Protobuf, unparsable text).
#[derive(Debug)]
pub struct Schema {
    messages: Result<Vec<Message>, String>,
}

impl Schema {
    /// Reads the registry's answer.
    pub fn new(schema_type: Option<&str>, text: &str) -> Self {
        let messages = match schema_type.unwrap_or("AVRO") {
            "PROTOBUF" => proto_schema::parse(text).map_err(|e| format!("its text: {e}")),
            other => Err(format!("it is {other}, not PROTOBUF")),
        };
        Schema { messages }
    }

    /// Checks that the message at `path` decodes as a SalesEvent.
    pub fn check(&self, path: &[u32]) -> Result<(), String> {
        let messages = self.messages.as_ref().map_err(Clone::clone)?;
        let message = proto_schema::resolve(messages, path)
            .ok_or_else(|| format!("it has no message at index {path:?}"))?;
        message
            .check_sales_event()
            .map_err(|e| format!("message {} (index {path:?}): {e}", message.name))
    }
}

/// What a lookup found.
#[derive(Clone, Debug)]
pub enum Lookup {
    Found(Arc<Schema>),
    Unknown,
}

enum Cached {
    Found(Arc<Schema>),
    Missing(Instant),
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

/// Where the registry is and how to log in.
#[derive(Clone, Debug)]
pub struct RegistrySettings {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

/// The registry client; shared (`Arc`) by the pipeline and the re-drive.
pub struct Registry {
    http: reqwest::Client,
    settings: RegistrySettings,
    cache: Mutex<HashMap<u32, Cached>>,
    state: StateWriter,
    metrics: Arc<Metrics>,
}

impl Registry {
    /// A client for `settings`, the only writer of the "schema registry" state.
    pub fn new(settings: RegistrySettings, state: StateWriter, metrics: Arc<Metrics>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTP client with default TLS settings");
        Registry {
            http,
            settings,
            cache: Mutex::new(HashMap::new()),
            state,
            metrics,
        }
    }

    /// The schema with `id`, asking the registry (again and again, with backoff, while
    /// it cannot answer) unless it is cached. None when `stop` fires first.
    pub async fn lookup(&self, id: u32, stop: &CancellationToken) -> Option<Lookup> {
        if let Some(found) = self.cached(id) {
            return Some(found);
        }
        let mut attempt = 0;
        loop {
            // While the registry is down, `stop` also cuts a request short, so a
            // shutdown does not wait out request timeouts event by event.
            let down = !self.state.get().is_up();
            let fetched = tokio::select! {
                fetched = self.fetch(id) => fetched,
                _ = stop.cancelled(), if down => return None,
            };
            match fetched {
                Ok(found) => {
                    self.state.set(State::Up);
                    let cached = match &found {
                        Lookup::Found(s) => Cached::Found(s.clone()),
                        Lookup::Unknown => Cached::Missing(Instant::now()),
                    };
                    self.cache.lock().expect("cache lock").insert(id, cached);
                    return Some(found);
                }
                Err(e) => {
                    self.metrics.schema_registry_request("error");
                    attempt += 1;
                    let why = format!("GET /schemas/ids/{id} failed: {e}");
                    warn!(schema_id = id, attempt, error = %e, "schema registry lookup failed; the event waits and is retried");
                    self.state.set(State::Down(why));
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(backoff(attempt)) => {}
                    }
                }
            }
        }
    }

    /// Whether a lookup of `id` answers from the cache, without a request.
    pub fn is_cached(&self, id: u32) -> bool {
        self.cached(id).is_some()
    }

    fn cached(&self, id: u32) -> Option<Lookup> {
        let mut cache = self.cache.lock().expect("cache lock");
        match cache.get(&id)? {
            Cached::Found(s) => Some(Lookup::Found(s.clone())),
            Cached::Missing(at) if at.elapsed() < MISSING_TTL => Some(Lookup::Unknown),
            Cached::Missing(_) => {
                cache.remove(&id);
                None
            }
        }
    }

    /// One request: the schema, Unknown on 404, or why the registry did not answer.
    async fn fetch(&self, id: u32) -> Result<Lookup, String> {
        let url = format!(
            "{}/schemas/ids/{id}",
            self.settings.url.trim_end_matches('/')
        );
        let mut request = self.http.get(url);
        if let Some(user) = &self.settings.username {
            let password = self.settings.password.as_ref().map(|p| p.expose_secret());
            request = request.basic_auth(user, password);
        }
        // The error text of reqwest carries the URL, which holds no credentials here.
        let response = request.send().await.map_err(|e| chain(&e.without_url()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            self.metrics.schema_registry_request("not_found");
            return Ok(Lookup::Unknown);
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body: SchemaResponse = response
            .json()
            .await
            .map_err(|e| format!("unreadable answer: {}", e.without_url()))?;
        self.metrics.schema_registry_request("found");
        Ok(Lookup::Found(Arc::new(Schema::new(
            body.schema_type.as_deref(),
            &body.schema,
        ))))
    }
}

/// An error and its causes, `: `-separated ("error sending request: … Connection
/// refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_protobuf_schemas_are_read() {
        let avro = Schema::new(None, r#"{"type": "record"}"#);
        assert!(avro.check(&[0]).unwrap_err().contains("AVRO"));
        let json = Schema::new(Some("JSON"), "{}");
        assert!(json.check(&[0]).unwrap_err().contains("JSON"));
        let proto = Schema::new(Some("PROTOBUF"), "message S { string sku = 1; }");
        assert_eq!(proto.check(&[0]), Ok(()));
        assert!(proto.check(&[1]).unwrap_err().contains("no message"));
        let broken = Schema::new(Some("PROTOBUF"), "message S {");
        assert!(broken.check(&[0]).unwrap_err().contains("its text"));
    }
}
