#!/usr/bin/env bash
# build-lab.sh builds, from Go module sources, the static linux/amd64
# binaries that the lab's hosts install (see tools/README.md): Kubernetes
# v1.34.2 (kubeadm kubelet kubectl kube-apiserver kube-controller-manager
# kube-scheduler kube-proxy), etcd v3.5.27 with etcdctl and etcdutl v3.5.35,
# CoreDNS v1.12.1, flanneld v0.27.4 with Flannel's CNI plugin (flannel), and
# the CNI plugins v1.8.0 bridge, host-local, loopback and portmap.
#
# They go to ${KFORGE_LAB_CACHE:-$HOME/.cache/kforge-lab}/bin/. The file
# VERSIONS there records, for each binary, the version and the Go release
# it was built with; a binary already built for the same pair is kept,
# unless --force is given. Progress, with each binary's build time, goes
# to stderr; the last line on stdout is the bin directory.
#
# It also checks that gcc and libc6-dev (flanneld links C code), and the
# Debian packages whose files the lab's images copy (busybox-static,
# iptables; see test/testutil/labimage), are installed, and installs the
# missing ones with apt-get when it runs as root.
#
# The first build of everything takes about 15 minutes on two cores with
# cold Go caches; later builds reuse Go's module and build caches.
set -euo pipefail

force=false
case ${1:-} in
--force) force=true ;;
"") ;;
*)
	echo "usage: $0 [--force]" >&2
	exit 2
	;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KFORGE_LAB_CACHE:-$HOME/.cache/kforge-lab}
bin=$cache/bin
versions=$bin/VERSIONS
gover=$(go env GOVERSION)

k8s=v1.34.2
k8s_date=2025-11-11T19:00:37Z # the tag's time, as the Go module proxy reports it
etcd=v3.5.27
etcd_sha=62d8759 # the commit of server/v3.5.27, as the Go module proxy reports it
etcdctl=v3.5.35
coredns=v1.12.1
coredns_sha=707c7c1 # the commit of v1.12.1, as the Go module proxy reports it
flannel=v0.27.4
flannel_cni=v0.9.1
cni=v1.8.0

k8s_ld="-X k8s.io/component-base/version.gitVersion=$k8s"
k8s_ld+=" -X k8s.io/component-base/version.gitMajor=1"
k8s_ld+=" -X k8s.io/component-base/version.gitMinor=34"
k8s_ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
k8s_ld+=" -X k8s.io/component-base/version.buildDate=$k8s_date"
k8s_ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$k8s"
k8s_ld+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
k8s_ld+=" -X k8s.io/client-go/pkg/version.gitMinor=34"
k8s_ld+=" -X k8s.io/client-go/pkg/version.gitTreeState=clean"
k8s_ld+=" -X k8s.io/client-go/pkg/version.buildDate=$k8s_date"
cni_ld="-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion"

mkdir -p "$bin"
touch "$versions"
tmp=
trap 'rm -f "${tmp:-}"' EXIT

# recorded NAME prints the "version go-release" VERSIONS holds for NAME.
recorded() {
	awk -v n="$1" '$1 == n { print $2, $3 }' "$versions"
}

# record NAME VERSION writes NAME's line of VERSIONS.
record() {
	local t
	t=$(mktemp "$bin/.VERSIONS.XXXXXX")
	awk -v n="$1" '$1 != n' "$versions" >"$t"
	echo "$1 $2 $gover" >>"$t"
	sort -o "$t" "$t"
	mv -f "$t" "$versions"
}

# build NAME VERSION MODULE PACKAGE LDFLAGS WANT ARGS... builds PACKAGE in
# the Go module tools/MODULE as NAME, unless VERSIONS says it is there for
# VERSION and this Go release, then checks that `NAME ARGS...` prints WANT.
# With cgo=1 in its environment, it links C code statically (pure Go net
# and os/user, so no glibc NSS at run time); without, it builds with
# CGO_ENABLED=0.
build() {
	local name=$1 version=$2 module=$3 pkg=$4 ldflags=$5 want=$6
	shift 6
	local start=$SECONDS
	if [[ $force == false && -x $bin/$name && $(recorded "$name") == "$version $gover" ]]; then
		printf '%-24s %-8s up to date\n' "$name" "$version" >&2
		return
	fi
	tmp=$(mktemp "$bin/.$name.XXXXXX")
	(
		cd "$root/tools/$module"
		if [[ ${cgo:-0} == 1 ]]; then
			CGO_ENABLED=1 GOOS=linux GOARCH=amd64 go build -trimpath -tags netgo,osusergo \
				-ldflags "-s -w $ldflags -extldflags -static" -o "$tmp" "$pkg"
		else
			CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp" "$pkg"
		fi
	)
	chmod 0755 "$tmp"
	local got
	got=$("$tmp" "$@" 2>&1 || true)
	if [[ $got != *"$want"* ]]; then
		echo "$name: \`$name $*\` printed:" >&2
		echo "$got" >&2
		echo "want it to contain: $want" >&2
		exit 1
	fi
	mv -f "$tmp" "$bin/$name"
	tmp=
	record "$name" "$version"
	printf '%-24s %-8s built in %d s\n' "$name" "$version" $((SECONDS - start)) >&2
}

# The C toolchain flanneld needs, and the busybox and iptables files the
# images' tools layer copies.
missing=()
command -v gcc >/dev/null || missing+=(gcc)
[[ -e /usr/lib/x86_64-linux-gnu/libc.a ]] || missing+=(libc6-dev)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
[[ -x /usr/sbin/xtables-nft-multi ]] || missing+=(iptables)
if ((${#missing[@]})); then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		echo "installing ${missing[*]}" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
	else
		echo "warning: install ${missing[*]} (flanneld links C code; the lab's images copy files of busybox-static and iptables)" >&2
	fi
fi

total=$SECONDS
build kubeadm $k8s kubernetes k8s.io/kubernetes/cmd/kubeadm "$k8s_ld" "$k8s" version -o short
build kubelet $k8s kubernetes k8s.io/kubernetes/cmd/kubelet "$k8s_ld" "Kubernetes $k8s" --version
build kubectl $k8s kubernetes k8s.io/kubernetes/cmd/kubectl "$k8s_ld" "Client Version: $k8s" version --client
build kube-apiserver $k8s kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ld" "Kubernetes $k8s" --version
build kube-controller-manager $k8s kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ld" "Kubernetes $k8s" --version
build kube-scheduler $k8s kubernetes k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ld" "Kubernetes $k8s" --version
build kube-proxy $k8s kubernetes k8s.io/kubernetes/cmd/kube-proxy "$k8s_ld" "Kubernetes $k8s" --version
build etcd $etcd etcd go.etcd.io/etcd/server/v3 \
	"-X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_sha" "etcd Version: ${etcd#v}" --version
build etcdctl $etcdctl etcd/etcdctl go.etcd.io/etcd/etcdctl/v3 "" "etcdctl version: ${etcdctl#v}" version
build etcdutl $etcdctl etcd/etcdctl go.etcd.io/etcd/etcdutl/v3 "" "etcdutl version: ${etcdctl#v}" version
build coredns $coredns coredns github.com/coredns/coredns \
	"-X github.com/coredns/coredns/coremain.GitCommit=$coredns_sha" "CoreDNS-${coredns#v}" -version
# flanneld's UDP backend is C on amd64 (flannel's own Makefile builds it
# with cgo and -static there too).
cgo=1 build flanneld $flannel flannel github.com/flannel-io/flannel \
	"-X github.com/flannel-io/flannel/pkg/version.Version=$flannel" "$flannel" --version
build flannel $flannel_cni flannel/cniplugin github.com/containernetworking/plugins/plugins/meta/flannel \
	"$cni_ld=$flannel_cni" "CNI flannel plugin $flannel_cni" --version
build bridge $cni cni github.com/containernetworking/plugins/plugins/main/bridge \
	"$cni_ld=$cni" "CNI bridge plugin $cni" --version
build host-local $cni cni github.com/containernetworking/plugins/plugins/ipam/host-local \
	"$cni_ld=$cni" "CNI host-local plugin $cni" --version
build loopback $cni cni github.com/containernetworking/plugins/plugins/main/loopback \
	"$cni_ld=$cni" "CNI loopback plugin $cni" --version
build portmap $cni cni github.com/containernetworking/plugins/plugins/meta/portmap \
	"$cni_ld=$cni" "CNI portmap plugin $cni" --version
echo "all binaries ready in $((SECONDS - total)) s" >&2
echo "$bin"
