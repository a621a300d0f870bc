"""uniqc-taskstore's import hook for the SDK swap (``uniqc-tasks sdk enable``).

The ``uniqc_taskstore_sdk.pth`` file that command writes into site-packages imports
this module at every interpreter start-up and calls :func:`install`, so it must stay
tiny: it imports nothing beyond ``sys`` until the SDK
itself imports one of the two store modules named in :data:`SWAPPED`. Those then
resolve to ``uniqc_taskstore.compat`` (the module object itself, so assigning
``uniqc.backend_adapter.task.store.DEFAULT_CACHE_DIR`` moves the stores built
afterwards), provided the installed SDK is a version whose store API was checked.
"""

import sys

TYPE_CHECKING = False  # not typing's: importing typing would slow every start-up
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType

SWAPPED = frozenset({"uniqc.backend_adapter.task.store", "uniqc.gateway.db.archive_store"})
"""The SDK modules that become ``uniqc_taskstore.compat``."""
SDK_DISTRIBUTION = "unified-quantum"
CHECKED_SDK_VERSIONS = ("0.1.1",)
"""Releases of the SDK whose store API ``uniqc_taskstore.compat`` was checked against
(their shipped tests pass on it: ``nox -s sdk``)."""


class SdkStoreFinder:
    """A meta path finder (and loader) for the two SDK store modules; every other
    name is left to the finders after it."""

    @classmethod
    def find_spec(
        cls, name: str, path: object = None, target: object = None
    ) -> "ModuleSpec | None":
        if name not in SWAPPED:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(name, cls)  # type: ignore[arg-type]  # a loader by its methods

    @staticmethod
    def create_module(spec: "ModuleSpec") -> None:
        return None

    @staticmethod
    def exec_module(module: "ModuleType") -> None:
        check_sdk_version()
        import uniqc_taskstore.compat

        # The import system hands importers whatever sys.modules holds once this returns.
        sys.modules[module.__name__] = uniqc_taskstore.compat


def check_sdk_version() -> None:
    """Refuse (ImportError) to stand in for an SDK release nobody checked."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version(SDK_DISTRIBUTION)
    except PackageNotFoundError:
        found = "a copy without package metadata"
    if found not in CHECKED_SDK_VERSIONS:
        raise ImportError(
            f"uniqc-taskstore replaces the task store of {SDK_DISTRIBUTION} "
            f"{', '.join(CHECKED_SDK_VERSIONS)} only, and {found} is installed: install one "
            f"of those, upgrade uniqc-taskstore, or run `uniqc-tasks sdk disable`"
        )


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if SdkStoreFinder not in sys.meta_path:
        sys.meta_path.insert(0, SdkStoreFinder)
