#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests and for trying the SLURM launcher.
#
#   eval "$(tests/slurm/start_cluster.sh [STATE_DIR])"   # prints: export SLURM_CONF=...
#   tests/slurm/stop_cluster.sh STATE_DIR
#
# Installs Debian's munge, slurmctld, slurmd and slurm-client if missing (as root), writes a
# slurm.conf for this host (its CPUs and memory, one partition "debug", consumable CPUs so
# 1-CPU jobs run side by side, requeue allowed), and starts munged, slurmctld and slurmd
# with every file they write (key, sockets, state, logs, pid files) under STATE_DIR (a new
# temporary folder if not given) and on free ports of 127.0.0.1. stop_cluster.sh stops
# exactly these processes. Needs root. Exit code 3: not root, or the packages cannot be
# installed; 4: the cluster did not come up (STATE_DIR/log has the daemons' logs). The
# last line on stderr says why.
set -euo pipefail
state=${1:-$(mktemp -d /tmp/hypermask-slurm.XXXXXX)}
mkdir -p "$state"
state=$(cd "$state" && pwd)
say() { echo "start_cluster: $*" >&2; }
export PATH=$PATH:/usr/sbin:/sbin  # the daemons, for users whose PATH lacks them

install_packages() {
    local missing=()
    for command in munged slurmctld slurmd sbatch; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing munge and SLURM (missing: ${missing[*]})"
    # the packages' own services would start with the system's config: not wanted here
    local policy=/usr/sbin/policy-rc.d added=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
    fi
    local status=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o DPkg::Lock::Timeout=600 --no-install-recommends munge slurmctld slurmd \
        slurm-client; } >"$state/apt.log" 2>&1 || status=3
    [ -n "$added" ] && rm -f "$policy"
    if [ $status -ne 0 ]; then
        tail -5 "$state/apt.log" >&2
        say "apt-get could not install them: $(tail -1 "$state/apt.log") (log: $state/apt.log)"
    fi
    return $status
}

free_port() {  # a port of 127.0.0.1 nothing listens on, from $1 up
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}

write_config() {
    local host node ctld_port slurmd_port memory
    host=$(hostname -s)
    node=$(slurmd -C | head -1)  # NodeName=... CPUs=... Boards=... RealMemory=...
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((memory * 9 / 10))/" <<<"$node")
    ctld_port=$(free_port $((20000 + RANDOM % 20000)))
    slurmd_port=$(free_port $((ctld_port + 1)))
    : >"$state/plugstack.conf"
    cat >"$state/slurm.conf" <<CONF
ClusterName=hypermask-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default
# 120 s, at least 5)
AuthInfo=socket=$state/munge/munge.socket,cred_expire=5
StateSaveLocation=$state/slurmctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
PlugStackConfig=$state/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# look at pending jobs every 2 s, not every 30-60 s: a requeued job starts again at once
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
KillWait=10  # seconds between SIGTERM and SIGKILL when a job is cancelled or requeued
ReturnToService=2
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

wait_for() {  # wait_for SECONDS COMMAND...: until the command succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.5
    done
}

node_idle() { [ "$(sinfo -h -o %t 2>/dev/null)" = idle ]; }

start_daemons() {
    mkdir -p "$state/munge" "$state/log" "$state/slurmctld" "$state/slurmd"
    chmod 755 "$state/munge"
    dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
    chmod 600 "$state/munge/munge.key"
    munged --socket="$state/munge/munge.socket" --key-file="$state/munge/munge.key" \
        --pid-file="$state/munged.pid" --log-file="$state/log/munged.log" \
        --seed-file="$state/munge/munged.seed" --force
    wait_for 20 test -S "$state/munge/munge.socket" || return 4
    export SLURM_CONF=$state/slurm.conf
    slurmctld -f "$SLURM_CONF"
    wait_for 30 scontrol ping || return 4
    slurmd -f "$SLURM_CONF"
    wait_for 60 node_idle || return 4
}

[ "$(id -u)" -eq 0 ] || { say "needs root (slurmd and slurmctld run as root here)"; exit 3; }
install_packages || exit $?
write_config
if ! start_daemons; then
    tail -n 5 "$state"/log/*.log >&2 || true
    "$(dirname "$0")/stop_cluster.sh" "$state" || true
    first_error=$({ grep -h fatal "$state"/log/*.log; grep -h error "$state"/log/*.log; } \
        2>/dev/null | head -1 || true)
    say "the cluster did not come up (${first_error:-no error logged}); logs in $state/log"
    exit 4
fi
say "one node up ($(sinfo -h -o '%n, %c CPUs, partition %P')); state in $state"
echo "export SLURM_CONF=$state/slurm.conf"
