#!/bin/sh
# Provisions the Vagrant VM (Debian 12) so Weft's kernel tests run in it, as on CI:
# headers for the VM's own kernel (BCC compiles against them), then scripts/setup
# (BCC, bpffs, the virtualenv). Run as root by `vagrant up`; safe to run again.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "linux-headers-$(uname -r)" rsync
cd /weft
./scripts/setup
echo "provisioned: run the tests with  vagrant ssh -c 'cd /weft && sudo ./scripts/test'"
