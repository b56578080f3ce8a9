"""Read torch pickles without running code from the file: a restricted unpickler that never imports.

Model files of other toolkits (torch-deep-retina's trainer, Lightning) are torch pickles that name their
own classes and functions. :func:`safe_torch_load` reads them with ``torch.load`` and
:class:`RestrictedUnpickler` as its ``pickle_module``; that unpickler is the only gate through which the
pickle can reach a class or function, and it never imports a module:

Files are read by ``torch.load`` with a restricted unpickler (:class:`RestrictedUnpickler`) as its
``pickle_module``; it is the only gate through which the pickle can reach a class or function, and it never
imports a module:

* globals on an explicit allow-list come back as checked wrappers (torch's tensor / parameter rebuild
  functions, ``OrderedDict``, builtin containers, numpy's scalar / array / dtype reconstruction,
  ``_codecs.encode``, ``torch.device``, ``torch.Size``) or as plain references that can be named but not
  called (torch dtypes and storage classes, ``numpy.ndarray``, ``torch.Tensor``);
* every other global becomes a :class:`StandIn` that records its module and name. An object the file
  builds from a stand-in class (``NEWOBJ`` / ``BUILD`` / ``SETITEMS`` …) becomes an inert
  :class:`StandInObject` recording that state; nothing of the original class (``__setstate__``,
  ``__init__``, ``__reduce__``) ever runs;
* a *call* of a stand-in (``REDUCE``) is recorded as a :class:`StandInObject` too, so that the load completes
  and says exactly what it needed. Its value can only be known by running that code, so a file that asks
  for any such call is refused with :class:`~retina_codec.errors.UntrustedCheckpointError` naming only the
  called globals (and where they sit, e.g. inside ``model_state_dict``); ``trust=True`` then unpickles the
  file fully (imports and calls for real; globals of modules that are not installed, such as
  ``torchdeepretina`` itself, still become stand-ins). Merely named classes (``model_class``) are never a
  reason to refuse.

TorchScript archives and the pre-2018 ``.tar`` format are refused without ``trust=True``.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import copyreg
import os
import pickle
import tarfile
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import CheckpointError, UntrustedCheckpointError

__all__ = ["safe_torch_load", "LoadedPickle", "RestrictedUnpickler", "StandIn", "StandInObject"]


# ---------------------------------------------------------------------------------------------------------
# stand-ins


class StandIn:
    """Inert placeholder for a class or function the file names but that is never imported.

    ``module`` and ``name`` are those the pickle gave (e.g. ``torchdeepretina.models`` / ``BNCNN``). It
    cannot be called and has no other attributes.
    """

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    @property
    def qualname(self) -> str:
        """``module.name``."""
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<not imported: {self.qualname}>"


class StandInObject:
    """Inert placeholder for an object the file builds from a :class:`StandIn`; nothing of it is executed.

    ``origin`` is the stand-in, ``how`` ``"call"`` (the pickle calls it: ``REDUCE``) or ``"new"`` (an
    instance restored from its state: ``NEWOBJ``), ``args`` / ``kwargs`` what it was given, ``state`` the
    states the pickle set (``BUILD``), ``items`` / ``entries`` what it appended / set as items.
    """

    __slots__ = ("origin", "how", "args", "kwargs", "state", "items", "entries")

    def __init__(self, origin: StandIn, how: str, args: tuple = (), kwargs: dict | None = None) -> None:
        self.origin = origin
        self.how = how
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.state: list[Any] = []
        self.items: list[Any] = []
        self.entries: list[tuple[Any, Any]] = []

    @property
    def qualname(self) -> str:
        """``module.name`` of the stand-in it was built from."""
        return self.origin.qualname

    def __repr__(self) -> str:
        return f"<{self.qualname} object, not built ({self.how})>"


# ---------------------------------------------------------------------------------------------------------
# the allow-list


class _Refused(pickle.UnpicklingError):
    """The pickle needs an operation only full unpickling can do."""


class _Safe:
    """An allow-listed callable: ``fn(unpickler, *args)`` checks its arguments before doing anything."""

    __slots__ = ("qualname", "fn", "is_class")

    def __init__(self, qualname: str, fn: Any, is_class: bool = False) -> None:
        self.qualname, self.fn, self.is_class = qualname, fn, is_class

    def __repr__(self) -> str:
        return f"<allowed {self.qualname}>"


def _malformed(what: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"malformed pickle: {what}")


def _check(ok: bool, what: str, args: tuple = ()) -> None:
    """Raise unless ``ok``: a refusal when a stand-in object is among ``args`` (the value needs its code),
    a malformed-pickle error otherwise."""
    if ok:
        return
    inner = [a for a in args if isinstance(a, (StandIn, StandInObject))]
    if inner:
        raise _Refused(f"{what} needs {', '.join(sorted({a.qualname for a in inner}))}")
    raise _malformed(what)


def _is_int(x: Any) -> bool:
    return type(x) is int


def _is_ints(x: Any) -> bool:
    return type(x) in (tuple, list, torch.Size) and all(type(i) is int for i in x)


def _no_hooks(hooks: Any) -> bool:
    return hooks is None or (type(hooks) in (dict, collections.OrderedDict) and not hooks)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: Any = None) -> torch.Tensor:
    args = (storage, offset, size, stride)
    _check(isinstance(storage, torch.storage.TypedStorage) and _is_int(offset) and _is_ints(size)
           and _is_ints(stride) and len(size) == len(stride), "tensor rebuild", args)
    _check(dtype is None or isinstance(dtype, torch.dtype), "tensor rebuild dtype", (dtype,))
    dtype = dtype or storage.dtype
    untyped = storage._untyped_storage  # as torch's own rebuild reads it (untyped() warns of deprecation)
    # set_ would grow a storage too small for the view: check the view fits (no reads beyond the file's data)
    _check(offset >= 0 and all(n >= 0 for n in size) and all(st >= 0 for st in stride), "tensor view", args)
    if all(n > 0 for n in size):
        last = offset + sum((n - 1) * st for n, st in zip(size, stride))
        _check((last + 1) * torch.empty((), dtype=dtype).element_size() <= untyped.nbytes(),
               "tensor view within its storage")
    t = torch.empty((0,), dtype=dtype, device=untyped.device)
    return t.set_(untyped, offset, tuple(size), tuple(stride))


def _metadata(t: torch.Tensor, metadata: Any) -> torch.Tensor:
    if metadata:
        _check(type(metadata) is dict and all(type(k) is str and type(v) is bool for k, v in metadata.items()),
               "tensor metadata", (metadata,))
        torch._utils.set_tensor_metadata(t, metadata)
    return t


# requires_grad and backward hooks are not restored: the weights are read, never trained, here


def _rebuild_tensor(u: Any, storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(u: Any, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, metadata: Any = None) -> torch.Tensor:
    _check(type(requires_grad) is bool and _no_hooks(hooks), "tensor rebuild", (requires_grad, hooks))
    return _metadata(_tensor(storage, offset, size, stride), metadata)


def _rebuild_tensor_v3(u: Any, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, dtype: Any, metadata: Any = None) -> torch.Tensor:
    _check(type(requires_grad) is bool and _no_hooks(hooks), "tensor rebuild", (requires_grad, hooks))
    return _metadata(_tensor(storage, offset, size, stride, dtype), metadata)


def _rebuild_parameter(u: Any, data: Any, requires_grad: Any, hooks: Any, state: Any = None) -> Any:
    _check(isinstance(data, torch.Tensor) and type(requires_grad) is bool and _no_hooks(hooks),
           "parameter rebuild", (data, hooks))
    return torch.nn.Parameter(data, requires_grad=False)  # extra Python attributes (state) are dropped


def _rebuild_from_type(u: Any, func: Any, new_type: Any, args: Any, state: Any) -> Any:
    _check(type(args) is tuple, "tensor subclass rebuild", (args,))
    value = u.call(func, args)
    if isinstance(value, StandInObject):
        return value
    _check(isinstance(value, torch.Tensor), "tensor subclass rebuild", (value,))
    # a subclass from outside torch is behaviour, not data: the plain tensor (or parameter) is kept
    return torch.nn.Parameter(value, requires_grad=False) if new_type is torch.nn.Parameter else value


def _container(kind: type) -> Any:
    def make(u: Any, *args: Any) -> Any:
        _check(len(args) <= 1 and all(type(a) in (list, tuple, set, frozenset, dict, collections.OrderedDict)
                                      for a in args), f"{kind.__name__}()", args)
        return kind(*args)
    return make


def _ordered_dict(u: Any, *args: Any) -> collections.OrderedDict:
    _check(len(args) <= 1 and all(type(a) in (list, tuple, dict, collections.OrderedDict) for a in args),
           "OrderedDict()", args)
    return collections.OrderedDict(*args)


def _bytearray(u: Any, *args: Any) -> bytearray:
    _check(args == () or (len(args) == 1 and type(args[0]) in (bytes, bytearray, list))
           or (len(args) == 2 and type(args[0]) is str and args[1] in ("latin1", "latin-1")), "bytearray()", args)
    return bytearray(*args)


def _scalar_args(*args: Any) -> bool:
    return all(type(a) in (int, float, bool) or a is None for a in args)


def _complex(u: Any, *args: Any) -> complex:
    _check(len(args) <= 2 and all(type(a) in (int, float) for a in args), "complex()", args)
    return complex(*args)


def _slice(u: Any, *args: Any) -> slice:
    _check(len(args) <= 3 and _scalar_args(*args), "slice()", args)
    return slice(*args)


def _range(u: Any, *args: Any) -> range:
    _check(1 <= len(args) <= 3 and all(type(a) is int for a in args), "range()", args)
    return range(*args)


def _codecs_encode(u: Any, obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    _check(type(obj) is str and encoding in ("latin1", "latin-1", "utf-8", "utf8", "ascii")
           and errors == "strict", "_codecs.encode", (obj,))
    return codecs.encode(obj, encoding)


def _torch_device(u: Any, *args: Any) -> torch.device:
    _check(1 <= len(args) <= 2 and type(args[0]) is str and (len(args) == 1 or type(args[1]) in (int, type(None))),
           "torch.device()", args)
    return torch.device(*args)


def _torch_size(u: Any, *args: Any) -> torch.Size:
    _check(len(args) == 1 and _is_ints(args[0]), "torch.Size()", args)
    return torch.Size(args[0])


_np_core = getattr(np, "_core", None) or np.core
_np_multiarray = _np_core.multiarray


def _np_reconstruct(u: Any, subtype: Any, shape: Any, code: Any) -> np.ndarray:
    _check(subtype is np.ndarray and tuple(shape) == (0,) and type(code) in (bytes, str), "numpy array", (subtype,))
    return _np_multiarray._reconstruct(np.ndarray, tuple(shape), code)


def _np_scalar(u: Any, dtype: Any, data: Any = None) -> Any:
    _check(isinstance(dtype, np.dtype), "numpy scalar", (dtype,))
    if dtype.hasobject:
        return data  # an object scalar is the object itself
    _check(type(data) is bytes, "numpy scalar", (data,))
    return _np_multiarray.scalar(dtype, data)


def _np_dtype(u: Any, spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    _check(type(spec) is str and type(align) is bool and type(copy) is bool, "numpy dtype", (spec,))
    return np.dtype(spec, align, copy)


def _np_frombuffer(u: Any, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    _check(type(buf) in (bytes, bytearray, pickle.PickleBuffer) and isinstance(dtype, np.dtype)
           and not dtype.hasobject and _is_ints(shape) and order in ("C", "F"), "numpy array", (buf, dtype))
    return np.frombuffer(buf, dtype).reshape(tuple(shape), order=order)


def _reconstructor(u: Any, cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocols 0 and 1): an instance of ``cls`` restored from its state."""
    _check(isinstance(cls, StandIn), "copyreg._reconstructor of an allowed class", (cls,))
    return StandInObject(cls, "new", (base, state))


def _allowed_callables() -> dict[tuple[str, str], _Safe]:
    table: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
        ("collections", "OrderedDict"): _ordered_dict,
        ("builtins", "set"): _container(set),
        ("builtins", "frozenset"): _container(frozenset),
        ("builtins", "list"): _container(list),
        ("builtins", "tuple"): _container(tuple),
        ("builtins", "dict"): _container(dict),
        ("builtins", "bytearray"): _bytearray,
        ("builtins", "complex"): _complex,
        ("builtins", "slice"): _slice,
        ("builtins", "range"): _range,
        ("_codecs", "encode"): _codecs_encode,
        ("torch", "device"): _torch_device,
        ("torch", "Size"): _torch_size,
        ("numpy", "dtype"): _np_dtype,
        ("copyreg", "_reconstructor"): _reconstructor,
    }
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = _np_reconstruct
        table[(f"{mod}.multiarray", "scalar")] = _np_scalar
        table[(f"{mod}.numeric", "_frombuffer")] = _np_frombuffer
    classes = {("collections", "OrderedDict"), ("torch", "Size")} | {
        ("builtins", n) for n in ("set", "frozenset", "list", "tuple", "dict", "bytearray", "complex")}
    return {key: _Safe(".".join(key), fn, key in classes) for key, fn in table.items()}


def _reference_globals() -> dict[tuple[str, str], Any]:
    """Globals a pickle may name but never call: torch dtypes and storage classes, tensor types, ndarray."""
    refs: dict[tuple[str, str], Any] = {}
    for name in dir(torch):
        obj = getattr(torch, name)
        if isinstance(obj, torch.dtype) or (name.endswith("Storage") and isinstance(obj, type)):
            refs[("torch", name)] = obj
    refs.update({("torch", "Tensor"): torch.Tensor, ("torch._tensor", "Tensor"): torch.Tensor,
                 ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
                 ("torch.nn", "Parameter"): torch.nn.Parameter, ("numpy", "ndarray"): np.ndarray})
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
              np.float16, np.float32, np.float64, np.complex64, np.complex128):
        cls = type(np.dtype(t))
        if cls is not np.dtype:  # numpy >= 1.25 has one DType class per dtype
            refs[(cls.__module__, cls.__name__)] = cls
    return refs


_ALLOWED = _allowed_callables()
_REFERENCES = _reference_globals()
_REFERENCE_NAMES = {id(obj): f"{m}.{n}" for (m, n), obj in _REFERENCES.items()}


# ---------------------------------------------------------------------------------------------------------
# the unpickler


@dataclass
class _Session:
    """What the unpicklers of one ``torch.load`` found: the stand-ins (one per global) and the calls."""

    stand_ins: dict[tuple[str, str], StandIn] = field(default_factory=dict)
    calls: list[StandInObject] = field(default_factory=list)


def _unsupported_persistent_id(pid: Any) -> Any:
    raise pickle.UnpicklingError("unsupported persistent id encountered")


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that never imports a module and calls only allow-listed functions (see the module doc).

    Built on the pure-Python unpickler so that every opcode that can reach a class or call something
    (``GLOBAL``, ``STACK_GLOBAL``, ``REDUCE``, ``INST``, ``OBJ``, ``NEWOBJ``, ``BUILD``, ``APPEND(S)``,
    ``SETITEM(S)``, ``ADDITEMS``, ``EXT``) goes through the checks below. ``persistent_load`` (set by
    ``torch.load`` to read tensor storages) is kept, except that module-source records of old files are
    answered with the class itself (torch's source comparison would inspect the stand-in and may write a
    patch file). Use through :func:`safe_torch_load`; a subclass bound to a :class:`_Session` is made per load.
    """

    trusting: ClassVar[bool] = False
    session: ClassVar[_Session]
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, *, fix_imports: bool = True, encoding: str = "ASCII", errors: str = "strict",
                 buffers: Any = None) -> None:
        super().__init__(file, fix_imports=fix_imports, encoding=encoding, errors=errors, buffers=buffers)
        self._persistent = _unsupported_persistent_id

    # --- persistent ids (tensor storages) ---

    @property
    def persistent_load(self) -> Any:  # type: ignore[override]
        return self._persistent

    @persistent_load.setter
    def persistent_load(self, fn: Any) -> None:
        def load(pid: Any) -> Any:
            if isinstance(pid, tuple) and pid:
                kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
                if type(kind) is not str:  # .tar format: (class, source file, source)
                    return pid[0]
                if kind == "module" and len(pid) > 1:
                    return pid[1]
            return fn(pid)
        self._persistent = load

    # --- globals ---

    def stand_in(self, module: str, name: str) -> StandIn:
        """The session's stand-in for ``module.name`` (one object per global)."""
        key = (module, name)
        if key not in self.session.stand_ins:
            self.session.stand_ins[key] = StandIn(module, name)
        return self.session.stand_ins[key]

    def find_class(self, module: str, name: str) -> Any:
        if type(module) is not str or type(name) is not str:
            raise _malformed("global names must be strings")
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle maps them (a table, no import)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key in _REFERENCES:
            return _REFERENCES[key]
        return self.stand_in(module, name)

    def get_extension(self, code: int) -> None:
        key = copyreg._inverted_registry.get(code)
        if not key:
            raise _malformed(f"unregistered extension code {code}")
        self.append(self.find_class(*key))  # not cached in pickle's module-wide extension cache

    # --- calls ---

    def call(self, func: Any, args: tuple, kwargs: dict | None = None) -> Any:
        """What the pickle's call of ``func(*args)`` gives: a recorded stand-in object, an allowed call, or
        (trusting only) the real call."""
        if isinstance(func, StandIn):
            obj = StandInObject(func, "call", args, kwargs)
            self.session.calls.append(obj)
            return obj
        if type(args) is not tuple:
            raise _malformed("call arguments must be a tuple")
        if isinstance(func, _Safe):
            _check(not kwargs, f"{func.qualname} with keyword arguments")
            return func.fn(self, *args)
        if self.trusting:
            return func(*args, **(kwargs or {}))
        raise _Refused(f"a call of {self.describe(func)}")

    def new(self, cls: Any, args: tuple, kwargs: dict | None = None) -> Any:
        """``cls.__new__(cls, *args)``: a stand-in object for a stand-in class (its code is not run)."""
        if isinstance(cls, StandIn):
            return StandInObject(cls, "new", args, kwargs)
        if isinstance(cls, _Safe) and cls.is_class:
            return self.call(cls, args, kwargs)
        if self.trusting:
            return cls.__new__(cls, *args, **(kwargs or {}))
        raise _Refused(f"creating an object of {self.describe(cls)}")

    def describe(self, obj: Any) -> str:
        """A name for ``obj`` in messages."""
        if isinstance(obj, (StandIn, StandInObject, _Safe)):
            return obj.qualname
        return _REFERENCE_NAMES.get(id(obj), type(obj).__name__)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self.call(self.stack[-1], args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def _instantiate(self, klass: Any, args: list) -> None:
        if not args and isinstance(klass, StandIn):  # INST / OBJ without arguments: __new__, then BUILD
            self.append(StandInObject(klass, "new"))
        else:
            self.append(self.call(klass, tuple(args)))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.new(cls, args))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.new(cls, args, kwargs))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    # --- state and items ---

    def load_build(self) -> None:
        inst = self.stack[-2]
        if self.trusting and not isinstance(inst, StandInObject):
            super().load_build()
            return
        state = self.stack.pop()
        if isinstance(inst, StandInObject):
            inst.state.append(state)
        elif type(inst) is collections.OrderedDict and (state is None or type(state) is dict):
            inst.__dict__.update({str(k): v for k, v in (state or {}).items()})
        elif type(inst) is np.ndarray and type(state) is tuple and len(state) == 5 \
                and isinstance(state[2], np.dtype):
            inst.__setstate__(state)  # numpy checks the data against shape and dtype
        elif isinstance(inst, np.dtype) and type(state) is tuple and len(state) in (8, 9) \
                and state[2] is None and state[3] is None and state[4] is None:
            inst.__setstate__(state)  # plain dtypes only: no sub-array, field names or offsets to set
        else:
            raise _Refused(f"setting the state of {self.describe(inst)}")
    dispatch[pickle.BUILD[0]] = load_build

    def _add_items(self, target: Any, items: list, kinds: tuple[type, ...], what: str) -> None:
        if isinstance(target, StandInObject):
            if what == "entries":
                target.entries.extend(zip(items[::2], items[1::2]))
            else:
                target.items.extend(items)
        elif type(target) in kinds:
            if what == "entries":
                for k, v in zip(items[::2], items[1::2]):
                    target[k] = v
            elif type(target) is set:
                target.update(items)
            else:
                target.extend(items)
        elif self.trusting:
            if what == "entries":
                for k, v in zip(items[::2], items[1::2]):
                    target[k] = v
            elif hasattr(target, "extend") and what == "items":
                target.extend(items)
            else:
                for item in items:
                    (target.append if what == "items" else target.add)(item)
        else:
            raise _Refused(f"adding items to {self.describe(target)}")

    def load_append(self) -> None:
        value = self.stack.pop()
        self._add_items(self.stack[-1], [value], (list,), "items")
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._add_items(self.stack[-1], items, (list,), "items")
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._add_items(self.stack[-1], [key, value], (dict, collections.OrderedDict), "entries")
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._add_items(self.stack[-1], items, (dict, collections.OrderedDict), "entries")
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self) -> None:
        items = self.pop_mark()
        self._add_items(self.stack[-1], items, (set,), "members")
    dispatch[pickle.ADDITEMS[0]] = load_additems


class _TrustingUnpickler(RestrictedUnpickler):
    """Full unpickling (imports and calls for real), except that globals of modules that cannot be imported
    (``torchdeepretina`` when it is not installed) become stand-ins. Only for ``trust=True``."""

    trusting = True

    def find_class(self, module: str, name: str) -> Any:
        try:
            return pickle._Unpickler.find_class(self, module, name)
        except (ImportError, AttributeError):
            return self.stand_in(module, name)


def _pickle_module(session: _Session, trusting: bool) -> types.ModuleType:
    """A stand-in ``pickle`` module for ``torch.load(pickle_module=...)`` bound to ``session``."""
    base = _TrustingUnpickler if trusting else RestrictedUnpickler
    unpickler = type(base.__name__, (base,), {"session": session})
    module = types.ModuleType(f"{__name__}.{'trusting' if trusting else 'restricted'}_pickle")
    module.Unpickler = unpickler  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    module.load = lambda file, **kw: unpickler(file, **kw).load()  # type: ignore[attr-defined]
    return module


# ---------------------------------------------------------------------------------------------------------
# loading


def _path_text(path: str, key: Any) -> str:
    k = repr(key) if not isinstance(key, str) else f"'{key}'"
    return str(key) if not path and isinstance(key, str) else f"{path}[{k}]"


def _find_calls(obj: Any, path: str, out: dict[str, list[str]], seen: set[int], depth: int = 0) -> None:
    """Where (field paths) the loaded object holds results of calls of stand-ins, by called global."""
    if depth > 64 or id(obj) in seen:
        return
    if isinstance(obj, (dict, list, tuple, set, frozenset, StandInObject)):
        seen.add(id(obj))
    if isinstance(obj, StandInObject):
        if obj.how == "call":
            out.setdefault(obj.qualname, []).append(path or "the whole file")
        parts = [*obj.args, *obj.kwargs.values(), *obj.state, *obj.items, *(v for _, v in obj.entries)]
        for part in parts:
            _find_calls(part, path, out, seen, depth + 1)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _find_calls(v, _path_text(path, k), out, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _find_calls(v, f"{path}[{i}]", out, seen, depth + 1)
    elif isinstance(obj, (set, frozenset)):
        for v in obj:
            _find_calls(v, f"{path}{{…}}", out, seen, depth + 1)


def _refusal(path: Path, session: _Session, data: Any, reason: str | None) -> UntrustedCheckpointError:
    found: dict[str, list[str]] = {}
    if data is not None:
        _find_calls(data, "", found, set())
    for obj in session.calls:  # calls whose results were dropped or never reached the result
        found.setdefault(obj.qualname, [])
    parts = []
    for name in sorted(found):
        where = sorted(set(found[name]))
        weights = any(w.startswith("model_state_dict") for w in where)
        shown = ", ".join(where[:3]) + (", …" if len(where) > 3 else "")
        parts.append(name + (f" (in {shown}{'; needed for the weights' if weights else ''})" if where else ""))
    need = []
    if parts:  # what such a call returns is known only by running that code
        need.append(f"calls of {'; '.join(parts)}")
    if reason:
        need.append(reason)
    return UntrustedCheckpointError(
        f"{path}: loading needs {' and '.join(need)}, which only full unpickling does, and unpickling such a "
        "file can run arbitrary code; pass trust=True (CLI: --trust) only for a file from a source you trust"
    )


def _container_refusal(path: Path) -> str | None:
    """Why the file's container needs more than a pickle read (TorchScript, legacy .tar), or None."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return None  # torch's own reader decides
        if any(n.count("/") == 1 and n.endswith("/constants.pkl") for n in names):
            return "TorchScript (torch.jit) loading"
        return None
    if tarfile.is_tarfile(path):
        return "the legacy .tar checkpoint format"
    return None


def _torch_load(path: Path, session: _Session, trusting: bool) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False, mmap=False,
                      pickle_module=_pickle_module(session, trusting))


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    text = " ".join(str(err).split())[:200] or type(err).__name__
    return CheckpointError(f"{path}: not a readable torch checkpoint ({text})")


@dataclass
class LoadedPickle:
    """What :func:`safe_torch_load` read."""

    data: Any
    full: bool  # fully unpickled (trust=True and needed)
    stand_ins: list[str]  # globals that were not imported


def safe_torch_load(path: str | os.PathLike, trust: bool = False) -> LoadedPickle:
    """Read a torch pickle through :class:`RestrictedUnpickler` (see the module docstring): fully unpickled
    only when ``trust`` and needed. Raises :class:`~retina_codec.errors.UntrustedCheckpointError` when the
    file asks to call code outside the allow-list and ``trust`` is false, and
    :class:`~retina_codec.errors.CheckpointError` when it is unreadable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        raise CheckpointError(f"{path}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which keeps torch.load from using "
                              "retina-codec's restricted unpickler; unset it to read this file")
    session, data, reason = _Session(), None, _container_refusal(path)
    if reason is None:
        try:
            data = _torch_load(path, session, trusting=False)
        except _Refused as err:
            reason = str(err)
        except Exception as err:  # a malformed file can fail in many ways; none of them runs its code
            raise _unreadable(path, err) from None
    if reason is None and not session.calls:
        return LoadedPickle(data, False, sorted(s.qualname for s in session.stand_ins.values()))
    if not trust:
        raise _refusal(path, session, data, reason)
    session = _Session()
    try:
        data = _torch_load(path, session, trusting=True)
    except Exception as err:
        raise CheckpointError(f"{path}: full unpickling (trust=True) failed: {' '.join(str(err).split())[:300]}") \
            from err
    return LoadedPickle(data, True, sorted(s.qualname for s in session.stand_ins.values()))


