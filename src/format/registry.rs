//! The Confluent Schema Registry client: `GET /schemas/ids/{id}` (with basic auth when
//! configured), each schema parsed once and cached by id for the life of the process
//! (a registered id never changes its schema); an id the registry does not know, and
//! a 200 whose body is not a schema, are remembered for `MISSING_TTL`. A registry that
//! cannot answer (connection refused, timeout, 5xx, any answer other than 200 or 404)
//! is asked again with backoff until it answers: the event waits, and so does the
//! pipeline behind it, exactly as for a MongoDB outage; nothing is dead-lettered for
//! it. The client owns the "schema registry" dependency state: down while lookups
//! fail, up at the next answer; its probe (`probe`) keeps the state true while no
//! lookup asks.
//!
//! The answer is untrusted: bodies over MAX_BODY_BYTES are unreadable, the cache holds
//! at most MAX_CACHED ids, and credentials over `http://` are warned about at start-up.
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

/// How long an id the registry answered 404, or 200 without a readable schema, for is
/// refused without asking again.
pub const MISSING_TTL: Duration = Duration::from_secs(30);

/// How often the probe asks the registry whether it answers, unless a lookup did.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Time allowed for one registry request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest registry answer read; a larger one is unreadable.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Schemas (and refusals) cached at most; when full, the cache starts over.
const MAX_CACHED: usize = 1024;

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
    /// The registry answered 200 with a body that holds no schema text: why.
    Unreadable(String),
}

enum Cached {
    Found(Arc<Schema>),
    /// Unknown or Unreadable, answered at that instant.
    Refused(Lookup, Instant),
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
    /// The state, and when a lookup last set it: the probe leaves a fresher word alone.
    state: Mutex<(StateWriter, Option<Instant>)>,
    metrics: Arc<Metrics>,
}

impl Registry {
    /// A client for `settings`, the only writer of the "schema registry" state.
    pub fn new(settings: RegistrySettings, state: StateWriter, metrics: Arc<Metrics>) -> Self {
        if settings.username.is_some() && settings.url.starts_with("http://") {
            warn!(
                "SCHEMA_REGISTRY_URL is http:// and SCHEMA_REGISTRY_USERNAME/PASSWORD are set: \
                 the credentials cross the network unencrypted; use https://"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTP client with default TLS settings");
        Registry {
            http,
            settings,
            cache: Mutex::new(HashMap::new()),
            state: Mutex::new((state, None)),
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
            let down = !self.state.lock().expect("state lock").0.get().is_up();
            let fetched = tokio::select! {
                fetched = self.fetch(id) => fetched,
                _ = stop.cancelled(), if down => return None,
            };
            match fetched {
                Ok(found) => {
                    self.set_state(State::Up, None);
                    let cached = match &found {
                        Lookup::Found(s) => Cached::Found(s.clone()),
                        refused => Cached::Refused(refused.clone(), Instant::now()),
                    };
                    let mut cache = self.cache.lock().expect("cache lock");
                    if cache.len() >= MAX_CACHED {
                        // Ids come from records: a bounded cache starts over when full.
                        cache.clear();
                    }
                    cache.insert(id, cached);
                    return Some(found);
                }
                Err(e) => {
                    self.metrics.schema_registry_request("error");
                    attempt += 1;
                    let why = format!("GET /schemas/ids/{id} failed: {e}");
                    warn!(schema_id = id, attempt, error = %e, "schema registry lookup failed; the event waits and is retried");
                    self.set_state(State::Down(why), None);
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
            Cached::Refused(refused, at) if at.elapsed() < MISSING_TTL => Some(refused.clone()),
            Cached::Refused(..) => {
                cache.remove(&id);
                None
            }
        }
    }

    /// Sets the state: for a lookup (`probe_started` None), or for a probe started at
    /// that instant, unless a lookup has set it since.
    fn set_state(&self, new: State, probe_started: Option<Instant>) {
        let mut state = self.state.lock().expect("state lock");
        match probe_started {
            None => state.1 = Some(Instant::now()),
            Some(started) if state.1.is_some_and(|at| at > started) => return,
            Some(_) => {}
        }
        state.0.set(new);
    }

    /// A GET of `path` on the registry, with basic auth when configured.
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.settings.url.trim_end_matches('/'));
        let request = self.http.get(url);
        match &self.settings.username {
            Some(user) => {
                let password = self.settings.password.as_ref().map(|p| p.expose_secret());
                request.basic_auth(user, password)
            }
            None => request,
        }
    }

    /// One request: the schema, Unknown on 404, Unreadable for a 200 without a schema,
    /// or why the registry did not answer.
    async fn fetch(&self, id: u32) -> Result<Lookup, String> {
        // The error text of reqwest carries the URL, which holds no credentials here.
        let response = self
            .get(&format!("/schemas/ids/{id}"))
            .send()
            .await
            .map_err(|e| chain(&e.without_url()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            self.metrics.schema_registry_request("not_found");
            return Ok(Lookup::Unknown);
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let Some(body) = read_capped(response).await? else {
            self.metrics.schema_registry_request("unreadable");
            return Ok(Lookup::Unreadable(format!(
                "the answer is larger than {MAX_BODY_BYTES} bytes"
            )));
        };
        match serde_json::from_slice::<SchemaResponse>(&body) {
            Ok(body) => {
                self.metrics.schema_registry_request("found");
                Ok(Lookup::Found(Arc::new(Schema::new(
                    body.schema_type.as_deref(),
                    &body.schema,
                ))))
            }
            Err(e) => {
                self.metrics.schema_registry_request("unreadable");
                Ok(Lookup::Unreadable(unreadable(&body, &e)))
            }
        }
    }

    /// Asks the registry whether it answers (`GET /schemas/types`) at once, then every
    /// `PROBE_INTERVAL` in which no lookup has asked it, and sets the state from the
    /// answer: any HTTP answer but 5xx, 401 or 403 is up (an old registry's 404 still
    /// answers). Runs until `stop`.
    pub async fn probe(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let last = self.state.lock().expect("state lock").1;
            if last.is_some_and(|at| at.elapsed() < PROBE_INTERVAL) {
                continue;
            }
            let started = Instant::now();
            let answer = tokio::select! {
                answer = self.get("/schemas/types").send() => answer,
                _ = stop.cancelled() => return,
            };
            let status = answer.map(|r| r.status());
            let state = match status {
                Ok(s) if !(s.is_server_error() || s == 401 || s == 403) => State::Up,
                Ok(s) => State::Down(format!("GET /schemas/types failed: HTTP {s}")),
                Err(e) => State::Down(format!(
                    "GET /schemas/types failed: {}",
                    chain(&e.without_url())
                )),
            };
            self.set_state(state, Some(started));
        }
    }
}

/// Why a 200 body is not a schema, with how the body begins.
/// The body of `response`; None past MAX_BODY_BYTES.
async fn read_capped(mut response: reqwest::Response) -> Result<Option<Vec<u8>>, String> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {}", chain(&e.without_url())))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

fn unreadable(body: &[u8], e: &serde_json::Error) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(60)]);
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    format!("the registry answered 200 without a readable schema ({e}); the body begins {text:?}")
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
