"""The one check every bad-input test makes of a command's result (the
project's rule: one ``Error:`` line, a non-zero exit, nothing else).

conftest.py puts this folder on ``sys.path``, so a test module imports it as
``from cli_errors import one_line_error``.
"""
from __future__ import annotations


def one_line_error(result, *fragments: str, code: int = 1) -> str:
    """Assert that a click ``CliRunner`` result is exit ``code`` and one
    ``Error:`` line holding every fragment, with no traceback, no warning and
    no temporary file's name; return the line."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output and "Warning" not in result.output, result.output
    assert ".tmp" not in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
