#!/usr/bin/env bash
# The Debian packages the tests and the demo run for real (make deps; .ci/run): git, python3-venv (make venv),
# Prometheus for the analysis tests, podman/runc/debootstrap/slirp4netns for the agent image, an SSH server and client
# and GnuPG for the Git auth tests (tests/unit/test_git_ssh.py, test_git_gpg.py), Chromium for the dashboard's browser
# tests (driven by Playwright, which downloads no browser of its own), a C compiler for Gitea (tools/gitea). Installs
# only what is missing; needs root (or sudo). Go is not among them: Debian ships none new enough (README).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
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
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "make deps: installing ${need[*]} needs root (or sudo)" >&2; exit 1; }
  sudo=sudo
fi
echo "make deps: installing ${need[*]}"
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
