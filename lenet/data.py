"""MNIST loading (IDX files, checksums, download) and a built-in synthetic digit set.

Everything here uses numpy and the standard library only.

Public API
----------
``read_idx(path)``
    Read one IDX file (raw or gzip-compressed) into a native-endian numpy array.
``load_mnist(root=None, *, download=True, cache_dir=None, verify=True)``
    Load the four MNIST files from a folder, checking their MD5 sums, downloading
    them into the cache folder when they are missing there.
``load_mnist_or_synthetic(root=None, *, download=True, **kw)``
    ``load_mnist``, falling back (with a warning on stderr) to ``synthetic_digits``.
``load_fashion_mnist(root=None, *, verify=True)``
    Fashion-MNIST (checked the same way) from a folder, ``$LENET_FASHION_MNIST_DIR`` or where
    Debian's ``dataset-fashion-mnist`` installs it; ``FASHION_CLASSES`` names its labels.
``synthetic_digits(n_train=6000, n_test=1000, seed=0)``
    A procedurally drawn, clearly labelled ``source="synthetic"`` digit set.
``to_float(images)`` and ``batches(images, labels, batch_size, ...)``
    Helpers to turn uint8 images into network input and iterate over minibatches.
``MNIST``, ``IDXError``, ``ChecksumError``, ``MNISTNotFound``
    The result type and the errors.

Where ``load_mnist`` looks for the data
---------------------------------------
1. the ``root`` argument, else
2. the folder named by the environment variable ``LENET_MNIST_DIR``, else
3. the cache folder ``<cache>/mnist`` where ``<cache>`` is the ``cache_dir`` argument,
   else ``$LENET_CACHE_DIR``, else ``$XDG_CACHE_HOME/lenet``, else ``~/.cache/lenet``.

Each of the four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``) may be stored raw or with a
``.gz`` suffix.  Only the cache folder is ever written to: a folder chosen with ``root``
or ``LENET_MNIST_DIR`` is used as it is, and files missing there are an error.
Checksums are the MD5 sums of the *uncompressed* files, so any gzip wrapper is accepted.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import math
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from typing import Iterator, Optional, Tuple

import numpy as np

__all__ = [
    "IDXError",
    "ChecksumError",
    "MNISTNotFound",
    "MNIST",
    "read_idx",
    "load_mnist",
    "load_mnist_or_synthetic",
    "synthetic_digits",
    "to_float",
    "batches",
    "FILES",
    "MD5",
    "MIRRORS",
    "ENV_MNIST_DIR",
    "ENV_CACHE_DIR",
    "load_fashion_mnist",
    "FASHION_MD5",
    "FASHION_CLASSES",
    "ENV_FASHION_DIR",
]

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

#: Environment variable naming a folder that holds the four MNIST files.
ENV_MNIST_DIR = "LENET_MNIST_DIR"
#: Environment variable naming lenet's cache folder (MNIST goes into ``<it>/mnist``).
ENV_CACHE_DIR = "LENET_CACHE_DIR"

#: The four MNIST files, by role.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: MD5 of the *uncompressed* files, as published with the original MNIST files.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: Public mirrors, tried in order; each serves ``<base><file name>.gz``.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: Seconds before a silent network connection is given up.
DOWNLOAD_TIMEOUT = 30.0

# IDX type code -> (big-endian) dtype of the stored values.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_TYPE_NAMES = "0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64"

_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot expand data by more than ~1032:1, so a gzip file of S bytes cannot hold
# more than about 1032 * S bytes: a header promising more is rejected before any reading.
_GZIP_MAX_RATIO = 1040
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------
# Errors and the result type
# --------------------------------------------------------------------------------------


class IDXError(ValueError):
    """A malformed IDX file (or one that is not what MNIST should contain)."""


class ChecksumError(IDXError):
    """An IDX file whose uncompressed content does not have the expected MD5."""


class MNISTNotFound(FileNotFoundError):
    """MNIST is neither in the folder searched nor downloadable.

    Attributes: ``folder`` (the folder searched), ``missing`` (file names not found) and
    ``reason`` (a short explanation, e.g. "download failed (no network?)"; the message
    has the details).
    """

    def __init__(self, message: str, *, folder: str = "", missing=(), reason: str = ""):
        super().__init__(message)
        self.folder = folder
        self.missing = tuple(missing)
        self.reason = reason

    def __str__(self) -> str:  # FileNotFoundError's default adds "[Errno ...]" noise
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True, repr=False)
class MNIST:
    """A digit data set: uint8 images (N, 28, 28) with values 0-255 and uint8 labels 0-9.

    ``source`` is ``"mnist"`` for the real MNIST files and ``"synthetic"`` for the set made
    by :func:`synthetic_digits`; ``path`` is the folder the files were read from (None for
    synthetic data).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    path: Optional[str] = None

    @property
    def is_synthetic(self) -> bool:
        return self.source == "synthetic"

    def __repr__(self) -> str:
        return (
            f"MNIST(source={self.source!r}, path={self.path!r}, "
            f"train={self.train_images.shape}, test={self.test_images.shape})"
        )


# --------------------------------------------------------------------------------------
# IDX reading
# --------------------------------------------------------------------------------------


def _raise(path, what: str, cls=IDXError):
    raise cls(f"{os.fspath(path)}: {what}")


def _read_idx_parts(path) -> Tuple[bytes, bytearray, np.dtype, Tuple[int, ...]]:
    """Read and validate an IDX file; return (header bytes, data bytes, dtype, shape).

    Sizes are checked against the file before anything large is allocated, and gzip data
    is decompressed in bounded chunks, so garbage never causes a crash, a hang or a huge
    allocation.  Errors opening the file (missing file, permissions) propagate unchanged.
    """
    path = os.fspath(path)
    with open(path, "rb") as raw:
        st = os.fstat(raw.fileno())
        file_size = st.st_size
        regular = (st.st_mode & 0o170000) == 0o100000
        start = raw.read(2)
        if not start:
            _raise(path, "file is empty (0 bytes); expected an IDX file")
        compressed = start == _GZIP_MAGIC
        if not compressed and path.lower().endswith(".gz"):
            _raise(path, f"named .gz but is not gzip-compressed (starts with bytes {start.hex(' ')}, "
                         "not 1f 8b); rename it without .gz if it is a raw IDX file")
        raw.seek(0)
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                try:
                    return _read_idx_stream(path, stream, file_size if regular else None, True)
                except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
                    _raise(path, f"corrupt or truncated gzip data ({type(exc).__name__}: {exc})")
        return _read_idx_stream(path, raw, file_size if regular else None, False)


def _read_exact(stream, n: int) -> bytearray:
    """Read up to n bytes in bounded chunks (never allocating n up front for a stream)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _read_idx_stream(path, stream, file_size, compressed):
    kind = "uncompressed " if compressed else ""
    magic = _read_exact(stream, 4)
    if len(magic) < 4:
        if not magic:
            _raise(path, f"{kind}file is empty (0 bytes); expected an IDX file")
        _raise(path, f"{kind}file is only {len(magic)} byte(s) long; too short for an IDX header")
    if magic[0] != 0 or magic[1] != 0:
        _raise(path, f"bad magic number 0x{bytes(magic).hex().upper()}: an IDX file starts with two "
                     "zero bytes, then a type code and the number of dimensions "
                     "(MNIST images start 00 00 08 03, labels 00 00 08 01)")
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        _raise(path, f"unsupported IDX data type code 0x{code:02X} (supported: {_IDX_TYPE_NAMES})")
    if ndim == 0:
        _raise(path, "IDX header declares 0 dimensions")
    dims_bytes = _read_exact(stream, 4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        _raise(path, f"truncated header: {ndim} dimensions need {4 * ndim} bytes of sizes, "
                     f"found {len(dims_bytes)}")
    shape = tuple(int.from_bytes(dims_bytes[4 * i:4 * i + 4], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: cannot overflow
    header = bytes(magic) + bytes(dims_bytes)
    shape_txt = "x".join(map(str, shape))

    if file_size is not None and not compressed:
        found = file_size - len(header)
        if found < expected:
            _raise(path, f"truncated data: header says {shape_txt} {dtype.name} values, "
                         f"expected {expected} bytes of data, found {found}")
        if found > expected:
            _raise(path, f"{found - expected} trailing byte(s) after the data: header says "
                         f"{shape_txt} {dtype.name} values ({expected} bytes of data), found {found}")
        data = bytearray(expected)
        n = stream.readinto(data) if expected else 0
        if n != expected:  # the file changed under us
            _raise(path, f"truncated data: expected {expected} bytes of data, found {n}")
    else:
        if compressed and file_size is not None and expected > _GZIP_MAX_RATIO * file_size + 4096:
            _raise(path, f"truncated data: header says {shape_txt} {dtype.name} values, expected "
                         f"{expected} bytes of data, but a {file_size}-byte gzip file cannot "
                         "hold that much")
        data = _read_exact(stream, expected)
        if len(data) < expected:
            _raise(path, f"truncated data: header says {shape_txt} {dtype.name} values, "
                         f"expected {expected} bytes of data, found {len(data)}")
        extra = len(stream.read(1))
        if extra:
            extra_txt = None
            while extra_txt is None:  # count (a bounded amount of) the excess for the message
                chunk = stream.read(_CHUNK)
                extra += len(chunk)
                if not chunk:
                    extra_txt = str(extra)
                elif extra >= (64 << 20):
                    extra_txt = f"more than {extra}"
            _raise(path, f"{extra_txt} trailing byte(s) after the data: header says {shape_txt} "
                         f"{dtype.name} values ({expected} bytes of data)")
    return header, data, dtype, shape


def _to_array(path, data: bytearray, dtype: np.dtype, shape) -> np.ndarray:
    try:
        arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    except ValueError as exc:  # e.g. dims whose product overflows numpy even with a 0 in them
        _raise(path, f"cannot make an array of shape {shape}: {exc}")
    if not dtype.isnative:  # IDX data is big-endian
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def read_idx(path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a native-endian numpy array.

    Gzip is recognised by its magic bytes (1f 8b), whatever the file name; a file named
    ``*.gz`` that is not gzip-compressed is an error.  Supported IDX type codes: 0x08 uint8,
    0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64 (stored big-endian).
    The array has the shape given in the header and is writable.

    Raises :class:`IDXError` (naming the file and the problem) for a malformed file: empty,
    bad magic number, unsupported type code, zero dimensions, truncated header or data,
    trailing bytes after the data, corrupt gzip data.  ``OSError`` (e.g.
    ``FileNotFoundError``) propagates for files that cannot be opened.
    """
    _, data, dtype, shape = _read_idx_parts(path)
    return _to_array(path, data, dtype, shape)


# --------------------------------------------------------------------------------------
# MNIST: finding, verifying and downloading the files
# --------------------------------------------------------------------------------------


def _cache_root(cache_dir=None) -> str:
    if cache_dir is not None:
        return os.fspath(cache_dir)
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return env
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(xdg, "lenet")
    return os.path.join(os.path.expanduser("~"), ".cache", "lenet")


def _resolve_folder(root, cache_dir) -> Tuple[str, str]:
    """Return (folder, description of where it came from); see the module docstring."""
    if root is not None:
        return os.fspath(root), "the root argument"
    env = os.environ.get(ENV_MNIST_DIR)
    if env:
        return env, f"${ENV_MNIST_DIR}"
    return os.path.join(_cache_root(cache_dir), "mnist"), "the lenet cache folder"


def _find_file(folder: str, name: str) -> Optional[str]:
    for candidate in (name, name + ".gz"):
        p = os.path.join(folder, candidate)
        if os.path.isfile(p):
            return p
    return None


def _load_checked(path: str, name: str, verify: bool, sums=MD5, what: str = "MNIST") -> np.ndarray:
    """Read one MNIST (or Fashion-MNIST: sums, what) file, check its MD5 (if verify) and its shape/dtype."""
    header, data, dtype, shape = _read_idx_parts(path)
    if verify:
        md5 = hashlib.md5(header)
        md5.update(data)
        got = md5.hexdigest()
        if got != sums[name]:
            _raise(path, f"checksum mismatch: MD5 of the uncompressed content is {got}, expected "
                         f"{sums[name]} for {name}; the file is corrupt or not the original {what} "
                         "file (delete it, or pass verify=False to skip the check)", ChecksumError)
    arr = _to_array(path, data, dtype, shape)
    is_images = "images" in name
    want = "(N, 28, 28) uint8 images" if is_images else "(N,) uint8 labels"
    if arr.dtype != np.uint8:
        _raise(path, f"expected {want}, found {arr.dtype} values")
    if is_images and (arr.ndim != 3 or arr.shape[1:] != (28, 28)):
        _raise(path, f"wrong number of dimensions or size: expected {want}, found shape {arr.shape}")
    if not is_images:
        if arr.ndim != 1:
            _raise(path, f"wrong number of dimensions: expected {want}, found shape {arr.shape}")
        if arr.size and int(arr.max()) > 9:
            _raise(path, f"labels must be 0-9, found {int(arr.max())}")
    return arr


def _not_found(folder, origin, missing, reason, details="") -> MNISTNotFound:
    msg = (
        f"MNIST not found: looked in {folder} (from {origin}); missing "
        f"{', '.join(missing)} (each raw or .gz); {reason}{': ' + details if details else ''}. "
        f"Set the environment variable {ENV_MNIST_DIR} to a folder holding the four MNIST "
        "IDX files (or pass root=...), or allow a download into the cache folder "
        f"(cache_dir=..., ${ENV_CACHE_DIR}, $XDG_CACHE_HOME/lenet or ~/.cache/lenet)."
    )
    return MNISTNotFound(msg, folder=folder, missing=missing, reason=reason)


class _Progress:
    """A progress line on stderr (rewritten in place on a terminal)."""

    def __init__(self, label: str, total: Optional[int]):
        self.label, self.total, self.last = label, total, 0.0
        self.tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        if not self.tty:
            print(f"lenet: {label} ...", file=sys.stderr, flush=True)

    def update(self, done: int, final: bool = False):
        now = time.monotonic()
        if not self.tty or (not final and now - self.last < 0.1):
            return
        self.last = now
        txt = _size(done)
        if self.total:
            txt = f"{_size(done)} of {_size(self.total)} ({100 * done // self.total}%)"
        print(f"\rlenet: {self.label}: {txt}", end="\n" if final else "", file=sys.stderr, flush=True)

    def done(self, n: int):
        if self.tty:
            self.update(n, final=True)
        else:
            print(f"lenet: {self.label}: done, {_size(n)}", file=sys.stderr, flush=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _download(folder: str, name: str, verify: bool, mirrors) -> Tuple[str, str]:
    """Download ``name``.gz into folder from the first of mirrors that works.

    Returns (path of the file, mirror used).

    Each attempt writes into a temporary file in ``folder`` which is checked (IDX structure
    and, if verify, MD5) and only then renamed to its final name with os.replace, so a
    failed or interrupted download never leaves a partial file under the final name.
    Raises OSError listing every mirror's failure if none works.
    """
    final = os.path.join(folder, name + ".gz")
    errors = []
    for base in mirrors:
        url = base + name + ".gz"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.gz.", suffix=".part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                req = urllib.request.Request(url, headers={"User-Agent": "lenet-data (python urllib)"})
                with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT) as resp:
                    length = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
                    total = int(length) if length and length.isdigit() else None
                    progress = _Progress(f"downloading {url}", total)
                    done = 0
                    while True:
                        chunk = resp.read(1 << 16)
                        if not chunk:
                            break
                        out.write(chunk)
                        done += len(chunk)
                        progress.update(done)
                    progress.done(done)
                    if total is not None and done != total:
                        raise OSError(f"incomplete download: got {done} of {total} bytes")
            _load_checked(tmp, name, verify)  # structure + checksum, before the rename
            os.replace(tmp, final)
            return final, base
        except (OSError, http.client.HTTPException, IDXError, ValueError) as exc:
            # OSError covers URLError, HTTPError, timeouts and connection resets.
            errors.append(f"{url}: {type(exc).__name__}: {str(exc).replace(tmp, '<download>')}")
            print(f"lenet: download failed: {errors[-1]}", file=sys.stderr, flush=True)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise OSError("; ".join(errors))


def load_mnist(root=None, *, download: bool = True, cache_dir=None, verify: bool = True) -> MNIST:
    """Load MNIST as an :class:`MNIST` with ``source="mnist"``.

    Folder: ``root``, else ``$LENET_MNIST_DIR``, else ``<cache>/mnist`` (``cache_dir``, else
    ``$LENET_CACHE_DIR``, else ``$XDG_CACHE_HOME/lenet``, else ``~/.cache/lenet``).  Each file
    may be raw or ``.gz`` (raw is preferred when both exist).

    With ``verify`` (the default) the MD5 of each uncompressed file must match the published
    one, else :class:`ChecksumError` naming the file.  Files missing from the *cache* folder
    (or failing their check there) are downloaded when ``download`` is true, trying each of
    ``MIRRORS`` in turn (timeout ``DOWNLOAD_TIMEOUT`` s, progress on stderr).  A folder given
    by ``root`` or ``$LENET_MNIST_DIR`` is never written to.

    Raises :class:`MNISTNotFound` (a FileNotFoundError) when files are missing and cannot be
    downloaded; its message says where it looked and which environment variable to set.
    """
    folder, origin = _resolve_folder(root, cache_dir)
    in_cache = origin == "the lenet cache folder"
    arrays, missing = {}, []
    for key, name in FILES.items():
        path = _find_file(folder, name)
        if path is None:
            missing.append(name)
            continue
        try:
            arrays[key] = _load_checked(path, name, verify)
        except IDXError as exc:
            if not (in_cache and download):
                raise
            print(f"lenet: discarding bad cached file ({exc}); downloading it again",
                  file=sys.stderr)
            os.remove(path)
            missing.append(name)

    if missing:
        if not os.path.isdir(folder) and not in_cache:
            raise _not_found(folder, origin, missing, "that folder does not exist")
        if not in_cache:
            raise _not_found(folder, origin, missing, f"nothing is downloaded into a folder "
                             f"chosen with {origin}")
        if not download:
            raise _not_found(folder, origin, missing, "download=False, so nothing was downloaded")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise _not_found(folder, origin, missing, "cannot create the cache folder", str(exc)) from exc
        mirrors = list(MIRRORS)
        for key, name in FILES.items():
            if name not in missing:
                continue
            try:
                path, base = _download(folder, name, verify, mirrors)
            except OSError as exc:
                raise _not_found(folder, origin, missing, "download failed (no network?)",
                                 str(exc)) from exc
            mirrors.remove(base)
            mirrors.insert(0, base)  # the next files: the mirror that worked first
            arrays[key] = _load_checked(path, name, verify)

    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise IDXError(f"{folder}: {split} set has {n_img} images but {n_lab} labels")
    return MNIST(source="mnist", path=os.path.abspath(folder), **arrays)


def load_mnist_or_synthetic(root=None, *, download: bool = True, **kw) -> MNIST:
    """:func:`load_mnist`, or, if MNIST is not found, the synthetic set with a warning.

    On :class:`MNISTNotFound` a one-line warning is printed on stderr and
    ``synthetic_digits(60000, 10000)`` is returned (``source == "synthetic"``).  Other errors
    (e.g. a checksum mismatch in a folder you chose) propagate.
    """
    try:
        return load_mnist(root, download=download, **kw)
    except MNISTNotFound as exc:
        print(f"warning: MNIST not found ({exc.reason}; looked in {exc.folder}; set "
              f"{ENV_MNIST_DIR} to a folder with the MNIST files); "
              "using the built-in SYNTHETIC digit set: accuracy figures are not MNIST figures",
              file=sys.stderr, flush=True)
        return synthetic_digits(60000, 10000)


# --------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------

#: Environment variable naming a folder that holds the four Fashion-MNIST files.
ENV_FASHION_DIR = "LENET_FASHION_MNIST_DIR"
#: Where Debian's package dataset-fashion-mnist installs them (``apt-get install dataset-fashion-mnist``).
FASHION_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
#: MD5 of the *uncompressed* Fashion-MNIST files (the same names as MNIST's). Debian re-compresses the
#: upstream .gz files, so the sums published upstream (of the .gz files) do not apply; the content does.
FASHION_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
#: The ten Fashion-MNIST classes, by label.
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def load_fashion_mnist(root=None, *, verify: bool = True) -> MNIST:
    """Load Fashion-MNIST (28x28 uint8 images of clothes, labels 0-9 naming ``FASHION_CLASSES``) as an
    :class:`MNIST` with ``source="fashion-mnist"``.

    Folder: ``root``, else ``$LENET_FASHION_MNIST_DIR``, else ``/usr/share/datasets/fashion-mnist`` (Debian's
    ``dataset-fashion-mnist`` package). Each file raw or ``.gz``; with ``verify`` the MD5 of its uncompressed
    content must be ``FASHION_MD5``'s. Nothing is downloaded: missing files raise :class:`MNISTNotFound`.
    """
    if root is not None:
        folder, origin = os.fspath(root), "the root argument"
    elif os.environ.get(ENV_FASHION_DIR):
        folder, origin = os.environ[ENV_FASHION_DIR], f"${ENV_FASHION_DIR}"
    else:
        folder, origin = FASHION_DEBIAN_DIR, "the default folder of Debian's dataset-fashion-mnist"
    arrays, missing = {}, []
    for key, name in FILES.items():
        path = _find_file(folder, name)
        if path is None:
            missing.append(name)
        else:
            arrays[key] = _load_checked(path, name, verify, FASHION_MD5, "Fashion-MNIST")
    if missing:
        reason = "that folder does not exist" if not os.path.isdir(folder) else "files are missing"
        raise MNISTNotFound(
            f"Fashion-MNIST not found: looked in {folder} (from {origin}); missing {', '.join(missing)} (each raw "
            f"or .gz); {reason}. Install it with `apt-get install dataset-fashion-mnist` (Debian, into "
            f"{FASHION_DEBIAN_DIR}) or set {ENV_FASHION_DIR} to a folder holding the four files.",
            folder=folder, missing=missing, reason=reason)
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise IDXError(f"{folder}: {split} set has {n_img} images but {n_lab} labels")
    return MNIST(source="fashion-mnist", path=os.path.abspath(folder), **arrays)


# --------------------------------------------------------------------------------------
# Synthetic digits
# --------------------------------------------------------------------------------------


def _arc(cx, cy, rx, ry, a0, a1, n=16):
    """Polyline of an elliptic arc; angles in degrees, y pointing down (90 = bottom)."""
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _poly(*pts):
    return np.array(pts, dtype=float)


def _cat(*parts):
    return np.concatenate(parts, axis=0)


def _digit_templates():
    """(label, strokes) pairs; a stroke is a polyline in units: x ~ [-0.6, 0.6], y in [-1, 1] (down)."""
    t = []
    t += [(0, [_arc(0, 0, 0.52, 0.95, -90, 270, 28)])]
    t += [(0, [_arc(0, 0, 0.42, 0.95, -100, 265, 28)])]
    t += [(1, [_poly((0.0, -1.0), (0.0, 1.0))])]
    t += [(1, [_poly((-0.3, -0.62), (0.05, -1.0), (0.05, 1.0))])]
    t += [(1, [_poly((-0.3, -0.62), (0.05, -1.0), (0.05, 1.0)), _poly((-0.3, 1.0), (0.4, 1.0))])]
    t += [(2, [_cat(_arc(0, -0.45, 0.5, 0.5, 200, 380, 14), _poly((-0.5, 1.0), (0.55, 1.0)))])]
    t += [(2, [_cat(_arc(0, -0.45, 0.5, 0.5, 200, 400, 14), _poly((-0.15, 0.55), (-0.5, 0.95)),
                    _arc(-0.3, 0.8, 0.2, 0.2, 90, -60, 5)[1:], _poly((0.55, 0.95)))])]
    t += [(3, [_cat(_arc(0, -0.5, 0.45, 0.45, 200, 450, 16), _arc(0, 0.45, 0.5, 0.52, 270, 520, 16))])]
    t += [(3, [_cat(_poly((-0.45, -1.0), (0.45, -1.0), (-0.05, -0.1)), _arc(0, 0.42, 0.5, 0.55, 250, 520, 16))])]
    t += [(4, [_poly((0.15, -1.0), (-0.55, 0.35), (0.6, 0.35)), _poly((0.3, -0.4), (0.3, 1.0))])]
    t += [(4, [_poly((-0.4, -1.0), (-0.45, 0.2), (0.55, 0.2)), _poly((0.3, -1.0), (0.3, 1.0))])]
    t += [(5, [_cat(_poly((0.5, -1.0), (-0.3, -1.0), (-0.3, -0.05)), _arc(0, 0.4, 0.5, 0.55, 235, 510, 16))])]
    t += [(5, [_poly((-0.3, -1.0), (0.5, -1.0)),
               _cat(_poly((-0.3, -1.0), (-0.35, -0.1)), _arc(0, 0.42, 0.5, 0.55, 240, 500, 16))])]
    t += [(6, [_cat(_poly((0.35, -1.0), (-0.1, -0.7), (-0.4, -0.2), (-0.5, 0.5)), _arc(0, 0.5, 0.5, 0.47, 180, -190, 18))])]
    t += [(6, [_cat(_arc(0.55, 0.2, 1.05, 1.2, 240, 180, 10), _arc(0, 0.52, 0.5, 0.45, 180, -190, 18))])]
    t += [(7, [_poly((-0.55, -1.0), (0.55, -1.0), (-0.05, 1.0))])]
    t += [(7, [_poly((-0.55, -1.0), (0.55, -1.0), (-0.05, 1.0)), _poly((-0.15, 0.0), (0.4, 0.0))])]
    t += [(8, [_arc(0, -0.5, 0.4, 0.45, 0, 360, 20), _arc(0, 0.47, 0.5, 0.5, 0, 360, 22)])]
    t += [(8, [_cat(_arc(0, -0.5, 0.42, 0.46, 90, 450, 20), _arc(0, 0.46, 0.52, 0.5, -90, 270, 22))])]
    t += [(9, [_arc(0, -0.45, 0.48, 0.5, 0, 360, 22), _poly((0.48, -0.45), (0.35, 1.0))])]
    t += [(9, [_arc(0, -0.45, 0.48, 0.5, 0, 360, 22), _arc(-0.6, -0.45, 1.08, 1.45, 0, 85, 10)])]
    return t


_P = 128  # points sampled along each digit's strokes


def _template_points():
    """Per template: P points along its strokes (spaced by arc length) and the spacing."""
    labels, points, spacing = [], [], []
    for label, strokes in _digit_templates():
        lengths = np.array([np.linalg.norm(np.diff(s, axis=0), axis=1).sum() for s in strokes])
        counts = np.maximum(2, np.round(_P * lengths / lengths.sum()).astype(int))
        counts[-1] += _P - counts.sum()
        pts = []
        for s, k in zip(strokes, counts):
            seg = np.linalg.norm(np.diff(s, axis=0), axis=1)
            cum = np.concatenate([[0.0], np.cumsum(seg)])
            u = np.linspace(0.0, cum[-1], k)
            pts.append(np.stack([np.interp(u, cum, s[:, 0]), np.interp(u, cum, s[:, 1])], axis=1))
        labels.append(label)
        points.append(np.concatenate(pts))
        spacing.append(lengths.sum() / _P)
    return np.array(labels), np.stack(points).astype(np.float32), np.array(spacing, np.float32)


_TEMPLATES = None
_SIGMA = 0.9  # px, Gaussian pen profile
_PX_PER_UNIT = 9.5  # digit height 2 units -> 19 px, as in MNIST's 20x20 box


def _blur_matrix():
    """28x28 Gaussian blur matrix (zero padding), truncated at 4 px (no denormals)."""
    d = np.subtract.outer(np.arange(28), np.arange(28))
    g = np.exp(-d ** 2 / (2 * _SIGMA ** 2)) / (math.sqrt(2 * math.pi) * _SIGMA)
    g[np.abs(d) > 4] = 0.0
    return g.astype(np.float32)


def _render(tmpl_idx, params):
    """Render images (n, 28, 28) float32 in [0, 1] for template indices and jitter params."""
    _, t_points, t_spacing = _TEMPLATES
    n = len(tmpl_idx)
    rot, shear, sx, sy, tx, ty, q1, q2, q3, q4, gain, contrast = (a[:, None] for a in params.T)
    p = t_points[tmpl_idx]  # (n, P, 2)
    x, y = p[..., 0], p[..., 1]
    # smooth quadratic warp, then scale, slant (shear) and rotation, then to pixels
    xw = (x + q1 * (y * y - 0.35) + q2 * x * y) * sx
    yw = (y + q3 * (x * x - 0.12) + q4 * x * y) * sy
    xw += shear * yw
    c, s = np.cos(rot) * _PX_PER_UNIT, np.sin(rot) * _PX_PER_UNIT
    # points outside the canvas are clamped to its border (rare: the digit is ~19 px tall)
    col = np.clip(13.5 + tx + (c * xw - s * yw), 0.0, 26.999)
    row = np.clip(13.5 + ty + (s * xw + c * yw), 0.0, 26.999)
    # ink per point such that a straight stroke peaks at 1 after the Gaussian blur
    ink = t_spacing[tmpl_idx, None] * _PX_PER_UNIT * np.sqrt(sx * sy) * (math.sqrt(2 * math.pi) * _SIGMA)
    # bilinear splat of the points into the canvases
    c0, r0 = col.astype(np.int64), row.astype(np.int64)  # floor: coordinates are >= 0
    fc, fr = col - c0, row - r0
    idx = r0 * 28 + c0 + (np.arange(n, dtype=np.int64) * 784)[:, None]
    wr1 = fr * ink
    wr0 = ink - wr1
    idx = np.concatenate([idx, idx + 1, idx + 28, idx + 29], axis=None)
    wts = np.concatenate([wr0 - wr0 * fc, wr0 * fc, wr1 - wr1 * fc, wr1 * fc], axis=None)
    canvas = np.bincount(idx, wts, minlength=n * 784).astype(np.float32).reshape(n, 28, 28)
    # separable Gaussian blur (the pen): G @ canvas @ G for each image.  A stack of small
    # products rather than one tall one: small GEMMs stay single-threaded, which is much
    # faster when the cores are busy (multithreaded OpenBLAS degrades badly under load).
    g = _blur_matrix()
    img = np.matmul(g, np.matmul(canvas, g))
    # pen pressure: the saturation gain sets the stroke width; the faint Gaussian halo
    # (below 0.12) is cut, so that the background stays black as in MNIST
    img = img * gain[:, :, None]
    img -= 0.12
    np.clip(img, 0.0, 0.88, out=img)
    img *= contrast[:, :, None] / 0.88
    return img


def _synthetic_split(n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    global _TEMPLATES
    if _TEMPLATES is None:
        _TEMPLATES = _template_points()
    t_labels = _TEMPLATES[0]
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)  # balanced to within one
    # pick a template (style variant) of the right class for each image
    counts = np.bincount(t_labels, minlength=10)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    order = np.argsort(t_labels, kind="stable")
    pick = (rng.random(n) * counts[labels]).astype(np.int64)
    tmpl_idx = order[starts[labels] + pick]
    # per-image jitter, uniform in [lo, hi]: rotation (rad), slant (shear), x and y scale,
    # x and y shift (px), four quadratic-warp coefficients, pen gain (thickness), contrast
    u = rng.random((n, 12))
    lo = np.array([-0.3, -0.35, 0.8, 0.85, -1.8, -1.8, -0.12, -0.12, -0.12, -0.12, 1.3, 0.8])
    hi = np.array([0.3, 0.35, 1.12, 1.08, 1.8, 1.8, 0.12, 0.12, 0.12, 0.12, 5.0, 1.0])
    params = (lo + (hi - lo) * u).astype(np.float32)
    images = np.empty((n, 28, 28), np.uint8)
    chunk = 4096  # fixed, so that results never depend on it
    for i in range(0, n, chunk):
        img = _render(tmpl_idx[i:i + chunk], params[i:i + chunk])
        # sparse speckle noise: ~0.3% of the pixels get up to +100 grey levels
        m = img.size
        k = rng.binomial(m, 0.003)
        img.reshape(-1)[rng.integers(0, m, k)] += rng.random(k, dtype=np.float32) * (100 / 255)
        img *= 255.0
        img += 0.5
        np.clip(img, 0.0, 255.0, out=img)
        images[i:i + chunk] = img  # truncating cast of x + 0.5: rounding
    return images, labels


def synthetic_digits(n_train: int = 6000, n_test: int = 1000, seed: int = 0) -> MNIST:
    """A built-in SYNTHETIC digit set (``source="synthetic"``), not MNIST.

    Each digit 0-9 is drawn from one of a few stroke templates (polylines and arcs) with
    random rotation, slant, scale, translation and a smooth quadratic warp, rendered with
    an anti-aliased Gaussian pen of random thickness, random contrast and sparse speckle
    noise, as uint8 (N, 28, 28) images like MNIST's.  Classes are balanced
    (to within one image).  The result depends only on ``seed``; the train and test sets
    come from independent streams, so the test set does not depend on ``n_train``.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError("n_train and n_test must be >= 0")
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    train_images, train_labels = _synthetic_split(int(n_train), train_rng)
    test_images, test_labels = _synthetic_split(int(n_test), test_rng)
    return MNIST(train_images, train_labels, test_images, test_labels, source="synthetic", path=None)


# --------------------------------------------------------------------------------------
# Network input helpers
# --------------------------------------------------------------------------------------


def to_float(images) -> np.ndarray:
    """uint8 images (N, H, W), (H, W) or (N, 1, H, W) -> C-contiguous float32 (N, 1, H, W) in [0, 1].

    Values are ``images / 255``.  Non-uint8 input is refused (TypeError) so that
    already-scaled data is never scaled twice.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"to_float expects uint8 images (0-255), got {images.dtype}")
    if images.ndim == 2:
        images = images[None]
    if images.ndim == 3:
        images = images[:, None]
    elif not (images.ndim == 4 and images.shape[1] == 1):
        raise ValueError(f"to_float expects (N, H, W), (H, W) or (N, 1, H, W) images, got shape {images.shape}")
    out = np.empty(images.shape, dtype=np.float32)
    np.divide(images, np.float32(255.0), out=out, dtype=np.float32)
    return out


def batches(images, labels, batch_size: int, *, shuffle: bool = False,
            rng: Optional[np.random.Generator] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x, y)`` minibatches covering every example once (last batch may be smaller).

    ``x`` is a slice of ``images`` with its dtype unchanged (apply :func:`to_float` to uint8
    batches).  With ``shuffle=True`` the order is ``rng.permutation(len(images))``; ``rng``
    (a ``numpy.random.Generator``, or a seed) is then required so that runs are reproducible.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    n = len(images)
    if shuffle:
        if rng is None:
            raise ValueError("shuffle=True needs rng (e.g. rng=np.random.default_rng(seed))")
        order = np.random.default_rng(rng).permutation(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield images[idx], labels[idx]
    else:
        for i in range(0, n, batch_size):
            yield images[i:i + batch_size], labels[i:i + batch_size]
