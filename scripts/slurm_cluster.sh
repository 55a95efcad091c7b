#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, from Debian's slurm-wlm and munge:
# munged, slurmctld and slurmd on localhost, one partition "debug" with this machine's
# CPUs. For trying hydra/launcher=slurm end to end (tests/test_slurm.py; .ci/run starts it).
#
#   sudo scripts/slurm_cluster.sh install   # apt-get install slurm-wlm munge
#   sudo scripts/slurm_cluster.sh start     # write /etc/slurm/slurm.conf, start the daemons, wait for the node
#   scripts/slurm_cluster.sh status         # sinfo
#   sudo scripts/slurm_cluster.sh stop
#
# No cgroups and no accounting database: ProctrackType=proctrack/linuxproc and
# TaskPlugin=task/none, as on a container or a VM without systemd.
set -euo pipefail
cmd=${1:-start}
conf=/etc/slurm/slurm.conf
state=/var/spool/slurmctld
spool=/var/spool/slurmd

install() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MB, leave 1 GB to the system
  mkdir -p /etc/slurm "$state" "$spool" /var/log/slurm
  cat > "$conf" <<EOF
ClusterName=ablate
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
# job credentials live 30 s (default 120): a requeued job waits that long before it
# may start again, which is all a one-machine test cluster needs
AuthInfo=cred_expire=30
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$state
SlurmdSpoolDir=$spool
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# keep finished jobs visible to scontrol for 5 minutes (there is no accounting database)
MinJobAge=300
KillWait=10
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  command -v slurmctld >/dev/null || { echo "slurm_cluster: slurm-wlm is not installed: $0 install" >&2; exit 1; }
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
  write_conf
  if pgrep -x slurmctld >/dev/null; then scontrol reconfigure; else slurmctld; fi
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 60); do  # the node registers within a few seconds
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true
      echo "slurm_cluster: up: $(sinfo -h -o '%P %D %t %c CPUs')"
      return 0
    fi
    sleep 1
  done
  echo "slurm_cluster: the node did not come up; see /var/log/slurm/" >&2
  sinfo >&2 || true
  exit 1
}

stop() {
  pkill -x slurmd || true
  pkill -x slurmctld || true
  pkill -x munged || true
}

case "$cmd" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
