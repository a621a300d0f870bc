"""The SDK swap: make the installed SDK (``unified-quantum``) use this store without
editing its files.

:func:`enable` writes ``uniqc_taskstore_sdk.pth`` beside the SDK in site-packages. Python
runs its one line at every start-up of that environment; the line imports the tiny
``_uniqc_taskstore_sdk_hook`` (shipped in this distribution, outside the package so
that start-up never imports SQLAlchemy) inside a ``try``, so an environment where
uniqc-taskstore was uninstalled starts as before and the SDK uses its own store. The
hook resolves ``uniqc.backend_adapter.task.store`` and ``uniqc.gateway.db.archive_store``
to :mod:`uniqc_taskstore.compat`. Reinstalling the SDK leaves the file alone; every
process of the environment (the gateway's uvicorn too) sees the swap.
:func:`disable` deletes the file; :func:`status` says what the SDK will use.
:func:`enable_in_process` (``compat.enable()``) is the same for the calling process only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import site
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import _uniqc_taskstore_sdk_hook as hook

from .backends.sqlite import DATABASE_FILENAME, SqliteBackend
from .errors import SchemaTooNewError, SdkSwapError, StoreNotFoundError, TaskStoreError
from .maintenance import locate, schema_version_at
from .store import CACHE_DIR_ENV, URL_ENV

logger = logging.getLogger(__name__)

CHECKED_SDK_VERSIONS = hook.CHECKED_SDK_VERSIONS
SDK_DISTRIBUTION = hook.SDK_DISTRIBUTION
SWAPPED_MODULES = hook.SWAPPED
PTH_NAME = "uniqc_taskstore_sdk.pth"
PTH_LINE = (
    'import sys; exec("try: from _uniqc_taskstore_sdk_hook import install\\n'
    'except ImportError: pass\\nelse: install()")\n'
)
"""The whole ``.pth`` file: Python executes a line that starts with ``import``."""
OURS = "uniqc-taskstore"
THEIRS = "sdk"
"""The two values of :attr:`SwapStatus.store`: this store, or the SDK's own."""


@dataclass(frozen=True)
class Sdk:
    """The SDK installed in this environment."""

    version: str
    site_dir: Path
    """The site-packages directory it is installed in (where the ``.pth`` goes)."""

    @property
    def checked(self) -> bool:
        """Whether this release's store API was checked against ``compat``."""
        return self.version in CHECKED_SDK_VERSIONS

    @property
    def pth(self) -> Path:
        return self.site_dir / PTH_NAME


@dataclass(frozen=True)
class SwapStatus:
    """What the SDK of this environment will use, as :func:`status` finds it."""

    sdk_version: str
    sdk_checked: bool
    pth: Path
    enabled: bool
    store: str
    """:data:`OURS` or :data:`THEIRS`."""
    location: str
    schema_version: int | None
    notes: tuple[str, ...]


def find_sdk() -> Sdk:
    """The SDK installed in this environment; :class:`SdkSwapError` where there is none."""
    try:
        found = distribution(SDK_DISTRIBUTION)
    except PackageNotFoundError:
        raise SdkSwapError(
            f"the SDK ({SDK_DISTRIBUTION}) is not installed in this environment "
            f"({sys.prefix}): install it here (pip install {SDK_DISTRIBUTION}=="
            f"{CHECKED_SDK_VERSIONS[-1]}), or run the uniqc-tasks of the SDK's environment"
        ) from None
    return Sdk(found.version, Path(str(found.locate_file(""))).resolve())


def require_checked(sdk: Sdk) -> None:
    """Refuse an SDK release whose store API nobody checked against ``compat``."""
    if not sdk.checked:
        raise SdkSwapError(
            f"{SDK_DISTRIBUTION} {sdk.version} is installed, but the swap is checked only "
            f"with {', '.join(CHECKED_SDK_VERSIONS)}: install one of those "
            f"(pip install {SDK_DISTRIBUTION}=={CHECKED_SDK_VERSIONS[-1]}) or a "
            "uniqc-taskstore that knows this one"
        )


def enable() -> tuple[Sdk, bool]:
    """Write the ``.pth`` beside the SDK and check that a fresh interpreter of this
    environment loads the hook; returns the SDK and whether the file was (re)written.
    Refuses (:class:`SdkSwapError`, nothing left behind) when the SDK is missing or
    unchecked, its directory is not one Python reads ``.pth`` files from, or the file
    cannot be written."""
    sdk = find_sdk()
    require_checked(sdk)
    site_dirs = _site_dirs()
    if sdk.site_dir not in site_dirs:
        raise SdkSwapError(
            f"{SDK_DISTRIBUTION} is installed in {sdk.site_dir}, which is not a "
            f"site-packages directory of {sys.executable} (Python reads .pth files only "
            "there): install the SDK with pip into this environment"
        )
    if _read(sdk.pth) == PTH_LINE:
        return sdk, False
    try:
        sdk.pth.write_text(PTH_LINE, encoding="utf-8")
    except OSError as exc:
        raise SdkSwapError(
            f"cannot write {sdk.pth} ({exc.strerror or exc}): run this as the user who "
            "owns the environment, or use a virtual environment"
        ) from exc
    problem = _fresh_interpreter_problem()
    if problem is not None:
        sdk.pth.unlink(missing_ok=True)
        raise SdkSwapError(
            f"wrote {sdk.pth}, but a fresh {sys.executable} did not load the hook "
            f"({problem}); removed it again: is uniqc-taskstore installed in this "
            "environment?"
        )
    logger.info("SDK swap enabled: %s", sdk.pth)
    return sdk, True


def disable() -> list[Path]:
    """Delete the ``.pth`` from every site-packages directory of this environment (and
    the SDK's); returns the files deleted. Works without the SDK installed."""
    dirs = set(_site_dirs())
    with contextlib.suppress(SdkSwapError):
        dirs.add(find_sdk().site_dir)
    removed = []
    for directory in sorted(dirs):
        pth = directory / PTH_NAME
        if pth.is_file():
            try:
                pth.unlink()
            except OSError as exc:
                raise SdkSwapError(
                    f"cannot delete {pth} ({exc.strerror or exc}): delete it by hand, as "
                    "the user who owns the environment"
                ) from exc
            removed.append(pth)
            logger.info("SDK swap disabled: removed %s", pth)
    return removed


def status() -> SwapStatus:
    """Which store the SDK of this environment will use, where it is and its schema
    version; creates and changes nothing. :class:`SdkSwapError` without the SDK."""
    sdk = find_sdk()
    enabled = _read(sdk.pth) == PTH_LINE
    notes: list[str] = []
    if enabled:
        store = OURS
        try:
            backend = locate().backend
        except TaskStoreError as exc:
            return _status(sdk, enabled, store, "?", None, [*notes, _one_line(exc)])
        location = backend.describe()
        if not sdk.checked:
            notes.append(
                f"{SDK_DISTRIBUTION} {sdk.version} is not a checked version "
                f"({', '.join(CHECKED_SDK_VERSIONS)}): the SDK will refuse to import its "
                "store until you install one or run `uniqc-tasks sdk disable`"
            )
    else:
        store = THEIRS
        # The original reads neither variable: its file is always under the home directory.
        backend = SqliteBackend(Path.home() / ".uniqc" / "cache" / DATABASE_FILENAME)
        location = backend.describe()
        ignored = [name for name in (URL_ENV, CACHE_DIR_ENV) if os.environ.get(name)]
        if ignored:
            notes.append(f"the SDK's own store ignores {' and '.join(ignored)}")
    edited = _hand_edited_modules()
    if edited:
        notes.append(
            f"{', '.join(edited)} of the SDK were edited to import uniqc_taskstore.compat: "
            f"to undo that, pip install --force-reinstall --no-deps "
            f"{SDK_DISTRIBUTION}=={sdk.version}"
        )
    try:
        version: int | None = schema_version_at(backend)
    except StoreNotFoundError:
        version = None
        notes.append("no store there yet: the SDK creates it on first use")
    except SchemaTooNewError as exc:
        version = exc.found
    except TaskStoreError as exc:
        version = None
        notes.append(_one_line(exc))
    return _status(sdk, enabled, store, location, version, notes)


def enable_in_process() -> None:
    """Make the SDK store modules resolve to ``compat`` in this process only. Refuses
    when the SDK is missing or unchecked, or already imported its own store."""
    require_checked(find_sdk())
    for name in sorted(SWAPPED_MODULES):
        module = sys.modules.get(name)
        if module is not None and module.__name__ != "uniqc_taskstore.compat":
            raise SdkSwapError(
                f"{name} is already imported (the SDK's own store): call "
                "uniqc_taskstore.compat.enable() before the first import of uniqc"
            )
    hook.install()


def _status(
    sdk: Sdk, enabled: bool, store: str, location: str, version: int | None, notes: list[str]
) -> SwapStatus:
    return SwapStatus(
        sdk.version, sdk.checked, sdk.pth, enabled, store, location, version, tuple(notes)
    )


def _site_dirs() -> list[Path]:
    """The directories this interpreter reads ``.pth`` files from."""
    dirs = [*site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [Path(d).resolve() for d in dirs]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _fresh_interpreter_problem() -> str | None:
    """None when a new interpreter of this environment has the hook installed at start-up;
    otherwise what went wrong."""
    probe = (
        "import sys\n"
        "found = [f for f in sys.meta_path if getattr(f, '__name__', '') == 'SdkStoreFinder']\n"
        "sys.exit(0 if found else 1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        return None
    return _one_line(done.stderr) or "the finder is not on sys.meta_path"


def _hand_edited_modules() -> list[str]:
    """The SDK store modules whose source was overwritten to import ``compat`` (the way
    the README described before the ``.pth``)."""
    spec = importlib.util.find_spec("uniqc")
    if spec is None or not spec.submodule_search_locations:
        return []
    package = Path(next(iter(spec.submodule_search_locations)))
    edited = []
    for name in sorted(SWAPPED_MODULES):
        path = package.joinpath(*name.split(".")[1:]).with_suffix(".py")
        if "uniqc_taskstore.compat" in (_read(path) or ""):
            edited.append(name)
    return edited


def _one_line(message: object) -> str:
    return " ".join(str(message).split())
