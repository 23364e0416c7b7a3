//! The NetworkPolicy: it selects the Deployment's pods, admits traffic to the
//! container's two ports only, and leaves egress to the cluster.
use super::*;

#[test]
fn the_networkpolicy_admits_only_the_containers_ports_to_the_deployments_pods() {
    let d = deployment();
    let pod_labels = string_map(&d["spec"]["template"]["metadata"]["labels"], "pod labels");
    let np = object("NetworkPolicy", "sales-ingest");
    let selector = string_map(&np["spec"]["podSelector"]["matchLabels"], "podSelector");
    assert!(!selector.is_empty());
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));

    let container_ports: BTreeSet<String> = container()["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let rules = np["spec"]["ingress"].as_array().unwrap();
    let mut admitted = BTreeSet::new();
    for rule in rules {
        assert!(
            rule["from"].as_array().is_some_and(|f| !f.is_empty()),
            "every rule names its sources: {rule}"
        );
        for p in rule["ports"]
            .as_array()
            .expect("every rule names its ports")
        {
            assert_eq!(p["protocol"], "TCP");
            admitted.insert(p["port"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(admitted, container_ports);
    // Prometheus reaches the HTTP port from its namespace.
    let http = rules
        .iter()
        .find(|r| r["ports"][0]["port"] == "http")
        .unwrap();
    assert!(http["from"]
        .as_array()
        .unwrap()
        .iter()
        .any(
            |f| f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                == "monitoring"
        ));
}
