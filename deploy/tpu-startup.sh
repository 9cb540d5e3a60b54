#!/bin/bash
# emotionet: startup script for a Cloud TPU VM.
#
# Passed with `emotionet cloud up ... --startup-script deploy/tpu-startup.sh`;
# Google runs it as root at every boot of the VM (it is the node's
# `startup-script` metadata). A recreated VM (after a preemption) runs it again.
#
# It only makes the image ready for `emotionet cloud run`, whose setup step
# installs libtpu==0.0.30 (PJRT C API 0.81) as the ssh user with pip: so
# python3 and pip must exist. tpu-ubuntu2204-base has python3; pip is added
# here if missing. Everything is logged to /var/log/emotionet-startup.log.
set -u
exec >>/var/log/emotionet-startup.log 2>&1
echo "emotionet startup script: $(date -u +%FT%TZ)"

if ! python3 -m pip --version >/dev/null 2>&1; then
    # apt may be busy right after boot (unattended upgrades): retry for a while.
    for attempt in 1 2 3 4 5 6; do
        if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip; then
            break
        fi
        echo "apt-get failed (attempt $attempt); retrying in 20 s"
        sleep 20
    done
fi
python3 -m pip --version || echo "python3 pip is still missing; emotionet cloud run will try again"

# flock and tar are used by `emotionet cloud run`; both come with Ubuntu.
command -v flock >/dev/null && command -v tar >/dev/null || echo "flock or tar missing"
echo "emotionet startup script done"
