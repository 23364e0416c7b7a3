//! `ingestctl health`: asks the gRPC Health service about the whole server (`""`) and
//! each service, prints one line each, and reports whether all are SERVING.
use sales_ingest::health::SERVICES;
use tonic::{transport::Channel, Code};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{
    connect::request,
    error::CtlError,
    table::{Align, Table},
};

/// The name shown for a service ("" is the whole server).
fn display_name(service: &str) -> String {
    if service.is_empty() {
        "\"\" (server)".into()
    } else {
        service.into()
    }
}

/// Checks `service`, or every service sales-ingest reports; true when all are SERVING.
pub async fn run(channel: Channel, service: Option<String>) -> Result<bool, CtlError> {
    let services: Vec<String> = match service {
        Some(s) => vec![s],
        None => SERVICES.iter().map(|s| s.to_string()).collect(),
    };
    let mut client = HealthClient::new(channel);
    let mut table = Table::new(&[("SERVICE", Align::Left), ("STATUS", Align::Left)]);
    let mut all_serving = true;
    for service in services {
        let status = match client
            .check(request(HealthCheckRequest {
                service: service.clone(),
            }))
            .await
        {
            Ok(resp) => resp.into_inner().status().as_str_name().to_string(),
            Err(s) if s.code() == Code::NotFound => "NOT_FOUND (unknown service)".to_string(),
            Err(s) => return Err(CtlError::from_status("Health/Check", s, false)),
        };
        all_serving &= status == ServingStatus::Serving.as_str_name();
        table.row(vec![display_name(&service), status]);
    }
    print!("{}", table.render());
    Ok(all_serving)
}
