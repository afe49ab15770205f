#!/usr/bin/env bash
# build-kubeadm.sh builds kubeadm v1.34.2 from source (the tools/kubernetes Go
# module) into the kforge tools cache, for the real-tool tests of
# internal/bootstrap (`kubeadm config validate`). It prints the binary's path.
#
# The cache is ${KFORGE_TOOLS:-$HOME/.cache/kforge-tools}; a binary already
# there is kept unless --force is given. The first build downloads about
# 140 MB of modules and takes minutes; later builds reuse Go's caches.
# The tests find the binary through KFORGE_KUBEADM, then this cache, then PATH.
set -euo pipefail

version=v1.34.2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KFORGE_TOOLS:-$HOME/.cache/kforge-tools}
out=$cache/kubeadm

if [[ -x $out && ${1:-} != --force ]]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
tmp=$(mktemp "$cache/.kubeadm.XXXXXX")
trap 'rm -f "$tmp"' EXIT
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=$version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=34"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
echo "building kubeadm $version into $out" >&2
(
	cd "$root/tools/kubernetes"
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp" k8s.io/kubernetes/cmd/kubeadm
)
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "$out"
