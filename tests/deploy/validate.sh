#!/usr/bin/env bash
# validate.sh - check deploy/ offline, as ../shared/k8s-validation.md describes.
#
#   yamllint over deploy/ (syntax, duplicate keys);
#   kubectl kustomize for every overlay (the kustomization itself);
#   the two validators of ../shared/tools/k8s-validate over each rendered
#   overlay: kubernetes-models (types, required fields, enums) and
#   kubernetes-types + tsc (misspelled or unknown fields).
#
# Installs yamllint with apt-get and the validators' npm packages into a
# temporary directory when missing. Exits 0 when all pass, 1 on a problem,
# 77 (meson's "skipped") when kubectl, npm or the shared tools are missing.
# Environment: TWINMESH_SHARED (default: ../shared beside the repository),
# K8SV_DIR (a validator directory with node_modules, reused if given).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SHARED="${TWINMESH_SHARED:-$ROOT/../shared}"
TOOLS="$SHARED/tools/k8s-validate"

skip () { echo "validate: SKIP: $*" >&2; exit 77; }

command -v kubectl >/dev/null 2>&1 || skip "kubectl not found (needed for kubectl kustomize)"
command -v npm >/dev/null 2>&1 || skip "npm not found (needed for the schema validators)"
command -v node >/dev/null 2>&1 || skip "node not found"
[ -f "$TOOLS/k8s-validate.mjs" ] || skip "no validators at $TOOLS"

if ! command -v yamllint >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "validate: installing yamllint" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q yamllint >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q yamllint >/dev/null; } \
        || skip "yamllint not installable"
fi

WORK="$(mktemp -d /tmp/tm-validate.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

if [ -n "${K8SV_DIR:-}" ] && [ -d "$K8SV_DIR/node_modules" ]; then
    V="$K8SV_DIR"
else
    V="$WORK/k8sv"
    cp -r "$TOOLS" "$V" && chmod -R u+w "$V"
    echo "validate: npm install of the validators into $V" >&2
    (cd "$V" && npm install --no-audit --no-fund --loglevel=error >/dev/null 2>&1) \
        || skip "npm install of the validators failed (no registry?)"
fi

passed=0
failed=0
step () {
    local what="$1"
    shift
    if "$@"; then
        echo "validate: ok: $what"
        passed=$((passed + 1))
    else
        echo "validate: FAILED: $what"
        failed=$((failed + 1))
    fi
}

step "yamllint deploy/" yamllint -s \
    -d '{extends: default, rules: {document-start: disable, line-length: disable}}' \
    "$ROOT/deploy"

#   The base too: it must render on its own (namespace-less).
for overlay in "$ROOT"/deploy/k8s/base/ "$ROOT"/deploy/k8s/overlays/*/; do
    name="$(basename "$overlay")"
    out="$WORK/$name.yaml"
    if ! kubectl kustomize "$overlay" > "$out"; then
        echo "validate: FAILED: kubectl kustomize $name"
        failed=$((failed + 1))
        continue
    fi
    echo "validate: ok: kubectl kustomize $name ($(grep -c '^kind:' "$out") objects)"
    passed=$((passed + 1))
    step "kubernetes-models $name" bash -c "cd '$V' && node k8s-validate.mjs '$out' >'$WORK/$name.models' || { cat '$WORK/$name.models'; exit 1; }"
    step "kubernetes-types+tsc $name" bash -c "cd '$V' && node k8s-tscheck.mjs '$out'"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
