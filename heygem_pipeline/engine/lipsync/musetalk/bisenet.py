"""BiSeNet face parsing (19 classes), the network MuseTalk uses to decide which pixels of the generated face to keep.

Layer for layer the face-parsing network MuseTalk ships as ``face-parse-bisent/79999_iter.pth``: a ResNet-18
context path (no spatial path: the 1/8 ResNet feature stands in for it), attention refinement of the 1/16 and 1/32
features, a feature-fusion module and a 1/8-resolution output head whose logits are upsampled bilinearly
(``align_corners=True``) to the input size. Attribute names equal the checkpoint keys, so the file loads with
``strict=True`` (191 tensors, BatchNorm running statistics included; the network always runs in eval mode).

The two auxiliary heads (``conv_out16``, ``conv_out32``) are training-time outputs: they hold weights in the file
and are loaded, but inference never runs them (the reference computes and discards them; the main output does not
depend on them).

``resnet18-5c106cde.pth`` (the ImageNet backbone the reference loads first) is not needed: every one of its values
is overwritten by ``79999_iter.pth``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from heygem_pipeline.engine.lipsync.state_dicts import key_problems, with_batchnorm_counters
from heygem_pipeline.errors import ModelFileError

N_CLASSES = 19  # CelebAMask-HQ labels: 0 background, 1 skin, 10 nose, 11 mouth, 12 upper lip, 13 lower lip, ...
PARSE_SIZE = 512  # the side the crop is resized to before parsing
CHECKPOINT = Path("face-parse-bisent") / "79999_iter.pth"  # relative to the models folder (MuseTalk's layout)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WHERE_TO_PUT = f"put MuseTalk's {CHECKPOINT.as_posix()} under the models folder (README layout; never downloaded)"


class ConvBNReLU(nn.Module):
    """Bias-free conv → BatchNorm → ReLU (keys ``conv.weight``, ``bn.*``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs with BatchNorm, plus a 1×1 strided projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Sequential | None = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class ResNet18(nn.Module):
    """The backbone without its classifier: returns the 1/8, 1/16 and 1/32 features (128, 256, 512 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


class AttentionRefinementModule(nn.Module):
    """ConvBNReLU, then a channel attention from the global average (1×1 conv → BatchNorm → sigmoid) multiplied in."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * atten


class ContextPath(nn.Module):
    """ResNet-18 features refined top-down: 1/32 (+ global context) → 1/16 → 1/8, nearest-neighbour upsampling."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel_size=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The 1/8 ResNet feature (the spatial path's stand-in) and the refined context at 1/8."""
        feat8, feat16, feat32 = self.resnet(x)
        context = F.interpolate(self.conv_avg(F.adaptive_avg_pool2d(feat32, 1)), feat32.shape[2:], mode="nearest")
        up32 = F.interpolate(self.arm32(feat32) + context, feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(up16)


class FeatureFusionModule(nn.Module):
    """Concatenate both paths, ConvBNReLU 1×1, then add a squeeze-excitation-weighted copy of the result."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, kernel_size=1, padding=0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat * atten + feat


class BiSeNetOutput(nn.Module):
    """ConvBNReLU 3×3 then a bias-free 1×1 conv to the class logits."""

    def __init__(self, cin: int, mid: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face parsing: [B,3,H,W] ImageNet-normalised RGB → [B,19,H,W] class logits."""

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)  # training-only auxiliary heads: loaded, never run
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def logits_low(self, x: torch.Tensor) -> torch.Tensor:
        """The main head's logits at 1/8 of the input size (before the upsampling ``forward`` adds)."""
        feat8, context8 = self.cp(x)
        return self.conv_out(self.ffm(feat8, context8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.logits_low(x), x.shape[2:], mode="bilinear", align_corners=True)


def preprocess(image_rgb: Image.Image | np.ndarray) -> torch.Tensor:
    """The crop as the network's input [1,3,512,512]: PIL BILINEAR to 512×512, /255, ImageNet normalisation.

    ``image_rgb``: an RGB PIL image or an ``H×W×3`` uint8 RGB array.
    """
    image = image_rgb if isinstance(image_rgb, Image.Image) else Image.fromarray(np.ascontiguousarray(image_rgb))
    resized = np.asarray(image.resize((PARSE_SIZE, PARSE_SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)
    if resized.ndim != 3 or resized.shape[2] != 3:
        raise ValueError(f"face parsing needs an RGB image, got one of shape {resized.shape}")
    chw = torch.from_numpy(resized.copy()).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return chw.sub(mean).div(std).unsqueeze(0)


@torch.no_grad()
def parse_face(net: BiSeNet, image_rgb: Image.Image | np.ndarray) -> np.ndarray:
    """The label map [512,512] uint8 (class 0-18 per pixel) of an RGB face crop, at the parsing size."""
    device = next(net.parameters()).device
    logits = net(preprocess(image_rgb).to(device))[0]
    return logits.cpu().numpy().argmax(0).astype(np.uint8)  # numpy's argmax: ties go to the first class, as there


def load_bisenet(models_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> BiSeNet:
    """A ``BiSeNet`` with ``<models_dir>/face-parse-bisent/79999_iter.pth`` loaded strictly, on ``device``, in eval
    mode. Raises ``ModelFileError`` (one line: the file and the fix) for a missing, unreadable or foreign file."""
    path = Path(models_dir).expanduser() / CHECKPOINT
    state = check_state_dict(_read_state_dict(path), path)
    net = BiSeNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # check_state_dict should have caught it; keep the one-line contract anyway
        first = str(exc).strip().splitlines()[-1].strip()
        raise ModelFileError(path, f"weights do not fit BiSeNet ({first})", WHERE_TO_PUT) from exc
    return net.to(device).eval()


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Name → shape of every BiSeNet state-dict entry, in order (191 entries)."""
    return dict(_expected_items())


@cache
def _expected_items() -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):
        net = BiSeNet()
    return tuple((k, tuple(v.shape)) for k, v in net.state_dict().items())


def check_state_dict(state: Mapping[str, torch.Tensor], path: object = "<state dict>") -> dict[str, torch.Tensor]:
    """``state`` checked against BiSeNet's names and shapes, ready for ``load_state_dict(strict=True)``.

    BatchNorm's ``num_batches_tracked`` counters (unused in eval mode) are filled in with 0 when a converted file
    dropped them.
    """
    expected = expected_shapes()
    state = with_batchnorm_counters(state, expected)
    parts = key_problems(state, expected)
    if not parts:
        return state
    hint = " (looks like the ImageNet resnet18-5c106cde.pth)" if "fc.weight" in state else ""
    raise ModelFileError(path, f"not the BiSeNet face-parsing weights{hint}: {'; '.join(parts)}", WHERE_TO_PUT)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise ModelFileError(path, "model file not found", WHERE_TO_PUT)
    if path.is_dir() or path.stat().st_size == 0:
        raise ModelFileError(path, "is a directory or an empty file, not a model file", WHERE_TO_PUT)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as exc:
        raise ModelFileError(path, "model file cannot be read (permission denied)", "fix its permissions") from exc
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        with path.open("rb") as fh:
            head = fh.read(64).lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
            problem = "is a web page, not a torch file (a download link that returned HTML)"
        else:  # torch's first sentence, without its advice about weights_only
            reason = str(exc).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
            reason = " ".join(reason.split()).split(". ")[0][:120]
            problem = f"not a readable torch file ({type(exc).__name__}: {reason or 'no detail'})"
        raise ModelFileError(path, problem, f"download it again; {WHERE_TO_PUT}") from exc
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelFileError(path, f"not a state dict of named tensors (holds {type(obj).__name__})", WHERE_TO_PUT)
    prefix = "module."  # nn.DataParallel's, if a re-saved file kept it
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
