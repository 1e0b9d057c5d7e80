"""Search spaces built from registered blocks, and the fixed baseline architectures.

Importing this package imports every module in it, so a new space is one new file here: its
`@register_space` class then appears in the CLI, the config and `rankitect spaces`. The
package is loaded by `rankitect.space.load_plugins` through the `rankitect.plugins` entry point.
"""

import importlib
import pkgutil

from search_spaces.baselines import BASELINES, baseline, resolve_architecture

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BASELINES", "baseline", "resolve_architecture"]
