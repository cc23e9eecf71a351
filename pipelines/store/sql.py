"""Names in SQL: the one place a name (a feature, a table) is written into a statement.

Values always travel as parameters. A name cannot (SQL has no parameter for an identifier), so
it is quoted here, and only here: a double quote inside it is doubled, so no name can end the
identifier early, whatever a client sent. Feature names are also checked when a dataset's
schema is first fixed (`pipelines.schema.check_feature_names`); quoting is what makes a name
safe, the check is what gives a client a clear message.
"""

from __future__ import annotations


def identifier(name: str) -> str:
    """`name` as a quoted SQL identifier (`a"b` becomes `"a""b"`)."""
    if not name or "\x00" in name:
        raise ValueError(f"{name!r} can't be an SQL identifier")
    return '"' + name.replace('"', '""') + '"'


def string_literal(text: str) -> str:
    """`text` as an SQL string literal, for the few statements that take no parameters
    (ATTACH, INSTALL): a quote inside it is doubled."""
    if "\x00" in text:
        raise ValueError(f"{text!r} can't be an SQL string")
    return "'" + text.replace("'", "''") + "'"
