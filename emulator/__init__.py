"""Training-throughput emulator for LLM training on clusters of 10^4 to 2x10^5 GPUs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("colossus-emulator")
except PackageNotFoundError:  # running from a checkout that was not installed
    __version__ = "0.0.0+checkout"

__all__ = ["__version__"]
