"""Face tools on real insightface code, with the tiny self-made pack (no download, CPU).

The tiny detector finds skin-coloured blobs the size of its windows (see tiny_faces): on a
320x320 canvas (det_scale 2) a skin rectangle of 80x120 or 120x184 pixels centred on a
multiple of 4 is found with exactly its box, and each tiny portrait gives one face.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facediffuser_core import faces as fc
from facediffuser_core.errors import CheckpointError, InputError, ModelError
from facediffuser_core.tiny.diffusion import _portrait
from facediffuser_core.tiny.faces import (
    DETECTOR_FILE,
    KEYPOINTS,
    RECOGNIZER_FILE,
    write_tiny_face_pack,
)

REPO = Path(__file__).resolve().parents[1]
SKIN = (230 / 255, 180 / 255, 140 / 255)
ELLIPSE = (24.0, 19.2, 72.0, 92.16)  # the face ellipse tiny._portrait draws (96x128)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    pytest.importorskip("onnx")
    root = tmp_path_factory.mktemp("insightface")
    write_tiny_face_pack(root / "models" / "buffalo_l")
    return root


@pytest.fixture(scope="module")
def analyzer(root):
    pytest.importorskip("insightface")
    return fc.load_face_analysis(root, "buffalo_l", provider="CPU", det_size=640)


def canvas(*rects, size=(320, 320), background=0.0):
    """(H, W, 3) float image with skin rectangles (x1, y1, x2, y2) on a plain background."""
    w, h = size
    img = torch.full((h, w, 3), float(background))
    for x1, y1, x2, y2 in rects:
        img[y1:y2, x1:x2] = torch.tensor(SKIN)
    return img


def portrait(i):
    return torch.from_numpy(np.array(_portrait(i))).float() / 255


def side_by_side(*images):
    return torch.cat(images, dim=1)


# --------------------------------------------------------------------------- import, packs


def test_importing_faces_does_not_import_insightface():
    code = (
        "import sys, facediffuser_core.faces, facediffuser_core.tiny.faces\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('insightface', 'onnxruntime', 'onnx', 'cv2'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO))


def test_tiny_pack_is_small_and_deterministic(root, tmp_path):
    again = write_tiny_face_pack(tmp_path / "again")
    for name in (DETECTOR_FILE, RECOGNIZER_FILE):
        data = (root / "models" / "buffalo_l" / name).read_bytes()
        assert len(data) < 200_000
        assert data == (again / name).read_bytes()


def test_list_face_packs_orders_known_packs_first(tmp_path):
    assert fc.list_face_packs(tmp_path) == []
    for name in ("zeta", "antelopev2", "alpha", "buffalo_l"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "x.onnx").write_bytes(b"")
    (tmp_path / "models" / "empty").mkdir()
    assert fc.list_face_packs(tmp_path) == ["buffalo_l", "antelopev2", "alpha", "zeta"]
    assert fc.face_pack_dir(tmp_path, "alpha") == tmp_path / "models" / "alpha"
    with pytest.raises(InputError, match="not a folder name"):
        fc.face_pack_dir(tmp_path, "../alpha")


def test_download_sources_come_from_the_catalog():
    """One table names each pack's zip and files: messages, the doctor and the nodes read it."""
    from facediffuser_core import catalog

    for pack, files in catalog.FACE_PACKS.items():
        source = catalog.face_pack_source(pack)
        assert catalog.face_pack_url(pack) in source
        assert files["detector"] in source and files["recognition"] in source
        assert ("one level deeper" in source) == (pack in catalog.NESTED_FACE_PACK_ZIPS)
    generic = catalog.face_pack_source("my_pack")
    assert catalog.face_pack_url(catalog.SUGGESTED_FACE_PACK) in generic
    assert catalog.SUGGESTED_FACE_PACK in catalog.FACE_PACKS
    assert catalog.INSIGHTFACE_TAG in catalog.INSIGHTFACE_RELEASE


def test_missing_pack_names_exact_folder_and_source_and_downloads_nothing(tmp_path):
    root = tmp_path  # checked before insightface is even imported
    (root / "models" / "buffalo_l").mkdir(parents=True)
    (root / "models" / "buffalo_l" / "det_10g.onnx").write_bytes(b"")
    folder = (root / "models" / "antelopev2").absolute()
    with pytest.raises(CheckpointError) as err:
        fc.load_face_analysis(root, "antelopev2")
    msg = str(err.value)
    assert str(folder) in msg
    assert "releases/download/v0.7/antelopev2.zip" in msg
    assert "buffalo_l" in msg  # the installed pack is offered
    assert not folder.exists()  # insightface never got to create/download it

    with pytest.raises(CheckpointError, match=r"my_pack.*buffalo_l\.zip"):
        fc.load_face_analysis(root, "my_pack")


def test_pack_without_detector_or_models(analyzer, root, tmp_path):
    only_rec = tmp_path / "models" / "rec_only"
    only_rec.mkdir(parents=True)
    shutil.copy(root / "models" / "buffalo_l" / RECOGNIZER_FILE, only_rec)
    with pytest.raises(CheckpointError, match=r"no face detector.*rec\.onnx.*det_10g\.onnx"):
        fc.load_face_analysis(tmp_path, "rec_only")

    (tmp_path / "models" / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no .onnx model files"):
        fc.load_face_analysis(tmp_path, "empty")

    nested = tmp_path / "models" / "antelopev2" / "antelopev2"
    write_tiny_face_pack(nested)
    with pytest.raises(CheckpointError, match="move those files up one level"):
        fc.load_face_analysis(tmp_path, "antelopev2")


def test_settings_are_checked(analyzer, root):
    assert fc.available_providers()[0] == "CPU"
    if "CUDA" not in fc.available_providers():
        with pytest.raises(InputError) as err:
            fc.load_face_analysis(root, "buffalo_l", provider="CUDA")
        assert "available: CPU" in str(err.value)
        assert "onnxruntime-gpu" in str(err.value)
    with pytest.raises(InputError, match="CPU, CUDA, ROCm, CoreML"):
        fc.load_face_analysis(root, "buffalo_l", provider="TPU")
    for bad in (100, 650, "640"):
        with pytest.raises(InputError, match="multiple of 32"):
            fc.load_face_analysis(root, "buffalo_l", det_size=bad)
    small = fc.load_face_analysis(root, "buffalo_l", provider="CPUExecutionProvider", det_size=320)
    assert (small.provider, small.det_size) == ("CPU", 320)
    assert tuple(small.app.det_model.input_size) == (320, 320)


def test_missing_insightface_raises_face_tools_unavailable(root, monkeypatch):
    # works whether or not insightface is installed: the import is made to fail
    monkeypatch.setitem(sys.modules, "insightface", None)
    monkeypatch.setitem(sys.modules, "insightface.app", None)
    with pytest.raises(fc.FaceToolsUnavailable, match="pip install insightface`") as info:
        fc.load_face_analysis(root, "buffalo_l")
    assert "need insightface, which is" in str(info.value)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(fc.FaceToolsUnavailable, match="pip install onnxruntime`"):
        fc.available_providers()


def test_every_missing_face_package_is_named_in_one_message(root, monkeypatch):
    for module in ("insightface", "insightface.app", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(fc.FaceToolsUnavailable) as info:
        fc.load_face_analysis(root, "buffalo_l")
    message = str(info.value)
    assert "need insightface and onnxruntime" in message
    assert message.count("pip install") == 1
    assert "`python -m pip install insightface onnxruntime`" in message


# --------------------------------------------------------------------------- detection


def test_detect_zero_one_two_faces_with_known_boxes(analyzer):
    assert analyzer.has_recognition
    assert analyzer.detect(canvas()) == []
    assert analyzer.detect(canvas(background=0.5)) == []  # grey is not skin

    (one,) = analyzer.detect(canvas((40, 60, 120, 180)))
    assert one.box == pytest.approx((40, 60, 120, 180), abs=1e-3)
    assert one.score > 0.9
    assert one.embedding.shape == (512,)
    assert np.linalg.norm(one.embedding) == pytest.approx(1.0, abs=1e-5)
    expected = [(40 + fx * 80, 60 + fy * 120) for fx, fy in KEYPOINTS]
    np.testing.assert_allclose(one.landmarks, expected, atol=1e-3)

    # Two faces: the larger one (right) first, whatever the position.
    small, large = (40, 60, 120, 180), (180, 100, 300, 284)
    found = analyzer.detect(canvas(small, large))
    assert [f.box for f in found] == [pytest.approx(large, abs=1e-3), pytest.approx(small)]
    assert found[0].area > found[1].area


def test_detect_order_ties_and_input_formats(analyzer):
    # Same size: ordered by x1, then y1.
    left, right = (40, 100, 120, 220), (200, 40, 280, 160)
    img = canvas(right, left)
    found = analyzer.detect(img)
    assert [f.box[0] for f in found] == pytest.approx([40, 200])
    as_uint8 = (img * 255).round().to(torch.uint8).numpy()
    assert [f.box for f in analyzer.detect(as_uint8)] == [f.box for f in found]
    assert [f.box for f in analyzer.detect(img[None])] == [f.box for f in found]
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        analyzer.detect(img * 255)
    with pytest.raises(InputError, match="one image"):
        analyzer.detect(torch.stack([img, img]))


@pytest.mark.parametrize("index", [0, 1])
def test_portraits_give_one_face_on_the_drawn_ellipse(analyzer, index):
    (face,) = analyzer.detect(portrait(index))
    assert face.box == pytest.approx(ELLIPSE, abs=1.0)
    eyes = face.landmarks[:2]
    np.testing.assert_allclose(eyes[:, 1], 0.38 * 128, atol=1.0)  # where the eyes are drawn
    np.testing.assert_allclose(eyes[:, 0], [0.39 * 96, 0.61 * 96], atol=1.0)


def test_select_face(analyzer):
    small, large = (40, 60, 120, 180), (180, 100, 300, 284)
    found = analyzer.detect(canvas(large, small))
    assert fc.select_face(found) is found[0]
    assert fc.select_face(found, 0).box == pytest.approx(small)  # leftmost, though smaller
    assert fc.select_face(found, "1").box == pytest.approx(large)
    assert fc.select_face(found, 2) is None
    assert fc.select_face([], "largest") is None
    # Same centre x: the upper one counts first.
    low = fc.Face(box=(10, 50, 20, 60), score=1.0)
    high = fc.Face(box=(8, 0, 22, 10), score=1.0)
    assert fc.select_face([low, high], 0) is high
    with pytest.raises(InputError, match="'largest' or a face index"):
        fc.select_face(found, "biggest")


# --------------------------------------------------------------------------- crops


def test_crop_box_geometry():
    face = fc.Face(box=(40.0, 60.0, 120.0, 180.0), score=1.0)
    # side = 120 * (1 + 2 * 0.5) = 240 around the centre (80, 120)
    assert fc.crop_box(face, (320, 320), 0.5) == (-40, 0, 200, 240)
    assert fc.crop_box(face, (320, 320), 0.0) == (20, 60, 140, 180)
    assert fc.crop_box(face, (320, 320), 0.25) == (-10, 30, 170, 210)
    with pytest.raises(InputError, match="margin"):
        fc.crop_box(face, (320, 320), -0.1)
    with pytest.raises(InputError, match="outside the 30x30 image"):
        fc.crop_box(face, (30, 30), 0.5)


def test_crop_face_content_and_black_fill():
    img = torch.zeros(300, 300, 3)
    img[200:220, 60:80] = torch.tensor([0.0, 1.0, 0.0])  # green patch
    face = fc.Face(box=(100.0, 100.0, 200.0, 200.0), score=1.0)
    crop = fc.crop_face(img, face, margin=0.5, size=100)  # crop square (50, 50)-(250, 250)
    assert crop.shape == (100, 100, 3)
    assert crop[77:83, 7:13, 1].min() > 0.99  # the patch at ((60-50)/2, (200-50)/2) ...
    green = crop[..., 1] > 0.5
    ys, xs = torch.nonzero(green, as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (75, 84, 5, 14)  # ... and only there

    white = torch.ones(100, 100, 3)
    corner = fc.Face(box=(0.0, 0.0, 40.0, 40.0), score=1.0)
    crop = fc.crop_face(white, corner, margin=0.5, size=80)  # square (-20, -20)-(60, 60)
    assert crop[:20].max() == 0 and crop[:, :20].max() == 0  # outside the image: black
    assert crop[20:, 20:].min() == 1.0


def _dots(image, threshold=0.5):
    """Centroids (x, y) of the bright pixels in the left and right half of ``image``."""
    bright = image.mean(-1) > threshold
    out = []
    for half in (slice(0, image.shape[1] // 2), slice(image.shape[1] // 2, None)):
        ys, xs = torch.nonzero(bright[:, half], as_tuple=True)
        offset = half.start or 0
        # + 0.5: continuous coordinates of pixel centres
        out.append((xs.float().mean().item() + offset + 0.5, ys.float().mean().item() + 0.5))
    return out


def _rotated_face(angle_deg, size=200, eye_gap=40):
    """Two 5x5 white squares (eyes) ``eye_gap`` apart, tilted by ``angle_deg`` about the
    image centre, and a Face whose landmarks 0 and 1 are the squares' centres."""
    c = size / 2
    a = math.radians(angle_deg)
    img = torch.zeros(size, size, 3)
    eyes = []
    for sign in (-1, 1):
        col = round(c + sign * eye_gap / 2 * math.cos(a))
        row = round(c + sign * eye_gap / 2 * math.sin(a))
        img[row - 2 : row + 3, col - 2 : col + 3] = 1.0
        eyes.append((col + 0.5, row + 0.5))  # pixel i covers [i, i + 1)
    others = [(c, c + 10), (c - 10, c + 20), (c + 10, c + 20)]  # unused by the rotation
    landmarks = np.array(eyes + others, np.float32)
    face = fc.Face(box=(c - 40, c - 40, c + 40, c + 40), score=1.0, landmarks=landmarks)
    return img, face


@pytest.mark.parametrize("angle", [30.0, -50.0])
def test_align_levels_the_eyes(angle):
    img, face = _rotated_face(angle)
    size = 160  # crop side 80 * 2 = 160: one output pixel per image pixel
    plain = _dots(fc.crop_face(img, face, margin=0.5, size=size))
    assert abs(plain[0][1] - plain[1][1]) > 15  # sanity: tilted without alignment

    aligned = _dots(fc.crop_face(img, face, margin=0.5, size=size, align=True))
    (lx, ly), (rx, ry) = aligned
    assert ly == pytest.approx(ry, abs=0.5)
    assert ly == pytest.approx(size / 2, abs=1.0)  # eyes were centred on the crop centre
    assert rx - lx == pytest.approx(40, abs=1.0)  # distances kept (scale 1)
    assert (lx + rx) / 2 == pytest.approx(size / 2, abs=1.0)

    # Downscaled output (antialiased path): same geometry at half the size.
    (lx, ly), (rx, ry) = _dots(
        fc.crop_face(img, face, margin=0.5, size=size // 2, align=True), threshold=0.2
    )
    assert ly == pytest.approx(ry, abs=0.5)
    assert rx - lx == pytest.approx(20, abs=1.0)


def test_crop_matches_padded_slice_and_align_needs_landmarks(analyzer):
    img = portrait(0)
    (face,) = analyzer.detect(img)
    x1, y1, x2, y2 = fc.crop_box(face, (96, 128), 0.5)
    assert x1 < 0 and y1 < 0  # the square leaves the image: black padding
    padded = torch.zeros(y2 - y1, x2 - x1, 3)
    padded[-y1 : -y1 + 128, -x1 : -x1 + 96] = img
    side = x2 - x1
    exact = fc.crop_face(img, face, size=side)  # one output pixel per image pixel
    assert (exact - padded).abs().max() < 1e-5
    aligned = fc.crop_face(img, face, size=side, align=True)  # tiny kps: eyes already level
    assert (aligned - padded).abs().max() < 1e-5
    small = fc.crop_face(img, face, size=side // 2)
    reference = torch.nn.functional.interpolate(
        padded.permute(2, 0, 1)[None], size=(side // 2,) * 2, mode="bilinear", antialias=True
    )[0].permute(1, 2, 0)
    assert (small - reference).abs().mean() < 0.02
    with pytest.raises(InputError, match="landmarks"):
        fc.crop_face(img, fc.Face(box=face.box, score=1.0), align=True)


def test_crop_references_error_names_the_image(analyzer):
    faces = canvas((40, 20, 120, 140), size=(320, 160))
    batch = torch.stack([faces, canvas(size=(320, 160), background=0.5), faces])
    with pytest.raises(InputError) as err:
        fc.crop_references(analyzer, batch, size=64)
    assert "image 2 of 3" in str(err.value)
    assert "pass through" in str(err.value)
    with pytest.raises(InputError, match="1 face\\(s\\) were found"):
        fc.crop_references(analyzer, batch[:1], choice=1)


def test_crop_references_pass_through_pads_to_square(analyzer):
    faces = canvas((40, 20, 120, 140), size=(320, 160))
    batch = torch.stack([faces, canvas(size=(320, 160), background=0.5)])
    result = fc.crop_references(analyzer, batch, size=64, on_missing="pass through")
    assert result.crops.shape == (2, 64, 64, 3)
    assert result.masks.shape == (2, 160, 320)
    assert len(result.warnings) == 1 and "image 2 of 2" in result.warnings[0]

    face = analyzer.detect(faces)[0]
    assert result.boxes == [fc.crop_box(face, (320, 160), 0.5), None]
    assert torch.equal(result.crops[0], fc.crop_face(faces, face, size=64))
    assert result.masks[0].sum() == 80 * 120
    assert result.masks[0, 20:140, 40:120].min() == 1
    assert result.masks[1].sum() == 0

    # 160x320 grey padded to 320x320: black bars of 80 rows -> 16 of 64 rows each side.
    passed = result.crops[1]
    assert passed[:15].max() < 0.01 and passed[-15:].max() < 0.01
    assert passed[17:47].sub(0.5).abs().max() < 0.01


# --------------------------------------------------------------------------- identity


def test_identity_same_portrait_scores_one(analyzer):
    refs = torch.stack([portrait(0), portrait(1)])
    result = fc.identity_scores(analyzer, refs, refs)
    assert result.scores[0][0] > 0.999 and result.scores[1][1] > 0.999
    assert result.scores[0][1] == 0.0 and result.scores[1][0] == 0.0  # one face per image
    assert result.matches[0][1] is None


def test_identity_matches_people_in_swapped_order(analyzer):
    refs = torch.stack([portrait(0), portrait(1)])
    swapped = side_by_side(portrait(1), portrait(0))  # person 2 left, person 1 right
    empty = torch.zeros_like(swapped)
    only_one = side_by_side(portrait(0), torch.zeros(128, 96, 3))
    result = fc.identity_scores(analyzer, refs, torch.stack([swapped, empty, only_one]))

    first = result.scores[0]
    assert min(first) > 0.95
    assert result.matches[0][0].center[0] > 96 > result.matches[0][1].center[0]
    assert fc.cosine(refs_embedding(analyzer, 0), refs_embedding(analyzer, 1)) < 0.5

    assert result.scores[1] == [0.0, 0.0] and result.matches[1] == [None, None]
    # One face, two people: the face goes to person 1, person 2 is unmatched (never shared).
    assert result.scores[2][0] > 0.95 and result.scores[2][1] == 0.0
    assert result.matches[2][1] is None

    expected = [float(np.mean([row[p] for row in result.scores])) for p in range(2)]
    assert result.person_means == pytest.approx(expected)
    assert result.mean == pytest.approx(np.mean(result.scores))


def test_identity_with_face_crops_as_references(analyzer):
    # The shipped two-person workflow scores against the Face Crop outputs.
    refs = torch.stack([portrait(0), portrait(1)])
    crops = fc.crop_references(analyzer, refs, margin=0.5, size=256).crops
    swapped = side_by_side(portrait(1), portrait(0))
    result = fc.identity_scores(analyzer, crops, swapped[None])
    assert min(result.scores[0]) > 0.95
    assert result.matches[0][0].center[0] > 96 > result.matches[0][1].center[0]


def refs_embedding(analyzer, index):
    return analyzer.detect(portrait(index))[0].embedding


def test_greedy_matching_is_one_to_one():
    def unit(v):
        v = np.asarray(v, np.float64)
        return v / np.linalg.norm(v)

    a, b = unit([1, 0, 0]), unit([0, 1, 0])
    x = fc.Face(box=(0, 0, 1, 1), score=1.0, embedding=unit([0.9, 0.8, 0]))  # near a and b
    y = fc.Face(box=(2, 0, 3, 1), score=1.0, embedding=unit([0.2, 0, 1]))  # near neither
    matched = fc._match([[a], [b]], [x, y])
    # a-x is the best pair; b would also prefer x but takes what is left.
    assert matched[0][0] is x and matched[1][0] is y
    assert matched[1][1] == pytest.approx(fc.cosine(b, y.embedding))


def test_several_photos_of_a_person_score_the_mean_cosine_over_them(analyzer):
    # Person 1 has two photos (portrait 0 and its mirror image), person 2 one (portrait 1).
    generated = side_by_side(portrait(1), portrait(0))[None]
    mirrored = torch.flip(portrait(0), dims=[1])
    two = torch.stack([portrait(0), mirrored])
    photos = [refs_embedding(analyzer, 0), analyzer.detect(mirrored)[0].embedding]
    for person_1 in (two, [portrait(0), mirrored]):  # a batch or a list of photos
        result = fc.identity_scores(analyzer, [person_1, portrait(1)], generated)
        face = result.matches[0][0]
        assert face.center[0] > 96  # still matched one-to-one: person 1 is the right face
        cosines = [fc.cosine(e, face.embedding) for e in photos]
        assert result.scores[0][0] == pytest.approx(np.mean(cosines), abs=1e-9)
        assert result.scores[0][0] < max(cosines) - 1e-3  # the mean, not the best photo
        assert result.scores[0][1] > 0.95
    # One photo per person as a list entry gives the plain score.
    plain = fc.identity_scores(analyzer, torch.stack([portrait(0), portrait(1)]), generated)
    single = fc.identity_scores(analyzer, [portrait(0)[None], [portrait(1)]], generated)
    assert single.scores == plain.scores

    with pytest.raises(InputError, match=r"reference image 1 of 2 \(photo 2 of 2\)"):
        blank = torch.zeros(64, 64, 3)
        fc.identity_scores(analyzer, [[portrait(0), blank], portrait(1)], generated)
    with pytest.raises(InputError, match="reference person 1 has no photo"):
        fc.identity_scores(analyzer, [[], portrait(1)], generated)


def test_matching_uses_the_mean_over_a_persons_photos():
    a1, a2, b = np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), np.array([0.8, 0.6, 0])
    x = fc.Face(box=(0, 0, 1, 1), score=1.0, embedding=np.array([1.0, 0, 0]))
    # A's first photo is x exactly, but A's mean (0.5) is below B's 0.8: B gets the face.
    matched = fc._match([[a1, a2], [b]], [x])
    assert matched[0] is None and matched[1][0] is x
    assert matched[1][1] == pytest.approx(0.8)
    assert fc.person_similarity([a1, a2], x.embedding) == pytest.approx(0.5)


def test_identity_reference_without_face_and_pack_without_recognition(analyzer, root, tmp_path):
    refs = [portrait(0), torch.zeros(50, 70, 3)]  # a list: sizes may differ
    with pytest.raises(InputError, match="reference image 2 of 2"):
        fc.identity_scores(analyzer, refs, refs[:1])

    det_only = tmp_path / "models" / "det_only"
    det_only.mkdir(parents=True)
    shutil.copy(root / "models" / "buffalo_l" / DETECTOR_FILE, det_only)
    detector = fc.load_face_analysis(tmp_path, "det_only")
    assert not detector.has_recognition
    (face,) = detector.detect(portrait(0))
    assert face.embedding is None and face.landmarks is not None
    with pytest.raises(ModelError, match="w600k_r50.onnx"):
        fc.identity_scores(detector, refs[0], refs[0])


def test_cosine():
    assert fc.cosine(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.0)
    assert fc.cosine(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == 0.0
    assert fc.cosine(np.zeros(3), np.ones(3)) == 0.0
    with pytest.raises(InputError):
        fc.cosine(np.ones(3), np.ones(4))


# --------------------------------------------------------------------------- preview


def test_annotate_draws_on_a_copy(analyzer):
    img = canvas((40, 60, 120, 180))
    before = img.clone()
    found = analyzer.detect(img)
    out = fc.annotate(img, found + [None], labels=["person 1: 0.83", "person 2: 0.00"])
    assert out.shape == img.shape and out.dtype == torch.float32
    assert torch.equal(img, before)
    assert (out[60, 40:120] - img[60, 40:120]).abs().sum() > 1  # top edge of the box
    assert (out[120, 40] - img[120, 40]).abs().sum() > 0.5  # left edge (drawn inside)
    assert torch.equal(out[250:, 200:], img[250:, 200:])  # far from the box: untouched
    label_area = out[:58, 40:160]  # the label sits above the box
    assert (label_area - img[:58, 40:160]).abs().sum() > 10
    with pytest.raises(InputError, match="one label per face"):
        fc.annotate(img, found, labels=["a", "b"])
