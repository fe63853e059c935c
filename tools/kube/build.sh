#!/usr/bin/env bash
# Builds the real etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and CSI sidecars that Paddock's Kubernetes tests run, from the wrapper modules
# beside this script, with nothing but Go and the
# module proxy. The binaries go to <repo>/.cache/kube/<kubernetes version>/
# (ignored by git); the folder's path is the only line printed on stdout.
#
# A build happens only when the folder's stamp (a hash of the wrapper
# modules, this script and the Go version) differs, so a warm call costs a
# few milliseconds. A lock on the folder lets several test processes call
# this at once: one builds, the others wait and reuse. A cold build takes
# 10 to 20 minutes on 2 cores (the Kubernetes binaries are most of
# it; they share one module and build together); .ci/run calls
# this before the tests so that their timeout is not spent on it.
#
# internal/kubetest runs this script; CI runs it from .ci/run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v go >/dev/null 2>&1; then
  export PATH="$PATH:/usr/local/go/bin"
fi
# The wrapper modules are built on their own, never as part of a workspace.
export GOWORK=off
# The wrapper modules' go.sum files are committed: never rewrite them here.
export GOFLAGS="-mod=readonly -buildvcs=false"

kube_version="$(awk '
  $1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }
  $1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2 }' "$here/kubernetes/go.mod")"
if [ -z "$kube_version" ]; then
  echo "build.sh: no k8s.io/kubernetes version in $here/kubernetes/go.mod" >&2
  exit 1
fi
minor="${kube_version#v1.}"
minor="${minor%%.*}"

out="$root/.cache/kube/$kube_version"
mkdir -p "$out"

bins="kube-apiserver kube-controller-manager kube-scheduler"
bins_main="$(for b in $bins; do echo "kubernetes/$b/main.go"; done)"

stamp="$(
  {
    go version
    for f in build.sh etcd/go.mod etcd/go.sum etcd/main.go \
      kubernetes/go.mod kubernetes/go.sum $bins_main; do
      echo "== $f"
      cat "$here/$f"
    done
  } | sha256sum | cut -d' ' -f1
)"

up_to_date() {
  for b in etcd $bins; do [ -x "$out/$b" ] || return 1; done
  [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]
}

if ! up_to_date; then
  exec 9>"$out/.lock"
  flock 9
  # Another process may have built while this one waited.
  if ! up_to_date; then
    rm -f "$out/stamp"
    start=$SECONDS
    echo "build.sh: building etcd into $out" >&2
    (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" .)
    mv -f "$out/etcd.tmp" "$out/etcd"
    echo "build.sh: built etcd in $((SECONDS - start)) s" >&2
    echo "build.sh: building $bins $kube_version into $out" >&2
    pkg=k8s.io/component-base/version
    rm -rf "$out/tmp" && mkdir "$out/tmp"
    (cd "$here/kubernetes" && go build -trimpath \
      -ldflags "-s -w -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
      -o "$out/tmp/" $(for b in $bins; do echo "./$b"; done))
    for b in $bins; do mv -f "$out/tmp/$b" "$out/$b"; done
    rmdir "$out/tmp"
    echo "$stamp" >"$out/stamp.tmp"
    mv -f "$out/stamp.tmp" "$out/stamp"
    echo "build.sh: built in $((SECONDS - start)) s" >&2
  fi
  exec 9>&-
fi

# The Kubernetes CSI sidecars that drive a CSI plugin from API objects, from
# their own wrapper module (their Kubernetes libraries are not the control
# plane's): csi-provisioner, csi-resizer, csi-snapshotter and
# snapshot-controller. They have a stamp of their own, so that a change of
# either set rebuilds that set alone.
csi_bins="csi-provisioner csi-resizer csi-snapshotter snapshot-controller"
csi_pkgs="github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer
github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter
github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller"
csi_stamp="$(
  {
    go version
    echo "$csi_pkgs"
    for f in build.sh csi/go.mod csi/go.sum; do
      echo "== $f"
      cat "$here/$f"
    done
  } | sha256sum | cut -d' ' -f1
)"

csi_up_to_date() {
  for b in $csi_bins; do [ -x "$out/$b" ] || return 1; done
  [ "$(cat "$out/stamp-csi" 2>/dev/null)" = "$csi_stamp" ]
}

if ! csi_up_to_date; then
  exec 9>"$out/.lock"
  flock 9
  if ! csi_up_to_date; then
    rm -f "$out/stamp-csi"
    start=$SECONDS
    echo "build.sh: building $csi_bins into $out" >&2
    rm -rf "$out/tmp-csi" && mkdir "$out/tmp-csi"
    (cd "$here/csi" && go build -trimpath -ldflags "-s -w" -o "$out/tmp-csi/" $csi_pkgs)
    for b in $csi_bins; do mv -f "$out/tmp-csi/$b" "$out/$b"; done
    rmdir "$out/tmp-csi"
    echo "$csi_stamp" >"$out/stamp-csi.tmp"
    mv -f "$out/stamp-csi.tmp" "$out/stamp-csi"
    echo "build.sh: built the CSI sidecars in $((SECONDS - start)) s" >&2
  fi
  exec 9>&-
fi

echo "$out"
