"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""


class AdaptlabError(Exception):
    """Bad input or configuration; the message names the path, key or value at fault."""


class CollectiveError(AdaptlabError):
    """Raised alike on every process of a run, by a check they make together or one each makes
    on the same settings; the main process reports it for all of them."""


class PluginError(AdaptlabError):
    """A domain plugin could not be loaded or its metadata is invalid."""


def did_you_mean(name: str, known) -> str:
    """``"did you mean a, b? "`` naming the nearest of ``known`` (difflib), or ``""``: a typo
    gets its likely fix instead of every name there is."""
    import difflib

    near = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    return f"did you mean {', '.join(near)}? " if near else ""
