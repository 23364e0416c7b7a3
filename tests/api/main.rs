//! All integration tests, built as one binary so the backends start once.
mod admin;
mod backends;
mod config;
mod deploy;
mod grpc;
mod helpers;
mod kafka;
mod observe;
mod python_client;
mod status_page;
mod tools;
