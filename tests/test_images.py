"""lenet.images: PGM/PPM, PNG and .npy readers against images made here (PNGs encoded with zlib + struct, with
every filter type), an independent encoder (Pillow, when installed), and malformed files."""
import io
import struct
import zlib

import numpy as np
import pytest

from lenet.images import ImageError, decode_png, read_image

LUMA = np.array([0.299, 0.587, 0.114])


# ---- a small PNG encoder ------------------------------------------------------------------------------------------
def chunk(kind: bytes, payload: bytes, crc=None) -> bytes:
    crc = zlib.crc32(kind + payload) if crc is None else crc
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def filter_row(kind: int, row: bytes, prev: bytes, bpp: int) -> bytes:
    """PNG filter `kind` applied to one row (the definition, byte by byte)."""
    out = bytearray()
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
        out.append((x - pred) & 0xFF)
    return bytes([kind]) + bytes(out)


def pack_rows(samples: np.ndarray, depth: int) -> list:
    """(H, W*channels) integer samples -> the rows' bytes at `depth` bits (big-endian, packed high bits first)."""
    if depth == 16:
        return [r.astype(">u2").tobytes() for r in samples]
    if depth == 8:
        return [r.astype(np.uint8).tobytes() for r in samples]
    bits = ((samples[..., None] >> np.arange(depth - 1, -1, -1)) & 1).reshape(len(samples), -1)
    return [np.packbits(r).tobytes() for r in bits]


def png(samples, ctype=0, depth=8, filters=(0,), palette=None, trns=None, interlace=0, extra=b"", idat=None,
        end=True):
    """PNG bytes of integer samples (H, W) or (H, W, channels); row y uses filters[y % len(filters)]."""
    samples = np.asarray(samples).astype(np.int64)
    h, w = samples.shape[:2]
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    rows = pack_rows(samples.reshape(h, w * channels), depth)
    bpp = max(1, channels * depth // 8)
    raw, prev = b"", bytes(len(rows[0]))
    for y, row in enumerate(rows):
        raw += filter_row(filters[y % len(filters)], row, prev, bpp)
        prev = row
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace))
    if palette is not None:
        out += chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes())
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += extra + chunk(b"IDAT", zlib.compress(raw) if idat is None else idat)
    return out + (chunk(b"IEND", b"") if end else b"")


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---- PNG ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (0, 1, 2, 3, 4)])
def test_png_grey8_every_filter(tmp_path, rng, filters):
    a = rng.integers(0, 256, (13, 11))
    x = read_image(write(tmp_path, "a.png", png(a, filters=filters)))
    assert x.dtype == np.float32 and x.shape == (13, 11)
    np.testing.assert_allclose(x, a / 255, atol=1e-7)


@pytest.mark.parametrize("depth", [1, 2, 4, 16])
def test_png_grey_other_depths(tmp_path, rng, depth):
    a = rng.integers(0, 1 << depth, (6, 13))  # 13 columns: the last byte of a row is partly padding
    x = read_image(write(tmp_path, "a.png", png(a, depth=depth, filters=(0, 1, 4, 3))))
    np.testing.assert_allclose(x, a / ((1 << depth) - 1), atol=1e-7)


@pytest.mark.parametrize("depth", [8, 16])
def test_png_rgb_and_alpha(tmp_path, rng, depth):
    top = (1 << depth) - 1
    rgb = rng.integers(0, top + 1, (5, 7, 3))
    alpha = rng.integers(0, top + 1, (5, 7, 1))
    grey = rgb @ LUMA / top
    x = read_image(write(tmp_path, "rgb.png", png(rgb, ctype=2, depth=depth, filters=(1, 2, 3, 4))))
    np.testing.assert_allclose(x, grey, atol=1e-6)
    rgba = np.concatenate([rgb, alpha], axis=2)
    a = alpha[..., 0] / top
    for background in (0.0, 1.0):
        x = read_image(write(tmp_path, "rgba.png", png(rgba, ctype=6, depth=depth, filters=(4, 3))),
                       background=background)
        np.testing.assert_allclose(x, grey * a + background * (1 - a), atol=1e-6)
    ga = np.concatenate([rgb[..., :1], alpha], axis=2)
    x = read_image(write(tmp_path, "ga.png", png(ga, ctype=4, depth=depth, filters=(1,))), background=1.0)
    np.testing.assert_allclose(x, rgb[..., 0] / top * a + (1 - a), atol=1e-6)


@pytest.mark.parametrize("depth", [2, 8])
def test_png_palette_with_transparency(tmp_path, rng, depth):
    palette = rng.integers(0, 256, (1 << depth, 3))
    idx = rng.integers(0, 1 << depth, (9, 10))
    alpha = np.array([0, 128], np.uint8)  # the first two entries (partly) transparent, the rest opaque
    x = read_image(write(tmp_path, "p.png", png(idx, ctype=3, depth=depth, palette=palette, trns=alpha.tobytes())),
                   background=1.0)
    a = np.ones(len(palette))
    a[:2] = alpha / 255
    np.testing.assert_allclose(x, (palette @ LUMA / 255 * a + (1 - a))[idx], atol=1e-6)


def test_png_grey_transparent_key(tmp_path):
    a = np.array([[0, 7], [7, 255]])
    x = read_image(write(tmp_path, "k.png", png(a, trns=struct.pack(">H", 7))), background=1.0)
    np.testing.assert_allclose(x, [[0, 1], [1, 1]])


def test_png_from_pillow(tmp_path, rng):
    """Files written by an independent encoder (its own filter choices and compression)."""
    Image = pytest.importorskip("PIL.Image")
    a = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(a, "L").save(tmp_path / "l.png")
    np.testing.assert_allclose(read_image(tmp_path / "l.png"), a / 255, atol=1e-7)
    rgb = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png"), rgb @ LUMA / 255, atol=1e-6)
    Image.fromarray(rgb, "RGB").quantize(16).save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P"
        pal = np.asarray(im.convert("RGB"))
    np.testing.assert_allclose(read_image(tmp_path / "p.png"), pal @ LUMA / 255, atol=1e-6)


def _corrupt_crc(data: bytes) -> bytes:
    b = bytearray(data)
    b[33 + 8] ^= 0xFF  # the first byte of the payload of the chunk after IHDR
    return bytes(b)


GOOD = png(np.arange(12).reshape(3, 4))


@pytest.mark.parametrize("data, message", [
    (GOOD[:-12], "ends before its IEND"),
    (GOOD[:40], "truncated PNG"),
    (_corrupt_crc(GOOD), "CRC mismatch"),
    (png(np.zeros((2, 2)), interlace=1), "interlaced"),
    (png(np.zeros((2, 2)), depth=3), "bit depth 3"),
    (png(np.zeros((2, 2, 3)), ctype=2, depth=4), "bit depth 4 with colour type RGB"),
    (png(np.zeros((2, 2)), ctype=5), "colour type 5"),
    (png(np.zeros((2, 2)), ctype=3), "without a PLTE"),
    (png(np.full((2, 2), 3), ctype=3, palette=[[0, 0, 0], [1, 1, 1]]), "palette index 3"),
    (png(np.zeros((2, 2)), idat=zlib.compress(b"\x00\x00\x00")), "needs 6"),
    (png(np.zeros((2, 2)), idat=zlib.compress(b"\x00" * 9)), "needs 6"),
    (png(np.zeros((2, 2)), idat=b"not zlib"), "bad compressed data"),
    (png(np.zeros((2, 2)), idat=zlib.compress(b"\x07\x00\x00\x05\x00\x00")), "filter type 7"),
    (png(np.zeros((2, 2)), extra=chunk(b"ABCD", b"")), "unknown critical chunk"),
    (b"\x89PNG\r\n\x1a\n" + chunk(b"IDAT", b""), "first chunk"),
    (png(np.zeros((2, 2)), idat=b"")[:-24] + chunk(b"IEND", b""), "no image data"),
])
def test_png_malformed(tmp_path, data, message):
    path = write(tmp_path, "bad.png", data)
    with pytest.raises(ImageError, match=message) as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_png_ancillary_chunks_are_skipped():
    a = np.arange(6).reshape(2, 3)
    data = png(a, extra=chunk(b"tEXt", b"Comment\x00hello") + chunk(b"gAMA", struct.pack(">I", 45455)))
    np.testing.assert_allclose(decode_png(data), a / 255, atol=1e-7)


def test_png_size_guard():
    header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1 << 20, 1 << 20, 8, 0, 0, 0, 0))
    with pytest.raises(ImageError, match="too large"):
        decode_png(header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


# ---- PGM / PPM ----------------------------------------------------------------------------------------------------
def test_pgm_p5_p2_8_and_16_bit(tmp_path, rng):
    a = rng.integers(0, 256, (5, 6))
    p5 = b"P5\n# a comment\n6 5\n255\n" + a.astype(np.uint8).tobytes()
    np.testing.assert_allclose(read_image(write(tmp_path, "a.pgm", p5)), a / 255, atol=1e-7)
    p2 = ("P2 6 5 # size\n255\n" + "\n".join(" ".join(map(str, r)) for r in a) + "\n").encode()
    np.testing.assert_allclose(read_image(write(tmp_path, "b.pgm", p2)), a / 255, atol=1e-7)
    b = rng.integers(0, 1001, (4, 3))
    p5_16 = b"P5 3 4 1000\n" + b.astype(">u2").tobytes()
    np.testing.assert_allclose(read_image(write(tmp_path, "c.pgm", p5_16)), b / 1000, atol=1e-7)
    c = rng.integers(0, 16, (2, 3, 3))
    p6 = b"P6\n3 2\n15\n" + c.astype(np.uint8).tobytes()
    np.testing.assert_allclose(read_image(write(tmp_path, "d.ppm", p6)), c @ LUMA / 15, atol=1e-6)


@pytest.mark.parametrize("data, message", [
    (b"P5\n3 2\n255\n" + bytes(5), "needs 6 bytes of pixels, found 5"),
    (b"P5\n3 2\n255\n" + bytes(7), "1 byte\\(s\\) after the pixels"),
    (b"P5\n3 2\n1000\n" + bytes(6), "needs 12 bytes"),
    (b"P5\n3 2\n100\n" + bytes([200] * 6), "pixel value 200 above maxval 100"),
    (b"P5\n3 2\n0\n" + bytes(6), "maxval 0"),
    (b"P5\n3 2\n70000\n" + bytes(6), "maxval 70000"),
    (b"P5\n0 2\n255\n", "size 0x2"),
    (b"P5\n3\n", "no height"),
    (b"P2\n2 2\n255\n1 2 3\n", "needs 4 values, found 3"),
    (b"P2\n2 2\n255\n1 2 x 4\n", "is not a pixel value"),
])
def test_pgm_malformed(tmp_path, data, message):
    with pytest.raises(ImageError, match=message):
        read_image(write(tmp_path, "bad.pgm", data))


# ---- .npy and the rest --------------------------------------------------------------------------------------------
def _npy(a) -> bytes:
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def test_npy(tmp_path, rng):
    a = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(read_image(write(tmp_path, "a.npy", _npy(a))), a / 255, atol=1e-7)
    assert read_image(write(tmp_path, "one.npy", _npy(a[0]))).shape == (28, 28)
    assert read_image(write(tmp_path, "c.npy", _npy(a[:, None]))).shape == (4, 28, 28)
    f = rng.random((2, 5, 5))
    np.testing.assert_array_equal(read_image(write(tmp_path, "f.npy", _npy(f))), f.astype(np.float32))


@pytest.mark.parametrize("array, message", [
    (np.full((3, 3), 1.5), "must lie in \\[0, 1\\]"),
    (np.full((3, 3), np.nan), "NaN"),
    (np.zeros((3, 3), np.int64), "dtype int64"),
    (np.zeros((2, 3, 3, 3), np.uint8), "shape \\(2, 3, 3, 3\\)"),
    (np.zeros(5, np.uint8), "shape \\(5,\\)"),
    (np.array([None, 1], dtype=object), "unreadable .npy"),
])
def test_npy_malformed(tmp_path, array, message):
    with pytest.raises(ImageError, match=message):
        read_image(write(tmp_path, "bad.npy", _npy(array)))


def test_npy_truncated(tmp_path):
    with pytest.raises(ImageError, match="unreadable .npy"):
        read_image(write(tmp_path, "t.npy", _npy(np.zeros((28, 28), np.uint8))[:-10]))


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG files are not supported"),
    (b"GIF89a", "GIF files are not supported"),
    (b"hello world", "not a PNG, PGM/PPM or .npy file"),
])
def test_unknown_formats(tmp_path, data, message):
    with pytest.raises(ImageError, match=message):
        read_image(write(tmp_path, "x.img", data))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "nope.png")
