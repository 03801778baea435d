#!/usr/bin/env bash
# Prove that every netlab environment behaves as its NAT type, with coturn as the
# independent truth:
#   - coturn's turnserver runs in the srv namespace as an RFC 5780 STUN server on
#     198.51.100.1 and 198.51.100.2, ports 3478 and 3479;
#   - turnutils_natdiscovery -m (mapping) and -f (filtering) run from each client
#     namespace, with conntrack and NAT mappings flushed before each run;
#   - a STUN Binding over TCP (from bash) checks TCP passes and is NATed to the
#     router's public address;
#   - inbound probes from the public peer host (nc) check filtering against a host
#     that is not the STUN server;
#   - natter's own supernode serves STUN in the srv namespace (two addresses), and
#     coturn's turnutils_stunclient/natdiscovery against it, and natter's NAT
#     detection (a real headless client, against our supernode and against coturn)
#     must classify every environment as above (lab/natter-nat.sh);
#   - the runtime knobs (netlab_block_udp, netlab_loss) are checked to work;
#   - `down` is timed and must leave no namespace of the prefix behind.
# Exits non-zero if any environment is misclassified or any check fails.
#
# usage: lab/check-nat-types.sh [--repeat N]     (root; NETLAB_PREFIX optional)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPEAT=1
while (($#)); do
    case "$1" in
        --repeat) REPEAT=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

if [[ $EUID -ne 0 ]]; then echo "check-nat-types: must run as root" >&2; exit 2; fi

# --- dependencies (Debian packages) ----------------------------------------------
need_install=0
for c in ip ss nft conntrack turnserver turnutils_natdiscovery nc timeout od; do
    command -v "$c" >/dev/null || need_install=1
done
if ((need_install)); then
    echo "installing nftables conntrack coturn iproute2 netcat-openbsd ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq nftables conntrack coturn iproute2 netcat-openbsd >/dev/null ||
        { echo "apt-get install failed" >&2; exit 2; }
fi

export NETLAB_PREFIX=${NETLAB_PREFIX:-ntrchk$$-}
unset NETLAB_ENV_LIST   # the check covers the six standard environments
# shellcheck source=netlab.sh
source "$HERE/netlab.sh"
# shellcheck source=natter-nat.sh
source "$HERE/natter-nat.sh"

TMP=$(mktemp -d /tmp/netlab-check.XXXXXX)
TURN_PID=""
cleanup() {
    natter_nat_stop
    if [[ -n "$TURN_PID" ]]; then kill "$TURN_PID" 2>/dev/null; wait "$TURN_PID" 2>/dev/null; fi
    netlab_down
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }

# --- lab + STUN server --------------------------------------------------------
netlab_up || { echo "netlab_up failed" >&2; exit 1; }
echo "netlab up: ${NETLAB_UP_MS} ms (prefix ${NETLAB_PREFIX}, $(netlab_list | wc -l) namespaces)"

TURN_CMD=(turnserver -n --no-auth --stun-only
    --listening-ip 198.51.100.1 --listening-ip 198.51.100.2
    --listening-port 3478 --alt-listening-port 3479
    --no-tls --no-dtls --no-cli
    --userdb "$TMP/turndb" --pidfile "$TMP/turnserver.pid"
    --log-file stdout --simple-log)
ip netns exec "$(netlab_srv_ns)" "${TURN_CMD[@]}" >"$TMP/turnserver.log" 2>&1 &
TURN_PID=$!
for _ in $(seq 50); do
    n=$(ip netns exec "$(netlab_srv_ns)" ss -lun 2>/dev/null | grep -cE '198\.51\.100\.[12]:347[89]')
    ((n >= 4)) && break
    sleep 0.1
done
if ((n < 4)); then echo "turnserver did not start:"; tail -20 "$TMP/turnserver.log"; exit 1; fi
echo "turnserver: ${TURN_CMD[*]}"

# --- classifiers --------------------------------------------------------------

# natdiscovery -m output -> NoNAT | EIM | ADM | APDM | blocked | ?
classify_mapping() {
    local out=$1
    if grep -q 'No NAT!' <<<"$out"; then echo NoNAT
    elif grep -q 'Address and Port Dependent Mapping' <<<"$out"; then echo APDM
    elif grep -q 'Address Dependent Mapping' <<<"$out"; then echo ADM
    elif grep -q 'Endpoint Independent Mapping' <<<"$out"; then echo EIM
    elif ! grep -q 'RFC 5780 response' <<<"$out" && grep -q 'STUN receive timeout' <<<"$out"; then echo blocked
    else echo '?'
    fi
}
# natdiscovery -f output -> EIF | ADF | APDF | blocked | ?
classify_filtering() {
    local out=$1
    if grep -q 'Address and Port Dependent Filtering' <<<"$out"; then echo APDF
    elif grep -q 'Address Dependent Filtering' <<<"$out"; then echo ADF
    elif grep -q 'Endpoint Independent Filtering' <<<"$out"; then echo EIF
    elif ! grep -q 'RFC 5780 response' <<<"$out" && grep -q 'STUN receive timeout' <<<"$out"; then echo blocked
    else echo '?'
    fi
}

natdiscovery() {   # ENV -m|-f  (bound to the client's address so "No NAT!" can be seen)
    netlab_exec "$1" timeout 30 turnutils_natdiscovery "$2" -L "$(netlab_ip "$1")" "$(netlab_srv_ip 1)" 2>&1
}

# STUN Binding over TCP, in plain bash; prints the XOR-MAPPED-ADDRESS ip:port.
stun_tcp_probe() {
    local host=$1 port=$2 f b i len type n at al p a
    f=$(mktemp)
    exec 3<>"/dev/tcp/$host/$port" || return 1
    printf '\x00\x01\x00\x00\x21\x12\xa4\x42\x6e\x61\x74\x74\x65\x72\x6c\x61\x62\x74\x63\x70' >&3
    timeout 3 head -c 20 <&3 >"$f" || { exec 3<&-; rm -f "$f"; return 1; }
    read -r -a b < <(od -An -tu1 -v "$f" | tr '\n' ' ')
    ((${#b[@]} == 20)) || { exec 3<&-; rm -f "$f"; return 1; }
    type=$((b[0] * 256 + b[1])); len=$((b[2] * 256 + b[3]))
    timeout 3 head -c "$len" <&3 >"$f"
    exec 3<&-
    read -r -a b < <(od -An -tu1 -v "$f" | tr '\n' ' ')
    rm -f "$f"
    ((type == 0x0101)) || return 1
    i=0; n=${#b[@]}
    while ((i + 4 <= n)); do
        at=$((b[i] * 256 + b[i + 1])); al=$((b[i + 2] * 256 + b[i + 3]))
        if ((at == 0x0020 && b[i + 5] == 1)); then
            p=$(((b[i + 6] * 256 + b[i + 7]) ^ 0x2112))
            a="$((b[i + 8] ^ 0x21)).$((b[i + 9] ^ 0x12)).$((b[i + 10] ^ 0xa4)).$((b[i + 11] ^ 0x42))"
            echo "$a:$p"; return 0
        fi
        i=$((i + 4 + (al + 3) / 4 * 4))
    done
    return 1
}

tcp_check() {   # ENV -> ok | FAIL(...)
    local env=$1 got
    got=$(netlab_exec "$env" timeout 8 bash -c "$(declare -f stun_tcp_probe); stun_tcp_probe $(netlab_srv_ip 1) 3478")
    if [[ "${got%:*}" == "$(netlab_wan_ip "$env")" ]]; then echo ok; else echo "FAIL(${got:-none})"; fi
}

# Inbound probes from the peer host (198.51.100.50), client port P:
#  U: client has sent only to the STUN server; peer:6000 -> mapped port   (unsolicited)
#  A: client has sent P -> peer:6000; peer:6001 -> mapped port            (same address, other port)
#  S: peer:6000 -> mapped port                                             (the exact endpoint contacted)
#  X: peer:6000 -> a port the client listens on but never sent from        (no mapping: must stay closed behind any NAT)
# Prints four letters, y = delivered to the client, n = not.
client_listen() {   # ENV PORT OUTFILE  (background; receives one datagram)
    netlab_exec "$1" timeout 3 nc -n -u -l "$2" >"$3" 2>/dev/null
}
wait_bound() {      # ENV PORT: wait (up to 2 s) until a UDP socket is bound to PORT in ENV
    local i
    for i in $(seq 40); do
        netlab_exec "$1" ss -Hlun "sport = :$2" 2>/dev/null | grep -q . && return 0
        sleep 0.05
    done
    return 1
}
peer_probes() {
    local env=$1 P=$2 wan mapped res="" src
    wan=$(netlab_wan_ip "$env")
    netlab_flush_conntrack "$env"
    printf x | netlab_exec "$env" timeout 2 nc -n -u -q0 -p "$P" "$(netlab_srv_ip 1)" 9 2>/dev/null
    # U
    client_listen "$env" "$P" "$TMP/u" & local l=$!
    wait_bound "$env" "$P"
    printf U | netlab_exec peer timeout 2 nc -n -u -q0 -p 6000 "$wan" "$P" 2>/dev/null
    wait $l; [[ "$(cat "$TMP/u")" == U ]] && res+=y || res+=n
    # client -> peer:6000, learning the mapped port the peer sees
    netlab_exec peer timeout 3 nc -n -v -u -l 6000 >/dev/null 2>"$TMP/pl" & l=$!
    wait_bound peer 6000
    printf x | netlab_exec "$env" timeout 2 nc -n -u -q0 -p "$P" "$(netlab_peer_ip)" 6000 2>/dev/null
    wait $l
    src=$(sed -n 's/^Connection received on \([0-9.]*\) \([0-9]*\)$/\1:\2/p' "$TMP/pl")
    mapped=${src##*:}; [[ -n "$mapped" ]] || mapped=$P
    # A
    client_listen "$env" "$P" "$TMP/a" & l=$!
    wait_bound "$env" "$P"
    printf A | netlab_exec peer timeout 2 nc -n -u -q0 -p 6001 "$wan" "$mapped" 2>/dev/null
    wait $l; [[ "$(cat "$TMP/a")" == A ]] && res+=y || res+=n
    # S
    client_listen "$env" "$P" "$TMP/s" & l=$!
    wait_bound "$env" "$P"
    printf S | netlab_exec peer timeout 2 nc -n -u -q0 -p 6000 "$wan" "$mapped" 2>/dev/null
    wait $l; [[ "$(cat "$TMP/s")" == S ]] && res+=y || res+=n
    # X
    client_listen "$env" $((P + 500)) "$TMP/x" & l=$!
    wait_bound "$env" $((P + 500))
    printf X | netlab_exec peer timeout 2 nc -n -u -q0 -p 6000 "$wan" $((P + 500)) 2>/dev/null
    wait $l; [[ "$(cat "$TMP/x")" == X ]] && res+=y || res+=n
    echo "$res"
}

declare -A EXP_MAP=([public]=NoNAT [fullcone]=EIM [restricted]=EIM [portrestricted]=EIM [symmetric]=APDM [udpblocked]=blocked)
declare -A EXP_FLT=([public]=EIF [fullcone]=EIF [restricted]=ADF [portrestricted]=APDF [symmetric]=APDF [udpblocked]=blocked)
declare -A EXP_PRB=([public]=yyyy [fullcone]=yyyn [restricted]=nyyn [portrestricted]=nnyn [symmetric]=nnyn [udpblocked]=nnnn)

run_table() {
    local e m f mo fo t p verdict port=40000
    printf '\n%-15s %-16s %-9s %-9s %-6s %-15s %s\n' ENV "EXPECTED" MAPPING FILTERING TCP "PROBES U/A/S/X" RESULT
    printf '%-15s %-16s %-9s %-9s %-6s %-15s %s\n' "---" "--------" "-------" "---------" "---" "--------------" "------"
    for e in "${NETLAB_ENVS[@]}"; do
        port=$((port + 1))
        netlab_flush_conntrack "$e"; mo=$(natdiscovery "$e" -m); m=$(classify_mapping "$mo")
        netlab_flush_conntrack "$e"; fo=$(natdiscovery "$e" -f); f=$(classify_filtering "$fo")
        netlab_flush_conntrack "$e"; t=$(tcp_check "$e")
        p=$(peer_probes "$e" "$port")
        verdict=PASS
        [[ "$m" == "${EXP_MAP[$e]}" && "$f" == "${EXP_FLT[$e]}" && "$t" == ok && "$p" == "${EXP_PRB[$e]}" ]] || verdict=FAIL
        printf '%-15s %-16s %-9s %-9s %-6s %-15s %s\n' "$e" "${EXP_MAP[$e]}/${EXP_FLT[$e]}" "$m" "$f" "$t" "$p (${EXP_PRB[$e]})" "$verdict"
        if [[ $verdict == FAIL ]]; then
            FAILS=$((FAILS + 1))
            { echo "---- $e natdiscovery -m"; echo "$mo"; echo "---- $e natdiscovery -f"; echo "$fo"; } >>"$TMP/failures.log"
        fi
    done
}

for r in $(seq "$REPEAT"); do
    ((REPEAT > 1)) && echo "== run $r/$REPEAT"
    run_table
done
if [[ -s "$TMP/failures.log" ]]; then echo; echo "natdiscovery output of failed cases:"; cat "$TMP/failures.log"; fi

# --- natter's own STUN server and NAT detection (lab/natter-nat.sh) ----------
natter_nat_check
FAILS=$((FAILS + NATTER_NAT_FAILS))

# --- runtime knobs ------------------------------------------------------------
echo
echo "runtime knobs:"
netlab_block_udp portrestricted on
netlab_flush_conntrack portrestricted; m=$(classify_mapping "$(natdiscovery portrestricted -m)")
netlab_block_udp portrestricted off
netlab_flush_conntrack portrestricted; m2=$(classify_mapping "$(natdiscovery portrestricted -m)")
echo "  netlab_block_udp portrestricted on -> $m; off -> $m2"
[[ "$m" == blocked && "$m2" == EIM ]] || fail "netlab_block_udp portrestricted"

netlab_block_udp udpblocked off
netlab_flush_conntrack udpblocked; m=$(classify_mapping "$(natdiscovery udpblocked -m)")
netlab_block_udp udpblocked on
netlab_flush_conntrack udpblocked; m2=$(classify_mapping "$(natdiscovery udpblocked -m)")
echo "  netlab_block_udp udpblocked off -> $m; on -> $m2"
[[ "$m" == EIM && "$m2" == blocked ]] || fail "netlab_block_udp udpblocked"

netlab_block_udp public on
m=$(classify_mapping "$(natdiscovery public -m)")
netlab_block_udp public off
m2=$(classify_mapping "$(natdiscovery public -m)")
echo "  netlab_block_udp public on -> $m; off -> $m2"
[[ "$m" == blocked && "$m2" == NoNAT ]] || fail "netlab_block_udp public"

for e in symmetric public; do
    netlab_loss "$e" 30
    netlab_exec "$e" bash -c 'for i in {1..400}; do echo x >/dev/udp/198.51.100.50/7000; done' 2>/dev/null
    dropped=$(netlab_show_rules "$e" | sed -n 's/.*numgen random mod 100 < 30 counter packets \([0-9]*\).*/\1/p')
    netlab_loss "$e" 0
    echo "  netlab_loss $e 30: ${dropped:-?} of 400 datagrams dropped"
    [[ -n "$dropped" ]] && ((dropped >= 80 && dropped <= 160)) || fail "netlab_loss $e"
done

# --- teardown -----------------------------------------------------------------
kill "$TURN_PID" 2>/dev/null; wait "$TURN_PID" 2>/dev/null; TURN_PID=""
t0=$(date +%s%N)
netlab_down
t1=$(date +%s%N)
echo
echo "netlab down: $(((t1 - t0) / 1000000)) ms; namespaces of prefix ${NETLAB_PREFIX} left: $(ip netns list | grep -c "^${NETLAB_PREFIX}")"
[[ "$(ip netns list | grep -c "^${NETLAB_PREFIX}")" == 0 ]] || fail "down left namespaces behind"

echo
if ((FAILS)); then echo "check-nat-types: $FAILS failure(s)"; exit 1; fi
echo "check-nat-types: all environments behave as their NAT type"
exit 0
