#!/usr/bin/env bash
# tun-director demo: a client, a director and three real servers, each in its own network namespace, joined
# by veth pairs; the director balances HTTP to the servers through a TUN device (NAT, wrr 1:2:3).
#
#   scripts/demo.sh                 # (as root) build, run, show balancing, clean up
#   KEEP=1 scripts/demo.sh          # leave everything running (clean up with: scripts/demo.sh --cleanup)
#   DIRECTOR_ARGS="--queues 2" scripts/demo.sh   # extra options for tun-director run
#
# Needs root (namespaces, TUN), iproute2 and python3 (the real servers; curl is used when present).
# All traffic stays inside the namespaces. Names start with $PREFIX (default tdemo-).
set -euo pipefail

PREFIX=${PREFIX:-tdemo-}
REQUESTS=${REQUESTS:-12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/${PREFIX}work}
NS_C=${PREFIX}client
NS_D=${PREFIX}dir
VIP=10.99.0.1
SOCK=$WORK/ctl.sock

cleanup() {
    set +e
    for pidfile in "$WORK"/*.pid; do
        [ -e "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    for ns in "$NS_C" "$NS_D" "${PREFIX}rs1" "${PREFIX}rs2" "${PREFIX}rs3"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK"
}

if [ "${1:-}" = "--cleanup" ]; then
    cleanup
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: needs root (network namespaces and a TUN device)" >&2
    exit 1
fi

echo "== building tun-director"
cargo build -q --release -p tun-director --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/tun-director

cleanup
mkdir -p "$WORK"
[ -n "${KEEP:-}" ] || trap cleanup EXIT

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

echo "== namespaces: $NS_C — $NS_D — ${PREFIX}rs1..3"
for ns in "$NS_C" "$NS_D" "${PREFIX}rs1" "${PREFIX}rs2" "${PREFIX}rs3"; do
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
done
# client <-> director: 10.10.0.0/24
ip link add c0 netns "$NS_D" type veth peer name eth0 netns "$NS_C"
nsx "$NS_D" ip addr add 10.10.0.1/24 dev c0
nsx "$NS_D" ip link set c0 up
nsx "$NS_C" ip addr add 10.10.0.2/24 dev eth0
nsx "$NS_C" ip link set eth0 up
nsx "$NS_C" ip route add default via 10.10.0.1
# director <-> real servers: a bridge, 10.20.0.0/24
nsx "$NS_D" ip link add br0 type bridge
nsx "$NS_D" ip addr add 10.20.0.1/24 dev br0
nsx "$NS_D" ip link set br0 up
for i in 1 2 3; do
    ns=${PREFIX}rs$i
    ip link add "r$i" netns "$NS_D" type veth peer name eth0 netns "$ns"
    nsx "$NS_D" ip link set "r$i" master br0 up
    nsx "$ns" ip addr add "10.20.0.1$i/24" dev eth0
    nsx "$ns" ip link set eth0 up
    nsx "$ns" ip route add default via 10.20.0.1
done
for k in net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0; do
    nsx "$NS_D" sysctl -qw "$k"
done

echo "== real servers: python3 -m http.server on 10.20.0.11-13:80"
for i in 1 2 3; do
    mkdir -p "$WORK/www$i"
    echo "real server rs$i" > "$WORK/www$i/index.html"
    nsx "${PREFIX}rs$i" python3 -m http.server 80 --bind "10.20.0.1$i" --directory "$WORK/www$i" \
        >"$WORK/rs$i.log" 2>&1 &
    echo $! > "$WORK/rs$i.pid"
done

for i in 1 2 3; do # a server that fails its first health check is quiesced, then ramps up (slow start)
    for _ in $(seq 50); do
        nsx "${PREFIX}rs$i" python3 -c "import socket; socket.create_connection(('10.20.0.1$i', 80), 1)" \
            2>/dev/null && break
        sleep 0.1
    done
done

cat > "$WORK/rules" <<EOF
-A -t $VIP:80 -s wrr
-a -t $VIP:80 -r 10.20.0.11:80 -m -w 1
-a -t $VIP:80 -r 10.20.0.12:80 -m -w 2
-a -t $VIP:80 -r 10.20.0.13:80 -m -w 3
EOF
echo "== director: tun-director run --tun tun0 --rules rules --health http (rules below)"
sed 's/^/   /' "$WORK/rules"
# shellcheck disable=SC2086 # DIRECTOR_ARGS is split into words on purpose
nsx "$NS_D" "$BIN" run --tun tun0 --rules "$WORK/rules" --control "$SOCK" --metrics 10.10.0.1:9100 \
    --health http --health-interval 1s --health-timeout 1s ${DIRECTOR_ARGS:-} >"$WORK/director.log" 2>&1 &
echo $! > "$WORK/director.pid"
for _ in $(seq 50); do
    "$BIN" ctl --control "$SOCK" -L -n >/dev/null 2>&1 && break
    sleep 0.1
done

echo "== routing recipe (director namespace)"
recipe=(
    "ip route add $VIP/32 dev tun0"                    # the VIP is routed into the TUN device
    "ip rule add iif br0 lookup 100 pref 1000"         # real servers' replies (NAT) ...
    "ip route add default dev tun0 table 100"          # ... are steered back into it
    "sysctl -qw net.ipv4.conf.tun0.rp_filter=0"
)
for cmd in "${recipe[@]}"; do
    echo "   $cmd"
    # shellcheck disable=SC2086
    nsx "$NS_D" $cmd
done

fetch() {
    if command -v curl >/dev/null; then
        nsx "$NS_C" curl -s --max-time 3 "$1"
    else
        nsx "$NS_C" python3 -c "import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode(), end='')" "$1"
    fi
}

echo "== $REQUESTS requests from the client to http://$VIP/ (wrr 1:2:3)"
declare -A hits=()
for _ in $(seq "$REQUESTS"); do
    answer=$(fetch "http://$VIP/" || echo "FAILED")
    echo "   $answer"
    hits[$answer]=$(( ${hits[$answer]:-0} + 1 ))
done
echo "== served:"
for k in "${!hits[@]}"; do echo "   $k: ${hits[$k]}"; done | sort

echo "== tun-director ctl -L -n --stats"
"$BIN" ctl --control "$SOCK" -L -n --stats | sed 's/^/   /'
echo "== tun-director ctl -L -n -c"
"$BIN" ctl --control "$SOCK" -L -n -c | sed 's/^/   /'
echo "== metrics (node_exporter names), from the client: curl http://10.10.0.1:9100/metrics"
fetch "http://10.10.0.1:9100/metrics" | grep -E '^node_ipvs_(connections_total|backend_weight)' | sed 's/^/   /'

failed=${hits[FAILED]:-0}
if [ "$failed" -ne 0 ]; then
    echo "demo.sh: $failed request(s) failed; director log:" >&2
    cat "$WORK/director.log" >&2
    exit 1
fi
echo "== ok${KEEP:+ (left running: $0 --cleanup)}"
