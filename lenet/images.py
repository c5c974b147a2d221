"""Image files for inference, with numpy and the standard library only: PGM / PPM (P2, P3, P5, P6; 8 and 16 bit),
PNG (grey, grey + alpha, RGB, RGBA and palette; bit depths 1 to 16; not interlaced; decoded with zlib) and .npy
(one image or a batch).

`read_image(path)` returns grey levels as float32 in [0, 1]: (H, W) for one image, (N, H, W) for a .npy batch.
Colour becomes grey by the ITU-R BT.601 luma weights (0.299 R + 0.587 G + 0.114 B); transparent pixels are
composited over `background` (0 black, 1 white). The format is told by the file's first bytes, not its name.
A file that is not one of these, or is malformed, raises `ImageError` (a ValueError) naming the file and the
problem; a file that cannot be opened raises OSError as usual.
"""
from __future__ import annotations

import io
import os
import re
import struct
import zlib

import numpy as np

__all__ = ["ImageError", "read_image", "decode_png", "decode_pnm", "decode_npy", "MAX_PIXELS"]

#: The most pixels an image may have (a guard against decompression bombs and absurd headers).
MAX_PIXELS = 1 << 26

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NPY_MAGIC = b"\x93NUMPY"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
# colour type -> (name, channels, allowed bit depths)
_PNG_TYPES = {0: ("grey", 1, (1, 2, 4, 8, 16)), 2: ("RGB", 3, (8, 16)), 3: ("palette", 1, (1, 2, 4, 8)),
              4: ("grey + alpha", 2, (8, 16)), 6: ("RGBA", 4, (8, 16))}
_OTHER_FORMATS = ((b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
                  (b"MM\x00*", "TIFF"), (b"RIFF", "WebP"))


class ImageError(ValueError):
    """A file that is not an image lenet reads (PGM/PPM, PNG, .npy), or a malformed one."""


def read_image(path, *, background: float = 0.0) -> np.ndarray:
    """The image(s) in `path` as float32 grey levels in [0, 1]: (H, W), or (N, H, W) for a .npy batch."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        if not data:
            raise ImageError("the file is empty")
        if data.startswith(_PNG_SIGNATURE):
            return decode_png(data, background=background)
        if data.startswith(_NPY_MAGIC):
            return decode_npy(data)
        if data[:1] == b"P" and data[1:2] in (b"2", b"3", b"5", b"6"):
            return decode_pnm(data)
        for magic, name in _OTHER_FORMATS:
            if data.startswith(magic):
                raise ImageError(f"{name} files are not supported: convert it to PNG or PGM")
        raise ImageError(f"not a PNG, PGM/PPM or .npy file (it starts with bytes {data[:8].hex(' ')})")
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None


# ---- PNG ------------------------------------------------------------------------------------------------------------
def _png_chunks(data: bytes):
    """(type, payload) of each chunk up to IEND, CRCs checked."""
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise ImageError("truncated PNG: the file ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ImageError(f"truncated PNG: chunk {kind!r} says {length} bytes, the file ends before them")
        payload = data[pos + 8:end]
        if zlib.crc32(kind + payload) != struct.unpack(">I", data[end:end + 4])[0]:
            raise ImageError(f"corrupt PNG: CRC mismatch in chunk {kind.decode('latin-1')!r}")
        yield kind, payload
        if kind == b"IEND":
            return
        pos = end + 4


def decode_png(data: bytes, *, background: float = 0.0) -> np.ndarray:
    """A PNG file's bytes -> (H, W) float32 grey levels in [0, 1]."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ImageError("not a PNG file (bad signature)")
    header, palette, trns, idat = None, None, None, []
    for kind, payload in _png_chunks(data):
        if header is None and kind != b"IHDR":
            raise ImageError(f"corrupt PNG: the first chunk is {kind!r}, not IHDR")
        if kind == b"IHDR":
            if header is not None or len(payload) != 13:
                raise ImageError("corrupt PNG: bad or repeated IHDR chunk")
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"PLTE":
            if len(payload) % 3 or not 3 <= len(payload) <= 768:
                raise ImageError(f"corrupt PNG: PLTE chunk of {len(payload)} bytes (3 per entry, 1 to 256 entries)")
            palette = np.frombuffer(payload, np.uint8).reshape(-1, 3)
        elif kind == b"tRNS":
            trns = payload
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind != b"IEND" and not kind[0] & 0x20:  # bit 5 of the first letter clear: critical
            raise ImageError(f"unsupported PNG: unknown critical chunk {kind.decode('latin-1')!r}")
    width, height, depth, ctype, compression, filtering, interlace = header
    if ctype not in _PNG_TYPES:
        raise ImageError(f"corrupt PNG: colour type {ctype} does not exist (0, 2, 3, 4 or 6)")
    name, channels, depths = _PNG_TYPES[ctype]
    if depth not in depths:
        raise ImageError(f"unsupported PNG: bit depth {depth} with colour type {name} (allowed: "
                         f"{', '.join(map(str, depths))})")
    if compression != 0 or filtering != 0:
        raise ImageError(f"unsupported PNG: compression method {compression}, filter method {filtering} (only 0)")
    if interlace == 1:
        raise ImageError("unsupported PNG: interlaced (Adam7); save it without interlacing")
    if interlace != 0:
        raise ImageError(f"corrupt PNG: interlace method {interlace}")
    if width == 0 or height == 0:
        raise ImageError(f"corrupt PNG: size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ImageError(f"image of {width}x{height} pixels is too large (at most {MAX_PIXELS:,} pixels)")
    if ctype == 3 and palette is None:
        raise ImageError("corrupt PNG: a palette image without a PLTE chunk")
    if not idat:
        raise ImageError("corrupt PNG: no image data (IDAT chunk)")

    stride = (width * channels * depth + 7) // 8
    expected = height * (stride + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), expected + 1)
    except zlib.error as e:
        raise ImageError(f"corrupt PNG: bad compressed data ({e})") from None
    if len(raw) != expected or not inflater.eof:
        raise ImageError(f"corrupt PNG: the image data holds {len(raw)}{'+' if len(raw) > expected else ''} bytes, "
                         f"{width}x{height} {name} at {depth} bit needs {expected}"
                         + ("" if len(raw) != expected else " (the compressed stream does not end)"))
    rows = _unfilter(raw, height, stride, max(1, channels * depth // 8))

    if depth == 16:
        v = rows.view(">u2").astype(np.float64).reshape(height, width, channels)
    elif depth == 8:
        v = rows.astype(np.float64).reshape(height, width, channels)
    else:  # 1, 2 or 4 bits per sample, packed high bits first; each row starts on a byte
        bits = np.unpackbits(rows, axis=1)[:, :width * depth].reshape(height, width, depth)
        v = (bits @ (1 << np.arange(depth - 1, -1, -1))).astype(np.float64)[..., None]
    top = float((1 << depth) - 1)

    alpha = None
    if ctype == 3:
        idx = v[..., 0].astype(np.intp)
        if idx.max() >= len(palette):
            raise ImageError(f"corrupt PNG: palette index {idx.max()} but the palette has {len(palette)} entries")
        grey = (palette.astype(np.float64) @ _LUMA / 255.0)[idx]
        if trns is not None:
            table = np.ones(len(palette))
            a = np.frombuffer(trns[:len(palette)], np.uint8) / 255.0
            table[:len(a)] = a
            alpha = table[idx]
    else:
        colour = v[..., :3] @ _LUMA if channels >= 3 else v[..., 0]
        grey = colour / top
        if channels in (2, 4):
            alpha = v[..., -1] / top
        elif trns is not None:  # one colour (grey level or RGB) that is transparent
            need = 2 * channels
            if len(trns) != need:
                raise ImageError(f"corrupt PNG: tRNS chunk of {len(trns)} bytes, a {name} image has {need}")
            key = np.array(struct.unpack(f">{channels}H", trns), dtype=np.float64)
            alpha = np.where((v == key).all(axis=-1), 0.0, 1.0)
    if alpha is not None:
        grey = grey * alpha + float(background) * (1.0 - alpha)
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo PNG's per-row filters: (height, stride) uint8."""
    lines = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    out = np.empty((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, line = lines[y, 0], lines[y, 1:]
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum (mod 256) of each byte position within a pixel
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            cur = line + prev
        elif kind in (3, 4):  # Average, Paeth: each byte depends on the one reconstructed before it
            cur = _unfilter_sequential(kind, line.tobytes(), prev.tobytes(), bpp)
        else:
            raise ImageError(f"corrupt PNG: filter type {kind} on row {y} (0 to 4 exist)")
        out[y] = cur
        prev = out[y]
    return out


def _unfilter_sequential(kind: int, line: bytes, prev: bytes, bpp: int) -> np.ndarray:
    cur = bytearray(line)
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = prev[i]
        if kind == 3:
            cur[i] = (cur[i] + ((a + b) >> 1)) & 0xFF
        else:
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    return np.frombuffer(bytes(cur), np.uint8)


# ---- PGM / PPM ------------------------------------------------------------------------------------------------------
_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n\r]*)*(\d+)")  # whitespace and comments, then a number


def decode_pnm(data: bytes) -> np.ndarray:
    """A PGM (P2, P5) or PPM (P3, P6) file's bytes -> (H, W) float32 grey levels in [0, 1]."""
    kind = data[:2]
    if kind not in (b"P2", b"P3", b"P5", b"P6"):
        raise ImageError(f"not a PGM/PPM file (starts with {data[:2]!r}; P2, P3, P5 or P6 expected)")
    channels = 3 if kind in (b"P3", b"P6") else 1
    pos, values = 2, []
    for what in ("width", "height", "maxval"):
        m = _PNM_TOKEN.match(data, pos)
        if m is None:
            raise ImageError(f"malformed {kind.decode()} header: no {what} (the file is truncated or not a PGM)")
        values.append(int(m.group(1)))
        pos = m.end()
    width, height, maxval = values
    if width == 0 or height == 0:
        raise ImageError(f"malformed {kind.decode()} header: size {width}x{height}")
    if not 1 <= maxval <= 65535:
        raise ImageError(f"malformed {kind.decode()} header: maxval {maxval} (1 to 65535)")
    if width * height > MAX_PIXELS:
        raise ImageError(f"image of {width}x{height} pixels is too large (at most {MAX_PIXELS:,} pixels)")
    count = width * height * channels
    if kind in (b"P5", b"P6"):
        if pos >= len(data) or not data[pos:pos + 1].isspace():
            raise ImageError(f"malformed {kind.decode()} header: no white space after maxval")
        body = data[pos + 1:]
        size = count * (2 if maxval > 255 else 1)
        if len(body) < size:
            raise ImageError(f"truncated {kind.decode()}: {width}x{height} at maxval {maxval} needs {size} bytes of "
                             f"pixels, found {len(body)}")
        if len(body) > size:
            raise ImageError(f"{len(body) - size} byte(s) after the pixels (files of several images are not "
                             "supported)")
        v = np.frombuffer(body, ">u2" if maxval > 255 else np.uint8)
    else:
        text = re.sub(rb"#[^\n\r]*", b" ", data[pos:]).split()
        if len(text) != count or not all(t.isdigit() for t in text):
            bad = next((t for t in text if not t.isdigit()), None)
            raise ImageError(f"malformed {kind.decode()}: " + (f"{bad[:20]!r} is not a pixel value" if bad else
                             f"{width}x{height}{'x3' if channels == 3 else ''} needs {count} values, found "
                             f"{len(text)}"))
        v = np.array([int(t) for t in text], dtype=np.int64)
    if v.max() > maxval:
        raise ImageError(f"pixel value {int(v.max())} above maxval {maxval}")
    v = v.astype(np.float64).reshape(height, width, channels) / maxval
    grey = v @ _LUMA if channels == 3 else v[..., 0]
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


# ---- .npy -----------------------------------------------------------------------------------------------------------
def decode_npy(data: bytes) -> np.ndarray:
    """A .npy file's bytes: uint8 (0-255), bool or float ([0, 1]) images, (H, W) or a batch (N, H, W) /
    (N, 1, H, W) -> float32 in [0, 1], (H, W) or (N, H, W)."""
    try:
        x = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ImageError(f"unreadable .npy file ({e})") from None
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim not in (2, 3) or 0 in x.shape:
        raise ImageError(f".npy array of shape {x.shape}: expected one image (H, W) or a batch (N, H, W) or "
                         "(N, 1, H, W)")
    if x.dtype == np.uint8:
        return (x / np.float32(255.0)).astype(np.float32)
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise ImageError(".npy float images must lie in [0, 1], found NaN or infinity")
        if x.min() < 0.0 or x.max() > 1.0:
            raise ImageError(f".npy float images must lie in [0, 1], found values from {x.min():g} to {x.max():g}")
        return x
    raise ImageError(f".npy images must be uint8 (0-255) or floats in [0, 1], got dtype {x.dtype}")
