#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for avatar's SLURM tests (and for trying the
# launcher by hand). Installs nothing: it needs Debian's packages
#   apt-get install -y slurm-wlm munge slurmdbd mariadb-server
# and runs as root (the daemons run as root, with every file under one temp dir).
#
#   tests/slurm/cluster.sh start    write the configs, start the daemons, wait for the node
#   tests/slurm/cluster.sh stop     cancel every job, stop the daemons (a later start works)
#   tests/slurm/cluster.sh status   what runs, and the line to use the cluster from a shell
#
# Then, in the shell that submits:  export SLURM_CONF=$AVATAR_SLURM_DIR/etc/slurm.conf
#
# The cluster: node <hostname -s> with 8 CPUs (more than this machine has: SLURM does not check
# without cgroups) and 4 "GPUs" that are placeholder device files (/dev/null, ...): jobs that ask
# for a GPU get one and CUDA_VISIBLE_DEVICES, but there is no GPU behind it. Partitions:
#   gpu  (default)  the node above
#   cpu             a second node that has no GPU gres; it is only declared (no slurmd runs for
#                   it), so a job there stays pending, and a GPU request there is refused at
#                   submission: that is what the partition is for
# Accounting: slurmdbd with a MariaDB in the temp dir, so sacct reads job states (submitit reads
# states only through sacct). AVATAR_SLURM_ACCOUNTING=0 starts a cluster without it.
#
# Environment (all optional):
#   AVATAR_SLURM_DIR          temp dir for everything (default /tmp/avatar-slurm)
#   AVATAR_SLURMCTLD_PORT     6817    AVATAR_SLURMD_PORT  6818
#   AVATAR_SLURMDBD_PORT      6819    AVATAR_MARIADB_PORT 3307
#   AVATAR_SLURM_ACCOUNTING   1 (0: no slurmdbd, no MariaDB; sacct then fails)
#   AVATAR_SLURM_START_TIMEOUT_S  60: how long start waits for the node to be idle
set -euo pipefail

DIR=${AVATAR_SLURM_DIR:-/tmp/avatar-slurm}
CTLD_PORT=${AVATAR_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${AVATAR_SLURMD_PORT:-6818}
DBD_PORT=${AVATAR_SLURMDBD_PORT:-6819}
DB_PORT=${AVATAR_MARIADB_PORT:-3307}
ACCOUNTING=${AVATAR_SLURM_ACCOUNTING:-1}
START_TIMEOUT_S=${AVATAR_SLURM_START_TIMEOUT_S:-60}
HOST=$(hostname -s)
CPU_NODE=${HOST}-cpu
CONF=$DIR/etc/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket
export SLURM_CONF=$CONF

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

need() {
    local missing=()
    for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    if ((${#missing[@]})); then
        die "not found: ${missing[*]}. Install the packages first (as root):" \
            "apt-get install -y slurm-wlm munge slurmdbd mariadb-server"
    fi
}

# The pid in FILE, if that process is alive and is COMM (a recycled pid is not ours).
alive_pid() {
    local file=$1 comm=$2 pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$comm"* ]] || return 1
    echo "$pid"
}

# Stop the daemon whose pid is in FILE: SIGTERM, then SIGKILL after a few seconds
# (slurmd ignores SIGTERM while it retries a dead controller).
stop_daemon() {
    local file=$1 comm=$2 pid i
    pid=$(alive_pid "$file" "$comm") || { rm -f "$file"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        [[ -d /proc/$pid ]] || { rm -f "$file"; return 0; }
        sleep 0.1
    done
    say "$comm ($pid) ignored SIGTERM for 5 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$file"
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_configs() {
    mkdir -p "$DIR"/{etc,munge,state,spool,run,log,db}
    chmod 755 "$DIR" "$DIR/munge"  # munged: "execute permissions for all required" on the socket dir
    if [[ ! -s $DIR/etc/munge.key ]]; then
        head -c 1024 /dev/urandom >"$DIR/etc/munge.key"
    fi
    chmod 400 "$DIR/etc/munge.key"
    local mem_mib
    mem_mib=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 - 1024 }' /proc/meminfo)
    cat >"$CONF" <<EOF
# Written by avatar's tests/slurm/cluster.sh: a one-node test cluster, no cgroups.
ClusterName=avatar
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
KillWait=5
GresTypes=gpu
EOF
    if [[ $ACCOUNTING == 1 ]]; then
        cat >>"$CONF" <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
EOF
    else
        echo "AccountingStorageType=accounting_storage/none" >>"$CONF"
    fi
    cat >>"$CONF" <<EOF
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=$mem_mib Gres=gpu:4 State=UNKNOWN
NodeName=$CPU_NODE NodeAddr=127.0.0.1 CPUs=8 RealMemory=$mem_mib State=FUTURE
PartitionName=gpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=$CPU_NODE MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/etc/gres.conf" <<EOF
NodeName=$HOST Name=gpu File=/dev/null
NodeName=$HOST Name=gpu File=/dev/zero
NodeName=$HOST Name=gpu File=/dev/full
NodeName=$HOST Name=gpu File=/dev/urandom
EOF
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=avatar-test
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
}

start_munge() {
    alive_pid "$DIR/run/munged.pid" munged >/dev/null && return 0
    munged --socket="$MUNGE_SOCKET" --key-file="$DIR/etc/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
}

start_mariadb() {
    if [[ ! -d $DIR/db/mysql ]]; then
        mariadb-install-db --user=root --datadir="$DIR/db" --auth-root-authentication-method=socket \
            --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed: see $DIR/log/mariadb-install.log"
    fi
    if ! alive_pid "$DIR/run/mariadbd.pid" mariadbd >/dev/null; then
        mariadbd --user=root --datadir="$DIR/db" --port="$DB_PORT" --bind-address=127.0.0.1 \
            --socket="$DIR/run/mariadb.sock" --pid-file="$DIR/run/mariadbd.pid" \
            --log-error="$DIR/log/mariadb.log" --skip-name-resolve >/dev/null 2>&1 &
    fi
    local deadline=$((SECONDS + 30))
    until mariadb --socket="$DIR/run/mariadb.sock" -u root -e 'SELECT 1' >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "MariaDB did not start in 30 s: see $DIR/log/mariadb.log"
        sleep 0.2
    done
    mariadb --socket="$DIR/run/mariadb.sock" -u root -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'avatar-test';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'avatar-test';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurmdbd() {
    alive_pid "$DIR/run/slurmdbd.pid" slurmdbd >/dev/null && return 0
    slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
    local deadline=$((SECONDS + 30))
    until port_free_not "$DBD_PORT"; do
        ((SECONDS < deadline)) || die "slurmdbd did not listen on port $DBD_PORT in 30 s: see $DIR/log/slurmdbd.log"
        sleep 0.1
    done
}

port_free_not() { ! port_free "$1"; }

wait_idle() {
    local deadline=$((SECONDS + START_TIMEOUT_S)) state=""
    while ((SECONDS < deadline)); do
        state=$(timeout 5 sinfo -h -n "$HOST" -o %t 2>/dev/null | head -n1 || true)
        case $state in
            idle | mix | alloc) return 0 ;;
            drain* | down*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.1
    done
    die "node $HOST not idle after ${START_TIMEOUT_S} s (state: ${state:-none}); logs in $DIR/log"
}

cmd_start() {
    need munged slurmctld slurmd sbatch sinfo scontrol
    [[ $ACCOUNTING == 1 ]] && need slurmdbd mariadbd mariadb-install-db mariadb
    if alive_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null; then
        die "already running in $DIR (cluster.sh stop first)"
    fi
    local ports=("$CTLD_PORT" "$SLURMD_PORT")
    [[ $ACCOUNTING == 1 ]] && ports+=("$DBD_PORT" "$DB_PORT")
    for port in "${ports[@]}"; do
        port_free "$port" || die "port $port is in use; choose others with AVATAR_SLURM*_PORT / AVATAR_MARIADB_PORT"
    done
    write_configs
    # The controller's state is kept from one start to the next (stop cancels every job first),
    # so job ids go on counting: sacct's records in MariaDB stay unambiguous.
    start_munge
    if [[ $ACCOUNTING == 1 ]]; then
        start_mariadb
        start_slurmdbd
    fi
    slurmctld -f "$CONF"
    slurmd -f "$CONF" -N "$HOST"
    wait_idle
    say "up: node $HOST idle, partitions gpu (default, 4 placeholder GPUs) and cpu;" \
        "accounting $([[ $ACCOUNTING == 1 ]] && echo on || echo off)"
    echo "export SLURM_CONF=$CONF"
}

cmd_stop() {
    if alive_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null; then
        # Only while the controller lives: against a dead one, scancel hangs ~10 s.
        timeout 10 scancel --full -u "$(id -un)" 2>/dev/null || true
    fi
    stop_daemon "$DIR/run/slurmd.pid" slurmd
    stop_daemon "$DIR/run/slurmctld.pid" slurmctld
    stop_daemon "$DIR/run/slurmdbd.pid" slurmdbd
    stop_daemon "$DIR/run/mariadbd.pid" mariadbd
    stop_daemon "$DIR/run/munged.pid" munged
    # Job steps left by a killed slurmd (slurmstepd) would hold the ports.
    local pid
    for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
        if tr '\0' ' ' <"/proc/$pid/environ" 2>/dev/null | grep -q "SLURM_CONF=$CONF"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    say "stopped"
}

cmd_status() {
    local name
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if pid=$(alive_pid "$DIR/run/$name.pid" "$name"); then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
        fi
    done
    if alive_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null; then
        timeout 5 sinfo || true
        echo "export SLURM_CONF=$CONF"
    fi
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
