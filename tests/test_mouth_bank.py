"""The open mouth is the presenter's own: real teeth and interior from the mouth bank (or the donor), lips kept.

Real faces shipped inside installed packages, nothing downloaded: scikit-image's ``astronaut`` (Eileen Collins,
NASA, public domain: a smile with teeth) and matplotlib's ``grace_hopper.jpg`` sample (a closed mouth). The
talking template is made at test time from renders of the closed-mouth photo at known openings.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest

from heygem_pipeline.engine import folders, stages
from heygem_pipeline.engine.face.landmarks import face_height
from heygem_pipeline.engine.face.track import FaceTrack
from heygem_pipeline.engine.face.tracker import FaceTracker
from heygem_pipeline.engine.media.frames import EncodeSettings, FrameWriter
from heygem_pipeline.engine.mouth.bank import MouthBank, donor_sample, sample_of
from heygem_pipeline.engine.mouth.geometry import MAX_OPEN
from heygem_pipeline.engine.mouth.warp import render_mouth, target_lips

GRACE = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@cache
def _photo(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(BGR photo, its landmarks)."""
    if name == "astronaut":
        from skimage import data

        image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    else:
        image = cv2.imread(str(GRACE))
    with FaceTracker() as tracker:
        face = tracker.process(image)
    assert face.found, name
    return image, face.landmarks


def _params(opening: float) -> np.ndarray:
    return np.array([opening, 0.2, 0.0, 0.0], np.float32)


def _band(image: np.ndarray, lip: np.ndarray, offset: float, depth: float, share: float = 0.5) -> np.ndarray:
    """Pixels (N, 3) of a band following a lip line (its central ``share``), from ``offset`` to ``offset + depth``
    pixels below it (negative: above), perpendicular to the mouth line."""
    mid = len(lip) // 2
    half = max(1, int(len(lip) * share / 2))
    points = lip[mid - half: mid + half + 1]
    direction = points[-1] - points[0]
    down = np.array([-direction[1], direction[0]]) / (np.linalg.norm(direction) + 1e-9)
    steps = np.linspace(offset, offset + depth, 6)
    xy = (points[:, None, :] + steps[None, :, None] * down).reshape(-1, 2).astype(np.float32)
    values = cv2.remap(image, xy[:, 0].reshape(-1, 1), xy[:, 1].reshape(-1, 1), cv2.INTER_LINEAR)
    return values.reshape(-1, 3).astype(np.float32)


def _lab(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(pixels.reshape(-1, 1, 3).astype(np.uint8), cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(float)


def _interior(image: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Pixels (N, 3) well inside the parted lips (one pixel in from the lip lines)."""
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(np.concatenate([upper, lower[::-1]])).astype(np.int32)], 255)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    return image[mask > 0].astype(np.float32)


def test_the_donor_is_a_real_smile_with_teeth() -> None:
    donor = donor_sample()
    assert donor.donor and 0.04 < donor.gap < 0.09
    assert 0.5 < donor.seam < 0.9  # the upper teeth take most of a smile


@pytest.mark.parametrize("photo", ["astronaut", "grace"])
def test_lip_colour_is_kept_next_to_the_opening(photo: str) -> None:
    image, landmarks = _photo(photo)
    height = float(face_height(landmarks))
    after = target_lips(landmarks, _params(0.9))
    assert after is not None
    opened = render_mouth(image, landmarks, _params(0.9))
    # The lip band just outside the inner lip line: the template's own, and the output's around its opening.
    for own, moved, sign in zip(_template_lines(landmarks), after, (-1, 1), strict=True):
        template_lip = _lab(_band(image, own, sign * 0.006 * height, sign * 0.015 * height))
        output_lip = _lab(_band(opened, moved, sign * 0.006 * height, sign * 0.015 * height))
        delta = np.linalg.norm(template_lip.mean(axis=0) - output_lip.mean(axis=0))
        # A lip is 4-5 px thick on the astronaut (a 108 px face): a pixel's shift into it is worth ΔE 5 already.
        assert delta < 10, f"{photo}: lip colour moved by ΔE {delta:.1f}"


@pytest.mark.parametrize("photo", ["astronaut", "grace"])
def test_the_interior_looks_like_a_mouth(photo: str) -> None:
    image, landmarks = _photo(photo)
    opened = render_mouth(image, landmarks, _params(1.0))
    lips = target_lips(landmarks, _params(1.0))
    assert lips is not None
    lab = _lab(_interior(opened, *lips))
    skin = _lab(image[np.round(landmarks[[50, 280, 205, 425], 1]).astype(int),
                      np.round(landmarks[[50, 280, 205, 425], 0]).astype(int)].astype(np.float32)).mean(axis=0)
    lightness = lab[:, 0]
    assert len(lab) > 200
    # Teeth: a real share of the interior is about as light as the skin (or lighter); the rest is shade, not a
    # flat fill; nothing is pitch black.
    assert (lightness > 0.85 * skin[0]).mean() > 0.15, "no teeth"
    assert lightness.std() > 25, "a flat fill"
    assert np.percentile(lightness, 2) > 12, "a black hole"
    # The dark part is red (a throat), not grey: Lab a* (green-red) clearly positive where it is dark.
    dark = lab[lightness < np.percentile(lightness, 25)]
    assert np.median(dark[:, 1]) > 135, f"dark interior is not red (a* {np.median(dark[:, 1]):.0f})"


def test_the_templates_own_teeth_reappear_when_the_mouth_opens() -> None:
    image, landmarks = _photo("astronaut")  # a smile with teeth: the bank's one sample is this very mouth
    sample = sample_of(image, landmarks)
    assert not sample.donor and sample.gap > 0.05
    height = float(face_height(landmarks))
    template = target_lips(landmarks, np.array([sample.gap / MAX_OPEN, 0.0, 0.0, 0.0], np.float32))
    assert template is not None
    closed = render_mouth(image, landmarks, _params(0.0), sample)
    opened = render_mouth(image, landmarks, _params(0.7), sample)
    lips = target_lips(landmarks, _params(0.7))
    assert lips is not None
    # The template's upper teeth, just under its upper lip, and the output's at the same depth under its own.
    teeth = _band(image, _template_upper(landmarks), 0.006 * height, 0.02 * height)
    shown = _band(opened, lips[0], 0.006 * height, 0.02 * height)
    assert teeth.mean() > 150, "the photo's teeth were not found"
    # The same teeth: colour and texture (up to resampling).
    assert np.abs(teeth.mean(axis=0) - shown.mean(axis=0)).max() < 20
    assert abs(float(teeth.std()) - float(shown.std())) < 12
    # Closed (a pause): the lips cover the teeth entirely (teeth: light and hardly red, unlike lips and skin).
    def teeth_share(picture: np.ndarray) -> float:
        lab = _lab(_interior(picture, *_template_lines(landmarks)))
        return float(((lab[:, 0] > 180) & (lab[:, 1] < 136)).mean())

    assert teeth_share(image) > 0.3 and teeth_share(closed) < 0.03, "teeth still show with the mouth closed"
    assert template[0].shape == lips[0].shape


def _template_upper(landmarks: np.ndarray) -> np.ndarray:
    return _template_lines(landmarks)[0]


def _template_lines(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo's own inner lips, corner to corner (upper, lower)."""
    upper = landmarks[[78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308], :2]
    lower = landmarks[[78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308], :2]
    return upper.astype(np.float64), lower.astype(np.float64)


def test_the_interior_follows_the_head_pose() -> None:
    image, landmarks = _photo("astronaut")
    sample = sample_of(image, landmarks)
    centre = tuple(float(c) for c in landmarks[13, :2])
    turn = cv2.getRotationMatrix2D(centre, 12.0, 1.0)  # the head rolled by 12 degrees
    rolled = cv2.warpAffine(image, turn, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    with FaceTracker() as tracker:
        face = tracker.process(rolled)
    assert face.found
    height = float(face_height(face.landmarks))
    opened = render_mouth(rolled, face.landmarks, _params(0.8), sample)
    lips = target_lips(face.landmarks, _params(0.8))
    assert lips is not None
    # The teeth hang right under the (rolled) upper lip: bright and not red there, and the lip red above them.
    teeth = _lab(_band(opened, lips[0], 0.006 * height, 0.015 * height)).mean(axis=0)
    lip = _lab(_band(opened, lips[0], -0.006 * height, -0.012 * height)).mean(axis=0)
    assert teeth[0] > 170 and teeth[0] > lip[0] + 15
    assert lip[1] > teeth[1] + 5


@pytest.fixture(scope="module")
def talking_avatar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """A talking template made at test time: the closed-mouth photo rendered at four known openings, each held a
    few frames, normalized and tracked (which builds its bank). Returns the avatar folder and the openings."""
    work = tmp_path_factory.mktemp("talking")
    image, landmarks = _photo("grace")
    openings = [0.0, 0.35, 0.65, 0.95]
    frames = {opening: render_mouth(image, landmarks, _params(opening)) for opening in openings}
    with FrameWriter(work / "talking.mp4", image.shape[1], image.shape[0], 25,
                     settings=EncodeSettings(crf=16, preset="ultrafast")) as writer:
        for _ in range(3):
            for opening in openings + openings[-2:0:-1]:
                for _ in range(4):
                    writer.write(frames[opening])
    stages.prepare_avatar(work / "talking.mp4", work / "avatar")
    stages.track_avatar(work / "avatar")
    return work / "avatar", openings


def test_a_talking_template_gets_a_bank_of_its_own_mouths(talking_avatar: tuple[Path, list[float]]) -> None:
    avatar, openings = talking_avatar
    bank = MouthBank.load(avatar / folders.AVATAR_BANK)
    assert bank is not None and not bank.donor
    gaps = np.sort(bank.features[:, 0])
    # Every open shape the template shows is in the bank (measured by the tracker, so within a few pixels).
    for opening in openings[1:]:
        assert np.min(np.abs(gaps - opening * MAX_OPEN)) < 0.02, (opening, gaps)
    # Samples are aligned: the lips' inner edges sit at the same place in every canonical patch, so the mean
    # brightness profile across the upper lip line is as sharp as any single one.
    assert len(bank) >= 3


def test_selection_matches_the_shape_and_does_not_flicker(talking_avatar: tuple[Path, list[float]]) -> None:
    avatar, openings = talking_avatar
    bank = MouthBank.load(avatar / folders.AVATAR_BANK)
    assert bank is not None
    gaps = bank.features[:, 0]
    rng = np.random.default_rng(1)
    for opening in openings[1:]:
        # 60 frames at one wanted opening, with frame-to-frame jitter of the voice's level.
        params = np.zeros((60, 4), np.float32)
        params[:, 0] = np.clip(opening + rng.normal(0, 0.04, 60), 0, 1)
        choice = bank.select(params)
        assert np.count_nonzero(np.diff(choice)) <= 1, "the sample flickers"
        nearest = np.min(np.abs(gaps - opening * MAX_OPEN))
        assert abs(gaps[choice[30]] - opening * MAX_OPEN) <= nearest + 0.012


def test_a_track_without_a_bank_gets_one_from_its_template(talking_avatar: tuple[Path, list[float]],
                                                            tmp_path: Path) -> None:
    avatar, _ = talking_avatar
    stored = MouthBank.load(avatar / folders.AVATAR_BANK)
    assert stored is not None
    older = tmp_path / "avatar"  # an avatar tracked before banks existed: template and track only
    older.mkdir()
    for name in (folders.AVATAR_TEMPLATE, folders.AVATAR_TRACK):
        (older / name).write_bytes((avatar / name).read_bytes())
    built = stages.load_mouth_bank(older, FaceTrack.load(older / folders.AVATAR_TRACK))
    assert not built.donor and len(built) >= 3
    # Built from the smoothed track rather than the tracker's raw landmarks, whose widest openings the smoothing
    # trims a little (this template changes shape every 4 frames): the same shapes within 0.02 face heights.
    for gap in stored.features[:, 0]:
        assert np.min(np.abs(built.features[:, 0] - gap)) < 0.02
