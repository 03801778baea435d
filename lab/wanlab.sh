# Shared by lab/nat-envs.sh, lab/roam.sh and lab/conf-nat.sh (source it, do not run it): a
# lab of network namespaces of one prefix around a WAN bridge, kernel NATs
# in nftables, an authority and two supernodes on 198.51.100.1/.2, and
# headless natter clients driven through fifos.
#
# Before sourcing, set:
#   LAB    the script's name, for messages and the temporary directory
#   P      the namespace prefix (every namespace is "$P<name>")
#   NSS    the namespaces' names, made by `lab_build_namespaces`
#   BIN    the natter binary
# It sets TMP (removed at exit unless KEEP_TMP is set), PIDS (killed at
# exit) and traps EXIT, INT and TERM (the namespaces go too).

TMP=$(mktemp -d "/tmp/$LAB.XXXXXX")
PIDS=()

ns() { echo "$P$1"; }
# `ip -n` only on namespaces of this prefix that exist (never the root one).
ipn() {
    local n=$1; shift
    [[ -n "$n" && "$n" == "$P"* && -e "/run/netns/$n" ]] || { echo "refusing ip -n $n $*" >&2; return 1; }
    ip -n "$n" "$@"
}
inns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }

down() {
    local n pids
    for n in "${NSS[@]}"; do
        [[ -e "/run/netns/$P$n" ]] || continue
        pids=$(ip netns pids "$P$n" 2>/dev/null)
        [[ -n "$pids" ]] && kill $pids 2>/dev/null
    done
    sleep 0.2
    for n in "${NSS[@]}"; do
        [[ -e "/run/netns/$P$n" ]] || continue
        pids=$(ip netns pids "$P$n" 2>/dev/null)
        [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null
        ip netns del "$P$n" 2>/dev/null
    done
}
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    down
    # a script's own leftovers outside the namespaces (lab/v6.sh: resolv.conf files)
    if declare -F lab_cleanup_hook >/dev/null; then lab_cleanup_hook; fi
    if [[ -n "${KEEP_TMP:-}" ]]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'echo interrupted >&2; exit 130' INT
trap 'exit 143' TERM

# --- topology --------------------------------------------------------------------
mkns() {
    ip netns add "$(ns "$1")" || return 1
    ipn "$(ns "$1")" link set lo up
    inns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null
}
# IPv6 on in NS (mkns turns it off), with no duplicate address detection
# (an address is usable at once); lab/v6.sh uses it, the others stay IPv4.
v6on() {
    inns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
        net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 >/dev/null
}
addr6() { ipn "$(ns "$1")" addr add "$3" dev "$2" nodad; }
# link A IFA B IFB: a veth pair between two lab namespaces
link() {
    ipn "$(ns "$1")" link add "$2" type veth peer name "$4" netns "$(ns "$3")" || return 1
    ipn "$(ns "$1")" link set "$2" up && ipn "$(ns "$3")" link set "$4" up
}
addr() { ipn "$(ns "$1")" addr add "$3" dev "$2"; }
on_wan() {   # NS PORT ADDR...
    local n=$1 port=$2; shift 2
    link wan "$port" "$n" wan0 || return 1
    ipn "$(ns wan)" link set "$port" master br0 || return 1
    local a; for a in "$@"; do addr "$n" wan0 "$a/24" || return 1; done
}
# Every namespace of NSS, the WAN bridge, and the servers' namespace on it.
lab_build_namespaces() {
    local n
    for n in "${NSS[@]}"; do mkns "$n" || return 1; done
    ipn "$(ns wan)" link add br0 type bridge || return 1
    ipn "$(ns wan)" link set br0 up || return 1
    on_wan srv psrv 198.51.100.1 198.51.100.2
}
router() {   # NS: forwarding on
    inns "$1" sysctl -qw net.ipv4.ip_forward=1 >/dev/null
}
# nft rules for a NAT of TYPE on router NS (WAN side wan0, its address
# WAN_IP; INSIDE_IP the single inside host a full cone maps to). Types:
# symmetric (random ports), sequential (symmetric, ports counting up from
# 30000), portrestricted, fullcone, udpblocked (every forwarded UDP
# datagram dropped both ways, TCP NATed as portrestricted: the client
# reaches its supernodes and their relays over TCP only). Unsolicited
# packets to the router itself are dropped.
nat_rules() {   # NS TYPE WAN_IP INSIDE_IP
    local n=$1 t=$2 wan=$3 inside=$4 sets="" fwd="" pre="" post
    case $t in
        symmetric) post='oifname "wan0" masquerade fully-random' ;;
        portrestricted) post='oifname "wan0" masquerade' ;;
        udpblocked)
            fwd='meta l4proto udp counter drop'
            post='oifname "wan0" masquerade' ;;
        sequential)
            # `numgen inc offset 30000` as the port is not converted to
            # network byte order (ports came out in steps of 256): a map.
            local m i
            m=$(for ((i = 0; i < 1000; i++)); do printf '%d : %d, ' "$i" $((30000 + i)); done)
            post="oifname \"wan0\" meta l4proto udp snat to $wan : numgen inc mod 1000 map { ${m%, } }
        oifname \"wan0\" masquerade" ;;
        fullcone)
            sets='set mapped { type inet_service; flags dynamic,timeout; timeout 180s; }'
            fwd='iifname "lan0" oifname "wan0" meta l4proto udp update @mapped { udp sport }'
            pre="iifname \"wan0\" ip daddr $wan udp dport @mapped dnat to $inside"
            post="oifname \"wan0\" meta l4proto udp snat to $wan
        oifname \"wan0\" masquerade" ;;
        *) echo "$LAB: unknown NAT type $t" >&2; return 1 ;;
    esac
    router "$n"
    inns "$n" nft -f - <<EOF
table ip lab {
    $sets
    chain forward { type filter hook forward priority filter; policy accept; $fwd
    }
    chain input { type filter hook input priority filter; policy accept;
        iifname "wan0" ct state new meta l4proto != icmp drop
    }
    chain prerouting { type nat hook prerouting priority dstnat; policy accept; $pre
    }
    chain postrouting { type nat hook postrouting priority srcnat; policy accept;
        $post
    }
}
EOF
}

# --- authority and supernodes ------------------------------------------------------
wait_line() {   # FILE PATTERN SECONDS
    local f=$1 pat=$2 n=$(($3 * 100)) l
    while ((n-- > 0)); do
        l=$(grep -m1 -e "$pat" "$f" 2>/dev/null) && { echo "$l"; return 0; }
        sleep 0.01
    done
    return 1
}
# The authority on 198.51.100.1:7700, supernodes sn1 and sn2 on .1 and .2
# port 7710, and an account u-NAME for every NAME given. Sets KEY (the
# authority's key) and CFG (the clients' configuration). Exits on failure.
lab_start_servers() {   # NAME...
    AUTH_CFG=$TMP/authority.toml
    printf '[authority]\nlisten = "198.51.100.1:7700"\nregistrations_per_hour_per_address = 0\n' >"$AUTH_CFG"
    inns srv "$BIN" --config "$AUTH_CFG" --data-dir "$TMP/authority" --authority >"$TMP/authority.log" 2>&1 &
    PIDS+=($!)
    KEY=$(wait_line "$TMP/authority.log" '^authority public key: ' 30) || { echo "authority did not start" >&2; cat "$TMP/authority.log"; exit 1; }
    KEY=${KEY#authority public key: }
    wait_line "$TMP/authority.log" '^listening on ' 30 >/dev/null || exit 1
    CFG=$TMP/client.toml
    printf '[login]\nserver = "198.51.100.1:7700"\nauthority_key = "%s"\n[overlay]\nlisten = "0.0.0.0:0"\nbootstrap = ["198.51.100.1:7710", "198.51.100.2:7710"]\n[relay]\nsecret = "%s-%s"\n' "$KEY" "$LAB" "$$" >"$CFG"
    local n
    for n in sn1 sn2; do lab_account "$n" supernode || { cat "$TMP/accounts.log"; exit 1; }; done
    for n in "$@"; do lab_account "u-$n" || { cat "$TMP/accounts.log"; exit 1; }; done
    inns srv "$BIN" --config "$CFG" --data-dir "$TMP/u-sn1" --supernode --listen 198.51.100.1:7710 >"$TMP/sn1.log" 2>&1 &
    PIDS+=($!)
    wait_line "$TMP/sn1.log" '^listening on ' 30 >/dev/null || { cat "$TMP/sn1.log"; exit 1; }
    inns srv "$BIN" --config "$CFG" --data-dir "$TMP/u-sn2" --supernode --listen 198.51.100.2:7710 --bootstrap 198.51.100.1:7710 >"$TMP/sn2.log" 2>&1 &
    PIDS+=($!)
    wait_line "$TMP/sn2.log" '^listening on ' 30 >/dev/null || exit 1
    sleep 1
}
lab_account() {   # NAME [supernode]: registered and logged in (data dir $TMP/u-NAME)
    local run=(inns srv "$BIN" --config "$CFG" --data-dir "$TMP/u-$1")
    echo "$1-password" | "${run[@]}" register "$1" --password-stdin >/dev/null 2>>"$TMP/accounts.log" || return 1
    if [[ "${2:-}" == supernode ]]; then
        "$BIN" --config "$AUTH_CFG" --data-dir "$TMP/authority" admin set-role "$1" supernode >/dev/null 2>>"$TMP/accounts.log" || return 1
    fi
    echo "$1-password" | "${run[@]}" login "$1" --password-stdin >/dev/null 2>>"$TMP/accounts.log"
}

# --- headless clients ---------------------------------------------------------------
# A headless client of account u-ENV in namespace ENV, named NAME: JSON
# events in $TMP/NAME.out, its log in $TMP/NAME.log, commands with `say`.
headless() {   # ENV NAME PORT FLAGS...
    local env=$1 name=$2 port=$3; shift 3
    mkfifo "$TMP/$name.in"
    inns "$env" "$BIN" --config "$CFG" --data-dir "$TMP/u-u-$env" --log-level natter=debug \
        --headless --json --listen "0.0.0.0:$port" "$@" \
        <"$TMP/$name.in" >"$TMP/$name.out" 2>"$TMP/$name.log" &
    PIDS+=($!)
    eval "PID_$name=$!"
    exec {fd}>"$TMP/$name.in"
    eval "FD_$name=$fd"
}
say() { local fd; eval "fd=\$FD_$1"; echo "$2" >&"$fd"; }
# Quit the named clients; killed after 3 s.
stop() {
    local n fd pid pids=()
    for n in "$@"; do
        eval "fd=\$FD_$n; pid=\$PID_$n"
        echo quit >&"$fd" 2>/dev/null
        exec {fd}>&-
        pids+=("$pid")
    done
    for _ in $(seq 30); do
        local alive=0 p
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
}
# A field of one JSON event line (strings and numbers).
field() { sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$1" | head -1; }
# The first call_stats line of FILE with packets received on a path
# (two-way audio), waiting up to 20 s.
two_way_stats() {   # FILE
    local s k
    for k in $(seq 2000); do
        s=$(grep '"event":"call_stats"' "$1" 2>/dev/null | grep -v '"packets_received":0[,}]' | grep -m1 '"path":"\(direct\|relayed\)"')
        [[ -n $s ]] && { echo "$s"; return 0; }
        sleep 0.01
    done
    return 1
}

# Every ordered pair of $ENVS through `run_pair A B` (which fills CELL,
# WRONG and N), then the matrix and the verdict. LAB names the script,
# WIDTH is a cell's width, LEGEND explains a cell and OK is the line
# printed when no cell is WRONG (exits 1 otherwise, keeping $TMP).
# LAB_PAIRS="A:B C:D" runs those ordered pairs only (a fast inner loop).
lab_matrix() {   # LAB WIDTH LEGEND OK
    local a b
    for a in "${ENVS[@]}"; do
        for b in "${ENVS[@]}"; do
            [[ $a == "$b" ]] && continue
            [[ -z ${LAB_PAIRS:-} || " $LAB_PAIRS " == *" $a:$b "* ]] || continue
            run_pair "$a" "$b"
        done
    done
    echo
    printf 'caller \\ callee '
    for b in "${ENVS[@]}"; do printf "%-${2}s" "$b"; done
    echo
    for a in "${ENVS[@]}"; do
        printf '%-15s ' "$a"
        for b in "${ENVS[@]}"; do printf "%-${2}s" "${CELL[$a,$b]:-.}"; done
        echo
    done
    echo "$3"
    echo "$1: $N calls in $((($(date +%s%N) - T0) / 1000000000)) s"
    if ((${#WRONG[@]})); then
        printf 'WRONG: %s\n' "${WRONG[@]}"
        KEEP_TMP=1
        exit 1
    fi
    echo "$1: $4"
}
