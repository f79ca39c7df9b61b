"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""


class AdaptlabError(Exception):
    """Bad input or configuration; the message names the path, key or value at fault."""


class PluginError(AdaptlabError):
    """A domain plugin could not be loaded or its metadata is invalid."""
