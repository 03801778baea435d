#!/usr/bin/env bash
# natter real-NAT lab: network namespaces + kernel NAT (nftables).
#
# Use as a command:
#   NETLAB_PREFIX=ntrx- lab/netlab.sh up          # build the lab (prints how long it took)
#   NETLAB_PREFIX=ntrx- lab/netlab.sh exec ENV CMD...   # run CMD in ENV's client namespace
#   NETLAB_PREFIX=ntrx- lab/netlab.sh down        # remove every namespace of that prefix
# or as a library:
#   source lab/netlab.sh; netlab_up; netlab_exec symmetric ...; netlab_down
#
# Topology (all of it inside namespaces; nothing is created in the root namespace):
#
#   ns <P>wan: bridge br0 --+-- ns <P>srv   wan0 198.51.100.1 + 198.51.100.2 (STUN/RFC 5780)
#                           +-- ns <P>peer  wan0 198.51.100.50 (a public host)
#                           +-- ns <P>c-public  wan0 198.51.100.11 (no NAT, no router)
#                           +-- ns <P>r-ENV wan0 198.51.100.(10+N) | lan0 10.(90+N).0.1
#                                        -- ns <P>c-ENV lan0 10.(90+N).0.2
#
# ENV (N): public(1) fullcone(2) restricted(3) portrestricted(4) symmetric(5) udpblocked(6)
# NETLAB_ENV_LIST="..." replaces that list (up to 30 names); a name's type is the
# part before the first '-', so "symmetric symmetric-b" gives two symmetric NATs.
#
# SAFETY: every `ip link add` below runs with `-n NS` (inside a lab namespace) and
# creates the peer directly in another lab namespace. Nothing touches the root
# namespace's interfaces.

NETLAB_TYPES=(public fullcone restricted portrestricted symmetric udpblocked)
if [[ -n "${NETLAB_ENV_LIST:-}" ]]; then
    read -r -a NETLAB_ENVS <<<"$NETLAB_ENV_LIST"
else
    NETLAB_ENVS=("${NETLAB_TYPES[@]}")
fi
NETLAB_PREFIX_SET=${NETLAB_PREFIX:+1}
: "${NETLAB_PREFIX:=ntr$$-}"
: "${NETLAB_MAPPING_TIMEOUT:=180}"   # seconds a full/restricted-cone mapping lives after the last outbound packet
NETLAB_SRV_IP1=198.51.100.1
NETLAB_SRV_IP2=198.51.100.2
NETLAB_PEER_IP=198.51.100.50

_netlab_err() { echo "netlab: $*" >&2; }

_netlab_check_prefix() {
    if [[ ! "$NETLAB_PREFIX" =~ ^[A-Za-z0-9_.-]{1,24}$ ]]; then
        _netlab_err "bad NETLAB_PREFIX '$NETLAB_PREFIX' (1-24 chars of A-Za-z0-9_.-)"
        return 1
    fi
}

# index (1..6) of an environment name
_netlab_idx() {
    local i
    for i in "${!NETLAB_ENVS[@]}"; do
        [[ "${NETLAB_ENVS[$i]}" == "$1" ]] && { echo $((i + 1)); return 0; }
    done
    _netlab_err "unknown environment '$1' (one of: ${NETLAB_ENVS[*]})"
    return 1
}

netlab_envs() { echo "${NETLAB_ENVS[@]}"; }

# NAT type of ENV: the name up to the first '-' (fullcone-b -> fullcone)
netlab_type() {
    _netlab_idx "$1" >/dev/null || return 1
    echo "${1%%-*}"
}

_netlab_check_envs() {
    local e t seen=" "
    ((${#NETLAB_ENVS[@]} >= 1 && ${#NETLAB_ENVS[@]} <= 30)) || { _netlab_err "1 to 30 environments"; return 1; }
    for e in "${NETLAB_ENVS[@]}"; do
        [[ "$e" =~ ^[a-z]+(-[a-z0-9]+)?$ ]] || { _netlab_err "bad environment name '$e'"; return 1; }
        [[ "$seen" != *" $e "* ]] || { _netlab_err "environment '$e' listed twice"; return 1; }
        seen+="$e "
        t=${e%%-*}
        [[ " ${NETLAB_TYPES[*]} " == *" $t "* ]] || { _netlab_err "unknown NAT type '$t' (one of: ${NETLAB_TYPES[*]})"; return 1; }
    done
}

# namespace names
netlab_wan_ns()  { echo "${NETLAB_PREFIX}wan"; }
netlab_srv_ns()  { echo "${NETLAB_PREFIX}srv"; }
netlab_peer_ns() { echo "${NETLAB_PREFIX}peer"; }
# client namespace of ENV; also accepts srv, peer, wan
netlab_ns() {
    case "$1" in
        srv) netlab_srv_ns ;;
        peer) netlab_peer_ns ;;
        wan) netlab_wan_ns ;;
        *) _netlab_idx "$1" >/dev/null || return 1; echo "${NETLAB_PREFIX}c-$1" ;;
    esac
}
# router namespace of ENV (none for public)
netlab_router_ns() {
    local t; t=$(netlab_type "$1") || return 1
    if [[ "$t" == public ]]; then _netlab_err "$1 is public: it has no router"; return 1; fi
    echo "${NETLAB_PREFIX}r-$1"
}
# every namespace name of this prefix
_netlab_all_ns() {
    local e
    echo "$(netlab_wan_ns) $(netlab_srv_ns) $(netlab_peer_ns)"
    for e in "${NETLAB_ENVS[@]}"; do
        echo "${NETLAB_PREFIX}c-$e"
        [[ "${e%%-*}" != public ]] && echo "${NETLAB_PREFIX}r-$e"
    done
}

# lab namespaces of this prefix that exist now (whatever environment list built them)
_netlab_existing_ns() {
    local ns rest
    for ns in /run/netns/"$NETLAB_PREFIX"*; do
        [[ -e "$ns" ]] || continue
        ns=${ns#/run/netns/}
        rest=${ns#"$NETLAB_PREFIX"}
        [[ "$rest" =~ ^(wan|srv|peer|[cr]-[a-z]+(-[a-z0-9]+)?)$ ]] && echo "$ns"
    done
    return 0
}

# client IP of ENV (srv -> first server address, peer -> peer address)
netlab_ip() {
    case "$1" in
        srv) echo "$NETLAB_SRV_IP1"; return ;;
        peer) echo "$NETLAB_PEER_IP"; return ;;
    esac
    local n; n=$(_netlab_idx "$1") || return 1
    if [[ "${1%%-*}" == public ]]; then echo "198.51.100.$((10 + n))"; else echo "10.$((90 + n)).0.2"; fi
}
# public (wan) IP of ENV's router; for public it is the client's own address
netlab_wan_ip() {
    local n; n=$(_netlab_idx "$1") || return 1
    echo "198.51.100.$((10 + n))"
}
netlab_lan_gw() {
    local n; n=$(_netlab_idx "$1") || return 1
    echo "10.$((90 + n)).0.1"
}
netlab_srv_ip() { if [[ "${1:-1}" == 2 ]]; then echo "$NETLAB_SRV_IP2"; else echo "$NETLAB_SRV_IP1"; fi; }
netlab_peer_ip() { echo "$NETLAB_PEER_IP"; }

# run a command in ENV's client namespace (ENV may also be srv, peer, wan)
netlab_exec() {
    local ns; ns=$(netlab_ns "$1") || return 1
    shift
    ip netns exec "$ns" "$@"
}
# run a command in ENV's router namespace
netlab_router_exec() {
    local ns; ns=$(netlab_router_ns "$1") || return 1
    shift
    ip netns exec "$ns" "$@"
}

# --- building -------------------------------------------------------------

# `ip -n NS ...`, refusing to run unless NS is an existing lab namespace of this
# prefix (so an empty or wrong name can never act on the root namespace).
_netlab_ipn() {
    local ns=$1; shift
    if [[ -z "$ns" || "$ns" != "$NETLAB_PREFIX"* || ! -e "/run/netns/$ns" ]]; then
        _netlab_err "refusing 'ip -n $ns $*': not a lab namespace"
        return 1
    fi
    ip -n "$ns" "$@"
}

_netlab_nsinit() {   # NS: create, lo up, no IPv6 noise
    ip netns add "$1" || return 1
    _netlab_ipn "$1" link set lo up || return 1
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null || return 1
}

# attach NS to the wan bridge: port PORT in wan, interface wan0 in NS, addresses ADDR/24...
_netlab_attach() {
    local ns=$1 port=$2 a wan; shift 2
    wan=$(netlab_wan_ns)
    _netlab_ipn "$wan" link add "$port" type veth peer name wan0 netns "$ns" || return 1
    _netlab_ipn "$wan" link set "$port" master br0 up || return 1
    for a in "$@"; do _netlab_ipn "$ns" addr add "$a/24" dev wan0 || return 1; done
    _netlab_ipn "$ns" link set wan0 up || return 1
}

# The nftables ruleset of ENV's router.
netlab_router_rules() {
    local env=$1 wan cli
    wan=$(netlab_wan_ip "$env") || return 1
    cli=$(netlab_ip "$env")
    local sets="" fwd="" pre="" post=""
    case "$(netlab_type "$env")" in
        fullcone)
            # EIM + EIF: keep the client's port (snat without a port range keeps it when
            # free), remember every client source port that sent out; any host may send to
            # a remembered port and is dnat'ed back to the single client.
            sets="set mapped { type inet_service; flags dynamic,timeout; timeout ${NETLAB_MAPPING_TIMEOUT}s; }"
            fwd="iifname \"lan0\" oifname \"wan0\" meta l4proto udp update @mapped { udp sport }"
            pre="iifname \"wan0\" ip daddr $wan udp dport @mapped dnat to $cli"
            post="oifname \"wan0\" meta l4proto udp snat to $wan
        oifname \"wan0\" masquerade" ;;
        restricted)
            # EIM + ADF: as full cone, but inbound to mapped port P only from an address the
            # client has sent to from P (set keyed by remote address . client port).
            sets="set seen { type ipv4_addr . inet_service; flags dynamic,timeout; timeout ${NETLAB_MAPPING_TIMEOUT}s; }"
            fwd="iifname \"lan0\" oifname \"wan0\" meta l4proto udp update @seen { ip daddr . udp sport }"
            pre="iifname \"wan0\" ip daddr $wan ip saddr . udp dport @seen dnat to $cli"
            post="oifname \"wan0\" meta l4proto udp snat to $wan
        oifname \"wan0\" masquerade" ;;
        portrestricted|udpblocked)
            # EIM + APDF: plain masquerade; conntrack admits replies only from the exact
            # address:port contacted.
            post="oifname \"wan0\" masquerade" ;;
        symmetric)
            # APDM + APDF: a fresh random external port for every new conntrack entry,
            # i.e. per destination address:port.
            post="oifname \"wan0\" masquerade fully-random" ;;
        *) _netlab_err "no router rules for '$env'"; return 1 ;;
    esac
    cat <<EOF
table ip lab {
    $sets
    chain udpblock { }
    chain loss { }
    chain forward {
        type filter hook forward priority filter; policy accept;
        jump udpblock
        jump loss
        $fwd
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan0" ct state new meta l4proto != icmp drop
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        $pre
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        $post
    }
}
EOF
}

# A public client has no router: its UDP block / loss live on its bridge port pN in wan,
# in table "bridge lab_pN".
_netlab_public_rules() {
    local n; n=$(_netlab_idx "$1") || return 1
    cat <<EOF
table bridge lab_p$n {
    chain udpblock { }
    chain loss { }
    chain filt {
        jump udpblock
        jump loss
    }
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "p$n" jump filt
        oifname "p$n" jump filt
    }
}
EOF
}

_netlab_build() {
    local e n r c wan
    wan=$(netlab_wan_ns)
    for c in $(_netlab_all_ns); do _netlab_nsinit "$c" || return 1; done

    _netlab_ipn "$wan" link add br0 type bridge || return 1
    _netlab_ipn "$wan" link set br0 up || return 1

    _netlab_attach "$(netlab_srv_ns)" psrv "$NETLAB_SRV_IP1" "$NETLAB_SRV_IP2" || return 1
    _netlab_attach "$(netlab_peer_ns)" ppeer "$NETLAB_PEER_IP" || return 1

    for e in "${NETLAB_ENVS[@]}"; do
        n=$(_netlab_idx "$e")
        c="${NETLAB_PREFIX}c-$e"
        if [[ "$(netlab_type "$e")" == public ]]; then
            _netlab_attach "$c" "p$n" "$(netlab_wan_ip "$e")" || return 1
            ip netns exec "$wan" nft -f - < <(_netlab_public_rules "$e") || return 1
            continue
        fi
        r="${NETLAB_PREFIX}r-$e"
        _netlab_attach "$r" "p$n" "$(netlab_wan_ip "$e")" || return 1
        _netlab_ipn "$r" link add lan0 type veth peer name lan0 netns "$c" || return 1
        _netlab_ipn "$r" addr add "$(netlab_lan_gw "$e")/24" dev lan0 || return 1
        _netlab_ipn "$r" link set lan0 up || return 1
        _netlab_ipn "$c" addr add "$(netlab_ip "$e")/24" dev lan0 || return 1
        _netlab_ipn "$c" link set lan0 up || return 1
        _netlab_ipn "$c" route add default via "$(netlab_lan_gw "$e")" || return 1
        ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1 >/dev/null || return 1
        ip netns exec "$r" nft -f - < <(netlab_router_rules "$e") || { _netlab_err "nft rules for $e failed"; return 1; }
    done
    for e in "${NETLAB_ENVS[@]}"; do
        if [[ "$(netlab_type "$e")" == udpblocked ]]; then netlab_block_udp "$e" on || return 1; fi
    done
}

# Build the lab. On any failure (or Ctrl-C) everything built so far is removed.
# Sets NETLAB_UP_MS to the time taken.
netlab_up() {
    _netlab_check_prefix || return 1
    _netlab_check_envs || return 1
    command -v nft >/dev/null || { _netlab_err "nft not installed (apt-get install -y nftables)"; return 1; }
    # never touch a lab that is already there (a failed `up` cleans up after itself)
    if [[ -n "$(_netlab_existing_ns)" ]]; then
        _netlab_err "a lab with prefix '$NETLAB_PREFIX' already exists; use another NETLAB_PREFIX or run down first"
        return 1
    fi
    local t0 t1 rc old_int old_term
    t0=$(date +%s%N)
    old_int=$(trap -p INT); old_term=$(trap -p TERM)
    trap 'netlab_down; exit 130' INT
    trap 'netlab_down; exit 143' TERM
    _netlab_build; rc=$?
    trap - INT TERM; eval "$old_int"; eval "$old_term"
    if ((rc != 0)); then
        _netlab_err "up failed; cleaning up"
        netlab_down
        return 1
    fi
    t1=$(date +%s%N)
    NETLAB_UP_MS=$(((t1 - t0) / 1000000))
    return 0
}

# Remove every namespace of this prefix (killing processes still inside them).
# Idempotent; ignores Ctrl-C while it runs so it always finishes.
netlab_down() {
    _netlab_check_prefix || return 1
    local old_int old_term ns pids left=0
    old_int=$(trap -p INT); old_term=$(trap -p TERM)
    trap '' INT TERM
    for ns in $(_netlab_existing_ns); do
        pids=$(ip netns pids "$ns" 2>/dev/null)
        if [[ -n "$pids" ]]; then
            kill $pids 2>/dev/null
            sleep 0.2
            pids=$(ip netns pids "$ns" 2>/dev/null)
            [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null
        fi
        ip netns del "$ns" 2>/dev/null || { _netlab_err "could not delete $ns"; left=1; }
    done
    trap - INT TERM; eval "$old_int"; eval "$old_term"
    return $left
}

# Namespaces of this prefix that exist now.
netlab_list() {
    _netlab_existing_ns
}

# Install a trap that removes the lab when the calling script exits or is interrupted.
netlab_cleanup_on_exit() {
    trap 'netlab_down' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# --- runtime knobs ----------------------------------------------------------

# Forget all NAT state of ENV: conntrack entries and the cone mapping sets.
netlab_flush_conntrack() {
    local env=$1 r
    [[ "$(netlab_type "$env")" == public ]] && return 0   # no NAT, no conntrack
    r=$(netlab_router_ns "$env") || return 1
    ip netns exec "$r" conntrack -F >/dev/null 2>&1
    case "$(netlab_type "$env")" in
        fullcone) ip netns exec "$r" nft flush set ip lab mapped ;;
        restricted) ip netns exec "$r" nft flush set ip lab seen ;;
    esac
    return 0
}

# run nft for ENV's filter (router, or the wan bridge port for public)
_netlab_nft_env() {
    local env=$1; shift
    if [[ "$(netlab_type "$env")" == public ]]; then
        local n; n=$(_netlab_idx "$env")
        ip netns exec "$(netlab_wan_ns)" nft "${@//@FAM@/bridge lab_p$n}"
    else
        local r; r=$(netlab_router_ns "$env") || return 1
        ip netns exec "$r" nft "${@//@FAM@/ip lab}"
    fi
}

# netlab_block_udp ENV on|off: drop all forwarded UDP of ENV (both directions), or stop.
netlab_block_udp() {
    local env=$1 mode=$2
    _netlab_idx "$env" >/dev/null || return 1
    _netlab_nft_env "$env" flush chain @FAM@ udpblock || return 1
    case "$mode" in
        on) _netlab_nft_env "$env" add rule @FAM@ udpblock meta l4proto udp counter drop ;;
        off) return 0 ;;
        *) _netlab_err "netlab_block_udp ENV on|off"; return 1 ;;
    esac
}

# netlab_loss ENV PERCENT: drop PERCENT% of ENV's UDP packets, each direction (0 = off).
netlab_loss() {
    local env=$1 pct=$2
    _netlab_idx "$env" >/dev/null || return 1
    [[ "$pct" =~ ^[0-9]+$ ]] && ((pct <= 100)) || { _netlab_err "netlab_loss ENV 0..100"; return 1; }
    _netlab_nft_env "$env" flush chain @FAM@ loss || return 1
    ((pct == 0)) && return 0
    _netlab_nft_env "$env" add rule @FAM@ loss meta l4proto udp numgen random mod 100 "<" "$pct" counter drop
}

# Print ENV's nftables ruleset as loaded.
netlab_show_rules() {
    if [[ "$(netlab_type "$1")" == public ]]; then
        ip netns exec "$(netlab_wan_ns)" nft list table bridge "lab_p$(_netlab_idx "$1")"
    else
        netlab_router_exec "$1" nft list ruleset
    fi
}

netlab_status() {
    local e
    printf '%-15s %-14s %-15s %s\n' ENV CLIENT_IP WAN_IP NAMESPACE
    for e in "${NETLAB_ENVS[@]}"; do
        printf '%-15s %-14s %-15s %s\n' "$e" "$(netlab_ip "$e")" "$(netlab_wan_ip "$e")" "$(netlab_ns "$e")"
    done
    printf '%-15s %-14s %-15s %s\n' srv "$NETLAB_SRV_IP1,.2" "-" "$(netlab_srv_ns)"
    printf '%-15s %-14s %-15s %s\n' peer "$NETLAB_PEER_IP" "-" "$(netlab_peer_ns)"
}

# --- command-line use -----------------------------------------------------------

_netlab_usage() {
    cat <<EOF
usage: NETLAB_PREFIX=PFX $0 COMMAND
  up                      build the lab (prints the time taken)
  down                    remove every namespace of PFX
  list                    namespaces of PFX that exist
  status                  addresses and namespace names
  exec ENV CMD...         run CMD in ENV's client namespace (ENV: ${NETLAB_ENVS[*]} srv peer wan)
  rexec ENV CMD...        run CMD in ENV's router namespace
  flush ENV               flush ENV's conntrack and cone mappings
  block-udp ENV on|off    drop/allow forwarded UDP for ENV
  loss ENV PERCENT        drop PERCENT% of ENV's UDP each way (0 = off)
  rules ENV               print ENV's nftables ruleset
EOF
}

netlab_main() {
    local cmd=${1:-}; shift || true
    if [[ $EUID -ne 0 ]]; then _netlab_err "must run as root"; return 1; fi
    case "$cmd" in
        up)
            if [[ -z "${NETLAB_PREFIX_SET:-}" ]]; then
                _netlab_err "note: NETLAB_PREFIX not set; using '$NETLAB_PREFIX'"
            fi
            netlab_up || return 1
            netlab_status
            echo "netlab: up in ${NETLAB_UP_MS} ms (prefix $NETLAB_PREFIX)"
            echo "export NETLAB_PREFIX=$NETLAB_PREFIX" ;;
        down)
            if [[ -z "${NETLAB_PREFIX_SET:-}" ]]; then _netlab_err "set NETLAB_PREFIX to the lab's prefix"; return 1; fi
            netlab_down || return 1
            [[ -z "$(netlab_list)" ]] && echo "netlab: down, no namespace of prefix $NETLAB_PREFIX left" ;;
        list) netlab_list ;;
        status) netlab_status ;;
        exec) netlab_exec "$@" ;;
        rexec) netlab_router_exec "$@" ;;
        flush) netlab_flush_conntrack "$@" ;;
        block-udp) netlab_block_udp "$@" ;;
        loss) netlab_loss "$@" ;;
        rules) netlab_show_rules "$@" ;;
        ""|-h|--help|help) _netlab_usage ;;
        *) _netlab_usage >&2; return 1 ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    netlab_main "$@"
    exit $?
fi
