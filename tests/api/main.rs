//! All integration tests, built as one binary so the backends start once.
mod admin;
mod backends;
mod config;
mod deploy;
mod faults;
mod grpc;
mod helpers;
mod honest;
mod hostile;
mod ingestctl;
mod kafka;
mod observe;
mod outage;
mod python_client;
mod security;
mod status_page;
mod tools;
