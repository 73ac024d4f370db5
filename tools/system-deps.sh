#!/usr/bin/env bash
# The Debian packages the tests and the demo run for real (make deps; .ci/run): git, python3-venv (make venv),
# Prometheus for the analysis tests, podman/runc/debootstrap/slirp4netns for the agent image, an SSH server and client
# and GnuPG for the Git auth tests (tests/unit/test_git_ssh.py, test_git_gpg.py), Chromium for the dashboard's browser
# tests (driven by Playwright, which downloads no browser of its own), a C compiler for Gitea (tools/gitea), and Go
# for the builds from Go modules (kubelab, Gitea, bench's Flux, Helm and Argo Rollouts). Go >= 1.21 is enough: a build
# that needs a newer Go has it fetch that toolchain from the Go module proxy (tools/gotoolchain.py).
# Debian 13 ships golang-go 1.24; Debian 12's own is 1.19, too old to fetch a toolchain, so on bookworm golang-go
# comes from bookworm-backports (its apt source is added only then). Installs only what is missing; needs root (or sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# True when the `go` on PATH can fetch a toolchain (Go >= 1.21); GOTOOLCHAIN=local asks the local Go, never another.
go_can_switch() {
  local major="" minor=""
  read -r major minor < <(GOTOOLCHAIN=local go version 2>/dev/null \
    | sed -n 's/^go version go\([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || true
  [ -n "$minor" ] && { [ "$major" -gt 1 ] || [ "$minor" -ge 21 ]; }
}

need=()
go_from=""  # the apt release golang-go comes from when the system's own is too old (Debian 12's is 1.19)
if ! go_can_switch; then
  if [ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" = bookworm ]; then
    go_from=bookworm-backports
  else
    need+=(golang-go)
  fi
fi
command -v git >/dev/null || need+=(git)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)  # make venv: Debian splits venv's pip out
command -v prometheus >/dev/null || need+=(prometheus)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v slirp4netns >/dev/null || need+=(slirp4netns)  # the image test gives the container its own network
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)  # sshd lives in /usr/sbin
command -v ssh >/dev/null || need+=(openssh-client)
command -v gpg >/dev/null || need+=(gnupg)
command -v chromium >/dev/null || need+=(chromium)  # tests/browser: Playwright drives /usr/bin/chromium
command -v gcc >/dev/null || need+=(gcc libc6-dev)  # cgo: Gitea's SQLite driver (tools/gitea)
wanted=("${need[@]}")
[ -z "$go_from" ] || wanted+=("golang-go (from $go_from)")
if [ ${#wanted[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "make deps: installing ${wanted[*]} needs root (or sudo)" >&2; exit 1; }
  sudo=sudo
fi
if [ -n "$go_from" ] && ! grep -rqs "$go_from" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "make deps: adding the apt source $go_from for golang-go (/etc/apt/sources.list.d/$go_from.list)"
  echo "deb http://deb.debian.org/debian $go_from main" | $sudo tee "/etc/apt/sources.list.d/$go_from.list" >/dev/null
fi
echo "make deps: installing ${wanted[*]}"
$sudo apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ -n "$go_from" ]; then  # -t: its dependencies (golang-1.2x-go, golang-1.2x-src) come from there too
  $sudo apt-get install -y -qq --no-install-recommends -t "$go_from" golang-go
fi
if ! go_can_switch; then
  echo "make deps: the go first on PATH ($(command -v go || echo none)) is still older than 1.21; put Debian's first" >&2
  exit 1
fi
