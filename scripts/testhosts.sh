#!/usr/bin/env bash
# Test hosts on one machine: N network namespaces joined by veth pairs on one bridge.
#
#   scripts/testhosts.sh up N [--rate 100mbit] [--loss 10]   make hosts 1..N (replaces an old set)
#   scripts/testhosts.sh down                                 remove everything it made (idempotent)
#   scripts/testhosts.sh exec I CMD...                        run CMD inside host I
#   scripts/testhosts.sh addr I                               print host I's address
#
# Host I is namespace <prefix>-hI with interface eth0 = 10.77.0.I/24 and loopback up; its veth
# peer <prefix>-vI sits on bridge <prefix>-br0, which has no address: the 10.77.0.0/24 addresses
# exist only inside the namespaces made here, so traffic stays between them.
# --rate puts a token bucket (tc tbf) on both ends of every veth (each direction of each link).
# --loss drops that percentage of packets arriving on eth0 in every namespace (nftables
# `numgen random mod 100 < LOSS drop`; this kernel has no netem). Needs root.
# TESTHOSTS_PREFIX (default gml) names everything, so two sets can coexist (e.g. tests vs. a demo).
set -euo pipefail

PREFIX=${TESTHOSTS_PREFIX:-gml}
BRIDGE="${PREFIX}-br0"
SUBNET=10.77.0
TABLE=gml_testhosts

die() { echo "testhosts: $*" >&2; exit 2; }
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[[ "$PREFIX" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "TESTHOSTS_PREFIX must be 1-8 lowercase letters/digits"

ours() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}-h[0-9]+$" || true; }

cmd_down() {
    local ns link
    for ns in $(ours); do
        ip netns del "$ns"            # takes eth0 and, with it, the veth peer on the bridge
    done
    for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 \
                  | grep -E "^${PREFIX}-v[0-9]+$" || true); do
        ip link del "$link" 2>/dev/null || true
    done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link del "$BRIDGE"
    fi
}

ensure_nft() {
    command -v nft >/dev/null && return
    echo "testhosts: nft missing, installing nftables" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y nftables >/dev/null \
        || die "cannot install nftables; install it or run without --loss"
}

add_loss() {  # add_loss NS PERCENT
    ip netns exec "$1" nft -f - <<EOF
table inet $TABLE {
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "eth0" numgen random mod 100 < $2 drop
    }
}
EOF
}

cmd_up() {
    local n=${1:-}; shift || true
    local rate="" loss=""
    while (($#)); do
        case "$1" in
            --rate) rate=${2:?--rate needs a value such as 100mbit}; shift 2 ;;
            --loss) loss=${2:?--loss needs a percentage such as 10}; shift 2 ;;
            *) die "unknown option $1 (expected --rate RATE, --loss PERCENT)" ;;
        esac
    done
    [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 250)) || die "N must be 1..250, got '$n'"
    [[ -z "$loss" || ( "$loss" =~ ^[0-9]+$ && "$loss" -le 100 ) ]] || die "--loss must be 0..100"
    [[ -z "$rate" || "$rate" =~ ^[0-9]+(bit|kbit|mbit|gbit)$ ]] || die "--rate looks like 100mbit"
    [[ -n "$loss" ]] && ensure_nft
    cmd_down
    trap 'cmd_down' ERR
    ip link add "$BRIDGE" type bridge
    ip link set "$BRIDGE" up
    local i ns veth
    for ((i = 1; i <= n; i++)); do
        ns="${PREFIX}-h$i"; veth="${PREFIX}-v$i"
        ip netns add "$ns"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$SUBNET.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        if [[ -n "$rate" ]]; then
            tc qdisc add dev "$veth" root tbf rate "$rate" burst 128kb latency 100ms
            ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 128kb latency 100ms
        fi
        [[ -n "$loss" ]] && add_loss "$ns" "$loss"
        echo "host $i: netns $ns address $SUBNET.$i"
    done
    trap - ERR
}

cmd_exec() {
    local i=${1:-}; shift || true
    [[ "$i" =~ ^[0-9]+$ ]] || die "exec needs a host number: exec I CMD..."
    (($#)) || die "exec needs a command: exec I CMD..."
    ip netns list | awk '{print $1}' | grep -qx "${PREFIX}-h$i" || die "no host $i (run: $0 up N)"
    exec ip netns exec "${PREFIX}-h$i" "$@"
}

[[ $# -ge 1 ]] || usage
verb=$1; shift
[[ "$verb" == addr ]] && { [[ "${1:-}" =~ ^[0-9]+$ ]] || die "addr needs a host number"; echo "$SUBNET.$1"; exit 0; }
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, bridges, tc)"
case "$verb" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    exec) cmd_exec "$@" ;;
    *) usage ;;
esac
