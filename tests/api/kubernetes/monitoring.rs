//! The manifests against the Kubernetes schemas, and the Prometheus Operator resources
//! against alerts.yml and promtool.
use super::*;

#[test]
fn every_manifest_passes_kubernetes_validate_in_strict_mode() {
    // Every YAML file under deploy/kubernetes is a kustomization, a listed resource or
    // the Secret's example, so nothing escapes validation.
    let mut listed: BTreeSet<String> = resources(BASE).into_iter().collect();
    listed.extend(resources(MONITORING));
    listed.insert(SECRET_EXAMPLE.into());
    for dir in [BASE, MONITORING] {
        for entry in std::fs::read_dir(repo_path(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                let rel = format!("{dir}/{name}");
                assert!(
                    name == "kustomization.yaml" || listed.contains(&rel),
                    "{rel} is in no kustomization's resources"
                );
            }
        }
    }
    assert!(
        !resources(BASE)
            .iter()
            .any(|f| f.ends_with("secret.example.yaml")),
        "the Secret's placeholder values must not be applied with the base"
    );

    // The base (no custom resources) and the Secret's example, against both ends.
    let mut files: Vec<PathBuf> = resources(BASE).iter().map(|f| repo_path(f)).collect();
    files.push(repo_path(SECRET_EXAMPLE));
    for version in [Some(OLDEST_KUBERNETES), None] {
        let out = kubernetes_validate(version, &files);
        let against = version.unwrap_or("the newest schemas it ships");
        assert_validated(&out, &files, against);
    }
}

#[test]
fn kubernetes_validate_rejects_a_misspelt_field_so_the_check_above_means_something() {
    let dir = scratch("k8s-typo");
    let bad = dir.join("deployment.yaml");
    let text = read(&format!("{BASE}/deployment.yaml"));
    assert!(text.contains("readinessProbe:"));
    std::fs::write(&bad, text.replace("readinessProbe:", "readinesProbe:")).unwrap();
    let out = kubernetes_validate(None, std::slice::from_ref(&bad));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("readinesProbe"),
        "{}",
        describe(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Checks the fields of a custom resource the operator reads, since kubernetes-validate
/// has no schema for it.
fn assert_operator_resource(o: &Value, kind: &str) {
    assert_eq!(o["apiVersion"], "monitoring.coreos.com/v1", "{kind}");
    assert_eq!(o["kind"], kind);
    assert_eq!(o["metadata"]["name"], "sales-ingest", "{kind}");
    let keys: BTreeSet<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["apiVersion", "kind", "metadata", "spec"]),
        "{kind}"
    );
}

#[test]
fn the_servicemonitor_and_prometheusrule_have_the_fields_the_operator_reads() {
    let sm = object("ServiceMonitor", "sales-ingest");
    assert_operator_resource(&sm, "ServiceMonitor");
    let spec = sm["spec"].as_object().unwrap();
    assert_eq!(
        spec.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["selector", "endpoints"])
    );
    let endpoints = sm["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    let ep = &endpoints[0];
    for key in ep.as_object().unwrap().keys() {
        assert!(
            ["port", "path", "interval", "scrapeTimeout"].contains(&key.as_str()),
            "ServiceMonitor endpoint field {key}"
        );
    }
    assert_eq!(ep["path"], "/metrics");
    let seconds = |v: &Value| -> u64 {
        v.as_str()
            .and_then(|s| s.strip_suffix('s'))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{v} is not a duration in seconds"))
    };
    assert!(seconds(&ep["scrapeTimeout"]) < seconds(&ep["interval"]));

    // It selects exactly one Service, and that Service has the endpoint's port: each
    // pod is scraped once, under the job name the alerts select.
    let selector = string_map(&sm["spec"]["selector"]["matchLabels"], "selector");
    let services: Vec<Value> = objects()
        .into_iter()
        .filter(|o| o["kind"] == "Service")
        .collect();
    let selected: Vec<&Value> = services
        .iter()
        .filter(|s| {
            let labels = string_map(&s["metadata"]["labels"], "labels");
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    assert_eq!(selected.len(), 1, "the ServiceMonitor selects one Service");
    let service = selected[0];
    assert_eq!(service["metadata"]["name"], "sales-ingest");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == ep["port"]),
        "the Service has no port {}",
        ep["port"]
    );
    for s in &services {
        if s["metadata"]["name"] != "sales-ingest" {
            assert!(
                !s["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == ep["port"]),
                "{} would be scraped too",
                s["metadata"]["name"]
            );
        }
    }
    let alerts = read("deploy/prometheus/alerts.yml");
    assert!(alerts.contains(r#"job="sales-ingest""#));

    let rule = object("PrometheusRule", "sales-ingest");
    assert_operator_resource(&rule, "PrometheusRule");
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    assert!(!groups.is_empty());
    for g in groups {
        assert!(g["name"].is_string(), "every group has a name");
        for r in g["rules"].as_array().expect("rules") {
            for key in r.as_object().unwrap().keys() {
                assert!(
                    ["alert", "record", "expr", "for", "labels", "annotations"]
                        .contains(&key.as_str()),
                    "rule field {key}"
                );
            }
            assert!(r["alert"].is_string() && r["expr"].is_string(), "{r}");
        }
    }
}

#[test]
fn the_prometheusrule_holds_exactly_the_groups_and_rules_of_alerts_yml() {
    let alerts = one_document("deploy/prometheus/alerts.yml");
    let rule = one_document(&format!("{MONITORING}/prometheusrule.yaml"));
    assert_eq!(
        rule["spec"], alerts,
        "the PrometheusRule's spec differs from alerts.yml: run scripts/gen-prometheusrule"
    );
    let names = |v: &Value| -> Vec<String> {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .map(|r| r["alert"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&rule["spec"]), names(&alerts));
    assert_eq!(names(&alerts).len(), 12);

    // The committed file is exactly what the generator writes.
    let out = run(
        Command::new(repo_path("scripts/gen-prometheusrule"))
            .arg("--check")
            .current_dir(repo()),
        PYTHON,
    );
    assert!(
        out.status.success(),
        "scripts/gen-prometheusrule --check (it runs .venv's Python with PyYAML, which \
         kubernetes-validate=={} brings: {PYTHON}):\n{}",
        kubernetes_validate_pin(),
        describe(&out)
    );
}

#[test]
fn promtool_accepts_the_prometheusrule_rules() {
    let rule = one_document(&format!("{MONITORING}/prometheusrule.yaml"));
    let dir = scratch("k8s-rules");
    let file = dir.join("rules.yml");
    std::fs::write(&file, serde_yaml_ng::to_string(&rule["spec"]).unwrap()).unwrap();
    let out = run(promtool().args(["check", "rules"]).arg(&file), PROMTOOL);
    assert!(
        out.status.success(),
        "promtool check rules: {}",
        describe(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 12 rules found"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}
