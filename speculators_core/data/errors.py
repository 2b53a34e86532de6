"""Errors of the pipeline commands and their translation onto the CLI's exit codes.

exit 2 (permanent, fix the input): InputError, DataSourceError, format errors, a full disk
exit 3 (permanent, incompatible):   IncompatibleDataError, TemplateError, format IncompatibleError
exit 75 (transient, retried):       network/endpoint/hub failures
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class InputError(ValueError):
    """Invalid flags or input data; the message names the flag/file and the fix."""


class IncompatibleDataError(ValueError):
    """Data that does not fit the model (hidden-state shapes, layer ids, vocabulary, data fingerprint)."""


class CorruptShardError(InputError):
    """A hidden-state shard that cannot be read; the message names the file and how to regenerate it."""


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    from speculators_core.cli.common import IncompatibleError, TransientError, UserError
    from speculators_core.data.chat import TemplateError
    from speculators_core.data.fsutil import DiskFullError
    from speculators_core.data.loading import DataSourceError
    from speculators_core.format.errors import IncompatibleError as FormatIncompatible
    from speculators_core.format.errors import SourceUnavailableError, SpeculatorsError

    try:
        yield
    except UserError:
        raise
    except (IncompatibleDataError, TemplateError, FormatIncompatible) as exc:
        raise IncompatibleError(str(exc)) from None
    except (SourceUnavailableError, ConnectionError, TimeoutError) as exc:
        raise TransientError(str(exc)) from None
    except DiskFullError as exc:
        raise UserError(str(exc)) from None
    except (InputError, DataSourceError, SpeculatorsError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
