#!/usr/bin/env bash
# Acceptance test of the Kubernetes manifests (k8s/) against the real API server of a local test cluster
# (tests/cluster/README.md) that it starts and always stops:
#
#   - the three kustomizations render and meet the deployment's requirements (check_manifests.py);
#   - k8s/base, k8s/overlays/openshift (the Route through a minimal Route CRD, route-crd.yaml) and
#     k8s/overlays/dev pass a server-side dry run without any warning (Pod Security `warn` included);
#   - scripts/deploy-dev applies k8s/overlays/dev for real; the node agent runs `lm-eval-aas serve` from the
#     Pod spec with its in-cluster ServiceAccount, and an evaluation submitted to it runs to `succeeded`;
#   - RBAC gives each ServiceAccount what it needs and no more;
#   - Pod Security Admission `restricted` admitted the service pod and the runner pod, and rejects a
#     non-compliant pod in the same namespace;
#   - nothing is left running afterwards.
#
# Prints Go-style `--- PASS: Name (Ns)` / `--- FAIL: Name (Ns)` lines (scripts/test counts them), the failing
# check's output indented under it (every check's with LMEVAL_DEPLOY_VERBOSE=1), and exits non-zero on any
# failure.
#
# Uses its own cluster directory (never an inherited LMEVAL_CLUSTER_DIR) and its own copy of
# target/debug/lm-eval-aas (built if missing) as the in-cluster binary, so a concurrent rebuild cannot change it.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo" || exit 1
# shellcheck source=../../scripts/lib/venv.sh
source scripts/lib/venv.sh

started=$SECONDS
failed=0
passed=0
work=$(mktemp -d "${TMPDIR:-/tmp}/lm-eval-aas-deploy-test.XXXXXX")
export LMEVAL_CLUSTER_DIR="$work/cluster"
export KUBECACHEDIR="$work/kube-cache"
namespace=lm-eval-aas
cluster_up=""
cluster_pids=()
cluster_ports=()
service_port=""
webhook_port=""
evaluation_id=""

# run NAME FUNCTION: one check; its output is shown (indented) only when it fails.
run() {
  local name=$1 t0=$SECONDS log="$work/$1.log"
  shift
  if "$@" >"$log" 2>&1; then
    echo "--- PASS: $name ($((SECONDS - t0))s)"
    [[ -z ${LMEVAL_DEPLOY_VERBOSE:-} ]] || sed 's/^/    /' "$log"
    passed=$((passed + 1))
  else
    echo "--- FAIL: $name ($((SECONDS - t0))s)"
    sed 's/^/    /' "$log"
    failed=$((failed + 1))
    return 1
  fi
}

skip() { echo "--- SKIP: $1 ($2)"; }

fail() {
  echo "FAIL: $*"
  return 1
}

k() { "$KUBECTL" "$@"; }

# --- setup -------------------------------------------------------------------------------------------------

setup() {
  local venv
  venv=$(lmeval_venv) || fail "no lm-eval venv" || return
  if [[ ! -x target/debug/lm-eval-aas ]]; then
    cargo build --quiet --bin lm-eval-aas || fail "cargo build" || return
  fi
  mkdir -p "$work/bin"
  cp target/debug/lm-eval-aas "$work/bin/lm-eval-aas" || fail "copy the binary" || return
  # The node agent runs containers' commands from this PATH: our binary (service and driver) and lm_eval.
  cluster_up=1
  LMEVAL_CLUSTER_EXTRA_PATH="$work/bin:$venv/bin" scripts/cluster up || fail "scripts/cluster up" || return
  set -a
  # shellcheck disable=SC1090
  source <(scripts/cluster env) || return
  set +a
  for f in "$LMEVAL_CLUSTER_DIR"/pids/*.pid; do [[ -f $f ]] && cluster_pids+=("$(awk '{print $1}' "$f")"); done
  IFS=, read -r -a cluster_ports <<<"$LMEVAL_CLUSTER_PORTS"
  echo "cluster up: $LMEVAL_CLUSTER_APISERVER"
}

# --- checks ------------------------------------------------------------------------------------------------

render_all() {
  local overlay
  for overlay in base overlays/dev overlays/openshift; do
    k kustomize "k8s/$overlay" >"$work/render-${overlay##*/}.yaml" || fail "kubectl kustomize k8s/$overlay" || return
  done
  "$venv_python" tests/deploy/check_manifests.py \
    "$work/render-base.yaml" "$work/render-dev.yaml" "$work/render-openshift.yaml"
}

# dry_run DIR: server-side dry run of `kubectl apply -k DIR`; every object accepted, no warnings at all (the
# namespace has warn=restricted, so a Deployment whose pod template breaks Pod Security would draw one).
dry_run() {
  local dir=$1 out="$work/dry-run-${1##*/}.out" want got
  k apply --server-side --dry-run=server --field-manager=lm-eval-aas-deploy-test -k "$dir" >"$out" 2>&1
  local rc=$?
  cat "$out"
  [[ $rc == 0 ]] || fail "dry run of $dir exited $rc" || return
  ! grep -qi 'warning' "$out" || fail "the API server warned" || return
  want=$(k kustomize "$dir" | grep -c '^kind:')
  got=$(grep -c 'serverside-applied (server dry run)' "$out")
  [[ $want == "$got" ]] || fail "$got of $want objects accepted" || return
}

base_dry_run() {
  # A real install creates the Namespace first (kubectl applies it before the rest); the dry run cannot.
  k apply --server-side --field-manager=lm-eval-aas-deploy-test -f k8s/base/namespace.yaml || return
  # Its webhook certificate is cert-manager's (an Issuer and a Certificate): their CRDs, as a cluster with
  # cert-manager has them.
  k apply --server-side --field-manager=lm-eval-aas-deploy-test -f tests/deploy/cert-manager-crds.yaml || return
  k wait --for condition=established --timeout=60s crd/issuers.cert-manager.io crd/certificates.cert-manager.io || return
  dry_run k8s/base || return
  grep -q '^certificate.cert-manager.io/lm-eval-aas-webhook serverside-applied' "$work/dry-run-base.out" ||
    fail "the webhook Certificate was not applied" || return
  # A dry run leaves nothing behind.
  [[ -z $(k -n "$namespace" get deployments,services,ingresses,networkpolicies -o name) ]] ||
    fail "the dry run created objects"
}

openshift_dry_run() {
  k apply --server-side --field-manager=lm-eval-aas-deploy-test -f tests/deploy/route-crd.yaml || return
  k wait --for condition=established --timeout=60s crd/routes.route.openshift.io || return
  dry_run k8s/overlays/openshift || return
  grep -q '^route.route.openshift.io/lm-eval-aas serverside-applied' "$work/dry-run-openshift.out" ||
    fail "the Route was not applied" || return
  # The CRD really validates: a Route the real schema rejects is rejected.
  if k create --dry-run=server -n "$namespace" -f - <<'EOF'; then
apiVersion: route.openshift.io/v1
kind: Route
metadata:
  name: invalid
spec:
  to: {kind: Service, name: lm-eval-aas}
  tls: {termination: passthrough, insecureEdgeTerminationPolicy: Allow}
EOF
    fail "an invalid Route was accepted"
  fi
}

deploy_dev() {
  local out
  out=$(scripts/deploy-dev 2>"$work/deploy-dev.err") || { cat "$work/deploy-dev.err"; fail "scripts/deploy-dev exited"; return; }
  cat "$work/deploy-dev.err"
  echo "$out"
  ! grep -qi warning "$work/deploy-dev.err" || fail "the API server warned" || return
  service_url=$(sed -n 's/^LMEVAL_URL=//p' <<<"$out")
  [[ $service_url =~ ^http://127\.0\.0\.1:([0-9]+)$ ]] || fail "no LMEVAL_URL=http://127.0.0.1:PORT line" || return
  service_port=${BASH_REMATCH[1]}
  curl -fsS "$service_url/healthz" && echo && curl -fsS "$service_url/readyz" && echo
}

service_pod() {
  local pods pod
  pods=$(k -n "$namespace" get pods -l app.kubernetes.io/name=lm-eval-aas,app.kubernetes.io/component=service \
    --field-selector=status.phase=Running -o name)
  echo "$pods"
  [[ $(wc -w <<<"$pods") == 1 ]] || fail "want exactly one running service pod (dev: one replica)" || return
  pod=${pods#pod/}
  k -n "$namespace" get pod "$pod" -o jsonpath='{.spec.serviceAccountName} {.spec.containers[0].command} {.spec.containers[0].envFrom[0].configMapRef.name}{"\n"}' \
    >"$work/service-pod.txt" || return
  cat "$work/service-pod.txt"
  read -r sa command config <"$work/service-pod.txt"
  [[ $sa == lm-eval-aas ]] || fail "serviceAccountName $sa" || return
  [[ $command == '["lm-eval-aas","serve"]' ]] || fail "command $command" || return
  [[ $config == lm-eval-aas-config-* ]] || fail "envFrom $config" || return
  # Its log: the configuration from the ConfigMap, the namespace from its ServiceAccount mount, our port.
  k -n "$namespace" logs "$pod" >"$work/service.log" || return
  cat "$work/service.log"
  sed -i 's/\x1b\[[0-9;]*m//g' "$work/service.log"
  grep -q 'kubernetes backend namespaces=\["lm-eval-aas"\]' "$work/service.log" ||
    fail "the service did not start the kubernetes backend in its own namespace" || return
  grep -q "listening.*127.0.0.1:$service_port" "$work/service.log" || fail "the pod does not listen on $service_port" || return
  webhook_port=$(sed -n 's/.*webhook listening address=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/service.log")
  [[ -n $webhook_port ]] || fail "the pod serves no admission webhook"
}

rbac() {
  local sa=system:serviceaccount:$namespace:lm-eval-aas
  local who verb resource want got
  while read -r who verb resource want; do
    got=$(k auth can-i "$verb" "$resource" -n "$namespace" --as="$who")
    echo "$who $verb $resource: $got"
    [[ $got == "$want" ]] || fail "want $want" || return
  done <<EOF
$sa create evaluations.lm-eval-aas.io yes
$sa patch evaluations.lm-eval-aas.io/status yes
$sa update leases.coordination.k8s.io yes
$sa create events.events.k8s.io yes
$sa create jobs.batch yes
$sa watch pods yes
$sa get pods/log yes
$sa delete configmaps yes
$sa get secrets no
$sa create pods no
$sa create serviceaccounts yes
$sa create roles.rbac.authorization.k8s.io yes
$sa create rolebindings.rbac.authorization.k8s.io yes
$sa create clusterrolebindings.rbac.authorization.k8s.io no
EOF
  got=$(k auth can-i create jobs.batch -n default --as="$sa")
  [[ $got == no ]] || fail "the service may create Jobs outside its namespace"
}

evaluation() {
  local body state deadline=$((SECONDS + 300))
  body=$(curl -fsS -X POST -H 'content-type: application/json' "$service_url/api/v1/evaluations" \
    -d '{"model":"dummy","tasks":["lmeval_aas_mc"],"limit":2}') || fail "POST /api/v1/evaluations" || return
  echo "$body"
  evaluation_id=$("$venv_python" -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$body") || return
  while :; do
    body=$(curl -fsS "$service_url/api/v1/evaluations/$evaluation_id") || fail "GET the evaluation" || return
    state=$("$venv_python" -c 'import json, sys; print(json.load(sys.stdin)["state"])' <<<"$body")
    case $state in
      succeeded) break ;;
      failed | cancelled)
        echo "$body"
        curl -sS "$service_url/api/v1/evaluations/$evaluation_id/logs" | tail -n 30
        fail "the evaluation ended $state" || return
        ;;
    esac
    ((SECONDS < deadline)) || { echo "$body"; fail "still $state after 300 s"; return; }
    sleep 2
  done
  echo "$body"
  curl -fsS "$service_url/api/v1/evaluations/$evaluation_id/results" | grep -q lmeval_aas_mc ||
    fail "no lmeval_aas_mc in the results"
}

# The shipped CRD and webhook as deploy-dev installs them: kubectl apply of an Evaluation runs and REST lists
# it; a spec the REST API refuses is refused by kubectl with the same message.
evaluation_resource() {
  local out state uid deadline=$((SECONDS + 300))
  k -n "$namespace" apply -f - <<'EOF' || fail "kubectl apply of an Evaluation" || return
apiVersion: lm-eval-aas.io/v1alpha1
kind: Evaluation
metadata:
  name: deploy-test
spec: {model: dummy, tasks: [lmeval_aas_mc], limit: 2}
EOF
  until state=$(k -n "$namespace" get lmeval deploy-test -o jsonpath='{.status.state}') &&
    [[ $state == succeeded || $state == failed || $state == cancelled ]]; do
    ((SECONDS < deadline)) || fail "Evaluation deploy-test still ${state:-unreconciled} after 300 s" || return
    sleep 1
  done
  k -n "$namespace" get lmeval deploy-test
  [[ $state == succeeded ]] || fail "Evaluation deploy-test ended $state" || return
  # Made with kubectl, it is known to REST by its uid.
  uid=$(k -n "$namespace" get lmeval deploy-test -o jsonpath='{.metadata.uid}') || return
  curl -fsS "$service_url/api/v1/evaluations/$uid" | grep -q '"state":"succeeded"' ||
    fail "REST does not show Evaluation deploy-test ($uid) succeeded" || return
  curl -fsS "$service_url/api/v1/namespaces/$namespace/evaluations" | grep -q "\"id\":\"$uid\"" ||
    fail "REST does not list Evaluation deploy-test ($uid)" || return
  if out=$(k -n "$namespace" apply -f - 2>&1 <<'EOF'
apiVersion: lm-eval-aas.io/v1alpha1
kind: Evaluation
metadata:
  name: deploy-test-invalid
spec: {model: dummy, tasks: [lmeval_aas_mc], limit: 0}
EOF
  ); then
    fail "an Evaluation with limit 0 was admitted" || return
  fi
  echo "$out"
  grep -q 'spec.limit: limit: must be' <<<"$out" ||
    fail "the refusal does not come from the webhook with the validator's message"
}

pod_security() {
  local enforce pods pod copy out
  enforce=$(k get namespace "$namespace" -o jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}')
  [[ $enforce == restricted ]] || fail "namespace enforce=$enforce" || return
  # Admission enforced `restricted` when they were created: they exist, so they were admitted.
  pods=$(k -n "$namespace" get pods -l app.kubernetes.io/component=service -o name)
  [[ -n $pods ]] || fail "no service pod" || return
  [[ -n $evaluation_id ]] || fail "no evaluation ran, so there is no runner pod to check" || return
  pod=$(k -n "$namespace" get pods -l "lm-eval-aas.io/evaluation-id=$evaluation_id" -o name)
  [[ -n $pod ]] || fail "no runner pod of evaluation $evaluation_id" || return
  pods="$pods $pod"
  # And the job controller never had a pod refused.
  out=$(k -n "$namespace" get events --field-selector reason=FailedCreate -o name)
  [[ -z $out ]] || { k -n "$namespace" get events --field-selector reason=FailedCreate; fail "FailedCreate events"; return; }
  # Each is admitted again as it is now (a server-side dry run of a copy), without warnings.
  for pod in $pods; do
    copy=$(k -n "$namespace" get "$pod" -o json | "$venv_python" -c '
import json, sys
pod = json.load(sys.stdin)
spec = pod["spec"]
# Not what Pod Security looks at; the API server merged matchLabelKeys into the selector of the original.
for key in ("nodeName", "topologySpreadConstraints"):
    spec.pop(key, None)
print(json.dumps({"apiVersion": "v1", "kind": "Pod", "spec": spec,
                  "metadata": {"name": pod["metadata"]["name"][:50] + "-psa-check"}}))') || return
    out=$(k -n "$namespace" create --dry-run=server -f - <<<"$copy" 2>&1) || { echo "$out"; fail "$pod is not admitted"; return; }
    echo "$pod: $out"
    ! grep -qi warning <<<"$out" || fail "$pod drew a warning" || return
  done
  # A pod that breaks `restricted` is refused in the same namespace.
  if out=$(k -n "$namespace" create --dry-run=server -f - 2>&1 <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: not-restricted
spec:
  containers:
    - name: c
      image: busybox
      command: ["true"]
EOF
  ); then
    echo "$out"
    fail "a non-compliant pod was admitted" || return
  fi
  echo "non-compliant pod: $out"
  grep -q 'violates PodSecurity "restricted:latest"' <<<"$out" || fail "refused, but not by Pod Security" || return
  # And the warning that the dry runs above look for does appear for a non-compliant Deployment.
  out=$(k -n "$namespace" create deployment not-restricted --image=busybox --dry-run=server -o name 2>&1) || return
  echo "non-compliant Deployment: $out"
  grep -q 'would violate PodSecurity "restricted:latest"' <<<"$out" || fail "no Pod Security warning"
}

teardown() {
  local rc=0 pid port
  if [[ -n $cluster_up ]]; then
    scripts/cluster down || { echo "scripts/cluster down failed"; rc=1; }
    cluster_up=""
  fi
  for pid in "${cluster_pids[@]}"; do
    if [[ -e /proc/$pid ]] && ! grep -q '^State:.*[ZX]' "/proc/$pid/status" 2>/dev/null; then
      echo "cluster process $pid is still running"; rc=1
    fi
  done
  # Containers (the service, drivers, lm_eval) ran our copy of the binary or the venv's python.
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    if [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$work/bin/lm-eval-aas" ]]; then
      echo "process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)) is still running"; rc=1
    fi
  done
  for port in "${cluster_ports[@]}" $service_port $webhook_port; do
    if ss -Htln "sport = :$port" | grep -q .; then echo "port $port is still listening"; rc=1; fi
  done
  [[ ! -e $LMEVAL_CLUSTER_DIR ]] || { echo "$LMEVAL_CLUSTER_DIR still exists"; rc=1; }
  return $rc
}

finish() {
  trap - EXIT INT TERM
  if [[ -n $cluster_up ]]; then
    if [[ $failed != 0 ]]; then
      echo "    ----- node agent log (last 40 lines; all component logs: scripts/cluster logs) -----"
      tail -n 40 "$LMEVAL_CLUSTER_DIR/logs/node.log" 2>&1 | sed 's/^/    /'
    fi
    run TestDeployTeardown teardown
  fi
  rm -rf "$work"
  echo "deploy: $passed passed, $failed failed in $((SECONDS - started)) s"
  # (A bare `exit` in a trap would exit with the status from before the trap.)
  exit $((failed == 0 ? 0 : 1))
}
trap finish EXIT
trap 'failed=$((failed + 1)); exit 130' INT TERM

venv_python=$(lmeval_venv)/bin/python
if ! run TestDeployClusterUp setup; then exit 1; fi
run TestDeployKustomize render_all
run TestDeployBaseServerDryRun base_dry_run
run TestDeployOpenShiftServerDryRun openshift_dry_run
# The dev overlay as shipped (scripts/deploy-dev applies it for real below, with its port and task dir set).
run TestDeployDevServerDryRun dry_run k8s/overlays/dev
if run TestDeployDevApply deploy_dev; then
  run TestDeployServicePod service_pod
  run TestDeployRBAC rbac
  run TestDeployEvaluationSucceeds evaluation
  run TestDeployEvaluationResource evaluation_resource
else
  skip TestDeployServicePod "no deployment"
  skip TestDeployRBAC "no deployment"
  skip TestDeployEvaluationSucceeds "no deployment"
  skip TestDeployEvaluationResource "no deployment"
fi
run TestDeployPodSecurityRestricted pod_security
