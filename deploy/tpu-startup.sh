#!/bin/bash
# emotionet: startup script for a Cloud TPU VM.
#
# Passed with `emotionet cloud up ... --startup-script deploy/tpu-startup.sh`;
# Google runs it as root at every boot of the VM (it is the node's
# `startup-script` metadata). A recreated VM (after a preemption) runs it again.
#
# It only makes sure the image has what `emotionet cloud run` uses on the VM
# (deploy/vm-setup.sh checks the same list as the ssh user): curl, python3
# (any version: it only unzips the libtpu wheel), tar, flock, setsid and tail.
# tpu-ubuntu2204-base has them all; on another image they are installed
# here. Everything is logged to /var/log/emotionet-startup.log.
set -u
exec >>/var/log/emotionet-startup.log 2>&1
echo "emotionet startup script: $(date -u +%FT%TZ)"

missing=0
for tool in curl python3 tar flock setsid tail sha256sum; do
    command -v "$tool" >/dev/null || missing=1
done
if [ "$missing" = 1 ]; then
    # apt may be busy right after boot (unattended upgrades): retry for a while.
    for attempt in 1 2 3 4 5 6; do
        if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl python3 tar util-linux coreutils; then
            break
        fi
        echo "apt-get failed (attempt $attempt); retrying in 20 s"
        sleep 20
    done
fi
for tool in curl python3 tar flock setsid tail sha256sum; do
    command -v "$tool" >/dev/null || echo "$tool is still missing; emotionet cloud run's setup will say so"
done
echo "emotionet startup script done"
