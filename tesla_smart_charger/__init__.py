"""tesla-smart-charger: charge a Tesla as fast as the house allows, and never faster."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tesla-smart-charger")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
