#!/bin/bash
# emotionet: the campaign on a TPU VM, detached from any ssh session.
#
# `emotionet cloud run` and `emotionet cloud logs` ship this script and call
# it over ssh; the lines it prints that start with EMOTIONET- are read by
# src/cloud/campaign.rs. Failures go to stderr with exit status 75 (a lock
# that stays held past its timeout, EMOTIONET_LOCK_TIMEOUT seconds, default
# 60, named with its holder), 71 (flock cannot work: missing, or a lock file
# that cannot be opened; never mistaken for a held lock; or a process of a
# stopped campaign that survived SIGKILL) or 2 (usage). Everything lives in
# DIR (~/emotionet-cloud/campaign):
#   control.lock, control.owner  serialises start and stop (with a timeout, naming its holder)
#   campaign.lock, campaign.owner held by the running campaign for its whole life
#   current, count               the newest campaign's id, how many were started
#   ID.command, ID.log, ID.pid, ID.exit  one campaign: what ran, its output, its process, its exit status
#
#   vm-campaign.sh start DIR COMMAND    start COMMAND detached unless a campaign runs:
#                                       prints "EMOTIONET-CAMPAIGN started ID" or "EMOTIONET-CAMPAIGN running ID"
#   vm-campaign.sh attach DIR ID FROM follow|once
#                                       ID's log from line FROM, each line as "L<n><TAB>text"; with
#                                       follow until the campaign ends; then "EMOTIONET-CAMPAIGN-EXIT ID CODE"
#                                       (CODE: its exit status, "running", or "unknown" if it never wrote one)
#   vm-campaign.sh status DIR           "EMOTIONET-CAMPAIGN running ID", "... ended ID CODE" or "... none"
#   vm-campaign.sh stop DIR             SIGTERM to the campaign's process group (emotionet run forwards it to
#                                       each child group it started; they checkpoint and stop), then, after
#                                       EMOTIONET_STOP_GRACE seconds (default 120), SIGKILL to every process
#                                       group of the campaign's session; returns when none of its processes
#                                       is left: "EMOTIONET-CAMPAIGN stopped ID CODE" or "... killed ID"
#
# The campaign runs under setsid + nohup with its output in ID.log: it has no
# terminal and its own session, so the ssh session (or the laptop) going away
# does not stop it. Only one campaign runs at a time: it holds campaign.lock,
# and `start` attaches to a running one instead of starting a second. The
# session is also how `stop` finds everything the campaign started: the
# orchestrator puts each trainer in a process group of its own, but all of
# them stay in the campaign's session.
set -uo pipefail
action=${1:?usage: vm-campaign.sh start|attach|status|stop DIR ...}
dir=${2:?usage: vm-campaign.sh ACTION DIR ...}
lock_timeout=${EMOTIONET_LOCK_TIMEOUT:-60}

# flock failing for any reason but a held lock (its exit status 1) is that
# reason, said as such: never "a campaign is running" or "lock timeout".
flock_broken() {
    echo "vm-campaign.sh: cannot use the lock file $1: $2" >&2
    exit 71
}
if ! command -v flock >/dev/null 2>&1; then
    echo "vm-campaign.sh: flock (util-linux) is not installed on $(hostname); it keeps campaigns from running twice: install util-linux" >&2
    exit 71
fi
mkdir -p "$dir" || { echo "vm-campaign.sh: cannot create the campaign folder $dir" >&2; exit 71; }

# Opens lock file $2 on file descriptor $1 (8 or 9) for appending.
open_lock() {
    local err
    if ! err=$( { eval "exec $1>>\"\$2\""; } 2>&1 ); then
        flock_broken "$2" "cannot open it: $err"
    fi
    eval "exec $1>>\"\$2\""
}

# The control lock, with a timeout that names whoever holds it.
take_control() {
    open_lock 9 "$dir/control.lock"
    local err rc
    err=$(flock -w "$lock_timeout" 9 2>&1)
    rc=$?
    case $rc in
        0) ;;
        1)
            echo "lock timeout: $dir/control.lock is still held after ${lock_timeout}s by: $(cat "$dir/control.owner" 2>/dev/null || echo 'an unknown process')" >&2
            exit 75
            ;;
        *) flock_broken "$dir/control.lock" "flock exited with status $rc: $err" ;;
    esac
    echo "pid $$ ($1, from emotionet cloud) on $(hostname) since $(date -u +%FT%TZ)" >"$dir/control.owner"
}

# Sets $running to the running campaign's id, or to nothing if none runs.
# The campaign holds campaign.lock exclusively; if we can take it, nothing
# runs. The probe takes it shared, so two probes at the same moment (a
# `cloud logs` and a `cloud run` polling the status) never see each other
# as a campaign.
running=
probe() {
    local err rc
    err=$(flock -n -s "$dir/campaign.lock" true 2>&1)
    rc=$?
    case $rc in
        0) running= ;;
        1) running=$(cat "$dir/current" 2>/dev/null || echo unknown) ;;
        *) flock_broken "$dir/campaign.lock" "flock exited with status $rc: $err" ;;
    esac
}

# The live (not zombie) processes of session $1, as "PID PGID" lines.
session_members() {
    local stat line rest
    local -a f
    for stat in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$stat" || continue
        rest=${line##*) }
        read -r -a f <<<"$rest"
        # f: state, ppid, pgrp, session
        [ "${f[3]}" = "$1" ] && [ "${f[0]}" != Z ] && echo "${stat//[!0-9]/} ${f[2]}"
    done
    return 0
}

exit_code_of() {
    cat "$dir/$1.exit" 2>/dev/null || echo unknown
}

# Runs as the detached campaign, in its own session and process group. It
# alone keeps campaign.lock (fd 8, closed for the command), survives the
# SIGTERM of `stop`, and waits for every process the command left in its
# session (a trainer still writing its checkpoint, in its own process group)
# before it records the exit status and lets go of the lock: the campaign
# is over when they all are.
read -r -d '' WRAPPER <<'SH'
id=$1; dir=$2; command=$3
trap ':' TERM
others_in_session() {
    local stat line rest
    local -a f
    for stat in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$stat" || continue
        rest=${line##*) }
        read -r -a f <<<"$rest"
        [ "${f[3]}" = "$$" ] && [ "${f[0]}" != Z ] && [ "${stat//[!0-9]/}" != "$$" ] && return 0
    done
    return 1
}
bash -c "$command" 8>&-
code=$?
while others_in_session; do sleep 0.5; done
echo "$code" >"$dir/$id.exit.tmp" && mv -f "$dir/$id.exit.tmp" "$dir/$id.exit"
exit "$code"
SH

start() {
    local command=$1
    take_control start
    probe
    if [ -n "$running" ]; then
        echo "EMOTIONET-CAMPAIGN running $running"
        return 0
    fi
    # No campaign holds the lock, and none can start while we hold the
    # control lock; a status probe may hold it shared for an instant: wait
    # for that rather than take it for a campaign.
    open_lock 8 "$dir/campaign.lock"
    local err rc
    err=$(flock -w "$lock_timeout" 8 2>&1)
    rc=$?
    case $rc in
        0) ;;
        1)
            echo "lock timeout: $dir/campaign.lock is still held after ${lock_timeout}s, though no campaign held it when we looked; last campaign: $(cat "$dir/campaign.owner" 2>/dev/null || echo 'none recorded')" >&2
            exit 75
            ;;
        *) flock_broken "$dir/campaign.lock" "flock exited with status $rc: $err" ;;
    esac
    local count
    count=$(( $(cat "$dir/count" 2>/dev/null || echo 0) + 1 ))
    echo "$count" >"$dir/count"
    id="$(date -u +%Y%m%dT%H%M%SZ)-$count"
    printf '%s\n' "$command" >"$dir/$id.command"
    echo "$id" >"$dir/current.tmp" && mv -f "$dir/current.tmp" "$dir/current"
    # fd 8 (campaign.lock) goes with it; fd 9 (the control lock) must not.
    setsid nohup bash -c "$WRAPPER" campaign "$id" "$dir" "$command" >"$dir/$id.log" 2>&1 </dev/null 9>&- &
    local pid=$!
    echo "$pid" >"$dir/$id.pid"
    echo "campaign $id, pid $pid (its process group), on $(hostname), started $(date -u +%FT%TZ)" >"$dir/campaign.owner"
    echo "EMOTIONET-CAMPAIGN started $id"
}

attach() {
    local id=$1 from=$2 mode=$3
    if [ "$id" = current ]; then
        id=$(cat "$dir/current" 2>/dev/null) || { echo "EMOTIONET-CAMPAIGN none"; return 0; }
    fi
    local log="$dir/$id.log"
    [ -f "$log" ] || { echo "EMOTIONET-CAMPAIGN none"; return 0; }
    local pid
    pid=$(cat "$dir/$id.pid" 2>/dev/null || echo 0)
    local follow=()
    probe
    if [ "$mode" = follow ] && [ "$pid" -gt 0 ] && [ "$running" = "$id" ]; then
        # Follows until the campaign's process ends (tail checks every second).
        follow=(--follow=name --pid="$pid")
    fi
    local n=$from line
    # Numbered, so a reader that re-attaches (or an ssh command run twice)
    # can drop what it already has.
    tail -n "+$from" "${follow[@]}" "$log" | while IFS= read -r line || [ -n "$line" ]; do
        printf 'L%d\t%s\n' "$n" "$line"
        n=$((n + 1))
    done
    if [ ${#follow[@]} -gt 0 ]; then
        # The campaign's process has ended; its lock goes with its last
        # file descriptor, which can trail its exit on a loaded machine.
        local tries=0
        probe
        while [ "$running" = "$id" ] && [ $tries -lt 50 ]; do
            sleep 0.2
            tries=$((tries + 1))
            probe
        done
    fi
    probe
    if [ "$running" = "$id" ]; then
        echo "EMOTIONET-CAMPAIGN-EXIT $id running"
    else
        echo "EMOTIONET-CAMPAIGN-EXIT $id $(exit_code_of "$id")"
    fi
}

status() {
    local id
    probe
    if [ -n "$running" ]; then
        echo "EMOTIONET-CAMPAIGN running $running"
    elif id=$(cat "$dir/current" 2>/dev/null); then
        echo "EMOTIONET-CAMPAIGN ended $id $(exit_code_of "$id")"
    else
        echo "EMOTIONET-CAMPAIGN none"
    fi
}

stop() {
    take_control stop
    probe
    local id=$running
    if [ -z "$id" ]; then
        echo "EMOTIONET-CAMPAIGN none"
        return 0
    fi
    # The wrapper leads the campaign's session and its first process group.
    local sid
    sid=$(cat "$dir/$id.pid")
    kill -TERM -- "-$sid" 2>/dev/null
    local grace=${EMOTIONET_STOP_GRACE:-120} waited=0
    while [ "$waited" -lt $((grace * 5)) ]; do
        probe
        if [ "$running" != "$id" ] && [ -z "$(session_members "$sid")" ]; then
            echo "EMOTIONET-CAMPAIGN stopped $id $(exit_code_of "$id")"
            return 0
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    # What outlived the grace (a trainer that ignores SIGTERM or hangs in
    # a plugin call, in a process group of its own) is killed, group by
    # group, until no process of the session is left: none may hold a run
    # folder's lock for the next campaign.
    local members pid group tries=0
    members=$(session_members "$sid")
    while [ -n "$members" ] && [ $tries -lt 50 ]; do
        while read -r pid group; do
            kill -KILL -- "-$group" 2>/dev/null
            kill -KILL "$pid" 2>/dev/null
        done <<<"$members"
        sleep 0.2
        tries=$((tries + 1))
        members=$(session_members "$sid")
    done
    if [ -n "$members" ]; then
        echo "vm-campaign.sh: processes of campaign $id survived SIGKILL (pid pgid): $(echo $members)" >&2
        exit 71
    fi
    [ -f "$dir/$id.exit" ] || { echo 137 >"$dir/$id.exit.tmp" && mv -f "$dir/$id.exit.tmp" "$dir/$id.exit"; }
    echo "EMOTIONET-CAMPAIGN killed $id"
}

case "$action" in
    start) start "${3:?start needs the command}" ;;
    attach) attach "${3:?attach needs an id}" "${4:-1}" "${5:-follow}" ;;
    status) status ;;
    stop) stop ;;
    *) echo "vm-campaign.sh: unknown action $action (start, attach, status, stop)" >&2; exit 2 ;;
esac
