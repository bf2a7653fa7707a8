"""The lint rules, one per module; importing this package registers them all."""

from __future__ import annotations

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("kv"):
        importlib.import_module(f"{__name__}.{_info.name}")
