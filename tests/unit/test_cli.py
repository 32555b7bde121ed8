"""``genperf TOOL``: one console script for the command-line tools, the same as
``python -m perf.TOOL``."""

import pytest

from perf.cli.main import TOOLS, main
from perf.store.history import append, entry_now


def test_without_a_tool_it_lists_them(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert all(f"genperf {name}" in err for name in TOOLS)
    assert main(["--help"]) == 0
    assert main(["nope"]) == 2


def test_it_runs_the_named_tool_with_the_rest_of_the_arguments(tmp_path, capsys):
    path = tmp_path / "history.jsonl"
    for tps in (10.0, 11.0):
        append(
            path,
            entry_now(
                {"b-w": {"output_tokens_per_s": tps}}, hardware="h", software={}, git_commit=None
            ),
        )
    assert main(["history", str(path)]) == 0
    assert f"{path}: 2 entries" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    assert "python -m perf.calibrate" in capsys.readouterr().out
