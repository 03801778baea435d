# The command line of lab/nat-envs.sh, lab/roam.sh and lab/conf-nat.sh
# (source it, do not run it). Before sourcing, set HERE (the lab
# directory) and LAB (the script's name, for messages).
# `lab_args "$@"` sets ROOT and BIN (the debug build, $NATTER_BIN or
# `--bin PATH`), prints the script's header comment for -h/--help, and
# exits 2 unless it runs as root with a natter binary at BIN.

lab_args() {
    ROOT=$(cd "$HERE/.." && pwd)
    BIN=${NATTER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/natter}
    while (($#)); do
        case "$1" in
            --bin) BIN=$2; shift 2 ;;
            -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
            *) echo "unknown argument $1" >&2; exit 2 ;;
        esac
    done
    if [[ $EUID -ne 0 ]]; then echo "$LAB: must run as root" >&2; exit 2; fi
    [[ -x "$BIN" ]] || { echo "$LAB: no natter binary at $BIN" >&2; exit 2; }
}
