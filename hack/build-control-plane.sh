#!/usr/bin/env bash
# Builds the embedded test control plane from Go modules into a versioned cache outside the repo:
#   $SPECULATORS_CACHE/k8s-$K8S_VERSION/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl,
#                                             etcd,kwok,helm,kubeconform,kueue}
#   $SPECULATORS_CACHE/k8s-$K8S_VERSION/kueue-$KUEUE_VERSION.yaml  (Kueue's own release manifests,
#                                             rendered from the same module: CRDs, webhooks, RBAC)
# Idempotent: a binary that already exists is not rebuilt. Prints the bin directory on stdout (last line).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.14}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
KUBECONFORM_VERSION=${KUBECONFORM_VERSION:-v0.7.0}
KUEUE_VERSION=${KUEUE_VERSION:-v0.17.0}
CACHE=${SPECULATORS_CACHE:-$HOME/.cache/speculators-operator}
ROOT="$CACHE/k8s-$K8S_VERSION"
BIN="$ROOT/bin"
mkdir -p "$BIN" "$ROOT/src"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
log() { echo "[build-control-plane] $*" >&2; }

KUEUE_MANIFESTS="$ROOT/kueue-$KUEUE_VERSION.yaml"
have_all() {
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm kubeconform kueue; do
    [ -x "$BIN/$b" ] || return 1
  done
  [ -s "$KUEUE_MANIFESTS" ]
}
if have_all; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { log "Go is required (https://go.dev/dl/); none found on PATH"; exit 1; }

# --- Kubernetes: wrapper module that maps every staging module (v0.0.0 in k8s.io/kubernetes's go.mod)
# to its published tag; k8s v1.X.Y == staging v0.X.Y.
build_k8s() {
  local src="$ROOT/src/k8sbins" v=${K8S_VERSION#v}
  local minor patch gomod
  minor=$(echo "$v" | cut -d. -f2); patch=$(echo "$v" | cut -d. -f3)
  mkdir -p "$src"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -nE 's/^\s*"GoMod": "(.*)",?$/\1/p')
  [ -n "$gomod" ] && [ -f "$gomod" ] || { log "cannot fetch k8s.io/kubernetes@$K8S_VERSION's go.mod from the module proxy"; exit 1; }
  {
    echo "module example.invalid/k8sbins"
    echo
    local gover; gover=$(sed -nE 's/^go ([0-9.]+)$/\1/p' "$gomod")
    echo "go $gover"
    echo
    # Same GODEBUG (TLS/x509) defaults as upstream's own builds.
    echo "godebug default=go$(echo "$gover" | cut -d. -f1-2)"
    echo
    echo "tool ("
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do echo "	k8s.io/kubernetes/cmd/$c"; done
    echo ")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -nE 's#^[[:space:]]+(k8s\.io/[^[:space:]]+)[[:space:]]+v0\.0\.0([[:space:]].*)?$#\1#p' "$gomod" | sort -u |
      while read -r m; do echo "	$m => $m v0.$minor.$patch"; done
    echo ")"
  } > "$src/go.mod"
  (
    cd "$src"
    go mod tidy
    local ldf="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldf+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    done
    ldf+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ldf+=" -X k8s.io/component-base/version.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    go build -p "${BUILD_JOBS:-2}" -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldf" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  )
}

# --- etcd: its own wrapper (server/v3 has replace directives, so `go install` refuses it; building it
# inside the k8s wrapper would bump the apiserver's etcd client through MVS).
build_etcd() {
  local src="$ROOT/src/etcdbin"
  mkdir -p "$src"
  printf 'module example.invalid/etcdbin\n\ngo 1.25.0\n\ntool go.etcd.io/etcd/server/v3\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$ETCD_VERSION" > "$src/go.mod"
  (cd "$src" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
}

gobin_install() {  # name module@version
  local name=$1 target=$2
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w ${3:-}" "$target"
  [ -x "$BIN/$name" ]
}

start=$(date +%s)
[ -x "$BIN/etcd" ] || { log "building etcd $ETCD_VERSION"; build_etcd; }
[ -x "$BIN/kwok" ] || { log "installing kwok $KWOK_VERSION"; gobin_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"; }
[ -x "$BIN/helm" ] || { log "installing helm $HELM_VERSION"; gobin_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"; }
[ -x "$BIN/kubeconform" ] || { log "installing kubeconform $KUBECONFORM_VERSION"; gobin_install kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"; }
# --- Kueue: its controller manager (no replace directives: plain `go install`) and its release manifests,
# rendered by kubectl's kustomize from config/default of the very module that was built.
[ -x "$BIN/kueue" ] || { log "installing kueue $KUEUE_VERSION"; gobin_install kueue "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" \
  "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"; }
k8s_ok=1
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do [ -x "$BIN/$b" ] || k8s_ok=0; done
[ $k8s_ok = 1 ] || { log "building Kubernetes $K8S_VERSION (cold: ~15-30 min on 2 cores)"; build_k8s; }
if [ ! -s "$KUEUE_MANIFESTS" ]; then
  kueue_dir=$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | sed -nE 's/^\s*"Dir": "(.*)",?$/\1/p')
  [ -d "$kueue_dir/config/default" ] || { log "cannot fetch sigs.k8s.io/kueue@$KUEUE_VERSION from the module proxy"; exit 1; }
  "$BIN/kubectl" kustomize "$kueue_dir/config/default" > "$KUEUE_MANIFESTS.tmp"
  mv "$KUEUE_MANIFESTS.tmp" "$KUEUE_MANIFESTS"
fi
have_all || { log "some binaries are missing in $BIN"; exit 1; }
log "done in $(( $(date +%s) - start ))s: $BIN"
echo "$BIN"
