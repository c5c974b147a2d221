"""Tests of lenet.data: IDX reading, MNIST loading/verification/download, synthetic digits.

Real-MNIST tests read the folder named by $LENET_MNIST_DIR (CI: ../shared/data/mnist from
the project root) and are skipped when it is unset or missing.  Everything else runs
offline on small generated files; the network is never used (urlopen is replaced).
"""

import gzip
import hashlib
import io
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

try:
    from lenet import data
except ImportError as exc:
    # lenet/__init__.py imports the compiled C++ extension, which may not be built yet.
    # data.py needs numpy only, so then load it straight from its file.  Any other missing
    # module (numpy, ...) is a real error.
    if exc.name and not exc.name.startswith("lenet"):
        raise
    import importlib.util

    _spec = importlib.util.spec_from_file_location("lenet_data_standalone", ROOT / "lenet" / "data.py")
    data = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = data  # dataclasses looks the module up while building MNIST
    _spec.loader.exec_module(data)

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

# Facts about the real MNIST files.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

_ENV_MNIST_DIR = os.environ.get("LENET_MNIST_DIR")  # read before the autouse fixture clears it


# --------------------------------------------------------------------------------------
# Helpers and fixtures
# --------------------------------------------------------------------------------------


def idx_bytes(arr, code=None):
    """Encode an array as an IDX file (big-endian data)."""
    arr = np.asarray(arr)
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    if code is None:
        code = codes[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def header(code, *dims):
    return bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


def write(path, payload, gz=False):
    path = Path(path)
    path.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return path


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test sees the caller's MNIST folder/cache or reaches the network."""
    monkeypatch.delenv("LENET_MNIST_DIR", raising=False)
    monkeypatch.setenv("LENET_CACHE_DIR", str(tmp_path / "default-cache"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


@pytest.fixture
def forbid_network(monkeypatch):
    def fail(*args, **kwargs):  # an AssertionError is not swallowed as a download failure
        raise AssertionError("the network must not be used here")

    monkeypatch.setattr(urllib.request, "urlopen", fail)


def fake_mnist_files(n_train=30, n_test=20, seed=0):
    """Small, valid MNIST-shaped IDX files: {name: uncompressed bytes}."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, n_train, dtype=np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, n_test, dtype=np.uint8)),
    }


@pytest.fixture
def fake(monkeypatch):
    """Fake MNIST files whose MD5 sums replace the real ones in data.MD5."""
    files = fake_mnist_files()
    for name, payload in files.items():
        monkeypatch.setitem(data.MD5, name, hashlib.md5(payload).hexdigest())
    return files


class FakeResponse:
    """Stands in for urlopen's response: serves bytes in chunks, can fail midway."""

    def __init__(self, payload, fail_after=None, content_length=None, on_read=None):
        self._buf = io.BytesIO(payload)
        self._fail_after = fail_after
        self._on_read = on_read
        n = len(payload) if content_length is None else content_length
        self.headers = {"Content-Length": str(n)}

    def read(self, n=-1):
        if self._on_read:
            self._on_read()
        if self._fail_after is not None and self._buf.tell() >= self._fail_after:
            raise ConnectionResetError("connection reset by peer (simulated)")
        if self._fail_after is not None:
            n = min(n if n > 0 else 1 << 30, self._fail_after - self._buf.tell())
        return self._buf.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeServer:
    """A replacement for urllib.request.urlopen serving a {url: handler} table."""

    def __init__(self, routes):
        self.routes = routes  # url -> bytes | Exception | callable() -> FakeResponse
        self.calls = []

    def __call__(self, req, timeout=None, **kwargs):
        url = getattr(req, "full_url", req)
        self.calls.append((url, timeout))
        handler = self.routes.get(url, urllib.error.HTTPError(url, 404, "Not Found", {}, None))
        if isinstance(handler, BaseException):
            raise handler
        if callable(handler):
            return handler()
        return FakeResponse(handler)


def routes_for(files, mirror):
    return {mirror + name + ".gz": gzip.compress(payload, mtime=0) for name, payload in files.items()}


def leftovers(folder):
    """Files in folder other than complete MNIST files (e.g. temporary .part files)."""
    return sorted(f for f in os.listdir(folder) if f not in {n + ".gz" for n in NAMES} | set(NAMES))


# --------------------------------------------------------------------------------------
# Real MNIST (skipped without $LENET_MNIST_DIR)
# --------------------------------------------------------------------------------------


def _real_dir():
    if not _ENV_MNIST_DIR:
        pytest.skip("real MNIST tests need LENET_MNIST_DIR (e.g. LENET_MNIST_DIR=../shared/data/mnist)")
    for base in (Path.cwd(), ROOT):  # relative paths: to the cwd, else to the project root
        p = (base / _ENV_MNIST_DIR).resolve()
        if p.is_dir():
            return p
    pytest.skip(f"LENET_MNIST_DIR={_ENV_MNIST_DIR} is not a folder")


@pytest.fixture(scope="module")
def real_dir():
    return _real_dir()


@pytest.fixture(scope="module")
def real(real_dir):
    return data.load_mnist(real_dir, download=False)


def _mirror_folder(src, dst, skip=()):
    """Link (or copy) the real MNIST files of src into dst, except the names in skip."""
    dst.mkdir(exist_ok=True)
    for f in os.listdir(src):
        if any(f.startswith(s) for s in skip) or not any(f.startswith(n) for n in NAMES):
            continue
        try:
            os.symlink(src / f, dst / f)
        except OSError:
            shutil.copy(src / f, dst / f)


def test_real_mnist_shapes_dtypes_and_facts(real, real_dir):
    assert real.source == "mnist" and not real.is_synthetic
    assert Path(real.path) == real_dir
    assert real.train_images.shape == (60000, 28, 28) and real.train_images.dtype == np.uint8
    assert real.train_labels.shape == (60000,) and real.train_labels.dtype == np.uint8
    assert real.test_images.shape == (10000, 28, 28) and real.test_images.dtype == np.uint8
    assert real.test_labels.shape == (10000,) and real.test_labels.dtype == np.uint8
    assert real.train_labels.max() == 9 and real.train_labels.min() == 0
    train_counts = np.bincount(real.train_labels, minlength=10)
    assert train_counts.sum() == 60000
    assert train_counts.tolist() == TRAIN_COUNTS
    assert np.bincount(real.test_labels, minlength=10).tolist() == TEST_COUNTS
    assert real.train_labels[0] == 5 and real.test_labels[0] == 7
    assert real.train_images.max() == 255 and real.train_images.min() == 0
    assert 0.10 < real.train_images.mean() / 255 < 0.15  # MNIST's mean intensity is ~0.13
    assert "60000" in repr(real) and "mnist" in repr(real)


def test_real_mnist_via_env_var(real, real_dir, monkeypatch, forbid_network):
    monkeypatch.setenv("LENET_MNIST_DIR", str(real_dir))
    m = data.load_mnist(download=True)  # found: must not touch the network
    assert Path(m.path) == real_dir
    assert np.array_equal(m.test_labels, real.test_labels)
    assert np.array_equal(m.train_images[:100], real.train_images[:100])


def test_real_raw_and_gz_give_the_same_arrays(real, real_dir, tmp_path):
    folder = tmp_path / "mixed"
    _mirror_folder(real_dir, folder, skip=("t10k",))
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(real_dir / (name + ".gz"), "rb") as f:
            (folder / name).write_bytes(f.read())  # raw copies of the test files
        assert np.array_equal(data.read_idx(folder / name), data.read_idx(real_dir / (name + ".gz")))
    m = data.load_mnist(folder, download=False)  # raw test files pass the checksum too
    assert np.array_equal(m.test_images, real.test_images)
    assert np.array_equal(m.test_labels, real.test_labels)
    assert np.array_equal(m.train_labels, real.train_labels)


def test_real_checksum_mismatch_is_detected(real, real_dir, tmp_path):
    folder = tmp_path / "tampered"
    _mirror_folder(real_dir, folder, skip=("t10k-labels",))
    with gzip.open(real_dir / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        payload = bytearray(f.read())
    payload[8 + 123] = (payload[8 + 123] + 1) % 10  # still a valid label file
    write(folder / "t10k-labels-idx1-ubyte.gz", bytes(payload), gz=True)
    with pytest.raises(data.ChecksumError) as ei:
        data.load_mnist(folder, download=False)
    msg = str(ei.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and data.MD5["t10k-labels-idx1-ubyte"] in msg
    assert isinstance(ei.value, data.IDXError)
    m = data.load_mnist(folder, download=False, verify=False)
    assert m.test_labels[123] == (real.test_labels[123] + 1) % 10


def test_real_download_path_with_real_checksums(real_dir, tmp_path, monkeypatch):
    """The download code accepts the real files (served locally), gzip wrapper and all."""
    mirror = data.MIRRORS[0]
    routes = {mirror + f: (real_dir / f).read_bytes() for f in os.listdir(real_dir) if f.endswith(".gz")}
    server = FakeServer(routes)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    m = data.load_mnist(cache_dir=tmp_path / "cache")
    assert m.train_labels[0] == 5 and m.test_images.shape == (10000, 28, 28)
    assert len(server.calls) == 4


# --------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_all_types_raw_and_gz(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((3, 5, 7)) * 100).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        arr = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (3, 5, 7), dtype=dtype, endpoint=True)
    path = write(tmp_path / ("a.idx.gz" if gz else "a.idx"), idx_bytes(arr), gz=gz)
    out = data.read_idx(path)
    assert out.shape == (3, 5, 7)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert np.array_equal(out, arr)
    assert out.flags.writeable
    out[0, 0, 0] = 0  # the array is the caller's


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path):
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    path = write(tmp_path / "no-suffix", idx_bytes(arr), gz=True)
    assert np.array_equal(data.read_idx(path), arr)
    assert np.array_equal(data.read_idx(str(path)), arr)  # str paths too


def test_read_idx_big_endian_values(tmp_path):
    path = write(tmp_path / "x", header(0x0B, 2) + b"\x01\x02\xff\xfe")
    assert data.read_idx(path).tolist() == [0x0102, -2]
    path = write(tmp_path / "y", header(0x0D, 1) + np.array([1.5], dtype=">f4").tobytes())
    assert data.read_idx(path).tolist() == [1.5]


def test_read_idx_missing_file_is_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "nope")


GOOD = idx_bytes(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize(
    "payload, gz, phrases",
    [
        (b"", False, ["empty"]),
        (b"", True, ["empty"]),
        (b"\x00\x00", False, ["too short"]),
        (b"\x12\x34\x08\x03" + GOOD[4:], False, ["bad magic", "0x12340803"]),
        (b"\x00\x01\x08\x03" + GOOD[4:], True, ["bad magic"]),
        (b"\x00\x00\x07\x03" + GOOD[4:], False, ["unsupported", "0x07"]),
        (b"\x00\x00\x08\x00", False, ["0 dimensions"]),
        (GOOD[:10], False, ["truncated header"]),
        (GOOD[:-5], False, ["expected 24 bytes of data, found 19"]),
        (GOOD[:-5], True, ["expected 24 bytes of data, found 19"]),
        (GOOD + b"xyz", False, ["3 trailing byte"]),
        (GOOD + b"xyz", True, ["3 trailing byte"]),
        (header(0x08, 2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1) + b"\x00" * 100, False, ["expected", "found 100"]),
        (header(0x0E, 2 ** 32 - 1, 2 ** 32 - 1) + b"\x00" * 100, True, ["expected", "cannot hold"]),
        (header(0x08, 60000, 28, 28) + b"\x00" * 784, True, ["expected 47040000 bytes of data"]),
    ],
    ids=["empty", "empty-gz", "short", "magic", "magic-gz", "type", "ndim0", "trunc-header",
         "trunc-data", "trunc-data-gz", "trailing", "trailing-gz", "huge", "huge-gz", "big-gz"],
)
def test_malformed_idx_raises_helpful_idxerror(tmp_path, payload, gz, phrases):
    path = write(tmp_path / ("bad.gz" if gz else "bad"), payload, gz=gz)
    t0 = time.perf_counter()
    with pytest.raises(data.IDXError) as ei:
        data.read_idx(path)
    assert time.perf_counter() - t0 < 2.0  # sizes are checked before anything big is read
    msg = str(ei.value)
    assert str(path) in msg
    for phrase in phrases:
        assert phrase in msg, msg


def test_corrupt_gzip_raises_idxerror(tmp_path):
    big = idx_bytes(np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    compressed = bytearray(gzip.compress(big, mtime=0))
    broken = compressed.copy()
    broken[len(broken) // 2: len(broken) // 2 + 16] = b"\xff" * 16  # garbage in the deflate stream
    cases = {
        "corrupt.gz": bytes(broken),
        "cut.gz": bytes(compressed[: len(compressed) // 2]),  # gzip stream ends early
        "crc.gz": bytes(compressed[:-8]) + b"\x00\x00\x00\x00" + bytes(compressed[-4:]),  # bad CRC
        "header-only.gz": b"\x1f\x8b\x08",
    }
    for name, payload in cases.items():
        path = write(tmp_path / name, payload)
        with pytest.raises(data.IDXError) as ei:
            data.read_idx(path)
        assert name in str(ei.value)
        assert "gzip" in str(ei.value) or "truncated" in str(ei.value), str(ei.value)


def test_gz_name_without_gzip_content(tmp_path):
    path = write(tmp_path / "t10k-labels-idx1-ubyte.gz", GOOD)
    with pytest.raises(data.IDXError, match="not gzip"):
        data.read_idx(path)


def test_read_idx_never_crashes_on_garbage(tmp_path):
    """Random bytes and random mutations of a valid file: an array or an IDXError, nothing else."""
    rng = np.random.default_rng(123)
    good = idx_bytes(rng.integers(0, 256, (4, 6, 5), dtype=np.uint8))
    n_errors = 0
    for i in range(300):
        kind = i % 3
        if kind == 0:
            payload = rng.integers(0, 256, rng.integers(0, 64), dtype=np.uint8).tobytes()
        else:
            b = bytearray(good)
            for _ in range(rng.integers(1, 4)):
                b[rng.integers(0, len(b))] = rng.integers(0, 256)
            payload = bytes(b[: rng.integers(0, len(b) + 1)]) if rng.random() < 0.3 else bytes(b)
        gz = kind == 2
        if gz and rng.random() < 0.5:  # also mutate the compressed bytes themselves
            c = bytearray(gzip.compress(payload, mtime=0))
            c[rng.integers(0, len(c))] ^= 0xFF
            path = write(tmp_path / f"f{i}", bytes(c))
        else:
            path = write(tmp_path / f"f{i}", payload, gz=gz)
        try:
            out = data.read_idx(path)
        except data.IDXError:
            n_errors += 1
        else:
            assert isinstance(out, np.ndarray)
    assert n_errors > 100  # the fuzzing really produced malformed files


# --------------------------------------------------------------------------------------
# load_mnist on local folders (small fake MNIST files with matching checksums)
# --------------------------------------------------------------------------------------


def test_load_folder_mixing_raw_and_gz(tmp_path, fake, forbid_network):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for i, (name, payload) in enumerate(fake.items()):
        write(folder / (name + (".gz" if i % 2 else "")), payload, gz=bool(i % 2))
    m = data.load_mnist(folder)
    assert m.source == "mnist" and Path(m.path) == folder.resolve()
    assert m.train_images.shape == (30, 28, 28) and m.test_labels.shape == (20,)
    assert np.array_equal(m.train_images, data.read_idx(folder / "train-images-idx3-ubyte"))
    assert np.array_equal(m.train_labels, data.read_idx(folder / "train-labels-idx1-ubyte.gz"))


def test_checksum_mismatch_names_the_file(tmp_path, fake, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, payload in fake.items():
        write(folder / (name + ".gz"), payload, gz=True)
    monkeypatch.setitem(data.MD5, "train-labels-idx1-ubyte", "0" * 32)
    with pytest.raises(data.ChecksumError) as ei:
        data.load_mnist(folder, download=False)
    msg = str(ei.value)
    assert "train-labels-idx1-ubyte.gz" in msg and "0" * 32 in msg
    assert hashlib.md5(fake["train-labels-idx1-ubyte"]).hexdigest() in msg
    assert data.load_mnist(folder, verify=False).train_labels.shape == (30,)


def test_wrong_kind_of_file_is_refused_even_without_verify(tmp_path, fake):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, payload in fake.items():
        write(folder / name, payload)
    write(folder / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((20, 28), np.uint8)))
    with pytest.raises(data.IDXError, match="t10k-images-idx3-ubyte.*dimensions"):
        data.load_mnist(folder, verify=False)
    write(folder / "t10k-images-idx3-ubyte", fake["t10k-images-idx3-ubyte"])
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes(np.full(20, 10, np.uint8)))
    with pytest.raises(data.IDXError, match="0-9"):
        data.load_mnist(folder, verify=False)
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(data.IDXError, match="20 images but 19 labels"):
        data.load_mnist(folder, verify=False)


def test_not_found_with_download_false(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.MNISTNotFound) as ei:
        data.load_mnist(empty, download=False)
    assert isinstance(ei.value, FileNotFoundError)
    msg = str(ei.value)
    assert str(empty) in msg and "LENET_MNIST_DIR" in msg
    assert all(n in msg for n in NAMES)
    assert set(ei.value.missing) == set(NAMES)


def test_user_folder_is_never_downloaded_into(tmp_path, monkeypatch, forbid_network):
    for how in ("root", "env"):
        folder = tmp_path / how
        folder.mkdir()
        if how == "env":
            monkeypatch.setenv("LENET_MNIST_DIR", str(folder))
        with pytest.raises(data.MNISTNotFound) as ei:
            data.load_mnist(folder if how == "root" else None, download=True)
        assert str(folder) in str(ei.value)
        assert os.listdir(folder) == []
    with pytest.raises(data.MNISTNotFound, match="does not exist"):
        data.load_mnist(tmp_path / "missing")


def test_root_argument_beats_env_var(tmp_path, fake, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, payload in fake.items():
        write(folder / name, payload)
    monkeypatch.setenv("LENET_MNIST_DIR", str(tmp_path / "elsewhere"))
    assert data.load_mnist(folder, download=False).train_images.shape == (30, 28, 28)
    with pytest.raises(data.MNISTNotFound, match="elsewhere"):
        data.load_mnist(download=False)


def test_cache_folder_resolution(tmp_path, monkeypatch):
    def where(**kw):
        with pytest.raises(data.MNISTNotFound) as ei:
            data.load_mnist(download=False, **kw)
        return ei.value.folder

    monkeypatch.setenv("LENET_CACHE_DIR", str(tmp_path / "lc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Path(where(cache_dir=tmp_path / "arg")) == tmp_path / "arg" / "mnist"
    assert Path(where()) == tmp_path / "lc" / "mnist"
    monkeypatch.delenv("LENET_CACHE_DIR")
    assert Path(where()) == tmp_path / "xdg" / "lenet" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert Path(where()) == tmp_path / "home" / ".cache" / "lenet" / "mnist"
    monkeypatch.setenv("LENET_MNIST_DIR", str(tmp_path / "env"))
    assert Path(where(cache_dir=tmp_path / "arg")) == tmp_path / "env"


# --------------------------------------------------------------------------------------
# Downloading (offline: urlopen serves local bytes)
# --------------------------------------------------------------------------------------


def test_download_falls_back_through_mirrors_and_caches(tmp_path, fake, monkeypatch, capsys):
    m0, m1, m2 = data.MIRRORS
    routes = routes_for(fake, m1)
    routes.update({m0 + n + ".gz": urllib.error.URLError("name resolution failed") for n in NAMES})
    server = FakeServer(routes)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    cache = tmp_path / "cache"
    m = data.load_mnist(cache_dir=cache)
    assert m.source == "mnist" and Path(m.path) == (cache / "mnist").resolve()
    stored = cache / "mnist" / "train-images-idx3-ubyte.gz"
    assert np.array_equal(m.train_images, data.read_idx(stored))
    assert leftovers(cache / "mnist") == []
    urls = [u for u, _ in server.calls]
    assert urls[:2] == [m0 + NAMES[0] + ".gz", m1 + NAMES[0] + ".gz"]  # mirrors in order
    assert not any(u.startswith(m2) for u in urls)
    assert len(urls) == 5  # once a mirror works, the other files come from it directly
    assert all(t is not None and 0 < t <= 120 for _, t in server.calls)  # always a timeout
    assert "downloading" in capsys.readouterr().err
    # the second time everything comes from the cache
    monkeypatch.setattr(urllib.request, "urlopen", FakeServer({}))
    m2_ = data.load_mnist(cache_dir=cache)
    assert np.array_equal(m2_.test_labels, m.test_labels)


def test_download_interrupted_midway_leaves_no_partial_file(tmp_path, fake, monkeypatch):
    cache = tmp_path / "cache"
    folder = cache / "mnist"
    target = "t10k-images-idx3-ubyte"  # downloaded after both training files
    seen_tmp = []

    def spy():  # while downloading: a temporary file in the same folder, never the final name
        names = os.listdir(folder)
        assert target + ".gz" not in names
        seen_tmp.extend(n for n in names if target in n)

    routes = {}
    for mirror in data.MIRRORS:
        routes.update(routes_for(fake, mirror))
        payload = routes[mirror + target + ".gz"]
        routes[mirror + target + ".gz"] = (
            lambda p=payload: FakeResponse(p, fail_after=len(p) // 2, on_read=spy))
    monkeypatch.setattr(urllib.request, "urlopen", FakeServer(routes))
    with pytest.raises(data.MNISTNotFound) as ei:
        data.load_mnist(cache_dir=cache)
    msg = str(ei.value)
    assert "download failed" in msg and "ConnectionResetError" in msg and "LENET_MNIST_DIR" in msg
    assert seen_tmp, "the download was not written to a temporary file in the target folder"
    assert not (folder / (target + ".gz")).exists() and not (folder / target).exists()
    assert leftovers(folder) == []
    assert sorted(os.listdir(folder)) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    # files completely downloaded are kept (they were verified); next time only the rest is fetched
    server = FakeServer(routes_for(fake, data.MIRRORS[0]))
    monkeypatch.setattr(urllib.request, "urlopen", server)
    m = data.load_mnist(cache_dir=cache)
    assert [u for u, _ in server.calls] == [data.MIRRORS[0] + n + ".gz" for n in NAMES[2:]]
    assert m.train_images.shape == (30, 28, 28)


def test_download_rejects_bad_content(tmp_path, fake, monkeypatch):
    m0, m1, _ = data.MIRRORS
    routes = routes_for(fake, m1)
    wrong = fake_mnist_files(seed=99)  # valid IDX, wrong checksum
    routes.update(routes_for(wrong, m0))
    short = routes[m1 + NAMES[3] + ".gz"]
    routes[m1 + NAMES[3] + ".gz"] = lambda: FakeResponse(short[:-10], content_length=len(short))
    routes.update(routes_for(fake, data.MIRRORS[2]))
    server = FakeServer(routes)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    m = data.load_mnist(cache_dir=tmp_path / "c")
    assert np.array_equal(m.test_labels, data.read_idx(write(tmp_path / "l", fake[NAMES[3]])))
    urls = [u for u, _ in server.calls]
    assert urls.count(data.MIRRORS[2] + NAMES[3] + ".gz") == 1  # third mirror needed only for the short one
    assert leftovers(tmp_path / "c" / "mnist") == []
    # every mirror serving wrong bytes: nothing is kept
    monkeypatch.setattr(urllib.request, "urlopen", FakeServer(
        {url: p for mirror in data.MIRRORS for url, p in routes_for(wrong, mirror).items()}))
    with pytest.raises(data.MNISTNotFound, match="checksum mismatch"):
        data.load_mnist(cache_dir=tmp_path / "d")
    assert os.listdir(tmp_path / "d" / "mnist") == []


def test_no_network_gives_mnist_not_found(tmp_path):
    with pytest.raises(data.MNISTNotFound) as ei:  # the autouse fixture refuses all URLs
        data.load_mnist(cache_dir=tmp_path / "cache")
    msg = str(ei.value)
    assert "download failed" in msg and "no network" in msg
    assert "LENET_MNIST_DIR" in msg and str(tmp_path / "cache" / "mnist") in msg
    assert all(m in msg for m in data.MIRRORS)


def test_corrupt_cached_file_is_downloaded_again(tmp_path, fake, monkeypatch):
    folder = tmp_path / "cache" / "mnist"
    folder.mkdir(parents=True)
    for name, payload in fake.items():
        write(folder / (name + ".gz"), payload, gz=True)
    write(folder / "t10k-images-idx3-ubyte.gz", fake["t10k-images-idx3-ubyte"][:-50], gz=True)  # truncated
    with pytest.raises(data.IDXError, match="expected"):
        data.load_mnist(cache_dir=tmp_path / "cache", download=False)
    server = FakeServer(routes_for(fake, data.MIRRORS[0]))
    monkeypatch.setattr(urllib.request, "urlopen", server)
    m = data.load_mnist(cache_dir=tmp_path / "cache")
    assert [u for u, _ in server.calls] == [data.MIRRORS[0] + "t10k-images-idx3-ubyte.gz"]
    assert m.test_images.shape == (20, 28, 28)


def test_load_mnist_or_synthetic(tmp_path, fake, monkeypatch, capsys):
    calls = []
    small = data.synthetic_digits(20, 10, seed=3)

    def fake_synthetic(*args, **kwargs):
        calls.append((args, kwargs))
        return small

    monkeypatch.setattr(data, "synthetic_digits", fake_synthetic)
    out = data.load_mnist_or_synthetic(tmp_path / "nothing-here")
    assert out is small and out.source == "synthetic"
    assert calls == [((60000, 10000), {})]
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "MNIST not found" in err and "SYNTHETIC" in err and "not MNIST figures" in err
    assert "nothing-here" in err
    # with MNIST present: the real thing, no warning
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, payload in fake.items():
        write(folder / name, payload)
    assert data.load_mnist_or_synthetic(folder).source == "mnist"
    assert calls == [((60000, 10000), {})] and capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------
# Synthetic digits
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth():
    return data.synthetic_digits(6000, 2000, seed=0)


def test_synthetic_shapes_and_labelling(synth):
    assert synth.source == "synthetic" and synth.path is None and synth.is_synthetic
    assert synth.train_images.shape == (6000, 28, 28) and synth.train_images.dtype == np.uint8
    assert synth.train_labels.shape == (6000,) and synth.train_labels.dtype == np.uint8
    assert synth.test_images.shape == (2000, 28, 28) and synth.test_labels.shape == (2000,)
    assert "synthetic" in repr(synth)


def test_synthetic_classes_are_balanced(synth):
    for labels in (synth.train_labels, synth.test_labels):
        counts = np.bincount(labels, minlength=10)
        assert len(counts) == 10
        assert counts.min() >= 0.9 * len(labels) / 10, counts


def test_synthetic_looks_like_digits(synth):
    x = synth.train_images
    assert x.max() == 255
    assert (x == 0).mean() > 0.6  # mostly black background, as in MNIST
    ink = (x > 128).sum(axis=(1, 2))
    assert ink.min() >= 15  # every image has a visible stroke
    assert 0.05 < x.mean() / 255 < 0.25
    border = np.concatenate([x[:, :2].ravel(), x[:, -2:].ravel(), x[:, :, :2].ravel(), x[:, :, -2:].ravel()])
    assert border.mean() < x.mean() / 4  # digits are centred
    same = x[synth.train_labels == 1][:50].reshape(50, -1)
    assert len(np.unique(same, axis=0)) == 50  # jitter: no two images alike


def test_synthetic_is_deterministic_per_seed():
    a = data.synthetic_digits(300, 100, seed=7)
    b = data.synthetic_digits(300, 100, seed=7)
    c = data.synthetic_digits(300, 100, seed=8)
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_labels, b.test_labels)
    assert not np.array_equal(a.train_images, c.train_images)
    d = data.synthetic_digits(5000, 100, seed=7)  # more than one render chunk; test set unchanged
    assert np.array_equal(d.test_images, a.test_images)
    assert np.array_equal(d.train_images[:300], data.synthetic_digits(5000, 0, seed=7).train_images[:300])


def test_synthetic_is_learnable_by_nearest_class_mean(synth):
    """A nearest-class-mean classifier does far better than chance (10%)."""
    x = data.to_float(synth.train_images).reshape(len(synth.train_images), -1)
    means = np.stack([x[synth.train_labels == c].mean(axis=0) for c in range(10)])
    xt = data.to_float(synth.test_images).reshape(len(synth.test_images), -1)
    d2 = (xt ** 2).sum(1)[:, None] - 2 * xt @ means.T + (means ** 2).sum(1)[None, :]
    acc = (d2.argmin(axis=1) == synth.test_labels).mean()
    assert acc > 0.6, acc
    # and the labels matter: shuffled labels give chance-level class means
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(synth.train_labels)
    means = np.stack([x[shuffled == c].mean(axis=0) for c in range(10)])
    d2 = (xt ** 2).sum(1)[:, None] - 2 * xt @ means.T + (means ** 2).sum(1)[None, :]
    assert (d2.argmin(axis=1) == synth.test_labels).mean() < 0.3


def test_synthetic_is_fast_enough():
    t0 = time.perf_counter()
    s = data.synthetic_digits(20000, 0, seed=1)
    dt = time.perf_counter() - t0
    assert s.train_images.shape == (20000, 28, 28)
    assert dt < 10.0, f"{dt:.1f} s for 20000 images"  # ~0.5 s on a quiet machine


def test_synthetic_rejects_negative_sizes():
    with pytest.raises(ValueError):
        data.synthetic_digits(-1, 10)


# --------------------------------------------------------------------------------------
# to_float and batches
# --------------------------------------------------------------------------------------


def test_to_float():
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    x[0, 0, 0], x[0, 0, 1] = 0, 255
    f = data.to_float(x)
    assert f.shape == (5, 1, 28, 28) and f.dtype == np.float32 and f.flags.c_contiguous
    assert f[0, 0, 0, 0] == 0.0 and f[0, 0, 0, 1] == 1.0
    assert f.min() >= 0.0 and f.max() <= 1.0
    assert np.array_equal(f[:, 0], x.astype(np.float32) / np.float32(255))
    one = data.to_float(x[3])
    assert one.shape == (1, 1, 28, 28) and np.array_equal(one[0], f[3])
    flipped = data.to_float(x[:, ::-1, ::2])  # non-contiguous input
    assert flipped.flags.c_contiguous and flipped.shape == (5, 1, 28, 14)
    assert np.array_equal(data.to_float(x[:, None]), f)
    with pytest.raises(TypeError):
        data.to_float(f)  # already scaled: refused rather than divided again
    with pytest.raises(ValueError):
        data.to_float(np.zeros((2, 3, 28, 28), np.uint8))


def test_batches_in_order():
    x = np.arange(10 * 2 * 2, dtype=np.uint8).reshape(10, 2, 2)
    y = np.arange(10)
    got = list(data.batches(x, y, 4, shuffle=False))
    assert [len(b[1]) for b in got] == [4, 4, 2]  # the last partial batch is included
    assert np.array_equal(np.concatenate([b[1] for b in got]), y)
    assert np.array_equal(np.concatenate([b[0] for b in got]), x)
    assert got[0][0].dtype == np.uint8


def test_batches_shuffled():
    n = 103
    x = np.arange(n, dtype=np.int64).repeat(4).reshape(n, 2, 2)
    y = np.arange(n)
    def run(seed):
        return list(data.batches(x, y, 10, shuffle=True, rng=np.random.default_rng(seed)))
    a, b, c = run(1), run(1), run(2)
    ys = np.concatenate([bb[1] for bb in a])
    assert sorted(ys.tolist()) == list(range(n))  # every example exactly once
    assert not np.array_equal(ys, y)  # really shuffled
    assert all(np.array_equal(bx[:, 0, 0], by) for bx, by in a)  # images stay with their labels
    assert [len(bb[1]) for bb in a] == [10] * 10 + [3]
    assert all(np.array_equal(p[1], q[1]) for p, q in zip(a, b))  # same seed, same order
    assert not np.array_equal(ys, np.concatenate([bb[1] for bb in c]))
    rng = np.random.default_rng(5)  # one generator: a new order each epoch
    e1 = np.concatenate([bb[1] for bb in data.batches(x, y, 10, shuffle=True, rng=rng)])
    e2 = np.concatenate([bb[1] for bb in data.batches(x, y, 10, shuffle=True, rng=rng)])
    assert not np.array_equal(e1, e2)


def test_batches_argument_errors():
    x, y = np.zeros((4, 2, 2)), np.zeros(4)
    with pytest.raises(ValueError):
        list(data.batches(x, y[:3], 2))
    with pytest.raises(ValueError):
        list(data.batches(x, y, 0))
    with pytest.raises(ValueError):
        list(data.batches(x, y, 2, shuffle=True))  # no rng
