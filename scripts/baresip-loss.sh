#!/usr/bin/env bash
# baresip comparison for the whole-call voice benchmark (issue 12): two
# Debian baresip instances (Opus 32 kb/s, in-band FEC, 20 ms) call each
# other over loopback inside a network namespace; an nftables numgen rule
# drops the given share of the caller's RTP packets (caller -> callee
# only, as `cargo bench --bench call` impairs alice's sending side). The
# caller plays assets/speech.wav (48 kHz copy), the callee's decoded audio
# is recorded (sndfile module) and scored like the natter bench: PESQ-WB of
# the whole recording, aligned by one lag (scripts/pesq_mos.py --align).
#
#   sudo scripts/baresip-loss.sh [LOSS_PERCENT]...   (default: 0 10 20 30)
#
# Needs: apt-get install baresip-core nftables; pip install pesq numpy scipy.
# Everything happens in the namespace vxbs (created and removed here);
# nothing touches the root namespace's interfaces.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ns=vxbs
work=$(mktemp -d /tmp/vx-baresip.XXXXXX)
losses=("$@"); [ ${#losses[@]} -gt 0 ] || losses=(0 10 20 30)
mods=/usr/lib/baresip/modules

cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
# baresip wants a non-loopback local address: a veth pair with both ends
# in the namespace (traffic to the address itself still goes over lo).
ip -n "$ns" link add vxa type veth peer name vxb
ip -n "$ns" addr add 10.99.0.1/24 dev vxa
ip -n "$ns" link set vxa up
ip -n "$ns" link set vxb up
addr=10.99.0.1

python3 - "$here/assets/speech.wav" "$work/speech48.wav" <<'PY'
import sys, wave, numpy as np
from scipy.signal import resample_poly
w = wave.open(sys.argv[1]); rate = w.getframerate()
x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(float)
y = resample_poly(x, 48000, rate)
# one second of silence before and after: the call is up before speech
y = np.concatenate([np.zeros(48000), y, np.zeros(48000)])
o = wave.open(sys.argv[2], "wb"); o.setnchannels(1); o.setsampwidth(2); o.setframerate(48000)
o.writeframes(np.clip(np.round(y), -32768, 32767).astype(np.int16).tobytes()); o.close()
PY

conf() { # dir sip_port rtp_range source player extra
  mkdir -p "$1"
  cat > "$1/config" <<CONF
poll_method		epoll
sip_listen		$addr:$2
call_local_timeout	120
audio_player		$5
audio_source		$4
audio_alert		$5
audio_buffer		20-160
rtp_ports		$3
jitter_buffer_delay	5-10
module_path		$mods
module			opus.so
module			aufile.so
module			aubridge.so
module			sndfile.so
module			account.so
module_app		menu.so
opus_bitrate		32000
opus_stereo		no
opus_sprop_stereo	no
opus_inbandfec		yes
opus_application	voip
opus_packet_loss	$6
snd_path		$1
CONF
}

for loss in "${losses[@]}"; do
  a=$work/l$loss/a b=$work/l$loss/b
  conf "$a" 5060 10000-10010 "aufile,$work/speech48.wav" "aubridge,a" "$loss"
  conf "$b" 5080 20000-20010 "aubridge,b" "aubridge,b" "$loss"
  echo "<sip:alice@$addr:5060>;regint=0" > "$a/accounts"
  echo "<sip:bob@$addr:5080>;regint=0;answermode=auto" > "$b/accounts"
  ip netns exec "$ns" nft -f - <<NFT
flush ruleset
table inet vx {
  chain out {
    type filter hook output priority 0;
    udp dport 20000-20010 numgen random mod 100 < $loss counter drop
  }
}
NFT
  ip netns exec "$ns" baresip -4 -f "$b" -t 40 > "$b/log" 2>&1 &
  pb=$!
  sleep 1
  ip netns exec "$ns" baresip -4 -f "$a" -t 34 -e "/dial sip:bob@$addr:5080" > "$a/log" 2>&1 &
  pa=$!
  wait "$pa" || true
  kill "$pb" 2>/dev/null || true; wait "$pb" 2>/dev/null || true
  dropped=$(ip netns exec "$ns" nft list ruleset | grep -o 'packets [0-9]*' | head -1)
  rec=$(ls "$b"/dump-*dec.wav 2>/dev/null | head -1 || true)
  if [ -z "$rec" ]; then echo "loss $loss%: no recording (logs in $work)"; continue; fi
  mos=$(python3 "$here/scripts/pesq_mos.py" --align "$here/assets/speech.wav" "$rec")
  echo "baresip loss $loss%: MOS $mos (MOS, lag ms); caller RTP dropped: $dropped; recording $rec"
done
