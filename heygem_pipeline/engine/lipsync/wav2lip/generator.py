"""The Wav2Lip generator (Prajwal et al., ACM MM 2020), layer for layer as the public checkpoints expect.

Attribute names, block order and every conv's shape reproduce the reference so that ``wav2lip.pth`` and
``wav2lip_gan.pth`` load with ``strict=True`` (the 352 keys are pinned by
``tests/data/wav2lip_state_dict_shapes.json``). Each sub-network is built by its own small function below; the
comments give each block's output size for a 96×96 face and an 80×16 mel window.
"""

from __future__ import annotations

import torch
from torch import nn

from .conv import Conv2d, ConvTranspose2d, plain_conv2d

IMG_SIZE = 96  # face crop side, pixels
MEL_BINS = 80  # mel bands per column
MEL_STEPS = 16  # mel columns per video frame window (0.2 s at 80 columns per second)
FACE_CHANNELS = 6  # masked copy (lower half zeroed) + unmasked reference, BGR each


def _residual(channels: int, count: int) -> list[nn.Module]:
    """``count`` residual 3×3 blocks that keep the channel count and the size."""
    return [Conv2d(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def build_face_encoder() -> nn.ModuleList:
    """Seven blocks, 6×96×96 → 512×1×1; every block's output is kept for the decoder's skip connections."""
    return nn.ModuleList(
        [
            nn.Sequential(Conv2d(6, 16, 7, 1, 3)),  # 96
            nn.Sequential(Conv2d(16, 32, 3, 2, 1), *_residual(32, 2)),  # 48
            nn.Sequential(Conv2d(32, 64, 3, 2, 1), *_residual(64, 3)),  # 24
            nn.Sequential(Conv2d(64, 128, 3, 2, 1), *_residual(128, 2)),  # 12
            nn.Sequential(Conv2d(128, 256, 3, 2, 1), *_residual(256, 2)),  # 6
            nn.Sequential(Conv2d(256, 512, 3, 2, 1), *_residual(512, 1)),  # 3
            nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1
        ]
    )


def build_audio_encoder() -> nn.Sequential:
    """One sequential, 1×80×16 mel window → 512×1×1 audio embedding."""
    return nn.Sequential(
        Conv2d(1, 32, 3, 1, 1),  # 80×16
        *_residual(32, 2),
        Conv2d(32, 64, 3, (3, 1), 1),  # 27×16
        *_residual(64, 2),
        Conv2d(64, 128, 3, 3, 1),  # 9×6
        *_residual(128, 2),
        Conv2d(128, 256, 3, (3, 2), 1),  # 3×3
        *_residual(256, 1),
        Conv2d(256, 512, 3, 1, 0),  # 1×1
        Conv2d(512, 512, 1, 1, 0),
    )


def build_face_decoder() -> nn.ModuleList:
    """Seven blocks; each input is the previous output concatenated with a face-encoder feature (hence cin)."""
    return nn.ModuleList(
        [
            nn.Sequential(Conv2d(512, 512, 1, 1, 0)),  # 1
            nn.Sequential(ConvTranspose2d(1024, 512, 3, 1, 0), *_residual(512, 1)),  # 3
            nn.Sequential(ConvTranspose2d(1024, 512, 3, 2, 1, 1), *_residual(512, 2)),  # 6
            nn.Sequential(ConvTranspose2d(768, 384, 3, 2, 1, 1), *_residual(384, 2)),  # 12
            nn.Sequential(ConvTranspose2d(512, 256, 3, 2, 1, 1), *_residual(256, 2)),  # 24
            nn.Sequential(ConvTranspose2d(320, 128, 3, 2, 1, 1), *_residual(128, 2)),  # 48
            nn.Sequential(ConvTranspose2d(160, 64, 3, 2, 1, 1), *_residual(64, 2)),  # 96
        ]
    )


def build_output_block() -> nn.Sequential:
    """(64 decoder + 16 first-encoder) = 80 channels → 3 BGR channels in [0, 1]."""
    return nn.Sequential(Conv2d(80, 32, 3, 1, 1), plain_conv2d(32, 3, kernel_size=1), nn.Sigmoid())


class Wav2Lip(nn.Module):
    """Generator: a mel window plus a masked/reference face pair → the face with the mouth for that audio.

    ``forward(audio, face)`` takes ``audio`` B×1×80×16 and ``face`` B×6×96×96 (BGR / 255, channels 0-2 the copy
    with rows 48..95 zeroed, 3-5 the unmasked reference) and returns B×3×96×96 BGR in [0, 1]. Like the reference it
    also takes time sequences, ``audio`` B×T×1×80×16 with ``face`` B×6×T×96×96, and then returns B×3×T×96×96.
    """

    def __init__(self) -> None:
        super().__init__()
        # Attribute names are the checkpoint's top-level key prefixes; do not rename.
        self.face_encoder_blocks = build_face_encoder()
        self.audio_encoder = build_audio_encoder()
        self.face_decoder_blocks = build_face_decoder()
        self.output_block = build_output_block()

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        if face_sequences.dim() == 5:
            return self._forward_sequences(audio_sequences, face_sequences)
        _check_frame_inputs(audio_sequences, face_sequences)

        audio_embedding = self.audio_encoder(audio_sequences)  # B×512×1×1

        feats: list[torch.Tensor] = []
        x = face_sequences
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)

        # U-Net decoding from the audio embedding: each block's output is joined with the encoder feature of the
        # same size, deepest first, so the decoder sees the reference face's identity and pose at every scale.
        x = audio_embedding
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), feats.pop()), dim=1)

        return self.output_block(x)

    def _forward_sequences(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """B×T×1×80×16 and B×6×T×96×96 → B×3×T×96×96, by running the B·T frames as one batch."""
        if audio_sequences.dim() != 5:
            raise ValueError(
                "Wav2Lip: 5-D faces (B, 6, T, 96, 96) need 5-D audio (B, T, 1, 80, 16), "
                f"got {tuple(audio_sequences.shape)}"
            )
        b, t = audio_sequences.shape[:2]
        if face_sequences.shape[0] != b or face_sequences.shape[2] != t:
            raise ValueError(
                f"Wav2Lip: audio {tuple(audio_sequences.shape)} and faces {tuple(face_sequences.shape)} "
                "disagree on batch or time"
            )
        # Time-major flattening, as the reference's torch.cat over time steps (row t*B + b is step t of item b).
        audio = audio_sequences.transpose(0, 1).reshape(t * b, *audio_sequences.shape[2:])
        faces = face_sequences.permute(2, 0, 1, 3, 4).reshape(t * b, face_sequences.shape[1], *face_sequences.shape[3:])
        out = self.forward(audio, faces)  # (T·B)×3×96×96
        return out.reshape(t, b, *out.shape[1:]).permute(1, 2, 0, 3, 4)


def _check_frame_inputs(audio: torch.Tensor, face: torch.Tensor) -> None:
    """Fail with the expected shapes instead of a size mismatch deep inside the U-Net."""
    if audio.dim() != 4 or tuple(audio.shape[1:]) != (1, MEL_BINS, MEL_STEPS):
        raise ValueError(f"Wav2Lip: audio must be (B, 1, {MEL_BINS}, {MEL_STEPS}), got {tuple(audio.shape)}")
    if tuple(face.shape[1:]) != (FACE_CHANNELS, IMG_SIZE, IMG_SIZE):
        raise ValueError(
            f"Wav2Lip: faces must be (B, {FACE_CHANNELS}, {IMG_SIZE}, {IMG_SIZE}), got {tuple(face.shape)}"
        )
    if audio.shape[0] != face.shape[0]:
        raise ValueError(f"Wav2Lip: batch sizes differ, audio {audio.shape[0]} vs faces {face.shape[0]}")
