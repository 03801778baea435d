#!/usr/bin/env python3
"""Which tones a conference recording holds (standard library only).

usage: wav-tones.py FILE.wav OWN_HZ OTHER_HZ... [--window FROM TO]
                    [--gone HZ]... [--after SECS]

The level of a tone is the mean power of its Goertzel over 100 ms windows
(in dB relative to a full-scale sine), as tests/it/conference_tones.rs
measures it: a frame concealed by a jitter buffer shifts a tone's phase, and
one Goertzel over seconds would count that as a loss of level. Use tones
that fit a whole number of cycles in 100 ms (multiples of 10 Hz).

The steady part is FROM..TO seconds of the recording (default: the 3 s
before its last second, when the participants quit). It must hold every
OTHER_HZ above -30 dB, all within 3 dB of each other (the mixer's
mix-minus gives each the same gain), and OWN_HZ (and every --gone HZ: a
participant who left) at least 25 dB under the quietest of them.

Also prints when the recording first held every other tone: the first
100 ms window with each OTHER_HZ within 12 dB of its steady level ("all
others from S s"). With --after SECS, the first window from SECS on that
misses one of them (a silence, e.g. when the mixer left) and the first
after it that holds them all again ("all others again after X s"; "no
silence" when none is missing). Exit status 1 when a check fails.
"""
import array
import math
import struct
import sys


def power(seg, hz, rate):
    """Goertzel power of hz in seg, relative to a full-scale sine (linear)."""
    w = 2.0 * math.pi * hz / rate
    coeff = 2.0 * math.cos(w)
    s1 = s2 = 0.0
    for x in seg:
        s0 = x / 32768.0 + coeff * s1 - s2
        s2 = s1
        s1 = s0
    p = max(s1 * s1 + s2 * s2 - coeff * s1 * s2, 1e-12)
    n = len(seg)
    return p / (n * n / 4.0)


def read_wav(path):
    """(rate, channels, 16-bit samples) of a PCM WAV file. A recording
    whose writer was killed (SIGKILL) still says 0 bytes of data in its
    header (the lengths are written at the end): it holds what follows."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        sys.exit(f"{path}: not a WAV file")
    pos, fmt = 12, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos : pos + 4], struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            _, ch, rate, _, _, bits = struct.unpack("<HHIIHH", raw[body : body + 16])
            fmt = (rate, ch, bits)
        elif cid == b"data":
            if fmt is None or fmt[2] != 16:
                sys.exit(f"{path}: expected 16-bit samples")
            end = len(raw) if size == 0 else min(body + size, len(raw))
            end -= (end - body) % 2
            pcm = array.array("h", raw[body:end])
            if sys.byteorder == "big":
                pcm.byteswap()
            return fmt[0], fmt[1], pcm
        pos = body + size + (size & 1)
    sys.exit(f"{path}: no data chunk")


def db(p):
    return 10.0 * math.log10(max(p, 1e-12))


def take(args, flag, n):
    """Remove every `flag` and its n values from args; their values."""
    out = []
    while flag in args:
        i = args.index(flag)
        out.append(args[i + 1 : i + 1 + n])
        del args[i : i + 1 + n]
    return out


def main():
    args = sys.argv[1:]
    try:
        window = [tuple(float(x) for x in w) for w in take(args, "--window", 2)]
        gone = [float(g[0]) for g in take(args, "--gone", 1)]
        after = [float(a[0]) for a in take(args, "--after", 1)]
        path, own, others = args[0], float(args[1]), [float(a) for a in args[2:]]
    except (IndexError, ValueError):
        sys.exit(__doc__)
    if not others:
        sys.exit(__doc__)
    rate, ch, pcm = read_wav(path)
    mono = pcm[::ch]
    win = rate // 10
    # tones[0] our own, then the others, then the gone ones.
    tones = [own] + others + gone
    n_other = len(others)
    wins = [mono[i : i + win] for i in range(0, len(mono) - win + 1, win)]
    lv = [[power(s, hz, rate) for hz in tones] for s in wins]
    length = len(mono) / rate
    if window:
        a, b = window[-1]
    else:
        a, b = length - 4.0, length - 1.0
    ka, kb = max(int(round(a * 10)), 0), min(int(round(b * 10)), len(wins))
    if kb - ka < 10:
        print(f"too short: {length:.2f} s recorded, window {a:.1f}-{b:.1f} s")
        return 1
    steady = [
        db(sum(lv[k][j] for k in range(ka, kb)) / (kb - ka)) for j in range(len(tones))
    ]
    heard = steady[1 : 1 + n_other]
    lo, hi = min(heard), max(heard)
    desc = ", ".join(f"{hz:.0f} Hz {l:.1f} dB" for hz, l in zip(others, heard))
    summary = f"hears {desc}; own {own:.0f} Hz {steady[0]:.1f} dB"
    for hz, l in zip(gone, steady[1 + n_other :]):
        summary += f"; gone {hz:.0f} Hz {l:.1f} dB"
    summary += f" (over {a:.1f}-{b:.1f} s of {length:.1f} s)"

    def present(k):
        return all(db(lv[k][j]) > steady[j] - 12.0 for j in range(1, 1 + n_other))

    first = next((k for k in range(len(wins)) if present(k)), None)
    summary += "; all others from " + (f"{first / 10:.1f} s" if first is not None else "never")
    why = []
    for s in after:
        k0 = int(s * 10)
        gap = next((k for k in range(k0, len(wins)) if not present(k)), None)
        if gap is None:
            summary += f"; no silence after {s:.1f} s"
            continue
        back = next((k for k in range(gap, len(wins)) if present(k)), None)
        if back is None:
            why.append(f"never all others again after {gap / 10:.1f} s")
            continue
        summary += (
            f"; all others again after {(back - gap) / 10:.1f} s "
            f"(silent from {gap / 10:.1f} s, {max(gap / 10 - s, 0.0):.1f} s after {s:.1f} s)"
        )
    if lo <= -30.0:
        why.append(f"missing a tone (quietest {lo:.1f} dB)")
    if hi - lo > 3.0:
        why.append(f"levels differ by {hi - lo:.1f} dB")
    if steady[0] > lo - 25.0:
        why.append(f"hears itself ({steady[0]:.1f} dB)")
    for hz, l in zip(gone, steady[1 + n_other :]):
        if l > lo - 25.0:
            why.append(f"still hears {hz:.0f} Hz ({l:.1f} dB)")
    if why:
        print("; ".join(why) + ": " + summary)
        return 1
    print("ok: " + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
