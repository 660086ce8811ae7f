#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying `fcn-sweep slurm ...` and for the tests marked
# `slurm`: munged, slurmctld and slurmd (Debian's munge + slurm-wlm), with this machine's real CPUs and
# memory as the one node. No cgroups, no accounting database: ProctrackType=proctrack/linuxproc
# follows a job's processes by their parent ids, TaskPlugin=task/none binds nothing.
#
#   scripts/slurm_local.sh          start it (does nothing when it already runs); needs root
#   scripts/slurm_local.sh --stop   stop it
#
# It writes /etc/slurm/slurm.conf (where sbatch, squeue and scancel look) and refuses to replace one it
# did not write. State and logs live in $FCN_SLURM_DIR (default /var/tmp/fcn-sweep-slurm).
set -euo pipefail

conf=/etc/slurm/slurm.conf
state=${FCN_SLURM_DIR:-/var/tmp/fcn-sweep-slurm}
marker="# written by fcn-sweep scripts/slurm_local.sh"
die() { echo "slurm_local: $*" >&2; exit 2; }

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
    # slurmd first: it reports its jobs' end to slurmctld. Each daemon gets TERM, then a few seconds.
    for name in slurmd slurmctld munged; do
        pidfile=$state/$name.pid
        pid_alive "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$pidfile"
    done
}

case ${1:-} in
    --stop) stop; exit 0 ;;
    "") ;;
    *) die "unknown argument '$1'; usage: $0 [--stop]" ;;
esac

[ "$(id -u)" -eq 0 ] || die "needs root (it starts system daemons); run it with sudo"
for bin in munged slurmctld slurmd sinfo; do
    command -v "$bin" >/dev/null || die "$bin not found; install the Debian packages: apt-get install slurm-wlm munge"
done
if [ -e "$conf" ] && ! grep -qF "$marker" "$conf"; then
    die "$conf exists and was not written by this script; not replacing a real cluster's configuration"
fi

mkdir -p "$state/spool" "$state/ctld" "$state/munge"
chown munge:munge "$state/munge"
chmod 700 "$state/munge"
host=$(hostname -s)
# This machine as slurmd sees it: "NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105"
node=$(slurmd -C | head -1)

cat >"$conf.new" <<EOF
$marker
ClusterName=fcnsweep
SlurmctldHost=$host
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Seconds between a job's SIGTERM and its SIGKILL when it is cancelled or runs out of time.
KillWait=30
SchedulerParameters=sched_interval=2
$node State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
if cmp -s "$conf.new" "$conf"; then rm "$conf.new"; else mv "$conf.new" "$conf"; fi

munge_socket=/run/munge/munge.socket.2
if ! pid_alive "$state/munged.pid"; then
    mkdir -p /run/munge
    chown munge:munge /run/munge
    # munged writes its own pid file; run it as the munge user, as its service unit does.
    runuser -u munge -- munged --pid-file="$state/munge/munged.pid" --log-file="$state/munge/munged.log" --force
    cp "$state/munge/munged.pid" "$state/munged.pid"
fi
pid_alive "$state/slurmctld.pid" || slurmctld
pid_alive "$state/slurmd.pid" || slurmd

# Ready when the node accepts jobs: idle (or mixed/allocated, when jobs already run).
for _ in $(seq 100); do
    if sinfo -h -n "$host" -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "slurm_local: one-node cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t')" >&2
        exit 0
    fi
    # A node left down by an earlier run (e.g. a reboot) comes back on request.
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 0.2
done
die "the cluster did not come up; see $state/slurmctld.log, $state/slurmd.log and $munge_socket"
