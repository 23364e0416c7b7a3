//! The ConfigMap, the Deployment, its resources and probes, the Service, PDB and
//! autoscaler, against the server and the benchmark.
use super::*;

#[test]
fn the_configmap_sets_every_setting_that_has_a_default_at_that_default() {
    let data = configmap();
    let secret = secret_example();
    let known = crate::deploy::accepted_env();
    // MONGODB_URL has a default but may carry a password: it is in the Secret.
    assert_eq!(
        secret.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["ADMIN_TOKEN", "MONGODB_URL", "PRODUCER_TOKEN"])
    );
    let with_default: BTreeSet<&str> = known
        .iter()
        .filter(|(_, d)| d.is_some())
        .map(|(k, _)| k.as_str())
        .filter(|k| !secret.contains_key(*k))
        .collect();
    let in_map: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        in_map, with_default,
        "the ConfigMap's keys are the settings with a default (less the Secret's)"
    );
    for (key, value) in &data {
        let default = known[key].as_deref().unwrap();
        let same = value == default
            || matches!((value.parse::<f64>(), default.parse::<f64>()), (Ok(a), Ok(b)) if a == b);
        assert!(
            same,
            "{key}: the ConfigMap says {value}, the default is {default}"
        );
    }
    for key in secret.keys() {
        assert!(known.contains_key(key), "sales-ingest does not read {key}");
    }
    // The server accepts the ConfigMap and the Secret together.
    let mut args = vec!["sales-ingest".to_string()];
    for (key, value) in data.iter().chain(secret.iter()) {
        args.push(format!(
            "--{}={value}",
            key.to_lowercase().replace('_', "-")
        ));
    }
    let config = Config::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("the server refuses the ConfigMap and Secret: {e}"));
    assert_eq!(config.shutdown_timeout().as_secs(), 30);
}

/// A Kubernetes quantity in MiB (`128Mi`, `1Gi`).
fn mebibytes(q: &Value) -> f64 {
    let q = q.as_str().expect("a memory quantity");
    if let Some(n) = q.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = q.strip_suffix("Gi") {
        n.parse::<f64>().unwrap() * 1024.0
    } else {
        panic!("memory quantity {q}: use Mi or Gi")
    }
}

/// A Kubernetes CPU quantity in cores (`250m`, `1`).
fn cores(q: &Value) -> f64 {
    let q = q.as_str().expect("a CPU quantity");
    match q.strip_suffix('m') {
        Some(m) => m.parse::<f64>().unwrap() / 1000.0,
        None => q.parse().unwrap(),
    }
}

#[test]
fn the_deployment_runs_locked_down_on_the_servers_ports_and_drains_before_the_kill() {
    let d = deployment();
    let pod = &d["spec"]["template"]["spec"];
    let c = container();
    let cm = configmap();

    // The image's user, non-root, read-only, no privilege, no capability.
    let dockerfile = read("Dockerfile");
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the Dockerfile");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    assert_eq!(pod["securityContext"]["runAsUser"].to_string(), uid);
    assert_eq!(pod["securityContext"]["runAsGroup"].to_string(), gid);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null());
    assert_eq!(pod["automountServiceAccountToken"], false);

    // Container ports are the listen addresses' ports.
    let ports: BTreeMap<String, i64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    let grpc_port = port_of(&cm["GRPC_ADDR"]);
    let http_port = port_of(&cm["HTTP_ADDR"]);
    assert_eq!(
        ports,
        BTreeMap::from([("grpc".into(), grpc_port), ("http".into(), http_port)])
    );

    // Configuration from the ConfigMap and the Secret.
    let refs: Vec<(String, String)> = c["envFrom"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (kind, r) = e.as_object().unwrap().iter().next().unwrap();
            assert!(r["optional"].is_null() || r["optional"] == false, "{e}");
            (kind.clone(), r["name"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        refs,
        [
            ("configMapRef".into(), "sales-ingest-config".into()),
            ("secretRef".into(), "sales-ingest-secrets".into())
        ]
    );

    // Readiness: gRPC health of IngestEvents on the gRPC port.
    let ready = &c["readinessProbe"];
    assert_eq!(ready["grpc"]["port"], grpc_port);
    assert_eq!(ready["grpc"]["service"], READINESS_SERVICE);
    // Liveness: not gRPC health, not the healthcheck subcommand (both follow the
    // dependencies); an HTTP GET of a path that answers 200 whatever the dependencies.
    let live = &c["livenessProbe"];
    assert!(live["grpc"].is_null() && live["exec"].is_null(), "{live}");
    assert_eq!(live["httpGet"]["port"], "http");
    assert_ne!(
        live["httpGet"]["path"], "/health",
        "/health answers 503 when a dependency is down"
    );
    assert!(
        c["startupProbe"].is_null(),
        "a startup probe on health would restart pods whose MongoDB is down"
    );
    // The slowest a hung process is restarted: a few periods, not seconds.
    let failures = live["failureThreshold"].as_i64().unwrap();
    let period = live["periodSeconds"].as_i64().unwrap();
    assert!(
        failures * period >= 30,
        "liveness gives up after {}s",
        failures * period
    );

    // Grace period > preStop sleep + SHUTDOWN_TIMEOUT.
    let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .expect("preStop exec");
    assert_eq!(pre_stop[0], "sleep");
    let sleep: f64 = pre_stop[1].as_str().unwrap().parse().unwrap();
    assert!(sleep >= 1.0);
    let shutdown: f64 = cm["SHUTDOWN_TIMEOUT"].parse().unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_f64().unwrap();
    assert!(
        grace > sleep + shutdown,
        "terminationGracePeriodSeconds {grace} <= preStop {sleep} + SHUTDOWN_TIMEOUT {shutdown}"
    );

    // Rollouts never drop below the replica count, and replicas survive one loss.
    assert!(d["spec"]["replicas"].as_i64().unwrap() >= 2);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
}

/// The figures of bench/README.md's "Latest run" table: (events/s, service CPU s per
/// million events, peak RSS MiB) of each service phase.
fn bench_figures() -> Vec<(f64, f64, f64)> {
    let text = read("bench/README.md");
    let table: Vec<Vec<String>> = text
        .lines()
        .skip_while(|l| !l.starts_with("| Phase |"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert!(table.len() > 3, "bench/README.md has no results table");
    let col = |name: &str| {
        table[0]
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("bench table column {name}"))
    };
    let (rate, cpu, rss) = (
        col("Events/s"),
        col("Service CPU s / 1M"),
        col("Peak RSS MiB"),
    );
    let number = |s: &str| s.replace(',', "").parse::<f64>().ok();
    table[2..]
        .iter()
        .filter(|row| !row[cpu].contains("bench"))
        .map(|row| {
            (
                number(&row[rate]).unwrap_or(0.0),
                number(&row[cpu]).unwrap_or_else(|| panic!("CPU in {row:?}")),
                number(&row[rss]).unwrap_or_else(|| panic!("RSS in {row:?}")),
            )
        })
        .collect()
}

#[test]
fn the_resources_cover_the_benchmark_figures() {
    let figures = bench_figures();
    assert!(figures.len() >= 3, "{figures:?}");
    let peak_rss = figures.iter().map(|f| f.2).fold(0.0, f64::max);
    // Cores each phase kept busy: its rate at its CPU per event (small batches cost
    // more per event, saturation more events).
    let busiest = figures
        .iter()
        .map(|f| (f.0 * f.1 / 1e6, f.0, f.1))
        .fold((0.0, 0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
    let c = container();
    let r = &c["resources"];
    let (req_mem, lim_mem) = (
        mebibytes(&r["requests"]["memory"]),
        mebibytes(&r["limits"]["memory"]),
    );
    let (req_cpu, lim_cpu) = (cores(&r["requests"]["cpu"]), cores(&r["limits"]["cpu"]));
    // Memory: the request holds the measured peak, the limit leaves it room to grow.
    assert!(
        req_mem >= peak_rss,
        "memory request {req_mem} MiB < peak RSS {peak_rss} MiB"
    );
    assert!(
        lim_mem >= 2.0 * peak_rss,
        "memory limit {lim_mem} MiB < 2 x peak RSS"
    );
    // CPU: the request covers the busiest measured phase, the limit four times that.
    let (cores, rate, cpu_per_million) = busiest;
    assert!(
        req_cpu >= cores,
        "a {req_cpu}-core request < the {cores:.2} cores of {rate}/s at {cpu_per_million} CPU-s/1M"
    );
    assert!(lim_cpu >= 4.0 * req_cpu);
    eprintln!(
        "KUBERNETES resources: request {req_cpu} cores >= {cores:.2} cores ({rate}/s at \
         {cpu_per_million} CPU-s/1M); memory {req_mem}/{lim_mem} MiB for a peak of {peak_rss} MiB"
    );
}

#[test]
fn the_service_pdb_and_autoscaler_select_the_deployments_pods() {
    let d = deployment();
    let pod_labels = string_map(&d["spec"]["template"]["metadata"]["labels"], "pod labels");
    let selects = |sel: &Value| {
        let sel = string_map(sel, "selector");
        !sel.is_empty() && sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
    };
    assert!(selects(&d["spec"]["selector"]["matchLabels"]));
    let cm = configmap();

    let svc = object("Service", "sales-ingest");
    assert!(selects(&svc["spec"]["selector"]));
    let ports: Vec<(String, String, String)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["appProtocol"].as_str().unwrap().into(),
                p["targetPort"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("grpc".into(), "grpc".into(), "grpc".into()),
            ("http".into(), "http".into(), "http".into())
        ]
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], port_of(&cm["GRPC_ADDR"]));
    assert_eq!(svc["spec"]["ports"][1]["port"], port_of(&cm["HTTP_ADDR"]));

    let headless = object("Service", "sales-ingest-pods");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert!(selects(&headless["spec"]["selector"]));

    let pdb = object("PodDisruptionBudget", "sales-ingest");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"]));
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);

    let hpa = object("HorizontalPodAutoscaler", "sales-ingest");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], d["metadata"]["name"]);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert!(hpa["spec"]["minReplicas"].as_i64().unwrap() >= 2);
    // The lag example names the metric the service exports.
    let text = read(&format!("{BASE}/hpa.yaml"));
    assert!(text.contains("name: kafka_consumer_lag_messages"));
    assert!(read("src/metrics/build.rs").contains("kafka_consumer_lag_messages"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_keep_a_pod_running_but_out_of_the_service_while_mongodb_is_down() {
    let c = container();
    let live_path = c["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let readiness = |url: String| async move {
        let mut client = HealthClient::new(channel(&url).await);
        client
            .check(HealthCheckRequest {
                service: READINESS_SERVICE.into(),
            })
            .await
            .expect("the readiness service is known to gRPC health")
            .into_inner()
            .status()
    };

    // MongoDB unreachable: readiness NOT_SERVING (out of the Service), liveness 200
    // (not restarted).
    let down = spawn_app_with_unreachable_mongodb().await;
    assert_eq!(
        readiness(down.grpc_url.clone()).await,
        ServingStatus::NotServing
    );
    let (code, _) = get(&format!("{}{live_path}", down.http_url)).await;
    assert_eq!(code, 200, "liveness fails while MongoDB is down");
    down.shutdown.cancel();
    down.handle.await.unwrap();

    // MongoDB reachable: both pass.
    let up = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    up.wait_serving().await;
    let url = up.grpc_url.clone();
    wait_until(Duration::from_secs(30), "readiness SERVING", || {
        let url = url.clone();
        async move { readiness(url).await == ServingStatus::Serving }
    })
    .await;
    let (code, _) = get(&format!("{}{live_path}", up.http_url)).await;
    assert_eq!(code, 200);
    up.stop().await;
}
