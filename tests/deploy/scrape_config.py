#!/usr/bin/env python3
"""Prints the Prometheus configuration the Prometheus Operator generates for wonk's ServiceMonitor, as rendered
from a kustomize overlay, scraping one static target (run by tests/fleet.rs).

    scrape_config.py REPO OVERLAY TARGET META_JSON RULES_FILE

The scrape job is the operator's for a ServiceMonitor endpoint (pkg/prometheus/promcfg.go; compare its golden
file pkg/prometheus/testdata/SettingHonorLabels.golden): honor_labels from the endpoint, the keep on the
endpoint's port name, the target labels it always adds (namespace, service, pod, container, job, endpoint), then
the endpoint's own relabelings. Kubernetes service discovery is replaced by a static target whose
`__meta_kubernetes_*` labels are META_JSON, so that the same relabelling runs without a cluster. The scrape and
evaluation intervals are 1 s, for the test.
"""
import json
import re
import subprocess
import sys

import yaml


def snake(k):
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k)


def main():
    repo, overlay, target, meta, rules = sys.argv[1:6]
    docs = yaml.safe_load_all(subprocess.run(
        ["kubectl", "kustomize", "%s/deploy/overlays/%s" % (repo, overlay)],
        check=True, capture_output=True, text=True).stdout)
    sm = [d for d in docs if d and d["kind"] == "ServiceMonitor"][0]
    ns, name = sm["metadata"]["namespace"], sm["metadata"]["name"]
    jobs = []
    for i, ep in enumerate(sm["spec"]["endpoints"]):
        relabel = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
            {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": ep["port"]},
            {"source_labels": ["__meta_kubernetes_endpoint_address_target_kind",
                               "__meta_kubernetes_endpoint_address_target_name"],
             "separator": ";", "regex": "Node;(.*)", "replacement": "${1}", "target_label": "node"},
            {"source_labels": ["__meta_kubernetes_endpoint_address_target_kind",
                               "__meta_kubernetes_endpoint_address_target_name"],
             "separator": ";", "regex": "Pod;(.*)", "replacement": "${1}", "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
            {"target_label": "endpoint", "replacement": ep["port"]},
        ]
        for r in ep.get("relabelings", []):
            relabel.append({snake(k): (v.lower() if k == "action" else v) for k, v in r.items()})
        jobs.append({
            "job_name": "serviceMonitor/%s/%s/%d" % (ns, name, i),
            "honor_labels": bool(ep.get("honorLabels", False)),
            "honor_timestamps": bool(ep.get("honorTimestamps", True)),
            "scrape_interval": "1s",
            "metrics_path": ep.get("path", "/metrics"),
            "static_configs": [{"targets": [target], "labels": json.loads(meta)}],
            "relabel_configs": relabel,
        })
    print(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules],
        "scrape_configs": jobs,
    }, sort_keys=False))


if __name__ == "__main__":
    main()
