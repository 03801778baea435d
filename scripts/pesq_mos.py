#!/usr/bin/env python3
"""PESQ wideband MOS of a degraded WAV against a reference WAV, both
resampled to 16 kHz: `scripts/pesq_mos.py REF.wav DEG.wav` prints the MOS.
Needs `pip install pesq numpy scipy`."""
import sys
import wave

import numpy as np
from pesq import pesq
from scipy.signal import resample_poly


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


ref, deg = read(sys.argv[1]), read(sys.argv[2])
n = min(len(ref), len(deg))
print(f"{pesq(16000, ref[:n], deg[:n], 'wb'):.2f}")
