"""Kept so `from tesla_smart_charger.control import …` still works: the code is in `control/`."""

from tesla_smart_charger.control import *  # noqa: F403
from tesla_smart_charger.control import __all__  # noqa: F401
