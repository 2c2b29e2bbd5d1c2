"""Sanyi (三医): the data exchange through which health, insurance and drug traceability supervise together."""

from importlib import import_module
from types import ModuleType

__version__ = "0.1.0"


def extension(name: str) -> ModuleType:
    """The C extension ``sanyi.<name>`` (``_hmac``, ``_ndjson``), imported when first needed: the modules
    that only mask or check record by record (the CLI's pre-flight validator) also work in a source tree
    that was never built. A missing build is an ImportError that says how to build it."""
    try:
        return import_module(f"sanyi.{name}")
    except ImportError as exc:  # a source tree used without `pip install`, which compiles it
        raise ImportError(
            f"sanyi's C extension sanyi.{name} is not built: install the package (`make venv`, or "
            "`pip install -e .`, with a C compiler and OpenSSL's headers)"
        ) from exc
