"""The C++ runtime's images against the Python runtime's, on photo-sized images of odd sizes.

Decoded pixels must be equal (PNG through stb_image, JPEG through libjpeg as PIL decodes it, EXIF
orientation, transparency onto white); pixel_values of the CLIP and anyres preprocessing within
1/255 of a pixel (the resize is PIL's fixed-point arithmetic, so they come out equal). stb_image's
JPEG decoding, the fallback where libjpeg is absent, is measured and bounded.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgecompress_runtime.anyres import preprocess_anyres
from edgecompress_runtime.preprocess import load_image, preprocess, to_rgb
from tests.cpp_build import ROOT, build_cpp

EXPORT = ROOT / "export"


def recipe(name: str) -> dict:
    return tomllib.loads((EXPORT / f"{name}.toml").read_text())


def anyres_record(name: str) -> dict:
    """The manifest's anyres record, as LlavaNextAdapter.anyres_record makes it."""
    config = recipe(name)["config"]
    vision = config["vision_config"]
    tile = vision["image_size"]
    grids = [[h // tile, w // tile] for h, w in config["image_grid_pinpoints"]]
    return {"pinpoints": config["image_grid_pinpoints"], "grids": grids, "tile_size": tile,
            "side": tile // vision["patch_size"], "max_tiles": max(h * w for h, w in grids)}


CLIP_224 = recipe("tiny-llava")["preprocess"]
CLIP_336 = recipe("llava-1.5-7b")["preprocess"]
NEXT = recipe("tiny-llava-next")["preprocess"]
ANYRES = anyres_record("tiny-llava-next")

# Real photographs where this machine has them (720x477: one progressive, one with EXIF).
RUST_DOCS = Path.home() / ".rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html/embedded-book/assets"
REAL_PHOTOS = [p for p in (RUST_DOCS / "f3.jpg", RUST_DOCS / "verify.jpeg") if p.is_file()]


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """Photo-like RGB: smooth lighting, fine texture, sensor noise and hard-edged objects."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    light = 60 * np.sin(x[..., None] / width * rng.uniform(1, 4, 3) + y[..., None] / height * rng.uniform(1, 4, 3))
    texture = 18 * np.sin(x[..., None] * 0.9 + np.cos(y[..., None] * 0.7) * 3)
    pixels = base + light + texture + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        box = (x0, y0, x0 + rng.integers(5, width // 3), y0 + rng.integers(5, height // 3))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return np.asarray(image)


def with_orientation(image: Image.Image, orientation: int) -> Image.Image:
    """The image stored so that a viewer applying EXIF ``orientation`` shows ``image``."""
    inverse = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    return image.transpose(inverse[orientation])


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **options) -> None:
        paths[name] = folder / name
        image.save(paths[name], **options)

    save("rgb-1921x1081.jpg", Image.fromarray(photo(1921, 1081, 1)), quality=90)
    save("rgb-641x479.png", Image.fromarray(photo(641, 479, 2)))
    rgba = photo(333, 777, 3)
    alpha = np.clip(np.linspace(-80, 330, 333)[None, :] + np.zeros((777, 1)), 0, 255).astype(np.uint8)  # clear to opaque
    save("rgba-333x777.png", Image.fromarray(np.dstack([rgba, alpha]), "RGBA"))
    save("grey-1001x999.png", Image.fromarray(photo(1001, 999, 4)).convert("L"))
    deep = photo(333, 250, 7)[..., 0].astype(np.uint16) * 3  # 16-bit grey: PIL clips to 255 on RGB conversion
    save("grey16-333x250.png", Image.fromarray(deep))
    palette = Image.fromarray(photo(500, 375, 5)).quantize(64)
    palette.info["transparency"] = 0
    save("palette-500x375.png", palette, transparency=0)
    upright = Image.fromarray(photo(500, 375, 6))
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        save(f"exif{orientation}-500x375.jpg", with_orientation(upright, orientation), quality=90, exif=exif.tobytes())
    for photo_path in REAL_PHOTOS:
        paths[f"real-{photo_path.name}"] = photo_path
    return paths


@pytest.fixture(scope="session")
def driver() -> Path:
    return build_cpp() / "preprocess_driver"


def run(driver: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(driver), *map(str, args)], capture_output=True, text=True, check=False)


def units_of_255(cpp: np.ndarray, python: np.ndarray, std: list[float]) -> float:
    """The largest difference of normalised pixels [..., 3, H, W], in 1/255 steps of the raw pixel."""
    scale = np.asarray(std, dtype=np.float64)[:, None, None] * 255
    return float((np.abs(cpp.astype(np.float64) - python.astype(np.float64)) * scale).max())


def test_decoded_pixels_equal_pil(driver, photos, tmp_path):
    for name, path in photos.items():
        out = tmp_path / f"{name}.u8"
        result = run(driver, "decode", path, out)
        assert result.returncode == 0, result.stderr
        width, height = map(int, result.stdout.split())
        expected = np.asarray(to_rgb(load_image(path)))
        decoded = np.fromfile(out, dtype=np.uint8).reshape(height, width, 3)
        assert decoded.shape == expected.shape, name
        diff = int(np.abs(decoded.astype(int) - expected).max())
        print(f"decode {name}: max diff {diff}/255")
        assert diff == 0, name


def test_clip_preprocess_matches_python(driver, photos, tmp_path):
    for label, params in (("clip-224", CLIP_224), ("clip-336", CLIP_336)):
        for name, path in photos.items():
            out = tmp_path / f"{label}-{name}.f32"
            result = run(driver, "clip", json.dumps(params), path, out)
            assert result.returncode == 0, result.stderr
            expected = preprocess(path, params)[0]
            cpp = np.fromfile(out, dtype=np.float32).reshape(expected.shape)
            diff = units_of_255(cpp, expected, params["image_std"])
            print(f"{label} {name}: max diff {diff:.3g}/255")
            assert diff <= 1.0, (label, name)


def test_anyres_matches_python(driver, photos, tmp_path):
    for name, path in photos.items():
        prefix = tmp_path / name
        result = run(driver, "anyres", json.dumps(NEXT), json.dumps(ANYRES), path, prefix)
        assert result.returncode == 0, result.stderr
        slots, layout = preprocess_anyres(path, NEXT, ANYRES)
        shapes = json.loads(Path(f"{prefix}.json").read_text())
        assert shapes["grid_index"] == layout.grid_index, name
        np.testing.assert_array_equal(np.fromfile(f"{prefix}.tile_mask.f32", dtype=np.float32).reshape(ANYRES["max_tiles"], -1),
                                      layout.tile_mask())
        np.testing.assert_array_equal(np.fromfile(f"{prefix}.packed_order.i64", dtype=np.int64), layout.packed_order())
        cpp = np.fromfile(f"{prefix}.pixel_values.f32", dtype=np.float32).reshape(slots.shape)
        diff = units_of_255(cpp, slots, NEXT["image_std"])
        print(f"anyres {name}: grid {layout.grid}, max diff {diff:.3g}/255")
        assert diff <= 1.0, name


def test_resize_equals_pil(driver, photos, tmp_path):
    """Bit-exact against PIL on every filter, down and up, both passes and one (sizes where the
    pass order Pillow 13 picks is known: see vertical_first in resample.cpp)."""
    path = photos["rgb-641x479.png"]
    image = to_rgb(load_image(path))
    for width, height in ((224, 167), (1000, 479), (641, 800), (97, 1200)):
        for name in ("bicubic", "bilinear", "lanczos", "box", "hamming", "nearest"):
            out = tmp_path / f"{name}-{width}x{height}.u8"
            result = run(driver, "resize", path, width, height, name, out)
            assert result.returncode == 0, result.stderr
            expected = np.asarray(image.resize((width, height), getattr(Image.Resampling, name.upper())))
            resized = np.fromfile(out, dtype=np.uint8).reshape(expected.shape)
            assert int(np.abs(resized.astype(int) - expected).max()) == 0, (name, width, height)


def test_stb_jpeg_is_close_to_pil(driver, photos, tmp_path):
    """stb_image (the build without libjpeg) decodes JPEG with its own IDCT and upsampling."""
    worst = 0.0
    for name, path in photos.items():
        if path.suffix not in (".jpg", ".jpeg"):
            continue
        out = tmp_path / f"stb-{name}.f32"
        result = run(driver, "clip", json.dumps(CLIP_336), path, out, "--stb")
        assert result.returncode == 0, result.stderr
        expected = preprocess(path, CLIP_336)[0]
        diff = units_of_255(np.fromfile(out, dtype=np.float32).reshape(expected.shape), expected, CLIP_336["image_std"])
        print(f"stb_image clip-336 {name}: max diff {diff:.3g}/255")
        worst = max(worst, diff)
    assert worst <= 4.0  # measured 2 to 3 levels: stb's IDCT and chroma upsampling round differently


def test_errors_say_what_python_says(driver, photos, tmp_path):
    missing = tmp_path / "missing.png"
    result = run(driver, "clip", json.dumps(CLIP_224), missing, tmp_path / "out.f32")
    assert result.returncode == 2
    assert result.stderr.strip() == f"image {missing} does not exist"
    small = tmp_path / "small.png"
    Image.new("RGB", (13, 40)).save(small)
    result = run(driver, "clip", json.dumps(CLIP_224), small, tmp_path / "out.f32")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"image {small} is 13x40 pixels; the smallest this runtime reads is 14 px on each "
                                     "side (one vision patch)")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photos["rgb-1921x1081.jpg"].read_bytes()[:600])
    result = run(driver, "clip", json.dumps(CLIP_224), truncated, tmp_path / "out.f32")
    assert result.returncode == 2
    assert result.stderr.startswith(f"cannot read image {truncated}: ")
