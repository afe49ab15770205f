#!/usr/bin/env bash
# Installs what kforge's tests use besides Go: the AWS emulator (moto), the
# real tools that check generated artefacts (haproxy, etcd, shellcheck,
# OpenSSH), and kubeadm built from source. Safe to run again: it skips what
# is there. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh >/dev/null || need_apt+=(openssh-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${need_apt[@]}"
fi
mkdir -p /run/sshd 2>/dev/null || true

if ! command -v moto_server >/dev/null; then
  pip install 'moto[server]>=5.2,<5.3'
fi

go mod download
scripts/build-kubeadm.sh
