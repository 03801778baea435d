#!/usr/bin/env python3
"""PESQ wideband MOS of a degraded WAV against a reference WAV, both
resampled to 16 kHz: `scripts/pesq_mos.py [--align] REF.wav DEG.wav` prints
the MOS. With --align (a recording of a whole call), the recording's start
is first moved by the one lag that best correlates it with the reference
(the call's set-up and mouth-to-ear delay), and the whole reference length
is scored (what is missing counts as silence); the lag in ms follows the
MOS. Needs `pip install pesq numpy scipy`."""
import sys
import wave

import numpy as np
from pesq import pesq
from scipy.signal import correlate, resample_poly


def read(path):
    with wave.open(path, "rb") as w:
        rate = w.getframerate()
        ch = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
    if ch > 1:
        data = data.reshape(-1, ch).mean(axis=1)
    if rate != 16000:
        data = resample_poly(data, 16000, rate)
    return data / 32768.0


args = [a for a in sys.argv[1:] if a != "--align"]
align = "--align" in sys.argv[1:]
ref, deg = read(args[0]), read(args[1])
if align:
    # Lags up to 3 s, from the first 10 s of speech.
    head = ref[: 16000 * 10]
    c = correlate(deg[: len(head) + 16000 * 3], head, mode="valid", method="fft")
    lag = int(np.argmax(c))
    deg = deg[lag : lag + len(ref)]
    deg = np.concatenate([deg, np.zeros(len(ref) - len(deg))])
    print(f"{pesq(16000, ref, deg, 'wb'):.2f} {lag / 16.0:.1f}")
else:
    n = min(len(ref), len(deg))
    print(f"{pesq(16000, ref[:n], deg[:n], 'wb'):.2f}")
