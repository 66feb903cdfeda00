//! The package in deploy/, offline: every kustomize overlay renders with `kubectl kustomize`, and every object
//! validates against the Kubernetes schemas (kubernetes-validate) or the Prometheus Operator's CRD schemas
//! (tests/fixtures/crds), with what schemas cannot say checked besides (tests/deploy/validate.py); and the
//! validation refuses broken copies. `kubectl` is a client only here: no cluster.

#[macro_use]
mod common;

use std::path::Path;
use std::process::Command;

fn tools_or_skip(test: &str) -> bool {
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    let python = Command::new("python3")
        .args(["-c", "import kubernetes_validate, jsonschema, yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    common::present_or_skip(
        test,
        kubectl && python,
        "kubectl and python3 with kubernetes-validate (scripts/test installs them)",
    )
}

fn validate(extra: &[&str]) -> (bool, String) {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(Path::new(repo).join("tests/deploy/validate.py"))
        .arg(repo)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_overlay_renders_and_validates_offline() {
    if !tools_or_skip("every_overlay_renders_and_validates_offline") {
        return;
    }
    let (ok, out) = validate(&[]);
    assert!(ok, "{out}");
    for want in [
        "default: apps/v1 DaemonSet/wonk",
        "default: v1 Namespace/wonk",
        "default: scheduling.k8s.io/v1 PriorityClass/wonk-node-agent",
        "kube-prometheus-stack: monitoring.coreos.com/v1 ServiceMonitor/wonk",
        "kube-prometheus-stack: monitoring.coreos.com/v1 PrometheusRule/wonk",
        "npd: apps/v1 DaemonSet/node-problem-detector",
    ] {
        assert!(out.contains(want), "{want} not rendered:\n{out}");
    }
}

#[test]
fn the_validation_refuses_broken_manifests() {
    if !tools_or_skip("the_validation_refuses_broken_manifests") {
        return;
    }
    let (ok, out) = validate(&["--broken"]);
    assert!(ok, "{out}");
    assert!(!out.contains("NOT REFUSED"), "{out}");
    assert_eq!(out.lines().count(), 6, "{out}");
}

/// The kube-prometheus-stack overlay puts the release label on what that chart's Prometheus selects, and the
/// image on every container that runs wonk.
#[test]
fn overlays_set_release_labels_and_images() {
    if !tools_or_skip("overlays_set_release_labels_and_images") {
        return;
    }
    let render = |o: &str| {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("deploy/overlays")
                    .join(o),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let kps = render("kube-prometheus-stack");
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        let doc = kps
            .split("\n---\n")
            .find(|d| d.contains(&format!("kind: {kind}\n")))
            .unwrap();
        assert!(doc.contains("release: kube-prometheus-stack"), "{doc}");
    }
    assert!(kps.contains("image: registry.example/wonk:0.1.0"));
    let npd = render("npd");
    assert!(npd.contains("image: registry.example/wonk:0.1.0"), "{npd}");
    assert!(
        npd.contains("- install\n        - --to\n        - /opt/wonk\n"),
        "{npd}"
    );
}
