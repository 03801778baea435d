#!/usr/bin/env python3
"""Longest silent stretch in a recorded tone call (standard library only).

usage: wav-gaps.py FILE.wav HZ [MAX_GAP_MS]

Skips the first and last half second (setup and hang-up), measures the RMS of
every 10 ms window of the rest, and calls a window silent below a tenth of the
median. Prints "ok: ..." when no silent run is longer than MAX_GAP_MS (60) and
the tone's zero-crossing frequency (over the windows that are not silent) is
within 5% of HZ; otherwise says why and exits 1.
"""
import array
import math
import sys
import wave


def main():
    path, hz = sys.argv[1], float(sys.argv[2])
    max_gap = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    with wave.open(path) as w:
        if w.getsampwidth() != 2:
            sys.exit(f"{path}: expected 16-bit samples")
        rate, ch = w.getframerate(), w.getnchannels()
        pcm = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder == "big":
        pcm.byteswap()
    mono = pcm[::ch]
    win = rate // 100
    body = mono[rate // 2 : len(mono) - rate // 2]
    if len(body) < 2 * rate:
        print(f"too short: {len(mono) / rate:.2f} s recorded")
        return 1
    rms = []
    for i in range(0, len(body) - win + 1, win):
        seg = body[i : i + win]
        rms.append(math.sqrt(sum(x * x for x in seg) / win))
    median = sorted(rms)[len(rms) // 2]
    if median < 100:
        print(f"no tone: median RMS {median:.0f}")
        return 1
    longest = run = 0
    at = 0
    for i, r in enumerate(rms):
        run = run + 1 if r < median / 10 else 0
        if run > longest:
            longest, at = run, i - run + 1
    # The tone's frequency where there is tone: silent windows (a gap that
    # is allowed) would otherwise pull it down by their share of the body.
    crossings = voiced = 0
    for i, r in enumerate(rms):
        if r >= median / 10:
            seg = body[i * win : (i + 1) * win + 1]
            crossings += sum(1 for a, b in zip(seg, seg[1:]) if (a < 0) != (b < 0))
            voiced += win
    freq = crossings / 2 / (voiced / rate) if voiced else 0.0
    gap_ms = longest * 10
    where = f" at {0.5 + at / 100:.2f} s" if longest else ""
    summary = f"{len(body) / rate:.1f} s of tone at {freq:.0f} Hz, longest silence {gap_ms} ms{where}"
    if gap_ms > max_gap or abs(freq - hz) > hz * 0.05:
        print(summary)
        return 1
    print("ok: " + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
