"""Structural checks of the rendered kustomizations (what the API server cannot tell: the issue's requirements).

    python check_manifests.py BASE.yaml DEV.yaml OPENSHIFT.yaml

Each file is the output of `kubectl kustomize` of k8s/base, k8s/overlays/dev, k8s/overlays/openshift. Prints
one line per problem and exits 1 if there is any.
"""

import sys

import yaml

NAMESPACE = "lm-eval-aas"
SERVICE_LABELS = {"app.kubernetes.io/name": "lm-eval-aas", "app.kubernetes.io/component": "service"}
RUNNER_SELECTOR = {"app.kubernetes.io/managed-by": "lm-eval-aas"}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                  "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"}

problems = []


def check(ok, message):
    if not ok:
        problems.append(message)
    return ok


def load(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return docs, by_kind


def one(by_kind, kind, name, where):
    obj = by_kind.get(kind, {}).get(name)
    check(obj is not None, f"{where}: no {kind} {name}")
    return obj


def common(path, where, replicas, model_endpoints):
    docs, k = load(path)
    for d in docs:
        ns = d["metadata"].get("namespace")
        if d["kind"] in CLUSTER_SCOPED:
            check(ns is None, f"{where}: {d['kind']} {d['metadata']['name']} has a namespace")
        else:
            check(ns == NAMESPACE, f"{where}: {d['kind']} {d['metadata']['name']} is in namespace {ns!r}")

    namespace = one(k, "Namespace", NAMESPACE, where)
    if namespace:
        labels = namespace["metadata"].get("labels", {})
        check(labels.get("pod-security.kubernetes.io/enforce") == "restricted",
              f"{where}: Namespace lacks pod-security.kubernetes.io/enforce: restricted")

    # A runner may change only its run record's data (the service reads records by name and owner).
    one(k, "ValidatingAdmissionPolicy", "lm-eval-aas-run-records", where)
    one(k, "ValidatingAdmissionPolicyBinding", "lm-eval-aas-run-records", where)
    # Every Evaluation's creator and references are checked by the API server, whoever writes it.
    one(k, "MutatingAdmissionPolicy", "lm-eval-aas-creator", where)
    one(k, "MutatingAdmissionPolicyBinding", "lm-eval-aas-creator", where)
    one(k, "ValidatingAdmissionPolicy", "lm-eval-aas-evaluations", where)
    one(k, "ValidatingAdmissionPolicyBinding", "lm-eval-aas-evaluations", where)

    # RBAC: both identities, and the subjects in the namespace.
    check("lm-eval-aas-runner" not in k.get("ServiceAccount", {}),
          f"{where}: a shared runner ServiceAccount (each evaluation's pod has its own identity)")
    for name in ("lm-eval-aas",):
        one(k, "ServiceAccount", name, where)
        one(k, "Role", name, where)
        binding = one(k, "RoleBinding", name, where)
        if binding:
            check(binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                  f"{where}: RoleBinding {name} refers to {binding['roleRef']}")
            check(binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
                  f"{where}: RoleBinding {name} subjects {binding['subjects']}")

    # Users: the ClusterRoles operators bind, aggregated into view/edit/admin; the service may review tokens.
    for role, aggregate in (("viewer", "view"), ("editor", "edit"), ("admin", "admin")):
        cluster_role = one(k, "ClusterRole", f"lm-eval-aas-{role}", where)
        if cluster_role:
            labels = cluster_role["metadata"].get("labels", {})
            check(labels.get(f"rbac.authorization.k8s.io/aggregate-to-{aggregate}") == "true",
                  f"{where}: ClusterRole lm-eval-aas-{role} is not aggregated to {aggregate}")
            verbs = {v for rule in cluster_role["rules"] for v in rule["verbs"]}
            check(("create" in verbs) == (role != "viewer"), f"{where}: lm-eval-aas-{role} verbs {sorted(verbs)}")
    delegator = one(k, "ClusterRoleBinding", "lm-eval-aas-auth-delegator", where)
    if delegator:
        check(delegator["roleRef"]["name"] == "system:auth-delegator", f"{where}: auth delegator {delegator['roleRef']}")
        check(delegator["subjects"] == [{"kind": "ServiceAccount", "name": "lm-eval-aas", "namespace": NAMESPACE}],
              f"{where}: auth delegator subjects {delegator['subjects']}")

    deployment = one(k, "Deployment", "lm-eval-aas", where)
    if not deployment:
        return k, None
    spec = deployment["spec"]
    check(spec.get("replicas") == replicas, f"{where}: Deployment replicas {spec.get('replicas')}, want {replicas}")
    check(spec["selector"]["matchLabels"] == SERVICE_LABELS, f"{where}: Deployment selector {spec['selector']}")
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    check(not any(labels.get(key) == value for key, value in RUNNER_SELECTOR.items()),
          f"{where}: service pods carry the runner label {RUNNER_SELECTOR}")
    check(pod.get("serviceAccountName") == "lm-eval-aas", f"{where}: serviceAccountName {pod.get('serviceAccountName')}")
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot is not true")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: pod seccompProfile not RuntimeDefault")
    spread = pod.get("topologySpreadConstraints", [])
    check(any(c.get("topologyKey") == "kubernetes.io/hostname" and c.get("labelSelector", {}).get("matchLabels") == SERVICE_LABELS
              for c in spread), f"{where}: no topologySpreadConstraint across nodes (kubernetes.io/hostname)")
    (container,) = pod["containers"]
    check(container.get("command") == ["lm-eval-aas", "serve"], f"{where}: command {container.get('command')}")
    sc = container.get("securityContext", {})
    check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation is not false")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities.drop is not [ALL]")
    check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem is not true")
    check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{where}: container may run as root")
    check(container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{where}: liveness probe is not /healthz")
    check(container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{where}: readiness probe is not /readyz")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        check({"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: resources.{kind} lacks cpu or memory")

    # The configuration comes from the generated ConfigMap, whole; the output store's credentials, when an
    # operator makes them, from one optional Secret (the service's only; runner pods never get them).
    env_from = container.get("envFrom", [])
    check(len(env_from) in (1, 2) and "configMapRef" in env_from[0], f"{where}: envFrom is not the configMapRef first: {env_from}")
    if len(env_from) == 2:
        secret = env_from[1].get("secretRef", {})
        check(secret == {"name": "lm-eval-aas-output-store", "optional": True},
              f"{where}: envFrom's second source is not the optional Secret lm-eval-aas-output-store: {env_from[1]}")
    config = None
    if env_from and "configMapRef" in env_from[0]:
        config = one(k, "ConfigMap", env_from[0]["configMapRef"]["name"], where)
    if config:
        data = config["data"]
        check(data.get("LMEVAL_BACKEND") == "kubernetes", f"{where}: LMEVAL_BACKEND is {data.get('LMEVAL_BACKEND')!r}")
        check("LMEVAL_NAMESPACE" not in data, f"{where}: LMEVAL_NAMESPACE is set (the pod's own namespace is meant)")
        shutdown = int(data.get("LMEVAL_SHUTDOWN_TIMEOUT_SECONDS", "20"))
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        pre_stop += int(data.get("LMEVAL_SHUTDOWN_DELAY_SECONDS", "0"))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        check(grace > pre_stop + shutdown,
              f"{where}: terminationGracePeriodSeconds {grace} <= preStop + shutdown delay {pre_stop} + shutdown timeout {shutdown}")
        port = container["ports"][0]["containerPort"]
        check(data.get("LMEVAL_LISTEN", "").endswith(f":{port}"), f"{where}: LMEVAL_LISTEN {data.get('LMEVAL_LISTEN')} vs containerPort {port}")

    # The admission webhook: Evaluations only, served by these pods over TLS with a certificate from a Secret.
    webhook_config = one(k, "ValidatingWebhookConfiguration", "lm-eval-aas", where)
    if webhook_config:
        (hook,) = webhook_config["webhooks"]
        check(hook["rules"] == [{"apiGroups": ["lm-eval-aas.io"], "apiVersions": ["v1alpha1"],
                                 "operations": ["CREATE", "UPDATE"], "resources": ["evaluations"], "scope": "Namespaced"}],
              f"{where}: webhook rules {hook['rules']}")
        check(hook.get("sideEffects") == "None" and hook.get("failurePolicy") == "Ignore",
              f"{where}: webhook sideEffects/failurePolicy {hook.get('sideEffects')}/{hook.get('failurePolicy')}")
        check(hook["clientConfig"].get("path", "/validate-evaluations") == "/validate-evaluations"
              and hook["clientConfig"].get("url", "/validate-evaluations").endswith("/validate-evaluations"),
              f"{where}: webhook clientConfig {hook['clientConfig']}")
    if config:
        check(data.get("LMEVAL_WEBHOOK_CERT_FILE", "").endswith("/tls.crt") and data.get("LMEVAL_WEBHOOK_KEY_FILE", "").endswith("/tls.key"),
              f"{where}: the webhook's certificate is not configured")
        webhook_ports = [p["containerPort"] for p in container["ports"] if p.get("name") == "webhook"]
        check(len(webhook_ports) == 1 and data.get("LMEVAL_WEBHOOK_LISTEN", "").endswith(f":{webhook_ports[0]}"),
              f"{where}: LMEVAL_WEBHOOK_LISTEN {data.get('LMEVAL_WEBHOOK_LISTEN')} vs webhook containerPort {webhook_ports}")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        cert_dir = data.get("LMEVAL_WEBHOOK_CERT_FILE", "").rsplit("/", 1)[0]
        volume = next((v for v in pod.get("volumes", []) if v["name"] == mounts.get(cert_dir)), None)
        check(volume is not None and volume.get("secret", {}).get("secretName") == "lm-eval-aas-webhook-tls",
              f"{where}: {cert_dir} is not Secret lm-eval-aas-webhook-tls")

    service = one(k, "Service", "lm-eval-aas", where)
    if service:
        check(service["spec"]["selector"] == SERVICE_LABELS, f"{where}: Service selector {service['spec']['selector']}")
    pdb = one(k, "PodDisruptionBudget", "lm-eval-aas", where)
    if pdb:
        check(pdb["spec"]["selector"]["matchLabels"] == SERVICE_LABELS, f"{where}: PDB selector {pdb['spec']['selector']}")

    policies = k.get("NetworkPolicy", {})
    service_policy = one(k, "NetworkPolicy", "lm-eval-aas", where)
    if service_policy:
        check(service_policy["spec"]["podSelector"].get("matchLabels") == SERVICE_LABELS, f"{where}: service NetworkPolicy selector")
        check(set(service_policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, f"{where}: service NetworkPolicy policyTypes")
        ingress = service_policy["spec"].get("ingress", [])
        http = [rule for rule in ingress if any(p.get("port") == "http" for p in rule.get("ports", []))]
        check(len(http) == 1 and http[0].get("from") and all("namespaceSelector" in peer for peer in http[0]["from"]),
              f"{where}: service ingress is not from the ingress controller's namespace only: {ingress}")
        # The API server calls the webhook from addresses no selector names: those single addresses, to that port
        # only, never every pod (a pod that stalls the webhook's connections makes failurePolicy Ignore admit).
        others = [rule for rule in ingress if rule not in http]
        check(all(p.get("port") == "webhook" for rule in others for p in rule.get("ports", [{}])) and all(r.get("ports") for r in others),
              f"{where}: service ingress opens more than the webhook port: {others}")
        check(others and all(rule.get("from") and all(
                  "ipBlock" in peer and peer["ipBlock"]["cidr"].endswith(("/32", "/128")) and not peer["ipBlock"].get("except")
                  for peer in rule["from"]) for rule in others),
              f"{where}: the webhook port is not admitted from the API server's addresses only: {others}")
        check(any(p.get("port") in (443, 6443) for rule in service_policy["spec"].get("egress", []) for p in rule.get("ports", [])),
              f"{where}: the service may not reach the API server")
    check_runner_egress(k, where, model_endpoints)
    check(len(policies) >= 3, f"{where}: NetworkPolicies {sorted(policies)}")
    return k, pod


def selects_runner_pods(policy):
    """Whether `policy` applies to runner pods (labelled RUNNER_SELECTOR plus their evaluation id)."""
    selector = policy["spec"].get("podSelector", {})
    if selector.get("matchExpressions"):
        return True  # not worth evaluating: count it as applying, so its rules are checked
    return all(RUNNER_SELECTOR.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def narrow_peer(peer):
    """Why `peer` lets runner pods reach too much, or None: every address, every namespace, or pods of this
    namespace (the service's)."""
    if "ipBlock" in peer:
        prefix = int(peer["ipBlock"]["cidr"].rsplit("/", 1)[1])
        return "every address" if prefix == 0 else None
    selector = peer.get("namespaceSelector")
    if selector is None:
        return "this namespace's pods"
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return "every namespace"
    return None


def check_runner_egress(k, where, model_endpoints):
    """Runner pods run code that comes with requests: out only to the cluster DNS, the API server (addresses,
    ports 443/6443) and the model endpoints of NetworkPolicy lm-eval-aas-runner-model-endpoints, which must be
    exactly `model_endpoints`; nothing in."""
    runner = [p for p in k.get("NetworkPolicy", {}).values() if selects_runner_pods(p)]
    for policy in runner:
        name = policy["metadata"]["name"]
        check(not policy["spec"].get("ingress"), f"{where}: NetworkPolicy {name} admits ingress to runner pods")
        for rule in policy["spec"].get("egress", []):
            if not check(rule.get("to"), f"{where}: NetworkPolicy {name} lets runner pods reach every address: {rule}"):
                continue
            for peer in rule["to"]:
                why = narrow_peer(peer)
                check(why is None, f"{where}: NetworkPolicy {name} lets runner pods reach {why}: {peer}")
            if name == "lm-eval-aas-runner-model-endpoints":
                continue
            ports = {p.get("port") for p in rule.get("ports", [])}
            dns = bool(ports) and ports <= {53, 5353} and all("podSelector" in peer for peer in rule["to"])
            api_server = bool(ports) and ports <= {443, 6443} and all(
                "ipBlock" in peer and peer["ipBlock"]["cidr"].endswith(("/32", "/128")) and not peer["ipBlock"].get("except")
                for peer in rule["to"])
            check(dns or api_server,
                  f"{where}: NetworkPolicy {name} lets runner pods reach more than DNS, the API server and the model "
                  f"endpoints' list: {rule}")
    policy = one(k, "NetworkPolicy", "lm-eval-aas-runner", where)
    if policy:
        check(policy["spec"]["podSelector"].get("matchLabels") == RUNNER_SELECTOR, f"{where}: runner NetworkPolicy selector")
        check(set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, f"{where}: runner NetworkPolicy policyTypes")
        check(any({"protocol": "UDP", "port": 53} in rule.get("ports", []) and rule.get("to")
                  for rule in policy["spec"].get("egress", [])),
              f"{where}: runner pods may not resolve names (no UDP 53 to the cluster DNS)")
    endpoints = one(k, "NetworkPolicy", "lm-eval-aas-runner-model-endpoints", where)
    if endpoints:
        check(endpoints["spec"]["podSelector"].get("matchLabels") == RUNNER_SELECTOR,
              f"{where}: model endpoints NetworkPolicy selector")
        check(endpoints["spec"].get("policyTypes") == ["Egress"], f"{where}: model endpoints NetworkPolicy policyTypes")
        check(endpoints["spec"].get("egress", []) == model_endpoints,
              f"{where}: model endpoints {endpoints['spec'].get('egress')}, want the documented list {model_endpoints}")


def main(base, dev, openshift):
    # The model endpoints' list is the operator's (k8s/README.md): empty as shipped, loopback in dev.
    k, _ = common(base, "base", 2, [])
    ingress = one(k, "Ingress", "lm-eval-aas", "base")
    if ingress:
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        check(backend["name"] == "lm-eval-aas", f"base: Ingress backend {backend}")
    check("Route" not in k, "base: has a Route")
    policy = k.get("NetworkPolicy", {}).get("lm-eval-aas")
    if policy:
        peers = policy["spec"]["ingress"][0]["from"]
        check(peers == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
              f"base: service ingress peers {peers}")

    common(dev, "dev", 1, [{"to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}]}])

    k, pod = common(openshift, "openshift", 2, [])
    check("Ingress" not in k, "openshift: still has the Ingress")
    route = one(k, "Route", "lm-eval-aas", "openshift")
    if route:
        check(route["apiVersion"] == "route.openshift.io/v1", f"openshift: Route apiVersion {route['apiVersion']}")
        check(route["spec"]["to"] == {"kind": "Service", "name": "lm-eval-aas", "weight": 100}, f"openshift: Route to {route['spec']['to']}")
    if pod:
        fixed = [f"{where}.{key}" for where, sc in [("pod", pod.get("securityContext", {}))] +
                 [(c["name"], c.get("securityContext", {})) for c in pod["containers"]]
                 for key in ("runAsUser", "runAsGroup", "fsGroup") if key in sc]
        check(not fixed, f"openshift: fixed IDs left for restricted-v2 to reject: {fixed}")

    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
