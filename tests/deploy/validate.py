#!/usr/bin/env python3
"""Validates every manifest wonk ships, offline (run by tests/deploy.rs).

Each overlay under deploy/overlays is rendered with `kubectl kustomize`; every object is validated against the
Kubernetes OpenAPI schemas that kubernetes-validate (PyPI) ships, strictly (unknown fields are errors), and the
Prometheus Operator's objects against the operator's own CRD schemas (tests/fixtures/crds, copied from
prometheus-operator's example/prometheus-operator-crd, version in their annotations). Then what the schemas cannot
say: the ServiceMonitor honours wonk's labels, the namespace admits privileged pods, the DaemonSet runs on Linux
nodes with a PriorityClass that exists, every ConfigMap a pod mounts is rendered, and the PrometheusRule holds
deploy/prometheus/wonk-rules.yaml's groups.

    validate.py REPO            prints one line per object, exits 1 on the first overlay with errors
    validate.py REPO --broken   proves the validation bites: each of a few broken copies must be refused
"""
import copy
import json
import os
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.31.0"


def render(repo, overlay):
    out = subprocess.run(
        ["kubectl", "kustomize", os.path.join(repo, "deploy", "overlays", overlay)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def crd_schemas(repo):
    schemas = {}
    d = os.path.join(repo, "tests", "fixtures", "crds")
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name)) as f:
            crd = yaml.safe_load(f)
        for v in crd["spec"]["versions"]:
            key = (crd["spec"]["group"] + "/" + v["name"], crd["spec"]["names"]["kind"])
            schemas[key] = v["schema"]["openAPIV3Schema"]
    return schemas


def strict(schema):
    """The CRD schema, refusing fields it does not declare (as the API server prunes them silently)."""
    s = copy.deepcopy(schema)

    def walk(n):
        if isinstance(n, dict):
            if n.get("type") == "object" and "properties" in n and "additionalProperties" not in n \
                    and not n.get("x-kubernetes-preserve-unknown-fields"):
                n["additionalProperties"] = False
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(s)
    # metadata is the API server's: an ObjectMeta, not described in the CRD.
    s["properties"]["metadata"] = {"type": "object"}
    return s


def errors_of(doc, schemas):
    """Schema errors of one object."""
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if (api, kind) in schemas:
        v = jsonschema.Draft7Validator(strict(schemas[(api, kind)]))
        return ["%s: %s" % ("/".join(map(str, e.absolute_path)), e.message) for e in v.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return []
    except kubernetes_validate.ValidationError as e:
        return ["%s: %s" % ("/".join(map(str, e.path)), e.message)]
    except kubernetes_validate.SchemaNotFoundError as e:
        return ["no schema for %s %s: %s" % (api, kind, e)]


def find(docs, kind, name=None):
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def semantics(repo, overlay, docs):
    """What the schemas cannot check."""
    errs = []
    for sm in find(docs, "ServiceMonitor"):
        for i, ep in enumerate(sm["spec"]["endpoints"]):
            if ep.get("honorLabels") is not True:
                errs.append("ServiceMonitor %s endpoint %d: honorLabels must be true, or every alert names the "
                            "wonk pod instead of the finding's" % (sm["metadata"]["name"], i))
    classes = {d["metadata"]["name"] for d in find(docs, "PriorityClass")}
    configmaps = {d["metadata"]["name"] for d in find(docs, "ConfigMap")}
    namespaces = {d["metadata"]["name"]: d for d in find(docs, "Namespace")}
    for ds in find(docs, "DaemonSet"):
        spec = ds["spec"]["template"]["spec"]
        ns = ds["metadata"].get("namespace")
        pc = spec.get("priorityClassName")
        if pc and pc not in classes and not (pc.startswith("system-") and ns == "kube-system"):
            errs.append("DaemonSet %s: priorityClassName %s is neither rendered nor a system class in kube-system"
                        % (ds["metadata"]["name"], pc))
        for v in spec.get("volumes", []):
            cm = v.get("configMap", {}).get("name")
            if cm and cm not in configmaps:
                errs.append("DaemonSet %s: volume %s mounts ConfigMap %s, which is not rendered"
                            % (ds["metadata"]["name"], v["name"], cm))
        images = [c["image"] for c in spec.get("containers", []) + spec.get("initContainers", [])]
        if any("wonk" in i and ":" not in i.rsplit("/", 1)[-1] for i in images):
            errs.append("DaemonSet %s: wonk's image has no tag: %s" % (ds["metadata"]["name"], images))
        if ds["metadata"]["name"] == "wonk":
            if spec.get("nodeSelector", {}).get("kubernetes.io/os") != "linux":
                errs.append("DaemonSet wonk: nodeSelector kubernetes.io/os: linux")
            n = namespaces.get(ns)
            if n is None or n["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "privileged":
                errs.append("namespace %s: must be rendered with pod-security.kubernetes.io/enforce: privileged" % ns)
        if any(c.get("name") == "wonk-install" for c in spec.get("initContainers", [])):
            init = [c for c in spec["initContainers"] if c["name"] == "wonk-install"][0]
            to = init["args"][init["args"].index("--to") + 1]
            main = spec["containers"][0]
            mounts = {m["mountPath"]: m["name"] for m in main.get("volumeMounts", [])}
            if to not in mounts or mounts[to] not in {m["name"] for m in init["volumeMounts"]}:
                errs.append("DaemonSet %s: NPD does not mount the volume wonk is installed into" % ds["metadata"]["name"])
            if not spec.get("hostPID") or "/host" not in mounts:
                errs.append("DaemonSet %s: wonk check needs hostPID and the host's / at /host" % ds["metadata"]["name"])
            for cm in find(docs, "ConfigMap"):
                for name, text in cm.get("data", {}).items():
                    cfg = json.loads(text)
                    rules = cfg["rules"]
                    if any(r["type"] == "temporary" and any(p["args"] == r["args"] for p in rules
                                                              if p["type"] == "permanent") for r in rules):
                        errs.append("%s: a temporary rule runs a permanent rule's check a second time" % name)
                    for r in rules:
                        if not r["path"].startswith(to + "/"):
                            errs.append("%s: runs %s, not the binary installed in %s" % (name, r["path"], to))
    with open(os.path.join(repo, "deploy", "prometheus", "wonk-rules.yaml")) as f:
        groups = yaml.safe_load(f)["groups"]
    for pr in find(docs, "PrometheusRule"):
        if pr["spec"]["groups"] != groups:
            errs.append("PrometheusRule %s: groups differ from deploy/prometheus/wonk-rules.yaml" % pr["metadata"]["name"])
    return errs


def check(repo, overlay, docs, schemas):
    errs = []
    for d in docs:
        for e in errors_of(d, schemas):
            errs.append("%s %s/%s: %s" % (overlay, d.get("kind"), d.get("metadata", {}).get("name"), e))
    return errs + ["%s: %s" % (overlay, e) for e in semantics(repo, overlay, docs)]


def main():
    repo = sys.argv[1]
    schemas = crd_schemas(repo)
    overlays = sorted(os.listdir(os.path.join(repo, "deploy", "overlays")))
    rendered = {o: render(repo, o) for o in overlays}
    if sys.argv[2:] == ["--broken"]:
        docs = rendered["kube-prometheus-stack"]
        breakages = {
            "honorLabels off": lambda ds: find(ds, "ServiceMonitor")[0]["spec"]["endpoints"][0].pop("honorLabels"),
            "ServiceMonitor field misspelt": lambda ds: find(ds, "ServiceMonitor")[0]["spec"]["endpoints"][0]
                .update({"honourLabels": True}),
            "PrometheusRule expr not a string": lambda ds: find(ds, "PrometheusRule")[0]["spec"]["groups"][0]
                ["rules"][0].update({"expr": {"a": 1}}),
            "DaemonSet field misspelt": lambda ds: find(ds, "DaemonSet")[0]["spec"]["template"]["spec"]
                .update({"hostPid": True}),
            "missing PriorityClass": lambda ds: ds.remove(find(ds, "PriorityClass")[0]),
            "namespace not privileged": lambda ds: find(ds, "Namespace")[0]["metadata"]["labels"].clear(),
        }
        for what, brk in breakages.items():
            broken = copy.deepcopy(docs)
            brk(broken)
            errs = check(repo, "kube-prometheus-stack", broken, schemas)
            print("%s: %s" % (what, errs[0] if errs else "NOT REFUSED"))
            if not errs:
                sys.exit(1)
        return
    failed = False
    for o in overlays:
        errs = check(repo, o, rendered[o], schemas)
        for d in rendered[o]:
            print("%s: %s %s/%s" % (o, d.get("apiVersion"), d.get("kind"), d["metadata"]["name"]))
        for e in errs:
            print("ERROR " + e)
        failed |= bool(errs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
