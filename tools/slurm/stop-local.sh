#!/usr/bin/env bash
# Stop the one-node Slurm cluster started by start-local.sh (slurmd,
# slurmctld, then munged).  Safe to run when nothing is running.
#
#   STOP_MUNGE=0     keep munged running (default: stop it too)
#   SLURM_LOCAL_DIR  must match the value given to start-local.sh
set -euo pipefail

BASE="${SLURM_LOCAL_DIR:-/var/spool/slurm-local}"
STOP_MUNGE="${STOP_MUNGE:-1}"

log() { echo "stop-local.sh: $*" >&2; }

# daemon_pid NAME PIDFILE: print the pid if PIDFILE names a live NAME process
# (never signal a process that merely reused a stale pid).
daemon_pid() {
    local name=$1 pidfile=$2 pid
    [[ -s "$pidfile" ]] || { log "$name: no pid file"; return 1; }
    pid=$(cat "$pidfile")
    if [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
        echo "$pid"
    else
        log "$name: not running"
        rm -f "$pidfile"
        return 1
    fi
}

# stop NAME:PIDFILE...: SIGTERM all, wait up to 15 s, then SIGKILL.
stop() {
    local spec name pidfile pid pids=() files=()
    for spec in "$@"; do
        name=${spec%%:*}; pidfile=${spec#*:}
        if pid=$(daemon_pid "$name" "$pidfile"); then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid"); files+=("$pidfile")
        fi
    done
    (( ${#pids[@]} )) || return 0
    for _ in $(seq 1 75); do
        local left=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
        (( left )) || break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not exit; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "${files[@]}"
}

stop "slurmd:$BASE/run/slurmd.pid" "slurmctld:$BASE/run/slurmctld.pid"
if [[ "$STOP_MUNGE" == 1 ]]; then
    stop "munged:/run/munge/munged.pid"
fi
