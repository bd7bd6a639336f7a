"""The browser tests' fixtures (see :mod:`tests.browser.explorer_site`)."""

from tests.browser.explorer_site import page, site

__all__ = ["page", "site"]
