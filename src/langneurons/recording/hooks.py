"""Attaching several sites in one pass and routing each site's activations to the statistics that need it.

A *site provider* is anything with ``site`` (a name), ``num_layers`` and ``hooks(fn)`` returning a context
manager that calls ``fn(layer, value)`` once per hooked layer and forward pass (``value`` is the site's
tensor ``[batch, seq, width]`` for a :class:`~langneurons.model.sites.SiteMap`, or any object a provider hands
over, such as the post-rotary queries and keys of attention capture). A provider that hooks only some layers
says which in ``hooked_layers``; the recorder then expects that many calls per forward pass.
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, ContextManager, Iterable, Iterator, Protocol, Sequence

from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.model.sites import SiteMap, locate_site, site_hooks


class SiteProvider(Protocol):
    """What the recorder can attach: a named site with one hook call per layer and forward pass."""

    site: str
    num_layers: int

    def hooks(self, fn: Callable[[int, Any], Any]) -> ContextManager[None]: ...


def as_providers(model: nn.Module, sites: Any, statistics: Sequence[Any] = ()) -> list[Any]:
    """Site providers for ``sites``: one SiteMap / provider / site name, a sequence of them, or ``None`` (the
    sites the ``statistics`` declare). Names are located on ``model``; two providers of one site are an error."""
    if sites is None:
        names = list(dict.fromkeys(site for statistic in statistics for site in declared_sites(statistic)))
        if not names:
            raise LangNeuronsError("no site to record: pass the sites, or statistics that declare them")
        sites = names
    if isinstance(sites, (str, SiteMap)) or hasattr(sites, "hooks"):
        sites = [sites]
    providers = [locate_site(model, site) if isinstance(site, str) else site for site in sites]
    if not providers:
        raise LangNeuronsError("no site to record")
    names = [provider.site for provider in providers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LangNeuronsError(f"site {repeated[0]!r} is attached twice in one pass")
    return providers


def declared_sites(statistic: Any) -> tuple[str, ...]:
    """The sites a statistic declares (``()``: it takes whatever one site is attached)."""
    sites = getattr(statistic, "sites", None) or ()
    return (sites,) if isinstance(sites, str) else tuple(sites)


def expected_calls(provider: Any) -> int:
    """Hook calls per forward pass: ``len(hooked_layers)`` when the provider has it, else ``num_layers``."""
    hooked = getattr(provider, "hooked_layers", None)
    return int(provider.num_layers) if hooked is None else len(hooked)


def _takes_site(update: Callable) -> bool:
    try:
        parameters = inspect.signature(update).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "site" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


Consumer = Callable[[int, Any], None]


def route(providers: Sequence[Any], statistics: Iterable[Any]) -> dict[str, list[Consumer]]:
    """``{site: [update functions]}``: each statistic's ``update`` under every site it declares.

    A statistic that declares no site takes the one attached site (an error when several are attached);
    one that needs a site no provider attaches is an error. ``update`` gets ``site=`` when it accepts it.
    """
    attached = [provider.site for provider in providers]
    table: dict[str, list[Consumer]] = {site: [] for site in attached}
    for statistic in statistics:
        wanted = declared_sites(statistic)
        if not wanted:
            if len(attached) != 1:
                raise LangNeuronsError(f"{type(statistic).__name__} declares no sites, but {len(attached)} sites are "
                                       f"attached ({', '.join(attached)}); give it sites=(...)")
            wanted = tuple(attached)
        missing = [site for site in wanted if site not in table]
        if missing:
            raise LangNeuronsError(f"{type(statistic).__name__} needs site(s) {', '.join(missing)}, which this pass "
                                   f"does not attach (attached: {', '.join(attached)})")
        update = statistic.update
        takes_site = _takes_site(update)
        for site in wanted:
            if takes_site:
                table[site].append(lambda layer, value, _u=update, _s=site: _u(layer, value, site=_s))
            else:
                table[site].append(update)
    return table


def provider_hooks(provider: Any, fn: Callable[[int, Any], Any]) -> ContextManager[None]:
    """``provider.hooks(fn)`` (a SiteMap without that method is hooked by :func:`site_hooks`)."""
    hooks = getattr(provider, "hooks", None)
    if hooks is not None:
        return hooks(fn)
    if isinstance(provider, SiteMap):
        return site_hooks(provider, fn)
    raise LangNeuronsError(f"{type(provider).__name__} is not a site provider (it has no hooks(fn) method)")


@contextmanager
def attach_all(providers: Sequence[Any], make_fn: Callable[[Any], Callable[[int, Any], Any]]) -> Iterator[None]:
    """Attach ``make_fn(provider)`` at every provider while the context is open (all removed on exit)."""
    with ExitStack() as stack:
        for provider in providers:
            stack.enter_context(provider_hooks(provider, make_fn(provider)))
        yield
