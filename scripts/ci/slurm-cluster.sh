#!/usr/bin/env bash
# A real two-node SLURM cluster on this machine, for the tests (Debian's SLURM 22.05):
#
#   scripts/ci/slurm-cluster.sh up      install (once), start, wait until both nodes are idle
#   scripts/ci/slurm-cluster.sh down    stop what `up` started, restore /etc/hosts
#   scripts/ci/slurm-cluster.sh env     the variables clients need (SLURM_CONF), for `eval`
#
# Layout: a controller (slurmctld + slurmdbd, accounting in MariaDB, which ReFrame's slurm
# scheduler needs for `sacct`) and two Booster-like nodes, jwb0001 and jwb0002, each in its
# own network namespace with its own host name, linked by veth pairs to a bridge. Each
# node's link is named ib0 and /etc/hosts carries `<node>` and `<node>i` (JSC's InfiniBand
# name), so the suite's NCCL/GLOO_SOCKET_IFNAME=ib0 and MASTER_ADDR=<first node>i hold. The
# nodes declare 96 CPUs and gpu:4 (gres backed by character devices made here), partitions
# `booster` and `develbooster`, as JUWELS Booster: job scripts written for it are accepted
# unchanged. Jobs run CPU-only.
#
# Needs root and Debian's packages; exits 3 with one line saying why when it cannot start.
# Idempotent; a failed `up` undoes what it did.
set -euo pipefail

STATE=/run/xferscale-slurm
CONF="$STATE/etc/slurm.conf"
CLUSTER=xfsci
CTL=xfsctl
NODES=(jwb0001 jwb0002)
NET=10.77.91  # a /24 of this cluster's own, on its bridge only
BRIDGE=xfsbr0
HOSTS_TAG="# xferscale-slurm"
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server iproute2 util-linux)

log() { echo "slurm-cluster: $*" >&2; }
cannot() { echo "slurm-cluster: cannot start: $*" >&2; exit 3; }

addr_of() {  # controller .1, nodes .11, .12, ...
    if [[ $1 == "$CTL" ]]; then echo "$NET.1"; return; fi
    local i
    for i in "${!NODES[@]}"; do [[ ${NODES[$i]} == "$1" ]] && echo "$NET.$((11 + i))"; done
}

in_ns() {  # run in a host's network namespace, with its own host name (not `ip netns exec`:
    local host=$1; shift  # it remounts /sys, and slurmd then finds no cgroup file system)
    nsenter --net="/run/netns/$host" unshare --uts sh -c "hostname $host; exec \"\$@\"" sh "$@"
}

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd sbatch slurmdbd munged mariadbd ip nsenter; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    ((${#missing[@]} == 0)) && return
    command -v apt-get >/dev/null || cannot "missing ${missing[*]} and no apt-get to install them"
    log "installing ${PACKAGES[*]}"
    local policy=/usr/sbin/policy-rc.d own_policy=""
    if [[ ! -e $policy ]]; then  # keep the packages' scripts from starting services
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null; }; } \
        || { [[ -n $own_policy ]] && rm -f "$policy"; cannot "apt-get install ${PACKAGES[*]} failed"; }
    [[ -n $own_policy ]] && rm -f "$policy"
    return 0
}

write_configs() {
    mkdir -p "$STATE"/{etc,ctld,log,run,dev} "$STATE"/spool/{"$CTL","${NODES[0]}","${NODES[1]}"}
    local node_list="${NODES[0]},${NODES[1]}"
    cat >"$CONF" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$CTL($(addr_of "$CTL"))
SlurmUser=root
AuthType=auth/munge
# a requeued job becomes eligible after ~cred_expire s instead of the default 121 s
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$CTL
SlurmctldTimeout=30
SlurmdTimeout=60
MinJobAge=600
KillWait=10
NodeName=jwb[0001-0002] CPUs=96 Boards=1 SocketsPerBoard=2 CoresPerSocket=24 ThreadsPerCore=2 RealMemory=512000 Gres=gpu:4 State=UNKNOWN
PartitionName=booster Nodes=$node_list Default=YES MaxTime=24:00:00 MaxNodes=384 State=UP
PartitionName=develbooster Nodes=$node_list MaxTime=02:00:00 MaxNodes=4 State=UP
EOF
    {
        echo "AutoDetect=off"
        for node in "${NODES[@]}"; do
            mkdir -p "$STATE/dev/$node"
            for g in 0 1 2 3; do
                [[ -e $STATE/dev/$node/nvidia$g ]] || mknod "$STATE/dev/$node/nvidia$g" c 195 "$g"
            done
            echo "NodeName=$node Name=gpu File=$STATE/dev/$node/nvidia[0-3]"
        done
    } >"$STATE/etc/gres.conf"
    cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$CTL
DbdAddr=$(addr_of "$CTL")
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=xferscale
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/etc/slurmdbd.conf"
}

make_network() {
    ip link show "$BRIDGE" >/dev/null 2>&1 || {
        ip link add "$BRIDGE" type bridge
        ip addr add "$NET.254/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    }
    local host link
    for host in "$CTL" "${NODES[@]}"; do
        [[ -e /run/netns/$host ]] && continue
        ip netns add "$host"
        link="v-$host"
        ip link add "$link" type veth peer name ib0 netns "$host"
        ip link set "$link" master "$BRIDGE" up
        ip -n "$host" addr add "$(addr_of "$host")/24" dev ib0
        ip -n "$host" link set ib0 up
        ip -n "$host" link set lo up
    done
    if ! grep -q "$HOSTS_TAG" /etc/hosts; then
        {
            echo "$(addr_of "$CTL") $CTL $HOSTS_TAG"
            for host in "${NODES[@]}"; do echo "$(addr_of "$host") $host ${host}i $HOSTS_TAG"; done
        } >>/etc/hosts
    fi
}

start_munge() {
    pgrep -x munged >/dev/null && return
    [[ -s /etc/munge/munge.key ]] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
    chown munge: /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge: /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- munged
    else
        munged --force
    fi
    touch "$STATE/run/started-munged"
}

start_mariadb() {
    local data="$STATE/mysql" sock=/run/mysqld/mysqld.sock
    mkdir -p /run/mysqld
    if [[ ! -d $data/mysql ]]; then
        mariadb-install-db --datadir="$data" --user=root --auth-root-authentication-method=socket >/dev/null 2>&1 \
            || cannot "mariadb-install-db failed"
    fi
    if ! [[ -S $sock ]] || ! mariadb -S "$sock" -e "select 1" >/dev/null 2>&1; then
        mariadbd --datadir="$data" --socket="$sock" --skip-networking --user=root \
            --pid-file="$STATE/run/mariadb.pid" --log-error="$STATE/log/mariadb.log" &
        for _ in $(seq 60); do mariadb -S "$sock" -e "select 1" >/dev/null 2>&1 && break; sleep 0.5; done
    fi
    mariadb -S "$sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'xferscale';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" \
        || cannot "MariaDB did not come up (see $STATE/log/mariadb.log)"
}

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    log "timed out waiting for $what"
    return 1
}

idle_nodes() { [[ $(sinfo -h -N -p booster -o '%T' | grep -c '^idle') -eq ${#NODES[@]} ]]; }

up() {
    [[ $(id -u) -eq 0 ]] || cannot "needs root (network namespaces, daemons as root)"
    install_packages
    export SLURM_CONF="$CONF"
    if [[ -e $STATE/up ]] && alive "$STATE/run/slurmctld.pid" && idle_nodes; then
        log "already up"
        return
    fi
    trap 'log "start failed; undoing"; down; exit 1' ERR
    write_configs
    make_network
    start_munge
    start_mariadb
    alive "$STATE/run/slurmdbd.pid" || in_ns "$CTL" slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i -Q add account xferscale Cluster="$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i -Q add user root Account=xferscale Cluster="$CLUSTER" >/dev/null 2>&1 || true
    alive "$STATE/run/slurmctld.pid" || in_ns "$CTL" slurmctld
    wait_for 30 slurmctld scontrol ping
    for node in "${NODES[@]}"; do
        alive "$STATE/run/slurmd-$node.pid" || in_ns "$node" slurmd -N "$node"
    done
    if ! wait_for 60 "idle nodes" idle_nodes; then
        sinfo -N >&2 || true
        false
    fi
    trap - ERR
    touch "$STATE/up"
    log "up: $CTL + ${NODES[*]} (partitions booster, develbooster); export SLURM_CONF=$CONF"
}

stop_pid() {  # stop_pid PIDFILE
    [[ -s $1 ]] || return 0
    local pid
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
}

down() {
    [[ -d $STATE ]] || { log "not up"; return 0; }
    local host
    for host in "${NODES[@]}" "$CTL"; do  # jobs and daemons: everything in our namespaces
        [[ -e /run/netns/$host ]] && ip netns pids "$host" | xargs -r kill 2>/dev/null || true
    done
    sleep 1
    for host in "${NODES[@]}" "$CTL"; do
        [[ -e /run/netns/$host ]] && ip netns pids "$host" | xargs -r kill -9 2>/dev/null || true
    done
    stop_pid "$STATE/run/mariadb.pid"
    if [[ -e $STATE/run/started-munged ]]; then pkill -x munged || true; fi
    for host in "${NODES[@]}" "$CTL"; do
        ip link del "v-$host" 2>/dev/null || true
        [[ -e /run/netns/$host ]] && ip netns del "$host"
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    if grep -q "$HOSTS_TAG" /etc/hosts; then
        # /etc/hosts may be a bind mount: rewrite it in place rather than replace it
        grep -v "$HOSTS_TAG" /etc/hosts >"$STATE/hosts" && cat "$STATE/hosts" >/etc/hosts
    fi
    rm -rf "$STATE"
    log "down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
