"""Read a PyTorch state dict (``.pth``) into numpy arrays without torch.

A ``.pth`` is a pickle whose tensors point into raw storages kept beside it, in one of two layouts:

* the zip layout (torch >= 1.6): ``<root>/data.pkl`` plus one file ``<root>/data/<key>`` per storage;
* the legacy layout: four pickles in a row (magic number, protocol version, system info, the state
  dict), a pickled list of storage keys, then each storage as an int64 element count and its bytes.

Pickles can run arbitrary code, so the unpickler resolves only the few globals a state dict needs
and refuses everything else with :class:`UnsafePickleError`.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from picmetric_core.errors import UnsafePickleError, WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass
class _Storage:
    """A storage named in the pickle; its bytes arrive after the pickle in the legacy layout."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _StorageView:
    """Legacy layout only: a slice of another storage."""

    root: _Storage
    offset: int
    numel: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        data = self._storage_data()
        if any(n < 0 for n in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise WeightsError(f"tensor with negative size, stride or offset: {self}")
        if len(self.stride) != len(self.size):
            raise WeightsError(f"tensor with {len(self.size)} sizes but {len(self.stride)} strides")
        if 0 in self.size:
            return np.zeros(self.size, data.dtype)
        # A crafted file could otherwise make as_strided read memory outside the storage.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= len(data):
            raise WeightsError(f"tensor reaches element {last} of a storage of {len(data)}")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)

    def _storage_data(self) -> np.ndarray:
        storage = self.storage
        root = storage.root if isinstance(storage, _StorageView) else storage
        if root.data is None:
            raise WeightsError(f"storage {root.key} has no data")
        if isinstance(storage, _StorageView):
            return root.data[storage.offset : storage.offset + storage.numel]
        return root.data


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, hooks=None, *_):
    return _Tensor(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None, *_):
    return data


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only ever used as a tag."""

    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(STORAGE_DTYPES[name])


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], persistent_load: Callable[[tuple], Any]) -> None:
        super().__init__(file)
        self._persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to load {module}.{name}: a state dict never needs it") from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        return self._persistent_load(pid)


def _storage_type(tag: Any) -> np.dtype:
    if not isinstance(tag, _StorageType):
        raise UnsafePickleError(f"unexpected storage type {tag!r}")
    return tag.dtype


def _load_zip(archive: zipfile.ZipFile) -> dict[str, Any]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise WeightsError("not a PyTorch checkpoint: no single data.pkl in the archive")
    prefix = pickles[0][: -len("data.pkl")]
    storages: dict[str, _Storage] = {}

    def persistent_load(pid: tuple) -> _Storage:
        _, tag, key, _location, numel = pid
        key = str(key)
        if key not in storages:
            dtype = _storage_type(tag)
            raw = archive.read(f"{prefix}data/{key}")
            data = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
            storages[key] = _Storage(key, dtype, int(numel), data)
        return storages[key]

    with archive.open(pickles[0]) as handle:
        return _RestrictedUnpickler(io.BytesIO(handle.read()), persistent_load).load()


def _load_legacy(handle: IO[bytes]) -> dict[str, Any]:
    def plain_load() -> Any:
        return _RestrictedUnpickler(handle, _no_persistent).load()

    if plain_load() != LEGACY_MAGIC:
        raise WeightsError("not a PyTorch checkpoint: wrong magic number")
    if plain_load() != LEGACY_PROTOCOL:
        raise WeightsError("unsupported legacy PyTorch checkpoint protocol")
    sys_info = plain_load()
    if not sys_info.get("little_endian", True):
        raise WeightsError("big-endian PyTorch checkpoints are not supported")

    storages: dict[str, _Storage] = {}

    def persistent_load(pid: tuple) -> _Storage | _StorageView:
        _, tag, key, _location, numel, view = pid
        key = str(key)
        if key not in storages:
            storages[key] = _Storage(key, _storage_type(tag), int(numel))
        if view is None:
            return storages[key]
        _view_key, offset, view_numel = view
        return _StorageView(storages[key], int(offset), int(view_numel))

    state = _RestrictedUnpickler(handle, persistent_load).load()
    for key in plain_load():
        _read_legacy_storage(handle, storages[str(key)])
    return state


def _read_legacy_storage(handle: IO[bytes], storage: _Storage) -> None:
    numel = int(np.frombuffer(handle.read(8), dtype="<i8")[0])
    raw = handle.read(numel * storage.dtype.itemsize)
    if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
        raise WeightsError(f"storage {storage.key} is truncated or does not match its header")
    storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))


def _no_persistent(pid: tuple) -> Any:
    raise UnsafePickleError(f"unexpected persistent id {pid!r} outside the state dict")


def load_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """Load a PyTorch state dict as numpy arrays, refusing anything but plain tensors.

    Args:
        path: a ``.pth``/``.pt`` file written by ``torch.save(model.state_dict(), path)``,
            zip or legacy layout.

    Returns:
        Parameter name to array, in the file's order, with PyTorch's shapes (e.g. OIHW kernels).

    Raises:
        UnsafePickleError: the pickle references a global outside the allow-list.
        WeightsError: the file is not a readable PyTorch state dict.

    Example:
        >>> state = load_state_dict("efficientnet-lite0-57934424.pth")  # doctest: +SKIP
        >>> state["_conv_stem.weight"].shape  # doctest: +SKIP
        (32, 3, 3, 3)
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                state = _load_zip(archive)
        else:
            with path.open("rb") as handle:
                state = _load_legacy(handle)
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path.name} is not a readable PyTorch state dict: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path.name} holds a {type(state).__name__}, not a state dict")
    return {str(name): _as_array(name, value) for name, value in state.items()}


def _as_array(name: str, value: Any) -> np.ndarray:
    if not isinstance(value, _Tensor):
        raise WeightsError(f"state dict entry {name!r} is not a tensor")
    return value.to_numpy()
