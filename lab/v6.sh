#!/usr/bin/env bash
# IPv6 in the kernel lab: dual-stack servers, and clients that are IPv6
# only, IPv4 only, dual-stack, IPv6 only behind a stateful firewall and
# IPv6 only behind NAT64/DNS64, all inside network namespaces of one prefix:
#
#  ns <P>wan: bridge br0, 198.51.100.0/24 and 2001:db8:100::/64
#   +-- <P>srv    192.88.99.1 (and 198.51.100.1), 2001:db8:100::1: the authority on
#   |             [::]:7700, dual-stack supernodes sn1 [::]:7710 and sn2 [::]:7711
#   |             (advertised at 192.88.99.1, relays at both families: [relay]
#   |             public_ipv6), a DNS server for "lab." (unbound, A records only)
#   +-- <P>v6only  2001:db8:100::11             IPv6 only, no NAT, no firewall
#   +-- <P>rv4     198.51.100.12 | 10.92.0.1     IPv4 NAT (port-restricted), no IPv6
#   |      `-- <P>v4only 10.92.0.2
#   +-- <P>rdual   198.51.100.13, ::13 | 10.93.0.1, 2001:db8:93::1  IPv4 NAT
#   |      `-- <P>dual   10.93.0.2, 2001:db8:93::2                 (port-restricted), IPv6 routed
#   +-- <P>rfw     2001:db8:100::14 | 2001:db8:94::1  IPv6 firewall: inbound only for
#   |      `-- <P>fw6    2001:db8:94::2                flows the inside opened (ct state)
#   +-- <P>rn64    2001:db8:100::15 | 2001:db8:95::1  IPv6 routed; 64:ff9b::/96 to <P>xlat;
#   |      `-- <P>nat64  2001:db8:95::2                DNS64 (unbound, dns64 module) on ::1
#   +-- <P>xlat    198.51.100.64, 2001:db8:100::64: tayga NAT64 (64:ff9b::/96, pool
#                  192.168.255.0/24 masqueraded to 198.51.100.64)
#
# The IPv6-only client behind NAT64 knows its servers by name only: `auth.lab`
# and `sn.lab` have A records only (192.88.99.1), DNS64 makes 64:ff9b::c058:6301
# of them, and tayga carries the traffic to the servers' IPv4 address.
# The servers' IPv4 address lives in 192.88.99.0/24 (the retired 6to4 relay
# anycast block, RFC 7526; on the WAN next to 198.51.100.0/24): tayga 0.9.2
# refuses the well-known prefix for the documentation ranges (198.51.100.0/24
# and the like; RFC 6052 3.1), so the IPv4-only home (198.51.100.12) cannot be
# reached through NAT64 here, and that pair relays. natter on an IPv6-only host
# whose bootstrap addresses are NAT64 ones writes every IPv4 address in that
# prefix at its socket (RFC 6535's bump in the host): its supernodes, their
# relay and STUN, and IPv4 peers in reach of the translator.
# The other clients are given addresses of their families.
#
# For every ordered pair of client environments A calls B (B auto-answers with a
# 600 Hz tone, A plays 1 kHz, both record); the matrix line per pair gives the
# path (direct/relayed), its family (the far end's address A's stats report) and
# the time from `call` to A's call active (answered, peer link up, media keys
# set: audio starts both ways; A's stats must then count packets received). The
# recordings must hold the other's tone with no gap over 200 ms
# (lab/wav-gaps.py). Expected: direct wherever both ends share a family that
# reaches (IPv6 through the firewall because the inside also sends), relayed
# where none does (the IPv4-only home against the IPv6-only, firewalled and
# NAT64 hosts). Goals, printed per
# cell, not failures: direct < 500 ms,
# relayed < 2000 ms. Exit status 1 on a call with no two-way audio, a bad
# recording, or a cell not on its expected path.
#
# usage: lab/v6.sh [--bin PATH]   (root; namespaces are v6lab-<pid>-*; installs
#        tayga and unbound with apt-get when missing)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=v6
# shellcheck source=args.sh
source "$HERE/args.sh"
lab_args "$@"

for c in nft conntrack tayga unbound; do
    command -v "$c" >/dev/null && continue
    echo "installing nftables conntrack tayga unbound ..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables conntrack tayga unbound >/dev/null ||
        { echo "apt-get install failed" >&2; exit 2; }
    break
done

P=${V6_PREFIX:-v6lab-$$-}
NSS=(wan srv xlat v6only rv4 v4only rdual dual rfw fw6 rn64 nat64)
# shellcheck source=wanlab.sh
source "$HERE/wanlab.sh"

# `ip netns exec` puts /etc/netns/NS/resolv.conf over /etc/resolv.conf.
lab_cleanup_hook() { rm -rf "/etc/netns/$(ns nat64)"; }

# --- topology --------------------------------------------------------------------
W6=2001:db8:100
# Every WAN host routes the inside IPv6 prefixes to their routers, and the
# NAT64 prefix to xlat.
wan_routes6() {   # NS
    local n=$1 r
    for r in "2001:db8:93::/64 $W6::13" "2001:db8:94::/64 $W6::14" "2001:db8:95::/64 $W6::15" "64:ff9b::/96 $W6::64"; do
        # not through itself
        ip -n "$(ns "$n")" -6 addr show dev wan0 | grep -q "inet6 ${r#* }/" && continue
        ipn "$(ns "$n")" -6 route add "${r% *}" via "${r#* }" || return 1
    done
}

build() {
    local n
    lab_build_namespaces || return 1
    for n in wan srv xlat v6only rdual dual rfw fw6 rn64 nat64; do v6on "$n" || return 1; done
    addr srv wan0 192.88.99.1/24 && addr6 srv wan0 "$W6::1/64" || return 1
    # The servers answer from 192.88.99.1: natter's dual-stack socket replies
    # from the kernel's choice of source (no IP_PKTINFO), and a NAT drops a
    # reply from 198.51.100.1 to a request sent to 192.88.99.1.
    ipn "$(ns srv)" route replace 198.51.100.0/24 dev wan0 src 192.88.99.1 || return 1
    # IPv6 only, on the WAN.
    on_wan v6only p6 && addr6 v6only wan0 "$W6::11/64" || return 1
    # IPv4 only behind a port-restricted NAT.
    on_wan rv4 pv4 198.51.100.12 || return 1
    link rv4 lan0 v4only lan0 && addr rv4 lan0 10.92.0.1/24 && addr v4only lan0 10.92.0.2/24 || return 1
    ipn "$(ns v4only)" route add default via 10.92.0.1 || return 1
    nat_rules rv4 portrestricted 198.51.100.12 10.92.0.2 || return 1
    # Dual-stack home: IPv4 NATed, IPv6 routed.
    on_wan rdual pdual 198.51.100.13 && addr6 rdual wan0 "$W6::13/64" || return 1
    link rdual lan0 dual lan0 && addr rdual lan0 10.93.0.1/24 && addr dual lan0 10.93.0.2/24 || return 1
    addr6 rdual lan0 2001:db8:93::1/64 && addr6 dual lan0 2001:db8:93::2/64 || return 1
    ipn "$(ns dual)" route add default via 10.93.0.1 && ipn "$(ns dual)" -6 route add default via 2001:db8:93::1 || return 1
    nat_rules rdual portrestricted 198.51.100.13 10.93.0.2 || return 1
    inns rdual sysctl -qw net.ipv6.conf.all.forwarding=1 >/dev/null || return 1
    # IPv6 only behind a stateful firewall: inbound only on flows the inside began.
    on_wan rfw pfw && addr6 rfw wan0 "$W6::14/64" || return 1
    link rfw lan0 fw6 lan0 && addr6 rfw lan0 2001:db8:94::1/64 && addr6 fw6 lan0 2001:db8:94::2/64 || return 1
    ipn "$(ns fw6)" -6 route add default via 2001:db8:94::1 || return 1
    inns rfw sysctl -qw net.ipv6.conf.all.forwarding=1 >/dev/null || return 1
    inns rfw nft -f - <<'EOF' || return 1
table ip6 fw {
    chain forward { type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan0" oifname "wan0" accept
        meta l4proto ipv6-icmp icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept
    }
}
EOF
    # IPv6 only behind NAT64/DNS64.
    on_wan rn64 pn64 && addr6 rn64 wan0 "$W6::15/64" || return 1
    link rn64 lan0 nat64 lan0 && addr6 rn64 lan0 2001:db8:95::1/64 && addr6 nat64 lan0 2001:db8:95::2/64 || return 1
    ipn "$(ns nat64)" -6 route add default via 2001:db8:95::1 || return 1
    inns rn64 sysctl -qw net.ipv6.conf.all.forwarding=1 >/dev/null || return 1
    # The translator.
    on_wan xlat pxl 198.51.100.64 && addr6 xlat wan0 "$W6::64/64" || return 1
    inns xlat sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 >/dev/null || return 1
    for n in srv v6only rdual rfw rn64 xlat; do wan_routes6 "$n" || return 1; done
    for n in rv4 rdual xlat; do ipn "$(ns "$n")" route add 192.88.99.0/24 dev wan0 || return 1; done
    start_nat64 || return 1
}

# tayga in <P>xlat: IPv6 64:ff9b::a.b.c.d <-> IPv4 a.b.c.d, each IPv6 source
# given an address of 192.168.255.0/24, masqueraded to 198.51.100.64.
start_nat64() {
    cat >"$TMP/tayga.conf" <<EOF
tun-device nat64
ipv4-addr 192.168.255.1
ipv6-addr $W6::6464
prefix 64:ff9b::/96
dynamic-pool 192.168.255.0/24
data-dir $TMP/tayga
EOF
    mkdir -p "$TMP/tayga"
    inns xlat tayga -c "$TMP/tayga.conf" --mktun >/dev/null || return 1
    ipn "$(ns xlat)" link set nat64 up || return 1
    ipn "$(ns xlat)" addr add 192.168.255.2 dev nat64 || return 1
    ipn "$(ns xlat)" addr add "$W6::64" dev nat64 nodad || return 1
    ipn "$(ns xlat)" route add 192.168.255.0/24 dev nat64 || return 1
    ipn "$(ns xlat)" -6 route add 64:ff9b::/96 dev nat64 || return 1
    inns xlat nft -f - <<'EOF' || return 1
table ip lab {
    chain postrouting { type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" ip saddr 192.168.255.0/24 masquerade
    }
}
EOF
    inns xlat tayga -c "$TMP/tayga.conf" --nodetach >"$TMP/tayga.log" 2>&1 &
    PIDS+=($!)
}

# unbound twice: the "internet" DNS for lab. (A records only) in <P>srv, and
# the DNS64 resolver of the NAT64 network in <P>rn64 (forwards lab. there).
start_dns() {
    local common='    username: ""
    chroot: ""
    use-syslog: no
    do-daemonize: no
    access-control: ::/0 allow
    access-control: 0.0.0.0/0 allow
    do-not-query-localhost: no
    verbosity: 1'
    cat >"$TMP/dns-lab.conf" <<EOF
server:
    interface: $W6::1
    directory: "$TMP"
    pidfile: "$TMP/dns-lab.pid"
    logfile: "$TMP/dns-lab.log"
$common
    module-config: "iterator"
    local-zone: "lab." static
    local-data: "auth.lab. 60 IN A 192.88.99.1"
    local-data: "sn.lab. 60 IN A 192.88.99.1"
remote-control:
    control-enable: no
EOF
    cat >"$TMP/dns64.conf" <<EOF
server:
    interface: 2001:db8:95::1
    directory: "$TMP"
    pidfile: "$TMP/dns64.pid"
    logfile: "$TMP/dns64.log"
$common
    do-ip4: no
    module-config: "dns64 iterator"
    dns64-prefix: 64:ff9b::/96
    domain-insecure: "lab."
forward-zone:
    name: "lab."
    forward-addr: $W6::1
remote-control:
    control-enable: no
EOF
    inns srv unbound -d -c "$TMP/dns-lab.conf" >>"$TMP/dns-lab.log" 2>&1 &
    PIDS+=($!)
    inns rn64 unbound -d -c "$TMP/dns64.conf" >>"$TMP/dns64.log" 2>&1 &
    PIDS+=($!)
    mkdir -p "/etc/netns/$(ns nat64)"
    echo "nameserver 2001:db8:95::1" >"/etc/netns/$(ns nat64)/resolv.conf"
    local k a=""
    for k in $(seq 100); do
        a=$(inns nat64 getent ahostsv6 sn.lab 2>/dev/null | awk 'NR == 1 { print $1 }')
        [[ $a == 64:ff9b::* ]] && break
        sleep 0.1
    done
    [[ $a == 64:ff9b::* ]] || { echo "v6: DNS64 gave '$a' for sn.lab" >&2; cat "$TMP"/dns*.log >&2; return 1; }
    echo "v6: DNS64: sn.lab is $a"
}

T0=$(date +%s%N)
build || { echo "v6: building the lab failed" >&2; exit 1; }
echo "v6: lab up in $((($(date +%s%N) - T0) / 1000000)) ms (prefix $P)"
start_dns || exit 1
# NAT64 at work: a UDP echo from the IPv6-only host to an IPv4 address.
inns srv python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.88.99.1", 9999)); s.settimeout(5); d, a = s.recvfrom(99); s.sendto(d, a); print(a[0])' >"$TMP/echo.log" 2>&1 &
sleep 0.3
inns nat64 python3 -c 'import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b"x", ("64:ff9b::c058:6301", 9999)); s.recvfrom(99)' ||
    { echo "v6: no NAT64 path" >&2; cat "$TMP/tayga.log" >&2; exit 1; }
wait $!
echo "v6: NAT64: 64:ff9b::192.88.99.1 answers; the IPv4 server saw $(cat "$TMP/echo.log")"

# --- servers -----------------------------------------------------------------------------
ENVS=(v6only v4only dual fw6 nat64)
start_servers() {
    AUTH_CFG=$TMP/authority.toml
    printf '[authority]\nlisten = "[::]:7700"\nregistrations_per_hour_per_address = 0\n' >"$AUTH_CFG"
    inns srv "$BIN" --config "$AUTH_CFG" --data-dir "$TMP/authority" --authority >"$TMP/authority.log" 2>&1 &
    PIDS+=($!)
    KEY=$(wait_line "$TMP/authority.log" '^authority public key: ' 30) || { echo "authority did not start" >&2; cat "$TMP/authority.log"; exit 1; }
    KEY=${KEY#authority public key: }
    wait_line "$TMP/authority.log" '^listening on ' 30 >/dev/null || exit 1
    local relay
    relay=$(printf '[relay]\nsecret = "%s-%s"\n' "$LAB" "$$")
    client_cfg() {   # NAME LOGIN BOOTSTRAP...
        local f=$TMP/client-$1.toml login=$2 b; shift 2
        b=$(printf '"%s", ' "$@")
        printf '[login]\nserver = "%s"\nauthority_key = "%s"\n[overlay]\nlisten = "[::]:0"\nbootstrap = [%s]\n%s\n' \
            "$login" "$KEY" "${b%, }" "$relay" >"$f"
    }
    client_cfg v4only 192.88.99.1:7700 192.88.99.1:7710 192.88.99.1:7711
    client_cfg v6only "[$W6::1]:7700" "[$W6::1]:7710" "[$W6::1]:7711"
    cp "$TMP/client-v6only.toml" "$TMP/client-fw6.toml"
    client_cfg dual "[$W6::1]:7700" "[$W6::1]:7710" "[$W6::1]:7711" 192.88.99.1:7710 192.88.99.1:7711
    client_cfg nat64 auth.lab:7700 sn.lab:7710 sn.lab:7711
    CFG=$TMP/client-v4only.toml
    SN_CFG=$TMP/supernode.toml
    printf '%s\n[supernode]\nadvertise = "192.88.99.1"\n' "$(cat "$CFG")" >"$SN_CFG"
    sed -i "s/^\\[relay\\]/[relay]\npublic_ipv6 = \"$W6::1\"/" "$SN_CFG"
    local n
    for n in sn1 sn2; do lab_account "$n" supernode || { cat "$TMP/accounts.log"; exit 1; }; done
    for n in "${ENVS[@]}"; do lab_account "u-$n" || { cat "$TMP/accounts.log"; exit 1; }; done
    inns srv "$BIN" --config "$SN_CFG" --data-dir "$TMP/u-sn1" --supernode --listen "[::]:7710" >"$TMP/sn1.log" 2>&1 &
    PIDS+=($!)
    wait_line "$TMP/sn1.log" '^listening on ' 30 >/dev/null || { cat "$TMP/sn1.log"; exit 1; }
    inns srv "$BIN" --config "$SN_CFG" --data-dir "$TMP/u-sn2" --supernode --listen "[::]:7711" --bootstrap 192.88.99.1:7710 >"$TMP/sn2.log" 2>&1 &
    PIDS+=($!)
    wait_line "$TMP/sn2.log" '^listening on ' 30 >/dev/null || { cat "$TMP/sn2.log"; exit 1; }
    sleep 1
}
start_servers

# --- one call per ordered pair ------------------------------------------------------------
# No family in common that reaches: a relay (NAT64 against the IPv4-only
# home too: tayga will not carry 198.51.100.0/24, see above).
relay_expected() {
    [[ $1 == v4only && $2 != dual ]] || [[ $2 == v4only && $1 != dual ]]
}
family() {   # ADDR (a.b.c.d:p or [v6]:p)
    case $1 in
        "") echo "-" ;;
        \[64:ff9b:*) echo "ipv6/nat64" ;;
        \[*) echo ipv6 ;;
        *) echo ipv4 ;;
    esac
}
flush() {
    local r
    for r in rv4 rdual rfw xlat; do inns "$r" conntrack -F >/dev/null 2>&1; done
}

declare -A CELL
WRONG=()
N=0
run_pair() {   # A B
    local a=$1 b=$2 t0 t1 ms act s_a path="" remote="" fam fin_a fin_b gap_a gap_b ok=1 goal
    N=$((N + 1))
    flush
    rm -f "$TMP"/A.* "$TMP"/B.*
    CFG=$TMP/client-$b.toml headless "$b" B $((24000 + 2 * N)) --auto-answer --play tone:600 --record "$TMP/B.wav"
    CFG=$TMP/client-$a.toml headless "$a" A $((24001 + 2 * N)) --play tone:1000 --record "$TMP/A.wav"
    wait_line "$TMP/B.out" '"event":"published"' 20 >/dev/null
    wait_line "$TMP/A.out" '"event":"published"' 20 >/dev/null
    t0=$(date +%s%N)
    say A "call u-$b"
    act=$(wait_line "$TMP/A.out" '"event":"call_state".*"state":"active"' 20)
    t1=$(date +%s%N)
    ms=$(((t1 - t0) / 1000000))
    s_a=""
    [[ -n $act ]] && s_a=$(two_way_stats "$TMP/A.out")
    if [[ -z $s_a ]]; then
        CELL[$a,$b]="FAIL"
        WRONG+=("$a -> $b: no two-way audio")
        ok=0
    else
        path=$(field "$s_a" path); remote=$(field "$s_a" remote)
        fam=$(family "$remote")
        CELL[$a,$b]="$path/$fam $ms"
        sleep 3
        say A hangup
        fin_a=$(wait_line "$TMP/A.out" '"event":"call_stats".*"final":true' 10)
        fin_b=$(wait_line "$TMP/B.out" '"event":"call_stats".*"final":true' 10)
        gap_a=$(python3 "$HERE/wav-gaps.py" "$TMP/A.wav" 600 200 2>&1)
        gap_b=$(python3 "$HERE/wav-gaps.py" "$TMP/B.wav" 1000 200 2>&1)
        if [[ -z $fin_a || -z $fin_b || $gap_a != ok* || $gap_b != ok* ]]; then
            WRONG+=("$a -> $b: recordings: A heard: ${gap_a:-none}; B heard: ${gap_b:-none}")
            CELL[$a,$b]+="!audio"
            ok=0
        fi
        if relay_expected "$a" "$b"; then
            [[ $path == relayed ]] || { WRONG+=("$a -> $b: want relayed, got $path to $remote"); ok=0; }
        elif [[ $path != direct ]]; then
            WRONG+=("$a -> $b: want direct, got $path"); ok=0
        fi
    fi
    goal="ok"
    if [[ $path == direct ]]; then ((ms < 500)) || goal="over 500 ms"
    elif [[ $path == relayed ]]; then ((ms < 2000)) || goal="over 2000 ms"
    else goal="-"; fi
    stop A B
    mkdir -p "$TMP/pairs/$a-$b"
    cp "$TMP"/[AB].out "$TMP"/[AB].log "$TMP/pairs/$a-$b/" 2>/dev/null
    if ((ok == 0)); then
        mkdir -p "$TMP/wrong/$a-$b"
        cp "$TMP"/[AB].out "$TMP"/[AB].log "$TMP"/[AB].wav "$TMP/wrong/$a-$b/" 2>/dev/null
    fi
    printf '%-7s -> %-7s path %-8s family %-11s dial->two-way audio %5s ms  goal %-13s remote %s\n' \
        "$a" "$b" "${path:-FAIL}" "$(family "$remote")" "$ms" "$goal" "${remote:-}"
}

lab_matrix v6 22 \
    "(cells: path/family of the far end and ms from \`call\` to the caller's call active; audio both ways checked after)" \
    "every call on its expected path (direct where a family in common reaches, else relayed) with audio both ways"
