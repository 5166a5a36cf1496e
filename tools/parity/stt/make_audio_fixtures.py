#!/usr/bin/env python3
"""Small encoded audio files for the decoder tests (``tests/audio_decode.rs``).

Writes ``tests/fixtures/stt_parity/formats/tone.{flac,mp3,ogg}``: 0.5 s of a 440 Hz sine
(amplitude 0.5) on the left channel and a 660 Hz sine (amplitude 0.25) on the right, 44.1 kHz
stereo, encoded with libsndfile (FLAC, MP3, OGG/Vorbis). Run by hand::

    /tmp/pyenv/bin/pip install soundfile numpy
    /tmp/pyenv/bin/python tools/parity/stt/make_audio_fixtures.py
"""

from pathlib import Path

import numpy as np
import soundfile as sf

OUT = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "stt_parity" / "formats"
SR = 44100


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    t = np.arange(SR // 2) / SR
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 660 * t)], axis=1)
    sf.write(OUT / "tone.flac", stereo, SR, format="FLAC", subtype="PCM_16")
    sf.write(OUT / "tone.mp3", stereo, SR, format="MP3", subtype="MPEG_LAYER_III")
    sf.write(OUT / "tone.ogg", stereo, SR, format="OGG", subtype="VORBIS")
    for p in sorted(OUT.iterdir()):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
