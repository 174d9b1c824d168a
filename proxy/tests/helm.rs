//! The Helm chart (`charts/weir`) with the real `helm` binary: lint (strict, several value
//! combinations, a wrong type rejected by the schema), and `helm template` output parsed into
//! k8s-openapi types: RBAC grants exactly what weir uses, probes hit the admin port the
//! container exposes, every rendered weir flag passes `weir --check`, pods are hardened.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{PodSpec, Service};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use weir_testsupport::process::tool;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/weir")
}

fn helm(args: &[&str]) -> std::process::Output {
    Command::new(tool("helm"))
        .args(args)
        .output()
        .expect("run helm")
}

/// `--set` pairs as helm arguments.
fn sets(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| ["--set".to_string(), (*v).to_string()])
        .collect()
}

#[test]
fn lint_passes_for_value_combinations_and_the_schema_rejects_wrong_types() {
    let chart = chart();
    let chart = chart.to_str().expect("utf8");
    for combination in [
        &[][..],
        &["kind=DaemonSet"],
        &["gatewayAPI.installCRDs=true"],
        &["fleet.enabled=true", "networkPolicy.enabled=true"],
        &["autoscaling.enabled=true"],
        &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.dashboard.enabled=true",
        ],
        &["ingressClass.name=edge", "ingressClass.default=true"],
        &[
            "controller.watchNamespace=shop",
            "networkPolicy.enabled=true",
        ],
        &[
            "service.type=NodePort",
            "service.externalTrafficPolicy=Local",
            "antiAffinity=hard",
        ],
    ] {
        let mut args = vec![
            "lint".to_string(),
            "--strict".to_string(),
            chart.to_string(),
        ];
        args.extend(sets(combination));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm lint {combination:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (wrong, complaint) in [
        ("replicaCount=two", "/replicaCount"),
        ("controller.logFormat=xml", "/controller/logFormat"),
        ("ports.admin=70000", "/ports/admin"),
        ("antiAffinity=maybe", "/antiAffinity"),
    ] {
        let out = helm(&["lint", "--strict", chart, "--set", wrong]);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{wrong} passed lint");
        assert!(text.contains(complaint), "{wrong}: {text}");
    }
}

/// Rendered objects, as JSON values (one per YAML document).
fn render(values: &[&str]) -> Vec<serde_json::Value> {
    let chart = chart();
    let mut args = vec![
        "template".to_string(),
        "edge".to_string(),
        chart.to_str().expect("utf8").to_string(),
        "--namespace".to_string(),
        "ingress".to_string(),
    ];
    args.extend(sets(values));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn of_kind<T: serde::de::DeserializeOwned>(objects: &[serde_json::Value], kind: &str) -> Vec<T> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| serde_json::from_value(o.clone()).unwrap_or_else(|e| panic!("{kind}: {e}")))
        .collect()
}

/// Every (apiGroup, resource, verb) a list of rules grants.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn set(items: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

/// What weir does in a namespace it watches.
fn namespaced_grants() -> BTreeSet<(String, String, String)> {
    set(&[
        ("networking.k8s.io", "ingresses", &["get", "list", "watch"]),
        ("networking.k8s.io", "ingresses/status", &["update"]),
        ("", "services", &["get", "list", "watch"]),
        ("", "secrets", &["get", "list", "watch"]),
        (
            "discovery.k8s.io",
            "endpointslices",
            &["get", "list", "watch"],
        ),
        ("events.k8s.io", "events", &["create", "patch"]),
        (
            "gateway.networking.k8s.io",
            "gateways",
            &["get", "list", "watch"],
        ),
        (
            "gateway.networking.k8s.io",
            "httproutes",
            &["get", "list", "watch"],
        ),
        (
            "gateway.networking.k8s.io",
            "grpcroutes",
            &["get", "list", "watch"],
        ),
        (
            "gateway.networking.k8s.io",
            "referencegrants",
            &["get", "list", "watch"],
        ),
        (
            "gateway.networking.k8s.io",
            "backendlbpolicies",
            &["get", "list", "watch"],
        ),
        ("gateway.networking.k8s.io", "gateways/status", &["update"]),
        (
            "gateway.networking.k8s.io",
            "httproutes/status",
            &["update"],
        ),
        (
            "gateway.networking.k8s.io",
            "grpcroutes/status",
            &["update"],
        ),
        (
            "gateway.networking.k8s.io",
            "backendlbpolicies/status",
            &["update"],
        ),
        ("weir.dev", "balancerpolicies", &["get", "list", "watch"]),
        ("weir.dev", "balancerpolicies/status", &["update"]),
    ])
}

fn class_grants() -> BTreeSet<(String, String, String)> {
    set(&[
        (
            "networking.k8s.io",
            "ingressclasses",
            &["get", "list", "watch"],
        ),
        (
            "gateway.networking.k8s.io",
            "gatewayclasses",
            &["get", "list", "watch"],
        ),
        (
            "gateway.networking.k8s.io",
            "gatewayclasses/status",
            &["update"],
        ),
        ("", "namespaces", &["get", "list", "watch"]),
    ])
}

fn lease_grants() -> BTreeSet<(String, String, String)> {
    set(&[(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    )])
}

/// Checks a pod spec weir runs in; returns weir's arguments.
fn check_pod(pod: &PodSpec, shutdown_and_drain: i64) -> Vec<String> {
    let security = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert!(pod.termination_grace_period_seconds.unwrap_or(30) > shutdown_and_drain);
    let [container] = pod.containers.as_slice() else {
        panic!("one container expected");
    };
    let sc = container
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_ne!(sc.privileged, Some(true));
    let drop = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.clone())
        .unwrap_or_default();
    assert_eq!(drop, ["ALL"]);
    assert!(sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .is_none_or(|a| a.is_empty()));

    // Probes point at the admin port the container exposes, which is the one weir listens on.
    let ports = container.ports.clone().unwrap_or_default();
    let admin = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("admin"))
        .expect("admin port");
    let args = container.args.clone().unwrap_or_default();
    assert!(
        args.contains(&format!("--admin-listen=0.0.0.0:{}", admin.container_port)),
        "{args:?}"
    );
    for (probe, path) in [
        (&container.liveness_probe, "/healthz"),
        (&container.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("http probe");
        assert_eq!(get.path.as_deref(), Some(path));
        let port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => Some(*n),
        };
        assert_eq!(port, Some(admin.container_port), "{path} probe");
    }
    args
}

/// Every rendered flag is accepted by the weir binary itself.
fn weir_check(args: &[String]) {
    // As the kubelet does: `$(POD_IP)` becomes the pod's address.
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("$(POD_IP)", "10.1.2.3"))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("--check")
        .args(&args)
        .output()
        .expect("run weir --check");
    assert!(
        out.status.success(),
        "weir --check {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "weir: configuration is valid"
    );
}

#[test]
fn the_rendered_chart_is_least_privilege_hardened_and_runs_weir_with_valid_flags() {
    // Defaults.
    let objects = render(&[]);
    let cluster_roles: Vec<ClusterRole> = of_kind(&objects, "ClusterRole");
    let roles: Vec<Role> = of_kind(&objects, "Role");
    let [cluster_role] = cluster_roles.as_slice() else {
        panic!("one ClusterRole");
    };
    let [lease_role] = roles.as_slice() else {
        panic!("one Role");
    };
    let mut expected = namespaced_grants();
    expected.extend(class_grants());
    assert_eq!(
        grants(cluster_role.rules.as_deref().unwrap_or_default()),
        expected
    );
    assert_eq!(
        grants(lease_role.rules.as_deref().unwrap_or_default()),
        lease_grants()
    );
    assert_eq!(lease_role.metadata.namespace.as_deref(), Some("ingress"));

    let deployments: Vec<Deployment> = of_kind(&objects, "Deployment");
    let pod = deployments[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let args = check_pod(pod, 10 + 30);
    assert!(
        args.contains(&"--publish-service=ingress/edge-weir".to_string()),
        "{args:?}"
    );
    weir_check(&args);

    let services: Vec<Service> = of_kind(&objects, "Service");
    let public = services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("edge-weir"))
        .and_then(|s| s.spec.clone())
        .expect("service");
    assert_eq!(public.type_.as_deref(), Some("LoadBalancer"));
    let ports: Vec<(i32, String)> = public
        .ports
        .unwrap_or_default()
        .iter()
        .map(|p| (p.port, format!("{:?}", p.target_port)))
        .collect();
    assert_eq!(ports.len(), 2);
    assert!(ports.iter().any(|(p, t)| *p == 80 && t.contains("http")));
    assert!(ports.iter().any(|(p, t)| *p == 443 && t.contains("https")));
    let classes: Vec<IngressClass> = of_kind(&objects, "IngressClass");
    assert_eq!(
        classes[0]
            .spec
            .as_ref()
            .and_then(|s| s.controller.as_deref()),
        Some("weir.dev/ingress-controller")
    );
    assert_eq!(
        of_kind::<serde_json::Value>(&objects, "PodDisruptionBudget").len(),
        1
    );

    // A DaemonSet watching one namespace, every option on: namespaced reads move to a Role
    // in that namespace, the ClusterRole keeps only the classes (Ingress and Gateway).
    let objects = render(&[
        "kind=DaemonSet",
        "controller.watchNamespace=shop",
        "controller.defaultCertificate=ingress/default-tls",
        "controller.otlpEndpoint=http://collector.monitoring:4318",
        "controller.endpointMetrics=true",
        "controller.threads=4",
        "controller.logLevel=info\\,weir::access=off",
        "controller.extraArgs={--reload-debounce=2s}",
        "metrics.serviceMonitor.enabled=true",
        "metrics.dashboard.enabled=true",
        "networkPolicy.enabled=true",
    ]);
    let cluster_roles: Vec<ClusterRole> = of_kind(&objects, "ClusterRole");
    assert_eq!(
        grants(cluster_roles[0].rules.as_deref().unwrap_or_default()),
        class_grants()
    );
    let roles: Vec<Role> = of_kind(&objects, "Role");
    let shop = roles
        .iter()
        .find(|r| r.metadata.namespace.as_deref() == Some("shop"))
        .expect("Role in the watched namespace");
    assert_eq!(
        grants(shop.rules.as_deref().unwrap_or_default()),
        namespaced_grants()
    );
    let daemonsets: Vec<DaemonSet> = of_kind(&objects, "DaemonSet");
    let pod = daemonsets[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let args = check_pod(pod, 10 + 30);
    for flag in [
        "--watch-namespace=shop",
        "--default-certificate=ingress/default-tls",
        "--endpoint-metrics",
        "--threads=4",
        "--reload-debounce=2s",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
    }
    weir_check(&args);
    assert!(of_kind::<serde_json::Value>(&objects, "PodDisruptionBudget").is_empty());
    let dashboards: Vec<serde_json::Value> = of_kind(&objects, "ConfigMap");
    assert!(dashboards[0]["data"]["weir.json"]
        .as_str()
        .is_some_and(|d| d.contains("weir_requests_total")));
}

/// The chart's CRDs: weir's BalancerPolicy always (in `crds/`, as Helm installs CRDs), and
/// Gateway API's kinds only with `gatewayAPI.installCRDs`, each with one storage version and
/// a status subresource (weir writes status), kept when the release is deleted.
#[test]
fn the_chart_ships_weirs_crd_and_optionally_gateway_apis() {
    let names_of = |objects: &[serde_json::Value]| -> Vec<String> {
        objects
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .filter_map(|o| o.pointer("/metadata/name").and_then(|n| n.as_str()))
            .map(str::to_string)
            .collect()
    };
    assert!(
        names_of(&render(&[])).is_empty(),
        "CRDs rendered by default"
    );
    let objects = render(&["gatewayAPI.installCRDs=true"]);
    let mut names = names_of(&objects);
    names.sort();
    assert_eq!(
        names,
        [
            "backendlbpolicies.gateway.networking.k8s.io",
            "gatewayclasses.gateway.networking.k8s.io",
            "gateways.gateway.networking.k8s.io",
            "grpcroutes.gateway.networking.k8s.io",
            "httproutes.gateway.networking.k8s.io",
            "referencegrants.gateway.networking.k8s.io",
        ]
    );
    for crd in objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
    {
        let versions = crd
            .pointer("/spec/versions")
            .and_then(|v| v.as_array())
            .expect("versions");
        let stored = versions.iter().filter(|v| v["storage"] == true).count();
        assert_eq!(stored, 1, "{crd}");
        assert!(
            versions
                .iter()
                .all(|v| v.pointer("/subresources/status").is_some()),
            "{crd}"
        );
        assert_eq!(
            crd.pointer("/metadata/annotations/helm.sh~1resource-policy"),
            Some(&serde_json::json!("keep"))
        );
    }
    let scope = |name: &str| {
        objects
            .iter()
            .find(|o| o.pointer("/metadata/name") == Some(&serde_json::json!(name)))
            .and_then(|o| o.pointer("/spec/scope").cloned())
    };
    assert_eq!(
        scope("gatewayclasses.gateway.networking.k8s.io"),
        Some(serde_json::json!("Cluster"))
    );
    assert_eq!(
        scope("httproutes.gateway.networking.k8s.io"),
        Some(serde_json::json!("Namespaced"))
    );

    // weir's own CRD, from crds/.
    let crd_path = chart().join("crds/balancerpolicies.weir.dev.yaml");
    let text = std::fs::read_to_string(&crd_path).expect("BalancerPolicy CRD");
    let crd: serde_json::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(
        crd.pointer("/spec/group"),
        Some(&serde_json::json!("weir.dev"))
    );
    assert_eq!(
        crd.pointer("/spec/names/plural"),
        Some(&serde_json::json!("balancerpolicies"))
    );
    assert_eq!(
        crd.pointer("/spec/versions/0/name"),
        Some(&serde_json::json!("v1alpha1"))
    );
    let out = helm(&[
        "template",
        "edge",
        chart().to_str().expect("utf8"),
        "--include-crds",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("name: balancerpolicies.weir.dev"));
}

/// `fleet.enabled`: weir gossips with the other pods, found through a headless Service that
/// lists them ready or not, with a key from a Secret the chart makes (or one given), and a
/// NetworkPolicy rule that lets only weir's pods reach the gossip port.
#[test]
fn the_fleet_is_wired_with_a_headless_service_a_key_and_a_policy() {
    let objects = render(&["fleet.enabled=true", "networkPolicy.enabled=true"]);
    let deployments: Vec<Deployment> = of_kind(&objects, "Deployment");
    let pod = deployments[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let args = check_pod(pod, 10 + 30);
    for expected in [
        "--fleet-listen=0.0.0.0:7946",
        "--fleet-advertise=$(POD_IP)",
        "--peers=edge-weir-fleet.ingress.svc:7946",
        "--fleet-secret-file=/etc/weir/fleet/key",
    ] {
        assert!(args.contains(&expected.to_string()), "{expected}: {args:?}");
    }
    weir_check(&args);
    let container = &pod.containers[0];
    let env: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        env.contains(&"POD_IP") && env.contains(&"POD_NAME"),
        "{env:?}"
    );
    let mounted = container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path == "/etc/weir/fleet" && m.read_only == Some(true));
    assert!(mounted, "the key is mounted read-only");
    let secret_volume = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.clone());
    assert_eq!(secret_volume.as_deref(), Some("edge-weir-fleet"));

    let services: Vec<Service> = of_kind(&objects, "Service");
    let headless = services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("edge-weir-fleet"))
        .and_then(|s| s.spec.clone())
        .expect("headless Service");
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    let port = &headless.ports.unwrap_or_default()[0];
    assert_eq!((port.port, port.protocol.as_deref()), (7946, Some("UDP")));

    let secrets: Vec<k8s_openapi::api::core::v1::Secret> = of_kind(&objects, "Secret");
    let key = secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("edge-weir-fleet"))
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get("key"))
        .expect("the fleet's key");
    assert!(key.0.len() >= 16, "a key of {} bytes", key.0.len());

    let policies: Vec<k8s_openapi::api::networking::v1::NetworkPolicy> =
        of_kind(&objects, "NetworkPolicy");
    let rules = policies[0]
        .spec
        .as_ref()
        .and_then(|s| s.ingress.clone())
        .unwrap_or_default();
    let gossip = rules
        .iter()
        .find(|r| {
            r.ports
                .iter()
                .flatten()
                .any(|p| p.protocol.as_deref() == Some("UDP"))
        })
        .expect("a gossip rule");
    let from = gossip.from.clone().unwrap_or_default();
    assert_eq!(from.len(), 1);
    assert!(from[0].pod_selector.is_some(), "only weir's pods");

    // A given Secret: none is made, the pod mounts it.
    let objects = render(&["fleet.enabled=true", "fleet.existingSecret=my-key"]);
    let secrets: Vec<k8s_openapi::api::core::v1::Secret> = of_kind(&objects, "Secret");
    assert!(secrets.is_empty());
    let deployments: Vec<Deployment> = of_kind(&objects, "Deployment");
    let volume = deployments[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.volumes.clone())
        .unwrap_or_default();
    assert_eq!(
        volume[0]
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("my-key")
    );
}
