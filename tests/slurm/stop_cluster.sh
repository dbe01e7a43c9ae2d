#!/usr/bin/env bash
# Stop the cluster that start_cluster.sh started in STATE_DIR: cancel its jobs, then stop
# its slurmd, slurmctld and munged (by their pid files there, nothing else), and leave the
# folder (logs) in place.
set -uo pipefail
state=${1:?usage: stop_cluster.sh STATE_DIR}
export SLURM_CONF=$state/slurm.conf

stop() {  # stop NAME: the process in STATE_DIR/NAME.pid, if it is still that program
    local pidfile=$state/$1.pid pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
        kill -TERM "$pid"
        for _ in $(seq 40); do [ -e "/proc/$pid" ] || break; sleep 0.5; done
        [ -e "/proc/$pid" ] && kill -KILL "$pid"
    fi
    rm -f "$pidfile"
}

if [ -s "$state/slurmctld.pid" ] && scontrol ping >/dev/null 2>&1; then
    scancel --user="$(id -un)" 2>/dev/null
    for _ in $(seq 60); do  # their processes end within KillWait
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
fi
stop slurmd
stop slurmctld
stop munged
echo "stop_cluster: stopped the cluster in $state" >&2
