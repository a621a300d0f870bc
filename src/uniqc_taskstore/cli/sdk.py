"""``sdk enable | disable | status``: point the SDK (``unified-quantum``) of this
environment at this store, or back at its own, without editing the SDK's files."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from .. import sdk_swap
from ..errors import TaskStoreError
from ..maintenance import locate
from . import output
from .options import common_options, settings

_WHERE = (
    "The SDK picks its store as TaskStore() does: UNIQC_TASKSTORE_URL if set, else "
    "UNIQC_CACHE_DIR, else ~/.uniqc/cache (set them in the SDK's environment; --url and "
    "--cache-dir do not apply here)."
)


def _no_store_options() -> None:
    found = settings()
    given = [
        name
        for name, value in (
            ("--cache-dir", found.cache_dir),
            ("--url", found.url),
            ("--schema", found.schema),
        )
        if value is not None
    ]
    if given:
        raise click.UsageError(
            f"{' and '.join(given)} cannot choose the SDK's store: set UNIQC_TASKSTORE_URL "
            "(or UNIQC_CACHE_DIR) in the SDK's environment instead"
        )


@click.group("sdk", epilog=_WHERE)
def sdk_group() -> None:
    """Make the SDK (unified-quantum) of this environment use this store, or its own."""


@sdk_group.command(
    "enable",
    epilog="Writes uniqc_taskstore_sdk.pth beside the SDK in site-packages: an import "
    "hook every Python process of this environment loads at start-up, which survives "
    "reinstalls of the SDK. Undo with `uniqc-tasks sdk disable`, or delete that file. "
    f"Checked SDK versions: {', '.join(sdk_swap.CHECKED_SDK_VERSIONS)}. " + _WHERE,
)
@common_options
def enable_command() -> None:
    """Make every process of this environment's SDK use this store."""
    _no_store_options()
    sdk, written = sdk_swap.enable()
    where = _store_where()
    if output.wants_json():
        output.emit({"enabled": True, "changed": written, "pth": str(sdk.pth), "store": where})
        return
    verb = "Enabled" if written else "Already enabled"
    output.line(
        f"{verb}: {sdk_swap.SDK_DISTRIBUTION} {sdk.version} uses uniqc-taskstore in every "
        "process of this environment"
    )
    output.line(f"  store: {where}")
    output.line(f"  hook:  {sdk.pth}")
    output.line("  undo:  uniqc-tasks sdk disable (or delete that file)")


@sdk_group.command("disable")
@common_options
def disable_command() -> None:
    """Let the SDK of this environment use its own store again."""
    _no_store_options()
    removed = sdk_swap.disable()
    if output.wants_json():
        output.emit({"enabled": False, "removed": [str(p) for p in removed]})
        return
    if not removed:
        output.line(f"Not enabled: no {sdk_swap.PTH_NAME} in this environment; nothing to do")
        return
    for path in removed:
        output.line(f"Disabled: removed {path}")
    output.line(
        "The SDK uses its own store (~/.uniqc/cache/tasks.sqlite) again; tasks in "
        "uniqc-taskstore's store stay where they are"
    )


@sdk_group.command("status")
@common_options
def status_command() -> None:
    """Say which store the SDK will use, the SDK's version, where and what schema."""
    _no_store_options()
    found = sdk_swap.status()
    if output.wants_json():
        data: dict[str, Any] = asdict(found)
        data["pth"] = str(found.pth)
        data["checked_versions"] = list(sdk_swap.CHECKED_SDK_VERSIONS)
        output.emit(data)
        return
    checked = "checked" if found.sdk_checked else "NOT checked"
    output.line(
        f"SDK:    {sdk_swap.SDK_DISTRIBUTION} {found.sdk_version} ({checked}; checked: "
        f"{', '.join(sdk_swap.CHECKED_SDK_VERSIONS)})"
    )
    swap = f"enabled ({found.pth})" if found.enabled else "disabled"
    output.line(f"Swap:   {swap}")
    store = (
        "uniqc-taskstore (uniqc_taskstore.compat)"
        if found.store == sdk_swap.OURS
        else "the SDK's own (uniqc.backend_adapter.task.store)"
    )
    output.line(f"Store:  {store}")
    output.line(f"Where:  {found.location}")
    version = "-" if found.schema_version is None else str(found.schema_version)
    output.line(f"Schema: {version}")
    for note in found.notes:
        output.line(f"Note:   {note}")


def _store_where() -> str:
    """Where the SDK's ``TaskStore()`` will now open, for the message."""
    try:
        return locate().backend.describe()
    except TaskStoreError as exc:
        return " ".join(str(exc).split())


COMMANDS: tuple[Any, ...] = (sdk_group,)
