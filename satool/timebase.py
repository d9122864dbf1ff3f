"""The time base every stage shares: 16 kHz audio, 10 ms label frames of 160 samples.

Model *steps* last ``frames_per_step`` frames (R = 3 for paper-era Mockingjay, 2 for 20 ms
wav2vec 2.0-style models); ``step_s = frames_per_step * FRAME_S``.
"""

SAMPLE_RATE = 16000  # Hz: every waveform is read at this rate
HOP_SAMPLES = 160  # samples per label frame
FRAME_S = HOP_SAMPLES / SAMPLE_RATE  # 0.01 s per label frame


def frames_to_seconds(frames: int) -> float:
    """The duration of ``frames`` label frames."""
    return frames * FRAME_S


def n_frames(n_samples: int) -> int:
    """Label frames of a centred STFT over ``n_samples`` samples: ``1 + n_samples // 160``."""
    return 1 + n_samples // HOP_SAMPLES
