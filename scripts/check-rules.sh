#!/usr/bin/env bash
# Checks the Prometheus rules (alerts, and the recording rules the dashboards read) with
# Prometheus's own tool, promtool (CI runs this after scripts/check-chart.sh):
#  1. promtool, from Debian's `prometheus` package (2.42 on Debian 12), installed when missing;
#  2. `promtool check rules` on deploy/prometheus/marill-rules.yaml and on the chart's copy
#     charts/marill/rules/marill-rules.yaml, which must be byte-identical (the chart's
#     PrometheusRule is `.Files.Get "rules/marill-rules.yaml" | fromYaml | toYaml`); when helm is
#     there (scripts/check-chart.sh fetches it to target/tools, or $HELM), also on the spec of the
#     PrometheusRule the chart renders;
#  3. every alert has a unit test that fires it and one that does not fire it at the same eval
#     time, in deploy/prometheus/marill-rules.test.yaml, and every alert that file names exists;
#     every recording rule has a unit test that evaluates the recorded series to expected samples;
#  4. `promtool test rules` on that file (and again on the rules the chart renders);
#  5. expected failures: a planted PromQL error, a planted wrong label and a planted change of a
#     recording rule's quantile must fail promtool.
# (tests/prometheus_live.rs loads the same rules into a running Prometheus scraping a cluster.)
# Idempotent: overwrites target/rules-check.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
rules=deploy/prometheus/marill-rules.yaml
tests=deploy/prometheus/marill-rules.test.yaml
chart=charts/marill
chart_rules=$chart/rules/marill-rules.yaml
helm=${HELM:-target/tools/helm-v3.17.3/helm}
out=target/rules-check
step() { printf '\n== %s\n' "$*"; }
die() { printf 'check-rules: FAILED: %s\n' "$*" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"

step "promtool"
if ! command -v promtool >/dev/null; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "installing prometheus (for promtool)" >&2
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version 2>&1 | head -1

step "promtool check rules"
cmp -s "$rules" "$chart_rules" || die "$chart_rules differs from $rules (cp $rules $chart/rules/)"
echo "$chart_rules is identical to $rules"
promtool check rules "$rules" "$chart_rules" || die "promtool check rules"
rendered=""
if [ -x "$helm" ]; then
    # the PrometheusRule as the chart renders it (fromYaml | toYaml re-serialises the copy);
    # its spec is a rules file
    "$helm" template marill "$chart" -n marill --api-versions monitoring.coreos.com/v1 \
        --show-only templates/prometheusrule.yaml > "$out/chart-prometheusrule.yaml" \
        || die "helm template --show-only templates/prometheusrule.yaml"
    rendered="$out/chart-rendered-rules.yaml"
    awk '/^spec:/ { f = 1; next } f && /^[^ ]/ { f = 0 } f { sub(/^  /, ""); print }' \
        "$out/chart-prometheusrule.yaml" > "$rendered"
    [ -s "$rendered" ] || die "no spec in the rendered PrometheusRule"
    promtool check rules "$rendered" || die "promtool check rules on the chart's rendered PrometheusRule"
else
    echo "the chart's rendered PrometheusRule: skipped (no $helm: bash scripts/check-chart.sh fetches it, or set HELM)"
fi

step "every alert has a firing and a quiet unit test"
# reads the test file's layout: `- eval_time:`, then `alertname:`, then `exp_alerts:` (`[]`:
# must not fire); an alert passes when one firing and one quiet case share an eval time
alerts=$(sed -n 's/^[[:space:]]*- alert:[[:space:]]*\([A-Za-z0-9_]*\).*/\1/p' "$rules")
[ -n "$alerts" ] || die "no alert in $rules"
cases=$(awk '
    /^[[:space:]]*-?[[:space:]]*eval_time:/ { sub(/^[[:space:]]*-?[[:space:]]*eval_time:[[:space:]]*/, ""); t = $1; a = ""; next }
    /^[[:space:]]*alertname:/ { a = $2; next }
    /^[[:space:]]*exp_alerts:/ && a != "" { print a, t, ($2 == "[]" ? "quiet" : "fires"); a = "" }
' "$tests")
for a in $(echo "$cases" | awk '{ print $1 }' | sort -u); do
    echo "$alerts" | grep -qx "$a" || die "$tests tests $a, which $rules does not define"
done
for a in $alerts; do
    both=$(echo "$cases" | awk -v a="$a" '$1 == a { s[$2] = s[$2] " " $3 }
        END { for (t in s) if (s[t] ~ /fires/ && s[t] ~ /quiet/) print t }' | sort | head -1)
    [ -n "$both" ] || die "$a has no firing and quiet test at the same eval time in $tests"
    printf '%-26s fires and stays quiet at %s (%s cases)\n' "$a" "$both" "$(echo "$cases" | grep -c "^$a ")"
done

step "every recording rule has a unit test of its values"
records=$(sed -n 's/^[[:space:]]*- record:[[:space:]]*\([A-Za-z0-9_:]*\).*/\1/p' "$rules")
[ -n "$records" ] || die "no recording rule in $rules"
for r in $records; do
    grep -Eq "^[[:space:]]*- expr:[[:space:]]*$r([[:space:]{#]|\$)" "$tests" \
        || die "no promql_expr_test in $tests evaluates the recorded $r"
    grep -Eq "^[[:space:]]*- labels:[[:space:]]*'$r\{" "$tests" \
        || die "no expected sample of $r in $tests"
    printf '%-55s evaluated to %s expected samples\n' "$r" "$(grep -Ec "^[[:space:]]*- labels:[[:space:]]*'$r\{" "$tests")"
done
for r in $(sed -n "s/^[[:space:]]*- expr:[[:space:]]*\([a-z_]*:[A-Za-z0-9_:]*\).*/\1/p" "$tests" | sort -u); do
    echo "$records" | grep -qx "$r" || die "$tests evaluates $r, which $rules does not record"
done

step "promtool test rules"
promtool test rules "$tests" || die "promtool test rules $tests"
if [ -n "$rendered" ]; then
    # the same tests on the rules the chart renders (rule_files is relative to the test file)
    sed "s|^  - marill-rules.yaml$|  - $(basename "$rendered")|" "$tests" > "$out/chart-rendered-rules.test.yaml"
    grep -q "^  - $(basename "$rendered")$" "$out/chart-rendered-rules.test.yaml" || die "rule_files of $tests not found"
    promtool test rules "$out/chart-rendered-rules.test.yaml" || die "promtool test rules on the chart's rendered rules"
fi

step "expected failures"
mkdir -p "$out/planted"
# a PromQL syntax error in one expression
sed '0,/expr: /s/expr: \(.*\)/expr: sum(\1/' "$rules" > "$out/planted/bad-expr.yaml"
if promtool check rules "$out/planted/bad-expr.yaml" > "$out/planted/bad-expr.out" 2>&1; then
    die "promtool check rules accepted a planted unbalanced parenthesis"
fi
grep -q 'FAILED' "$out/planted/bad-expr.out" || { cat "$out/planted/bad-expr.out"; die "failed for another reason"; }
echo "promtool check rules rejects a planted PromQL error"
# a wrong expected label in the first firing case
cp "$rules" "$out/planted/marill-rules.yaml"
sed '0,/^              severity: /s/^              severity: .*/              severity: planted/' "$tests" > "$out/planted/bad-label.test.yaml"
cmp -s "$tests" "$out/planted/bad-label.test.yaml" && die "no severity label to plant in $tests"
if promtool test rules "$out/planted/bad-label.test.yaml" > "$out/planted/bad-label.out" 2>&1; then
    die "promtool test rules accepted a planted wrong label"
fi
grep -q 'severity="planted"' "$out/planted/bad-label.out" || { cat "$out/planted/bad-label.out"; die "failed for another reason"; }
echo "promtool test rules rejects a planted wrong label"
# a recording rule's quantile changed (0.99 -> 0.9 in the first recorded p99)
mkdir -p "$out/planted/record"
sed '0,/^        expr: histogram_quantile(0.99,/s//        expr: histogram_quantile(0.9,/' "$rules" > "$out/planted/record/marill-rules.yaml"
cmp -s "$rules" "$out/planted/record/marill-rules.yaml" && die "no recorded p99 to plant in $rules"
cp "$tests" "$out/planted/record/marill-rules.test.yaml"
if promtool test rules "$out/planted/record/marill-rules.test.yaml" > "$out/planted/record.out" 2>&1; then
    die "promtool test rules accepted a planted change of a recorded quantile"
fi
grep -q 'p99_rate5m' "$out/planted/record.out" || { cat "$out/planted/record.out"; die "failed for another reason"; }
echo "promtool test rules rejects a planted change of a recorded quantile"

printf '\ncheck-rules: OK (%ss)\n' "$(( $(date +%s) - start ))"
