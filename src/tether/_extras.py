"""The one error for an optional dependency that is not installed.

tether's library needs nothing outside the standard library; extras (``hub``,
``redis``, ``nats``, ``proxy``, ``socks``, ``speed``) bring the rest. Whatever finds one
missing, the library deep inside or the command line up front, raises this,
so the message always names the extra to install and the CLI can tell it from
a bug by its type.
"""

from __future__ import annotations


class MissingDependency(ImportError):
    """``feature`` needs ``module``, which the ``extra`` extra installs."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the {module!r} package, which is not installed: "
            f"pip install 'tether[{extra}]' (from a clone: pip install '.[{extra}]')",
            name=module,
        )
        self.feature = feature
        self.module = module
        self.extra = extra
