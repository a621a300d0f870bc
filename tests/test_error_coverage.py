"""Every error class a caller can catch is raised by at least one test.

``RAISED_BY`` names, for each ``TaskStoreError`` subclass in ``uniqc_taskstore.errors``,
a test that makes the store raise it for real. A new error class without an entry
fails the suite here, and so does an entry whose test is gone or no longer mentions
the class (checked by reading the test's source: the class must appear in its body,
as the argument of ``pytest.raises`` or of a helper that wraps it).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from uniqc_taskstore import errors
from uniqc_taskstore.errors import TaskStoreError

TESTS = Path(__file__).parent

RAISED_BY: dict[str, str] = {
    "BackupUnavailableError": (
        "test_maintenance.py::test_backup_of_a_server_store_raises_with_its_dump_command"
    ),
    "InvalidInputError": "test_model.py::test_validate_id_accepts_exactly_the_usable_ids",
    "UnserializableValueError": (
        "test_jsoncodec.py::test_unserializable_shard_result_saves_neither_task_nor_shards"
    ),
    "ImportLineError": (
        "test_import_edges.py::test_a_line_nested_200000_deep_is_an_import_line_error"
    ),
    "ShardLayoutError": "test_sharding.py::test_gap_between_shards_is_a_layout_error",
    "TaskNotFoundError": (
        "test_error_paths.py::"
        "test_shard_whose_task_vanishes_mid_save_is_task_not_found_and_nothing_changes"
    ),
    "ShardNotFoundError": (
        "test_store_shards.py::test_update_shard_of_missing_shard_or_task_raises_shard_not_found"
    ),
    "TaskStateError": (
        "test_store_archive.py::"
        "test_restore_over_a_live_task_of_the_same_id_raises_and_changes_nothing"
    ),
    "DatabaseError": (
        "test_error_paths.py::test_a_driver_error_with_no_better_name_is_a_plain_database_error"
    ),
    "ForeignDatabaseError": (
        "test_error_paths.py::"
        "test_server_database_stamped_by_another_application_is_refused_untouched"
    ),
    "SchemaTooNewError": (
        "test_sqlite_file.py::test_file_newer_than_this_code_is_refused_naming_both_versions"
    ),
    "CorruptDatabaseError": (
        "test_sqlite_file.py::test_damaged_file_is_refused_as_corrupt_and_left_untouched"
    ),
    "MigrationError": (
        "test_error_paths.py::test_migration_files_not_numbered_one_to_n_are_refused"
    ),
    "StoreNotFoundError": (
        "test_sqlite_file.py::"
        "test_opening_without_create_refuses_a_missing_store_and_creates_nothing"
    ),
    "StoreLocationError": (
        "test_error_paths.py::test_directory_where_the_file_should_be_is_refused_without_fallback"
    ),
    "DatabaseBusyError": (
        "test_error_paths.py::test_file_locked_by_another_writer_is_busy_and_nothing_is_written"
    ),
    "CorruptRowError": ("test_hostile_rows.py::test_hostile_shard_and_archived_rows_are_found"),
    "SdkSwapError": "test_sdk_swap.py::test_compat_enable_without_the_sdk_raises_sdk_swap_error",
    "DatabaseConnectionError": (
        "test_server_connections.py::test_silent_server_ends_in_connection_error_by_default"
    ),
    "ChangesExpiredError": "test_changes.py::test_pruned_changes_make_an_older_token_expire",
    "ConnectionLostError": (
        "test_connection_faults.py::test_lost_connection_without_budget_is_connection_lost"
    ),
    "OutcomeUnknownError": (
        "test_connection_faults.py::"
        "test_after_commit_sent_idempotent_writes_are_retried_others_say_outcome_unknown"
    ),
    "StatementTimeoutError": (
        "test_connection_faults.py::"
        "test_statement_past_the_statement_timeout_raises_statement_timeout_error"
    ),
}


def error_classes() -> set[str]:
    """Every subclass of TaskStoreError, at any depth, declared in uniqc_taskstore.errors."""
    found: set[str] = set()
    pending: list[type[TaskStoreError]] = [TaskStoreError]
    while pending:
        for subclass in pending.pop().__subclasses__():
            if subclass.__module__ == errors.__name__:
                found.add(subclass.__name__)
            pending.append(subclass)
    return found


def test_every_error_class_has_a_test_that_raises_it() -> None:
    declared = error_classes()
    assert declared - set(RAISED_BY) == set(), "error classes no test raises"
    assert set(RAISED_BY) - declared == set(), "entries for error classes that are gone"


def test_every_error_class_is_exported_from_the_package() -> None:
    import uniqc_taskstore

    for name in error_classes():
        assert getattr(uniqc_taskstore, name) is getattr(errors, name)


def _names_used_in(path: Path, function: str) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    pytest.fail(f"{path.name} has no test {function}")


@pytest.mark.parametrize(("error", "test"), sorted(RAISED_BY.items()))
def test_named_test_exists_and_expects_the_error(error: str, test: str) -> None:
    filename, function = test.split("::")
    assert inspect.isclass(getattr(errors, error, None)), error
    assert error in _names_used_in(TESTS / filename, function)
