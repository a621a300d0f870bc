"""Version 13 (SQLite): platform and name filled in the rows the original implementation
writes into an upgraded file, by triggers, and in the rows it already wrote.

An SDK still running the original code (schema 5) may share ``~/.uniqc/cache`` with
this store. It accepts a file of a newer version and writes ``tasks`` and
``archived_tasks`` rows with its own ``INSERT`` (and ``ON CONFLICT DO UPDATE``), which
leaves ``platform`` (v10), ``name`` (v8) and ``search_key`` (v11) NULL: a platform
filter, a name filter and the search missed those tasks. (Its shards' ``search_key``
is left: a trigger on shards would cost every shard write, and such a task is still
found by its id, backend and name.) The triggers derive them in plain SQL, as v10 derives
``platform`` and ``model.legacy_task_name`` reads a name (a text ``task_name`` of 1
to 255 characters, not only white space, without NUL; SQLite's JSON functions cut text
at a NUL, so metadata holding an escaped NUL anywhere gives no name), whenever a row is inserted or
its backend, metadata, platform or name change and they are missing or stale. A
given name is never replaced. The same ``UPDATE`` repairs the rows already there.
Servers have no such writer: the original only ever wrote SQLite files.
"""

from __future__ import annotations

from sqlalchemy import Connection

# The characters str.isspace() is true for: a name made only of them is no name.
_SPACES = "char(" + ",".join(str(code) for code in range(0x3000 + 1) if chr(code).isspace()) + ")"


def _platform(row: str) -> str:
    return (
        f"CASE WHEN instr({row}.backend, ':') > 0 "
        f"THEN substr({row}.backend, 1, instr({row}.backend, ':') - 1) ELSE {row}.backend END"
    )


def _name(row: str) -> str:
    """The usable ``task_name`` of the row's metadata, or NULL; the JSON is parsed only
    for a row without a name whose metadata mentions one (``json_valid`` first, since
    ``json_extract`` raises on malformed text and would fail the writer's INSERT)."""
    meta = f"{row}.metadata_json"
    value = f"json_extract({meta}, '$.task_name')"
    # CASE tries its branches in order: nothing past a branch that matched is evaluated.
    return (
        f"CASE WHEN {row}.name IS NOT NULL OR instr({meta}, 'task_name') = 0 THEN NULL "
        f"WHEN NOT json_valid({meta}) THEN NULL "
        f"WHEN json_type({meta}, '$.task_name') = 'text' "
        f"AND instr({meta}, '\\u0000') = 0 AND length({value}) BETWEEN 1 AND 255 "
        f"AND trim({value}, {_SPACES}) <> '' THEN {value} END"
    )


def _search_key(row: str) -> str:
    """v11's search key of a row written without one: ``lower()`` folds ASCII only, where
    the store's ``str.casefold`` folds all of Unicode; ids, backends and names are ASCII
    in practice. Only ever written where the key is missing."""
    name = f"coalesce({row}.name, {_name(row)}, '')"
    return (
        f"CASE WHEN {row}.search_key IS NOT NULL THEN {row}.search_key ELSE "
        f"lower({row}.task_id) || 'A' || lower({row}.backend) || 'A' || lower({name}) END"
    )


def _legacy_name(row: str) -> str:
    return (
        f"CASE WHEN {row}.search_key IS NULL THEN coalesce({row}.name, {_name(row)}) "
        f"ELSE {row}.name END"
    )


def _stale(row: str) -> str:
    return f"({row}.platform IS NOT ({_platform(row)}) OR {row}.search_key IS NULL)"


def upgrade(conn: Connection) -> None:
    """Adds triggers on tasks and archived_tasks that fill platform, name and search_key
    in rows written without them (the original implementation's), and fills existing
    ones."""
    if conn.dialect.name != "sqlite":
        return
    for table in ("tasks", "archived_tasks"):
        # A name comes from metadata only in a row written without a search key, which
        # only a program that predates v11 (the original) writes: in the store's own rows
        # the name is the task's own column, set by save alone, which an edit of the
        # metadata or an archive leaves as it is (README, update_metadata).
        fill = (
            f"UPDATE {table} SET platform = {_platform('NEW')}, name = {_legacy_name('NEW')}, "
            f"search_key = {_search_key('NEW')} WHERE task_id = NEW.task_id;"
        )
        for event, name in (
            ("INSERT", "insert"),
            ("UPDATE OF backend, metadata_json, platform, name", "update"),
        ):
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS {table}_derived_on_{name} AFTER {event} "
                f"ON {table} WHEN {_stale('NEW')} BEGIN {fill} END"
            )
        conn.exec_driver_sql(
            f"UPDATE {table} SET platform = {_platform(table)}, name = {_legacy_name(table)}, "
            f"search_key = {_search_key(table)} WHERE {_stale(table)}"
        )
